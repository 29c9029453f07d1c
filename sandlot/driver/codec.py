"""Values that cross a sandbox boundary: JSON-like data, bytes and arrays, compactly.

``encode`` turns a value into a JSON-able structure plus one bytes payload;
binary parts (bytes, numpy arrays, torch tensors) and strings longer than
:data:`INLINE_STR` characters live in the payload and are referenced from the
structure by offset, so an embedding or an image never travels as a list of
floats or as base64, and a long prompt is copied once instead of JSON-escaped.
``decode`` reverses it; arrays come back as numpy arrays (torch tensors included:
the receiving side may not have torch). Anything else fails with a ``TypeError``
that names the type and says what can cross.

Standard library only; numpy and torch are used when the value is one of theirs.
"""

from __future__ import annotations

from .protocol import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

INLINE_STR = 256  # longer strings travel as UTF-8 bytes in the payload
ALLOWED = (
    "JSON values (str, int, float, bool, None, list, dict with str keys), bytes, "
    "numpy arrays or torch tensors"
)


class MalformedValue(ValueError):
    """A structure that ``encode`` cannot have made (a forged or corrupted message)."""


class NumpyMissing(TypeError):
    """A numpy array arrived where numpy is not installed."""


class _Missing:
    """Stands for an argument a generated library stub was not given (the default applies)."""

    def __repr__(self) -> str:
        return "<default>"


MISSING = _Missing()


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        ref = [self.size, len(data)]
        self.parts.append(data)
        self.size += len(data)
        return ref


def _encode(value: Any, out: _Writer, where: str) -> Any:
    if isinstance(value, str):
        if len(value) <= INLINE_STR:
            return value
        return {"$s": out.add(value.encode("utf-8", "surrogatepass"))}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if value is MISSING:
        return {"$missing": 1}
    if isinstance(value, (list, tuple)):
        return [_encode(v, out, where) for v in value]
    if isinstance(value, dict):
        encoded = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where}: a dict key of type {type(key).__name__} cannot cross "
                    f"the sandbox boundary; use str keys"
                )
            encoded[key] = _encode(v, out, where)
        if len(encoded) == 1 and next(iter(encoded)).startswith("$"):
            return {"$dict": encoded}  # keep a user's {"$b": ...} from reading as a tag
        return encoded
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": out.add(bytes(value))}
    module = type(value).__module__.split(".")[0]
    if module == "torch" and hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
        module = "numpy"
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray) and value.dtype != object:
            arr = np.ascontiguousarray(value)
            return {
                "$nd": {
                    "dtype": arr.dtype.str,
                    "shape": list(arr.shape),
                    "data": out.add(arr.tobytes()),
                }
            }
    raise TypeError(
        f"{where}: a value of type {type(value).__module__}.{type(value).__qualname__}"
        f" cannot cross the sandbox boundary; use {ALLOWED}"
    )


def encode(value: Any, where: str = "value") -> tuple[Any, bytes]:
    """``value`` as (JSON-able structure, payload); ``where`` names it in errors."""
    out = _Writer()
    structure = _encode(value, out, where)
    return structure, b"".join(out.parts)


class _Budget:
    """What decoding may still copy out of the payload: its size, once over.

    A forged structure could point at the same large slice a thousand times;
    each reference costs its size, so a value never takes more than its payload.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = memoryview(payload)
        self.left = len(payload)

    def take(self, ref: Any) -> memoryview:
        """The payload bytes ``ref`` points at (a view: callers copy what they keep)."""
        if (
            type(ref) is not list
            or len(ref) != 2
            or not all(type(x) is int and x >= 0 for x in ref)
            or ref[0] + ref[1] > len(self.payload)
        ):
            raise MalformedValue(f"a payload reference {ref!r} is not [offset, size] within it")
        start, size = ref
        self.left -= size
        if self.left < 0:
            raise MalformedValue("the value's references add up to more than its payload")
        return self.payload[start : start + size]


def _decode(obj: Any, budget: _Budget) -> Any:
    if isinstance(obj, list):
        return [_decode(v, budget) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((key, inner),) = obj.items()
        if key == "$s":
            return str(budget.take(inner), "utf-8", "surrogatepass")
        if key == "$b":
            return bytes(budget.take(inner))
        if key == "$nd":
            try:
                import numpy as np
            except ImportError:
                raise NumpyMissing(
                    "a numpy array arrived, but numpy is not installed here; add "
                    "'numpy' to this sandbox's python_packages"
                ) from None
            if type(inner) is not dict:
                raise MalformedValue("an array's description is not an object")
            data = budget.take(inner.get("data"))
            dtype = np.dtype(inner.get("dtype"))
            if dtype.hasobject or dtype.itemsize == 0:
                raise MalformedValue(f"an array of dtype {dtype} cannot cross")
            flat = np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)
            return flat.reshape(inner.get("shape")).copy()
        if key == "$missing":
            return MISSING
        if key == "$dict":
            if type(inner) is not dict:
                raise MalformedValue("an escaped dict is not an object")
            return {k: _decode(v, budget) for k, v in inner.items()}
    return {k: _decode(v, budget) for k, v in obj.items()}


def decode(structure: Any, payload: bytes) -> Any:
    """The value that ``encode`` turned into ``structure`` and ``payload``.

    A structure ``encode`` could not have made raises :class:`MalformedValue`.
    """
    try:
        return _decode(structure, _Budget(payload))
    except (MalformedValue, NumpyMissing):
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedValue(f"a value could not be decoded: {type(exc).__name__}: {exc}") from None
