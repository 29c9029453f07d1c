# Sent as text to an RLM sandbox's REPL by sandlot/rlm/prelude.py; never run on the host.
import json as _rlm_json
import os as _rlm_os


class RLMSubmitted(BaseException):
    """The answer was submitted; the rest of this code block does not run."""


def _rlm_plain(value):
    # The answer crosses to the host as JSON; anything else becomes its str().
    return _rlm_json.loads(_rlm_json.dumps(value, default=str))


def _rlm_load_context(path, kind):
    global context
    with open(path, encoding="utf-8") as f:
        context = f.read() if kind == "text" else _rlm_json.load(f)
    _rlm_os.remove(path)  # in memory now: a snapshot or fork need not carry it twice


def SUBMIT(*args, **kwargs):
    """Finish with an answer: SUBMIT(value), or SUBMIT(name=value, ...) for several."""
    if args and kwargs:
        raise TypeError("SUBMIT takes one value or keyword values, not both")
    if len(args) > 1:
        raise TypeError(f"SUBMIT takes one value (got {len(args)}); pass a list or keywords")
    if not args and not kwargs:
        raise TypeError("SUBMIT needs the answer: SUBMIT(value)")
    _rlm_submit(_rlm_plain(args[0] if args else kwargs), "SUBMIT")
    raise RLMSubmitted("answer submitted")


def FINAL(value):
    """Finish with ``value`` as the answer (as text)."""
    _rlm_submit(str(value), "FINAL")
    raise RLMSubmitted("answer submitted")


def FINAL_VAR(name):
    """Finish with the value of the REPL variable called ``name``."""
    if isinstance(name, str) and name.strip().isidentifier():
        key = name.strip()
        if key not in globals():
            made = ", ".join(SHOW_VARS()) or "none yet"
            raise NameError(f"FINAL_VAR: there is no variable {key!r}; variables: {made}")
        value = globals()[key]
    else:
        value = name
    _rlm_submit(_rlm_plain(value), "FINAL_VAR")
    raise RLMSubmitted("answer submitted")


def SHOW_VARS():
    """The variables made in this REPL so far, with their types."""
    return {
        k: type(v).__name__
        for k, v in globals().items()
        if not k.startswith("_") and k not in _RLM_RESERVED and k != "context"
    }


def _rlm_poll():
    a = globals().get("answer")
    if isinstance(a, dict) and a.get("ready"):
        _rlm_submit(_rlm_plain(a.get("content")), "answer")


def _rlm_partial():
    a = globals().get("answer")
    if isinstance(a, dict) and a.get("content") not in (None, ""):
        _rlm_submit(_rlm_plain(a.get("content")), "partial")


answer = {"content": "", "ready": False}
if "_RLM_RESERVED" not in globals():  # a forked child keeps its parent's: their variables show
    _RLM_RESERVED = set(globals()) | {"answer"}
