/* global h, num, text, has, secs, int, cost, oneLine, block, fact, chips -- from helpers.js */

  const source = document.getElementById("trajectory-data");
  let data;
  try {
    data = JSON.parse(source.textContent);
  } catch {
    data = [];
  }
  const events = (Array.isArray(data) ? data : []).filter(
    (e) => e !== null && typeof e === "object" && !Array.isArray(e));
  const root = document.getElementById("app");

  // -- runs: one per id, in order of first appearance
  const runs = new Map();
  for (const e of events) {
    const id = has(e.run) ? String(e.run) : "?";
    let r = runs.get(id);
    if (!r) {
      r = {id: id, index: runs.size, start: null, end: null, parent: null,
           lm: [], code: [], sub: [], other: [], lastT: 0, done: false};
      runs.set(id, r);
    }
    const t = num(e.t);
    if (t !== null) r.lastT = Math.max(r.lastT, t);
    if (r.parent === null && has(e.parent)) r.parent = String(e.parent);
    if (e.type === "run_start" && r.start === null) r.start = e;
    else if (e.type === "run_end" && r.end === null) r.end = e;
    else if (e.type === "lm_call") r.lm.push(e);
    else if (e.type === "code") r.code.push(e);
    else if (e.type === "sub_call") r.sub.push(e);
    else r.other.push(e);
  }
  const spawnedBy = new Map();  // child run id -> the sub_call that started it
  for (const r of runs.values()) {
    for (const e of r.sub) if (has(e.child)) spawnedBy.set(String(e.child), r.id);
  }
  const anchor = (r) => "run-" + r.index;
  function status(r) {
    if (r.end === null) return {cls: "unfinished", label: "unfinished (no run_end: crashed?)"};
    if (r.end.finished === true) return {cls: "finished", label: "finished"};
    return {cls: "stopped", label: "stopped: " + (text(r.end.stop_reason) || "not finished")};
  }
  const runLink = (r) => h("a", {href: "#" + anchor(r)}, "run " + r.id);

  // -- timelines: bars on a time axis
  function span(e) {
    const t = num(e.t), s = num(e.seconds);
    if (t === null) return null;
    return {from: Math.max(0, t - (s === null ? 0 : s)), to: t};
  }
  function timeline(rows, title) {
    const spans = rows.flatMap((row) => row.bars.map((b) => b.span));
    if (spans.length === 0) return null;
    const lo = Math.min(...spans.map((s) => s.from));
    const hi = Math.max(...spans.map((s) => s.to));
    const width = Math.max(hi - lo, 1e-3);
    const pct = (v) => (100 * (v - lo) / width).toFixed(3) + "%";
    const box = h("div", {class: "timeline", title: title});
    for (const row of rows) {
      const track = h("div", {class: "tl-track"});
      for (const b of row.bars) {
        const style = {left: pct(b.span.from),
                       width: (100 * (b.span.to - b.span.from) / width).toFixed(3) + "%"};
        const tag = b.href ? "a" : "div";
        track.append(h(tag, {class: "tl-bar " + b.cls, style: style, title: b.tip,
                             href: b.href ? "#" + b.href : null}));
      }
      box.append(h("div", {class: "tl-row"}, h("div", {class: "tl-label", title: row.label},
                                                 row.label), track));
    }
    const ticks = [0, 0.25, 0.5, 0.75, 1].map(
      (f) => h("span", {style: {left: (100 * f) + "%"}}, "t=" + secs(lo + f * width)));
    box.append(h("div", {class: "tl-row"}, h("div"), h("div", {class: "tl-axis"}, ticks)));
    return box;
  }
  const legend = () => h("div", {class: "legend"},
    [["lm", "root LM"], ["code", "code"], ["llm", "sub-LM"], ["rlm", "child RLM"]].map(
      ([cls, name]) => h("span", null, h("i", {class: "tl-bar " + cls,
                                              style: {position: "static"}}), name)));

  // -- one iteration
  function iterationKey(e) { return has(e.iteration) ? String(e.iteration) : "?"; }
  function iterations(r) {
    const byKey = new Map();
    const add = (e, kind) => {
      const key = iterationKey(e);
      if (!byKey.has(key)) byKey.set(key, {key: key, lm: [], code: [], sub: []});
      byKey.get(key)[kind].push(e);
    };
    r.lm.forEach((e) => add(e, "lm"));
    r.code.forEach((e) => add(e, "code"));
    r.sub.forEach((e) => add(e, "sub"));
    const order = (k) => (k === "?" ? Infinity : Number(k));
    return [...byKey.values()].sort((a, b) => order(a.key) - order(b.key) ||
                                              a.key.localeCompare(b.key));
  }
  function lmCall(e) {
    const u = e.usage && typeof e.usage === "object" ? e.usage : {};
    const parts = [
      has(u.model) ? h("span", {class: "mono"}, text(u.model)) : null,
      h("span", null, secs(e.seconds)),
      h("span", null, "prompt " + int(e.prompt_chars) + " chars" +
        (has(e.messages) ? " in " + int(e.messages) + " messages" : "")),
      h("span", null, "tokens " + int(u.prompt_tokens) + " in / " +
        int(u.completion_tokens) + " out"),
      has(u.cost) ? h("span", null, "cost " + cost(u.cost)) : null,
    ];
    return h("div", {class: "lm-call"},
      h("div", {class: "meta"}, parts),
      h("h4", null, "Root LM reply"),
      has(e.reply) ? block(e.reply, "reply") : h("p", {class: "muted"}, "(no reply)"),
      has(e.error) ? [h("h4", null, "LM error"), block(e.error, "error")] : null);
  }
  function codeBlock(e, n, of, id) {
    const truncated = num(e.truncated);
    return h("div", {class: "code-block", id: id, data: {block: text(e.block)}},
      h("div", {class: "label"}, "Code block " + n + " of " + of,
        h("span", {class: "muted"}, secs(e.seconds)),
        has(e.error) ? h("span", {class: "badge err"}, "error") : null),
      block(e.code, "code"),
      h("div", {class: "label"}, "Output",
        truncated ? h("span", {class: "muted"}, int(truncated) +
                      " chars cut from the middle") : null),
      has(e.output) ? block(e.output, "output") : h("pre", {class: "output muted"}, "(none)"),
      has(e.error) ? [h("div", {class: "label error-text"}, "Error"),
                      block(e.error, "error")] : null);
  }
  function subCall(e, r, rendered) {
    const kind = e.kind === "rlm" ? "rlm" : "llm";
    const child = has(e.child) ? runs.get(String(e.child)) : undefined;
    const summary = h("summary", null,
      h("span", {class: "badge kind-" + kind}, kind === "rlm" ? "child RLM" : "sub-LM"),
      has(e.batch) ? h("span", {class: "chip mono"}, "batch #" + text(e.batch)) : null,
      h("span", {class: "mono"}, text(e.model)),
      h("span", null, secs(e.seconds)),
      h("span", {class: "muted"}, int(e.prompt_chars) + " chars in"),
      num(e.tokens) !== null ? h("span", {class: "muted"}, int(e.tokens) + " tokens") : null,
      child !== undefined ? h("span", {class: "badge " + status(child).cls},
                              "run " + child.id + ": " + status(child).label) : null,
      has(e.error) ? h("span", {class: "badge err"}, "error") :
        h("span", {class: "preview"}, oneLine(e.response, 120)));
    const body = h("div", {class: "body"},
      h("h4", null, "Prompt"), block(e.prompt, "prompt"),
      h("h4", null, "Response"), has(e.response) ? block(e.response, "response") :
        h("p", {class: "muted"}, "(none)"),
      has(e.error) ? [h("h4", null, "Error"), block(e.error, "error")] : null);
    if (has(e.child)) {
      if (child === undefined) {
        body.append(h("p", {class: "muted"}, "child run " + text(e.child) +
                                            " is not in this file"));
      } else if (rendered.has(child.id)) {
        body.append(h("p", null, "child run: ", runLink(child)));
      } else {
        body.append(renderRun(child, rendered));
      }
    }
    return h("details", {class: "subcall", data: {kind: kind, child: has(e.child) ?
                                                     text(e.child) : null}}, summary, body);
  }
  function iteration(it, r, rendered) {
    const id = anchor(r) + "-it-" + it.key;
    const codes = [...it.code].sort((a, b) => (num(a.block) ?? 0) - (num(b.block) ?? 0));
    const rows = [];
    it.lm.forEach((e) => {
      const s = span(e);
      if (s) rows.push({label: "root LM", bars: [{span: s, cls: "lm" + (has(e.error) ?
        " failed" : ""), tip: "root LM call, " + secs(e.seconds)}]});
    });
    codes.forEach((e, i) => {
      const s = span(e);
      if (s) rows.push({label: "code " + (i + 1), bars: [{span: s, cls: "code" + (has(e.error) ?
        " failed" : ""), tip: "code block " + (i + 1) + ", " + secs(e.seconds)}]});
    });
    const subs = [...it.sub].sort((a, b) => (span(a)?.from ?? 0) - (span(b)?.from ?? 0));
    subs.forEach((e, i) => {
      const s = span(e);
      const kind = e.kind === "rlm" ? "rlm" : "llm";
      if (s) rows.push({label: (kind === "rlm" ? "child RLM " : "sub-LM ") + (i + 1) +
        (has(e.batch) ? " (batch #" + text(e.batch) + ")" : ""),
        bars: [{span: s, cls: kind + (has(e.error) ? " failed" : ""),
                tip: text(e.model) + ", " + secs(e.seconds)}]});
    });
    const lmTokens = it.lm.reduce((acc, e) => {
      const u = e.usage && typeof e.usage === "object" ? e.usage : {};
      return acc + (num(u.prompt_tokens) ?? 0) + (num(u.completion_tokens) ?? 0);
    }, 0);
    const failedSubs = subs.filter((e) => has(e.error)).length;
    const subTokens = subs.some((e) => num(e.tokens) !== null) ?
      subs.reduce((acc, e) => acc + (num(e.tokens) ?? 0), 0) : null;
    const head = h("header", null,
      h("h3", null, it.key === "?" ? "Iteration ?" : "Iteration " + it.key),
      h("div", {class: "meta"},
        h("span", null, int(lmTokens) + " root tokens"),
        h("span", null, codes.length + " code block" + (codes.length === 1 ? "" : "s")),
        h("span", {class: "subcall-count"}, subs.length + " sub-call" +
          (subs.length === 1 ? "" : "s") + (failedSubs ? ", " + failedSubs + " failed" : "")),
        subTokens !== null ? h("span", null, int(subTokens) + " sub-call tokens") : null));
    const section = h("section", {class: "iteration", id: id,
                                  data: {iteration: it.key, subcalls: subs.length}}, head);
    const tl = timeline(rows, "iteration " + it.key);
    if (tl) section.append(tl);
    it.lm.forEach((e) => section.append(lmCall(e)));
    if (codes.length) {
      section.append(h("h4", null, "Code"));
      codes.forEach((e, i) => section.append(codeBlock(e, i + 1, codes.length,
                                                       id + "-code-" + (i + 1))));
    }
    if (subs.length) {
      section.append(h("h4", null, "Sub-calls (" + subs.length + ")"));
      const list = h("div", {class: "subcalls", data: {count: subs.length}});
      subs.forEach((e) => list.append(subCall(e, r, rendered)));
      section.append(list);
    }
    return section;
  }

  // -- one run, with its children nested under the sub-calls that spawned them
  function usageTable(u) {
    if (!u || typeof u !== "object") return null;
    const models = u.models && typeof u.models === "object" ? Object.entries(u.models) : [];
    const table = h("table", {class: "usage"}, h("tr", null,
      ["model", "calls", "errors", "prompt tokens", "completion tokens", "cost", "time"].map(
        (c) => h("th", null, c))));
    for (const [name, m] of models) {
      const v = m && typeof m === "object" ? m : {};
      table.append(h("tr", null, h("td", {class: "mono"}, name), h("td", null, int(v.calls)),
        h("td", null, int(v.errors)), h("td", null, int(v.prompt_tokens)),
        h("td", null, int(v.completion_tokens)), h("td", null, cost(v.cost)),
        h("td", null, secs(v.seconds))));
    }
    return table;
  }
  function renderRun(r, rendered) {
    rendered.add(r.id);
    const st = status(r);
    const start = r.start || {};
    const end = r.end || {};
    const usage = end.usage && typeof end.usage === "object" ? end.usage : null;
    const depth = num(start.depth);
    const isChild = r.parent !== null;
    const section = h("section", {class: "run" + (isChild ? " child" : ""), id: anchor(r),
                                  data: {run: r.id, status: st.cls}});
    const title = h("h2", null, (isChild ? "Child run " : "Run ") + r.id,
      h("span", {class: "badge " + st.cls}, st.label),
      depth !== null ? h("span", {class: "muted"}, "depth " + depth) : null,
      start.forked === true ? h("span", {class: "muted forked"}, "forked from its parent's REPL")
                            : null);
    const facts = h("dl", {class: "facts"});
    if (r.parent !== null) {
      const parent = runs.get(r.parent);
      facts.append(...fact("Parent", parent ? runLink(parent) :
                           "run " + r.parent + " (not in this file)"));
    }
    facts.append(...fact("Query", has(start.query) ? block(start.query, "query") :
                         h("span", {class: "muted"}, r.start ? "(none)" : "(no run_start)")));
    const models = start.models && typeof start.models === "object" ? start.models : {};
    facts.append(...fact("Models", h("span", {class: "mono"}, "root " + text(models.root) +
                                     " \u00b7 sub " + text(models.sub))));
    const ctx = start.context && typeof start.context === "object" ? start.context : null;
    if (ctx) {
      facts.append(...fact("Context", text(ctx.type) + ", size " + int(ctx.size)));
    }
    if (start.limits && typeof start.limits === "object") {
      facts.append(...fact("Limits", chips(start.limits)));
    }
    if (num(start.started_at) !== null) {
      facts.append(...fact("Started", new Date(start.started_at * 1000).toISOString()
        .replace("T", " ").replace(/\.\d+Z$/, " UTC")));
    }
    const wall = r.end !== null && num(end.seconds) !== null ? secs(end.seconds) :
      secs(r.lastT) + (r.end === null ? " so far (last event)" : "");
    facts.append(...fact("Wall time", wall));
    const iters = iterations(r);
    facts.append(...fact("Iterations", r.end !== null && has(end.iterations) ?
                         int(end.iterations) : String(iters.length)));
    if (r.end !== null) facts.append(...fact("Stop reason", text(end.stop_reason) || "?"));
    if (usage) {
      facts.append(...fact("Usage", int(usage.calls) + " calls \u00b7 " +
                           int(usage.total_tokens) + " tokens \u00b7 cost " + cost(usage.cost),
                           usageTable(usage)));
    }
    const answer = r.end !== null && has(end.answer) ?
      h("div", {class: "answer"}, h("h4", null, "Answer"), block(end.answer, "answer-text")) :
      h("div", {class: "answer none"}, h("h4", null, "Answer"),
        h("p", {class: "muted"}, r.end === null ? "no answer: the run did not end" :
                                                  "no answer"));
    section.append(h("div", {class: "run-head"}, title, facts, answer,
      has(end.error) ? [h("h4", null, "Run error"), block(end.error, "error")] : null));

    // the run at a glance: each iteration's root LM call and code
    const rows = iters.filter((it) => it.key !== "?").map((it) => {
      const bars = [];
      it.lm.forEach((e) => { const s = span(e); if (s) bars.push({span: s, cls: "lm",
        tip: "iteration " + it.key + ": root LM " + secs(e.seconds),
        href: anchor(r) + "-it-" + it.key}); });
      it.code.forEach((e) => { const s = span(e); if (s) bars.push({span: s, cls: "code",
        tip: "iteration " + it.key + ": code " + secs(e.seconds),
        href: anchor(r) + "-it-" + it.key}); });
      it.sub.forEach((e) => { const s = span(e); if (s) bars.push({span: s,
        cls: e.kind === "rlm" ? "rlm" : "llm", tip: "iteration " + it.key + ": " +
        text(e.model) + " " + secs(e.seconds), href: anchor(r) + "-it-" + it.key}); });
      return {label: "iteration " + it.key, bars: bars};
    });
    const overview = timeline(rows, "run " + r.id);
    if (overview) section.append(h("h4", null, "Timeline"), legend(), overview);

    for (const it of iters) section.append(iteration(it, r, rendered));
    if (iters.length === 0) section.append(h("p", {class: "muted"}, "No iterations recorded."));

    const loose = [...runs.values()].filter((c) => c.parent === r.id && !rendered.has(c.id) &&
                                                   spawnedBy.get(c.id) !== r.id);
    if (loose.length) {
      section.append(h("h4", null, "Child runs not linked to a sub-call"));
      loose.forEach((c) => section.append(renderRun(c, rendered)));
    }
    if (r.other.length) {
      section.append(h("details", {class: "raw"}, h("summary", null, r.other.length +
        " other event" + (r.other.length === 1 ? "" : "s")), block(r.other.map(
          (e) => JSON.stringify(e)).join("\n"), "raw")));
    }
    return section;
  }

  // -- the page
  const all = [...runs.values()];
  const tops = all.filter((r) => r.parent === null || !runs.has(r.parent));
  const rendered = new Set();
  const body = [];
  for (const r of tops) body.push(renderRun(r, rendered));
  for (const r of all) if (!rendered.has(r.id)) body.push(renderRun(r, rendered));

  const index = h("ul", {class: "index"}, tops.map((r) => {
    const st = status(r);
    return h("li", null, runLink(r), " ", h("span", {class: "badge " + st.cls}, st.label), " ",
      h("span", {class: "muted"}, oneLine(r.start ? r.start.query : "", 100)));
  }));
  const children = all.length - tops.length;
  root.replaceChildren(
    h("header", {class: "page-head"}, h("h1", null, "RLM trajectory"),
      h("div", {class: "muted"}, events.length + " events \u00b7 " + tops.length + " run" +
        (tops.length === 1 ? "" : "s") + (children ? " and " + children + " child run" +
        (children === 1 ? "" : "s") : "")), tops.length > 1 ? index : null),
    ...body);
  document.body.dataset.rendered = String(all.length);
