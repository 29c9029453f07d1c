# Sent as text to a SandlotExecutor's REPL by integrations/smolagents.py; never run on the host.
class _SandlotSmolFinal(BaseException):
    """Raised by final_answer to end the code; its value has already reached the host.

    A BaseException, as smolagents' own FinalAnswerException, so that the code's
    ``except Exception:`` does not swallow it."""


def _sandlot_smol_plain(value):
    """value as JSON data: sets as sorted lists, arrays as lists, anything else as str()."""
    import json

    def plain(obj):
        if isinstance(obj, (set, frozenset)):
            try:
                return sorted(obj)
            except TypeError:
                return sorted(obj, key=repr)
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    try:
        return json.loads(json.dumps(value, default=plain))
    except (TypeError, ValueError):
        return str(value)


def _sandlot_smol_tool(stub, final):
    """A host tool as the code calls it. final_answer sends its value (its plain form if
    the value cannot cross as it is), then ends the code. Errors show the caller's line
    and the tool's name, not the driver's frames."""
    import functools

    @functools.wraps(stub)
    def tool(*args, **kwargs):
        try:
            if not final:
                return stub(*args, **kwargs)
            try:
                stub(*args, **kwargs)
            except TypeError:  # raised here, before the call left: a value that cannot cross
                plain = _sandlot_smol_plain
                stub(*map(plain, args), **{key: plain(value) for key, value in kwargs.items()})
        except (ToolError, TypeError) as exc:
            raise exc.with_traceback(None) from None
        raise _SandlotSmolFinal()

    tool.__code__ = tool.__code__.replace(co_name=stub.__name__, co_filename="<host tool>")
    return tool


def _sandlot_smol_wrap(names, final, drop):
    """Wrap the stubs of the tools in names; remove the tools in drop."""
    namespace = globals()
    for name in drop:
        namespace.pop(name, None)
    for name in names:
        namespace[name] = _sandlot_smol_tool(namespace[name], name == final)


def _sandlot_smol_load():
    """Bind the variables the host holds for this sandbox as globals."""
    globals().update(_sandlot_smol_variables())
