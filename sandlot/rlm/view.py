"""A trajectory as one self-contained HTML page: ``sandlot rlm view``.

The page carries the events as JSON in a ``<script type="application/json">``
element and a small script that builds the DOM from them with text nodes only,
so nothing an LM or a user wrote can become markup. A Content-Security-Policy
lets only that script (named by its hash) run and loads nothing from anywhere:
no network, no external fonts or scripts.

Timings: an event is written when the thing it records has finished, so an
event's span is ``[t - seconds, t]`` on its run's clock.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..sink import private_opener
from .trajectory import read_trajectory

__all__ = ["JS_HELPERS", "page_script", "render_html", "render_page", "write_html"]

_CSS = """
:root {
  --fg: #1d2330; --muted: #667085; --bg: #f6f7f9; --card: #ffffff; --line: #dfe3ea;
  --code: #f2f4f7; --accent: #2f6fdb; --ok: #1f8a4c; --warn: #b86e00; --bad: #c62f2f;
  --lm: #2f6fdb; --run: #7a5af8; --llm: #16a3a3; --rlm: #d9480f;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e4e7ec; --muted: #98a2b3; --bg: #14161b; --card: #1d2027; --line: #333844;
    --code: #262a33; --accent: #6ea0ff; --ok: #4cc07a; --warn: #f0a63a; --bad: #ff6b6b;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; padding: 24px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
main { max-width: 1180px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
h3 { font-size: 15px; margin: 0; }
h4 { font-size: 13px; margin: 12px 0 4px; color: var(--muted); text-transform: uppercase;
  letter-spacing: .04em; }
a { color: var(--accent); }
pre, code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; }
pre { margin: 0; padding: 8px 10px; background: var(--code); border-radius: 6px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
pre.clip { max-height: 16.5em; overflow: hidden; position: relative; }
pre.clip::after { content: ""; position: absolute; left: 0; right: 0; bottom: 0; height: 3em;
  background: linear-gradient(transparent, var(--code)); }
pre.error, .error-text { color: var(--bad); }
pre.error { background: color-mix(in srgb, var(--bad) 9%, var(--code)); }
button.more { margin: 4px 0 0; border: 1px solid var(--line); background: var(--card);
  color: var(--accent); border-radius: 5px; padding: 2px 8px; cursor: pointer; font: inherit;
  font-size: 12px; }
.muted { color: var(--muted); }
.page-head { margin-bottom: 18px; }
.index { margin: 10px 0 0; padding-left: 20px; }
.index li { margin: 2px 0; }
.run { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 18px; margin: 0 0 22px; }
.run.child { margin: 10px 0 4px; border-left: 4px solid var(--rlm); }
.run-head { border-bottom: 1px solid var(--line); padding-bottom: 12px; margin-bottom: 10px; }
.badge { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px;
  border-radius: 999px; border: 1px solid currentColor; }
.badge.finished { color: var(--ok); }
.badge.stopped { color: var(--warn); }
.badge.unfinished { color: var(--bad); }
.badge.err { color: var(--bad); }
.badge.kind-llm { color: var(--llm); }
.badge.kind-rlm { color: var(--rlm); }
h2 .muted { font-size: 13px; font-weight: normal; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 12px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; min-width: 0; }
.chips { display: flex; flex-wrap: wrap; gap: 4px 6px; }
.chip { background: var(--code); border-radius: 4px; padding: 0 6px; }
.answer { border-left: 4px solid var(--ok); padding-left: 10px; margin: 10px 0; }
.answer.none { border-left-color: var(--bad); }
table.usage { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
table.usage th, table.usage td { border-bottom: 1px solid var(--line); padding: 3px 10px;
  text-align: right; }
table.usage th:first-child, table.usage td:first-child { text-align: left; }
.iteration { border: 1px solid var(--line); border-radius: 8px; margin: 12px 0;
  padding: 10px 12px; }
.iteration > header { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: baseline;
  margin-bottom: 6px; }
.meta { color: var(--muted); font-size: 13px; display: flex; flex-wrap: wrap; gap: 2px 14px; }
.code-block { margin: 10px 0; }
.code-block .label { font-size: 13px; font-weight: 600; margin: 0 0 3px; display: flex; gap: 10px;
  align-items: center; }
.code-block pre + .label { margin-top: 6px; }
.subcall { border-top: 1px solid var(--line); padding: 4px 0; }
.subcall > summary { cursor: pointer; display: flex; gap: 10px; align-items: baseline;
  flex-wrap: wrap; }
.subcall > summary { list-style: none; }
.subcall > summary::-webkit-details-marker { display: none; }
.subcall > summary::before { content: "▸"; color: var(--muted); width: 1em; }
.subcall[open] > summary::before { content: "▾"; }
.subcall .body { padding: 6px 0 6px 18px; }
.preview { color: var(--muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  max-width: 60ch; }
.timeline { margin: 6px 0 10px; }
.tl-row { display: grid; grid-template-columns: 150px 1fr; align-items: center; gap: 8px;
  min-height: 18px; }
.tl-label { font-size: 12px; color: var(--muted); white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; text-align: right; }
.tl-track { position: relative; height: 14px; background: var(--code); border-radius: 3px; }
.tl-bar { position: absolute; top: 2px; height: 10px; border-radius: 2px; min-width: 2px; }
a.tl-bar { display: block; }
.tl-bar.lm { background: var(--lm); }
.tl-bar.code { background: var(--run); }
.tl-bar.llm { background: var(--llm); }
.tl-bar.rlm { background: var(--rlm); }
.tl-bar.failed { outline: 2px solid var(--bad); }
.tl-axis { position: relative; height: 16px; font-size: 11px; color: var(--muted); }
.tl-axis span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
.tl-axis span:first-child { transform: none; }
.tl-axis span:last-child { transform: translateX(-100%); }
.legend { display: flex; gap: 12px; font-size: 12px; color: var(--muted); margin: 4px 0; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 4px; vertical-align: -1px; }
details.raw > summary, details.children > summary { cursor: pointer; color: var(--muted); }
noscript p { color: var(--bad); }
"""

JS_HELPERS = r"""
  // -- building blocks: every piece of trajectory text goes in as a text node
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "style") Object.assign(el.style, value);
      else if (key === "data") {
        for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
      } else if (key === "onclick") el.addEventListener("click", value);
      else el.setAttribute(key, String(value));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  const text = (v) => (v === undefined || v === null ? "" :
    typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const has = (v) => v !== undefined && v !== null && v !== "";
  function secs(v) {
    const s = num(v);
    if (s === null) return "?";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    return m + " min " + Math.round(s - 60 * m) + " s";
  }
  const int = (v) => (num(v) === null ? "?" : Math.round(v).toLocaleString("en-US"));
  function cost(v) {
    const c = num(v);
    return c === null ? "n/a" : c.toFixed(c !== 0 && Math.abs(c) < 0.01 ? 5 : 4);
  }
  const oneLine = (v, n) => {
    const s = text(v).replace(/\s+/g, " ").trim();
    return s.length > n ? s.slice(0, n - 1) + "\u2026" : s;
  };

  // A long text shows its head, with a button that shows the rest.
  function block(value, cls) {
    const s = text(value);
    const lines = s.split("\n").length;
    const pre = h("pre", {class: cls || ""}, s);
    if (lines <= 16 && s.length <= 1600) return pre;
    pre.classList.add("clip");
    const label = "show all (" + int(lines) + " lines, " + int(s.length) + " chars)";
    const button = h("button", {class: "more", type: "button"}, label);
    button.addEventListener("click", () => {
      const clipped = pre.classList.toggle("clip");
      button.textContent = clipped ? label : "show less";
    });
    return h("div", {class: "long"}, pre, button);
  }
  const fact = (term, ...value) => [h("dt", null, term), h("dd", null, ...value)];
  const chips = (obj) => h("div", {class: "chips"}, Object.entries(obj).map(
    ([k, v]) => h("span", {class: "chip mono"}, k + " = " + (v === null ? "none" : text(v)))));

"""

_JS_TRAJECTORY = r"""
  const source = document.getElementById("trajectory-data");
  let data;
  try {
    data = JSON.parse(source.textContent);
  } catch (err) {
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
      depth !== null ? h("span", {class: "muted"}, "depth " + depth) : null);
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
"""


def page_script(body: str) -> str:
    """``body`` (JavaScript) after :data:`JS_HELPERS`, in one strict-mode function."""
    return '"use strict";\n(function () {\n' + JS_HELPERS + body + "})();\n"


_JS = page_script(_JS_TRAJECTORY)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities turned into strings, which JSON cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _embedded_json(events: Any) -> str:
    """The data as JSON safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` can only occur inside JSON strings, where their
    ``\\u`` escapes mean the same, so no ``</script>`` or ``<!--`` survives.
    """
    data = json.dumps(_finite(events), ensure_ascii=True, separators=(",", ":"), default=repr)
    return data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _title(events: list[dict[str, Any]], source: str | None) -> str:
    """The page's title: the first run's query, cut short, or the file's name."""
    for event in events:
        if event.get("type") == "run_start" and isinstance(event.get("query"), str):
            query = " ".join(event["query"].split())
            if query:
                return "RLM: " + (query if len(query) <= 80 else query[:79] + "…")
    return f"RLM trajectory {source}" if source else "RLM trajectory"


def render_page(
    title: str,
    data: Any,
    script: str,
    *,
    data_id: str,
    generator: str,
    what: str,
    css: str = "",
    data_images: bool = False,
) -> str:
    """One self-contained HTML page: ``data`` as JSON in element ``data_id``, shown by ``script``.

    ``script`` (made with :func:`page_script`) reads the data and builds the DOM
    with text nodes only. The page needs no network: CSS and JS are inline, and
    the Content-Security-Policy lets nothing but that script (named by its hash)
    run. ``css`` is added to the viewer's own styles; ``what`` names the data in
    the note shown without JavaScript. ``data_images`` lets the page show images
    from ``data:`` URLs (the script must make them only from checked base64).
    """
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )
    if data_images:  # images from data: URLs the script made, and nothing from anywhere else
        csp += "; img-src data:"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{html.escape(generator)}">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{_CSS}{css}</style>\n</head>\n<body>\n"
        f'<main id="app"><noscript><p>This page needs JavaScript to show the {html.escape(what)}; '
        f"the data is in the {data_id} element of its source.</p></noscript></main>\n"
        f'<script type="application/json" id="{data_id}">{_embedded_json(data)}</script>\n'
        f"<script>{script}</script>\n"
        "</body>\n</html>\n"
    )


def render_html(events: Iterable[dict[str, Any]], source: str | None = None) -> str:
    """One self-contained HTML page showing the trajectory ``events`` (of any number of runs).

    ``source`` (the file's name, say) is only used in the page's title when no run
    has a query. The page needs no network: CSS and JS are inline, and the
    Content-Security-Policy lets nothing but its own script run.
    """
    items = [dict(event) for event in events]
    return render_page(
        _title(items, source),
        items,
        _JS,
        data_id="trajectory-data",
        generator="sandlot rlm view",
        what="trajectory",
    )


def write_html(jsonl_path: str | Path, html_path: str | Path | None = None) -> Path:
    """Render the trajectory at ``jsonl_path`` to ``html_path`` and return where it went.

    By default the page goes next to the trajectory, ``x.jsonl`` -> ``x.html``.
    Raises ``OSError`` if a file cannot be read or written, and ``ValueError`` if
    ``jsonl_path`` is not a JSONL trajectory (``UnicodeDecodeError`` for a binary
    file) or holds no event.
    """
    source = Path(jsonl_path)
    target = Path(html_path) if html_path is not None else source.with_suffix(".html")
    events = list(read_trajectory(source))
    if not events:
        raise ValueError(f"{source}: no trajectory events in it")
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(f"{target}: the page would overwrite the trajectory itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8", opener=private_opener) as out:  # it quotes sandboxes
        out.write(render_html(events, source=source.name))
    return target
