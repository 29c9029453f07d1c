# Sent as text to a SandlotInterpreter's REPL by integrations/dspy.py; never run on the host.
class _SandlotDspySubmit(BaseException):
    """Raised by SUBMIT to end the code; its fields have already reached the host."""


_sandlot_dspy_texts = {}


def _sandlot_dspy_plain(obj):
    if isinstance(obj, (set, frozenset)):  # sorted, so the same set reads the same every run
        try:
            return sorted(obj)
        except TypeError:
            return sorted(obj, key=lambda item: (type(item).__name__, repr(item)))
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return repr(obj)


def _sandlot_dspy_keys(value, changed):
    """value with dict keys of None, bool, int or float as JSON writes them (1 -> "1",
    None -> "null"); appends to changed when it changed one."""
    if isinstance(value, dict):
        import json

        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                if key is not None and not isinstance(key, (bool, int, float)):
                    raise TypeError(key)
                key = json.dumps(key)
                changed.append(key)
            plain[key] = _sandlot_dspy_keys(item, changed)
        return plain
    if isinstance(value, (list, tuple)):
        return [_sandlot_dspy_keys(item, changed) for item in value]
    return value


def _sandlot_dspy_tool(stub):
    """A host tool as dspy's interpreters call it: dict keys of None, bool, int or float
    are sent as JSON writes them, where sandlot alone would refuse them. Its errors
    show the caller's line and the tool's name, not the driver's frames."""
    import functools

    @functools.wraps(stub)
    def tool(*args, **kwargs):
        try:
            try:
                return stub(*args, **kwargs)
            except TypeError:  # raised in the sandbox, before the call left it
                changed = []
                try:
                    args, kwargs = _sandlot_dspy_keys([list(args), kwargs], changed)
                except (TypeError, ValueError, RecursionError):
                    changed = []
                if not changed:
                    raise
            return stub(*args, **kwargs)
        except (ToolError, TypeError) as exc:
            raise exc.with_traceback(None) from None

    tool.__code__ = tool.__code__.replace(co_name=stub.__name__, co_filename="<host tool>")
    return tool


def _sandlot_dspy_wrap(names):
    namespace = globals()
    for name in names:
        namespace[name] = _sandlot_dspy_tool(namespace[name])


def _sandlot_dspy_pairs(obj):
    pairs = obj.get("_sandlot_dspy_pairs") if len(obj) == 1 else None
    return obj if pairs is None else {key: value for key, value in pairs}


def _sandlot_dspy_send(value):
    """Send value to the host: as it is, else its JSON form (repr for what JSON lacks)."""
    try:
        _sandlot_dspy_receive(value)
        return
    except TypeError:  # something in it cannot cross the sandbox boundary
        pass
    import json

    try:
        plain = json.loads(json.dumps(value, default=_sandlot_dspy_plain))
    except (TypeError, ValueError):
        plain = repr(value)
    _sandlot_dspy_receive(plain)


def _sandlot_dspy_submit(fields):
    _sandlot_dspy_send(fields)
    raise _SandlotDspySubmit()


def _sandlot_dspy_load(drop, texts, json_path, pairs):
    import json
    import os

    namespace = globals()
    for name in drop:
        namespace.pop(name, None)
    for name, path in texts:
        if path is not None:
            with open(path, "rb") as f:
                _sandlot_dspy_texts[name] = f.read().decode("utf-8", "surrogatepass")
            os.remove(path)
        namespace[name] = _sandlot_dspy_texts[name]
    if json_path is not None:
        with open(json_path, "rb") as f:
            hook = _sandlot_dspy_pairs if pairs else None
            values = json.loads(f.read().decode("utf-8", "surrogatepass"), object_hook=hook)
        os.remove(json_path)
        for name in values:
            _sandlot_dspy_texts.pop(name, None)
        namespace.update(values)
