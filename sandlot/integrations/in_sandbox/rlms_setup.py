# Sent as text to a SandlotREPL's REPL by integrations/rlms.py; never run on the host.
# llm_query, llm_query_batched, rlm_query, rlm_query_batched and the user's callable
# tools are host tools: the host registered them before this ran.
import reprlib as _sandlot_rlms_reprlib

_SANDLOT_RLMS_SHOWN_TYPES = (str, int, float, bool, list, dict, tuple)
_SANDLOT_RLMS_MAX_VARS = 200  # names reported back to the host after each block
_SANDLOT_RLMS_MAX_REPR = 120  # characters of each one's short repr


class _SandlotRlmsAnswer(dict):
    """rlms's ``answer`` dict: setting ``answer["ready"]`` to a true value hands the
    content (as ``str``) to the host, which ends the run with it."""

    def __init__(self):
        super().__init__(content="", ready=False)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if key == "ready" and value:
            _sandlot_rlms_final(str(self.get("content", "")), False)


def SHOW_VARS():
    """Show all available variables in the REPL environment."""
    available = {
        k: type(v).__name__
        for k, v in globals().items()
        if not k.startswith("_") and k not in _sandlot_rlms_hidden and k != "answer"
    }
    if not available:
        return "No variables created yet. Use ```repl``` blocks to create variables."
    return f"Available variables: {available}"


def _sandlot_rlms_load(name, path, kind):
    """Bind ``name`` to the text (kind "text") or JSON value in the file the host wrote."""
    import json
    import os

    with open(path, "rb") as f:
        data = f.read().decode("utf-8", "surrogatepass")
    os.remove(path)
    globals()[name] = data if kind == "text" else json.loads(data)


def _sandlot_rlms_after():
    """After each code block, as rlms's LocalREPL does: put back the names the code may
    have rebound (the helpers, ``answer``, ``context``), hand a final answer set on a
    rebound ``answer`` dict to the host, and report the variables the block left."""
    namespace = globals()
    namespace.update(_sandlot_rlms_fixed)
    current = namespace.get("answer")
    if not isinstance(current, _SandlotRlmsAnswer):
        replacement = _SandlotRlmsAnswer()
        if isinstance(current, dict):
            dict.update(replacement, current)
            if current.get("ready"):
                _sandlot_rlms_final(str(current.get("content", "")), True)
        namespace["answer"] = replacement
    if "context_0" in namespace:
        namespace["context"] = namespace["context_0"]
    shown = {}
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in _sandlot_rlms_hidden:
            continue
        if isinstance(value, _SANDLOT_RLMS_SHOWN_TYPES):
            shown[name] = _sandlot_rlms_reprlib.repr(value)[:_SANDLOT_RLMS_MAX_REPR]
            if len(shown) >= _SANDLOT_RLMS_MAX_VARS:
                break
    _sandlot_rlms_vars(shown)


answer = _SandlotRlmsAnswer()
_sandlot_rlms_fixed = {
    name: globals()[name]
    for name in ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "SHOW_VARS")
}
# What the environment itself put here (helpers, host tools): not the code's variables.
_sandlot_rlms_hidden = set(globals()) - {"answer"}
