/* exported has, secs, cost, oneLine, block, fact, chips -- for the page's own script,
   which page_script() puts after this file */

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

