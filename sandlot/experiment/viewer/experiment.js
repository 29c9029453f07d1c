/* global h, text, has, secs, block, fact, chips -- from sandlot/rlm/viewer/helpers.js */

  const source = document.getElementById("experiment-data");
  let data;
  try { data = JSON.parse(source.textContent); } catch { data = {}; }
  const runsData = Array.isArray(data.runs) ? data.runs : [];
  const root = document.getElementById("app");
  const obj = (v) => (v !== null && typeof v === "object" && !Array.isArray(v) ? v : {});

  function outputText(o) {
    o = obj(o);
    if (o.output_type === "stream") return text(o.text);
    if (o.output_type === "error") {
      return text(o.ename) + ": " + text(o.evalue) + "\n" +
        (Array.isArray(o.traceback) ? o.traceback.map(text).join("\n") : "");
    }
    const d = obj(o.data);
    if (has(d["text/plain"])) return text(d["text/plain"]);
    return "[" + Object.keys(d).join(", ") + " output]";
  }
  // A PNG or JPEG output as an image: only those two types (never SVG, which is a
  // document), and only data that is base64 and nothing else.
  const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
  function image(o) {
    const d = obj(obj(o).data);
    for (const mime of ["image/png", "image/jpeg"]) {
      const raw = Array.isArray(d[mime]) ? d[mime].map(text).join("") : d[mime];
      if (typeof raw !== "string") continue;
      const b64 = raw.replace(/\s+/g, "");
      if (b64.length > 0 && BASE64.test(b64)) {
        const src = "data:" + mime + ";base64," + b64;
        return h("img", {class: "plot", alt: mime + " output", src: src});
      }
    }
    return null;
  }
  function cell(c) {
    c = obj(c);
    const src = Array.isArray(c.source) ? c.source.map(text).join("") : text(c.source);
    const kind = text(c.cell_type) || "?";
    const box = h("div", {class: "cell", data: {kind: kind}},
      h("div", {class: "label"}, kind === "code" ?
        "In [" + (has(c.execution_count) ? text(c.execution_count) : " ") + "]" : kind),
      block(src, kind === "code" ? "code" : "markdown"));
    const outs = Array.isArray(c.outputs) ? c.outputs : [];
    outs.forEach((o) => {
      const img = image(o);
      box.append(img || block(outputText(o), obj(o).output_type === "error" ? "error" : "output"));
    });
    return box;
  }
  function event(e) {
    e = obj(e);
    const kind = text(e.type);
    const head = h("div", {class: "label"}, kind,
      has(e.turn) ? h("span", {class: "muted"}, "turn " + text(e.turn)) : null,
      has(e.iteration) ? h("span", {class: "muted"}, "iteration " + text(e.iteration)) : null,
      has(e.name) ? h("span", {class: "mono"}, text(e.name)) : null,
      has(e.seconds) ? h("span", {class: "muted"}, secs(e.seconds)) : null,
      e.error === true || (has(e.error) && e.error !== false) ?
        h("span", {class: "badge err"}, "error") : null);
    const box = h("div", {class: "event", data: {type: kind}}, head);
    const show = (label, value, cls) => {
      if (has(value) && !(Array.isArray(value) && value.length === 0)) {
        box.append(h("h4", null, label), block(value, cls));
      }
    };
    if (kind === "run_start") {
      const facts = h("dl", {class: "facts"});
      for (const k of ["experiment", "harness", "model", "mode", "session_id", "notebook"]) {
        if (has(e[k])) facts.append(...fact(k, h("span", {class: "mono"}, text(e[k]))));
      }
      if (has(e.limits)) facts.append(...fact("limits", chips(obj(e.limits))));
      box.append(facts);
      (Array.isArray(e.messages) ? e.messages : []).forEach(
        (m) => show(text(obj(m).role) + " message", obj(m).content, "prompt"));
      show("query", e.query, "query");
    } else if (kind === "run_end") {
      const facts = h("dl", {class: "facts"});
      for (const k of ["status", "stop_reason", "turns", "tool_calls", "tokens", "cost",
                       "seconds"]) {
        if (has(e[k])) facts.append(...fact(k, text(e[k])));
      }
      box.append(facts);
      show("answer", e.answer, "answer-text");
      if (typeof e.error === "string") show("error", e.error, "error");
    } else {
      show("reply", e.reply, "reply");
      if (Array.isArray(e.tool_calls)) {
        e.tool_calls.forEach((c) => show("call " + text(obj(c).name), obj(c).arguments, "code"));
      }
      show("arguments", e.arguments, "code");
      show("code", e.code, "code");
      show("result", e.result, e.error === true ? "error" : "output");
      show("output", e.output, "output");
      if (typeof e.error === "string") show("error", e.error, "error");
    }
    return box;
  }
  function run(r) {
    r = obj(r);
    const events = Array.isArray(r.events) ? r.events : [];
    const cells = Array.isArray(r.cells) ? r.cells : [];
    const end = events.filter((e) => obj(e).type === "run_end")[0];
    const status = end ? text(obj(end).status) : "unfinished";
    const section = h("section", {class: "run", data: {run: text(r.label)}},
      h("div", {class: "run-head"}, h("h2", null, text(r.label),
        h("span", {class: "badge " + (status === "answered" ? "finished" : "stopped")}, status),
        h("span", {class: "muted"}, events.length + " events \u00b7 " + cells.length +
          " notebook cells"))));
    const left = h("div", null, h("h3", null, "Transcript"), events.map(event));
    const right = h("div", null, h("h3", null, "Notebook"), cells.length ? cells.map(cell) :
      h("p", {class: "muted"}, "(no notebook)"));
    section.append(h("div", {class: "cols"}, left, right));
    return section;
  }
  root.replaceChildren(
    h("header", {class: "page-head"}, h("h1", null, "Experiment " + text(data.name)),
      h("div", {class: "muted"}, runsData.length + " run" + (runsData.length === 1 ? "" : "s"))),
    ...runsData.map(run));
  document.body.dataset.rendered = String(runsData.length);
