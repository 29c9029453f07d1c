"""A REPL's variables as bytes and back: the interpreter part of a snapshot.

:func:`capture` writes every variable of a namespace that pickle can hold to a
file object, one record per variable, and says which it could not hold and why
(a thread, a socket, an open file, a generator). Functions and classes defined
in the REPL's cells travel by value (their code, defaults, closures, methods),
since no module on the restoring side defines them; everything else as pickle
does it. Modules bound to names travel as their import names and are imported
again (after the entries of ``sys.path`` that exist on the restoring side are
put back). The cells' source goes along, so tracebacks and
``inspect.getsource`` still show it after a restore.

:func:`restore` reads such bytes into a namespace and says, variable by
variable, what it could not bring back (a module not installed here, a class
whose module is gone, code made by another Python version). It runs in the
sandbox only: unpickling runs code, and the host never does it.

The blob: a line ``sandlot-state 1``, the records (one pickler, one ``dump``
each), then a JSON trailer (the index) and its length as 8 bytes.
Standard library only, as the rest of the driver.
"""

from __future__ import annotations

import importlib
import io
import json
import linecache
import marshal
import os
import pickle
import struct
import sys
import types
from collections.abc import Iterable
from typing import Any, Protocol

MAGIC = b"sandlot-state 1\n"
MAX_WHY = 300  # characters of an error kept in a report
MAX_NAME = 200  # characters of a variable's name kept in a report
MAX_LISTED = 2000  # names a report lists (a reply's header stays well under 1 MiB)
# Names a namespace has for the interpreter's or the driver's sake, not the user's.
NOT_STATE = frozenset(
    {
        "__builtins__",
        "__name__",
        "__doc__",
        "__loader__",
        "__spec__",
        "__package__",
        "__warningregistry__",
        "ToolError",
    }
)
_VERSION = list(sys.version_info[:2])
_target: dict[str, Any] = {}  # the namespace a restore is filling


class Writer(Protocol):
    """Where :func:`capture` writes: anything with ``write``."""

    def write(self, data: bytes, /) -> int:
        """Write ``data``; return its length."""
        ...


class _Empty:
    """Stands for a closure cell that held nothing."""


def _make_function(
    code: bytes, name: str, cells: int, version: list[int], module: str | None = None
) -> types.FunctionType:
    """A function of the cells, with globals the REPL's (or, named, a module's)."""
    if version != _VERSION:
        made = ".".join(map(str, version))
        here = ".".join(map(str, _VERSION))
        raise ValueError(f"its code was made by Python {made}; this is Python {here}")
    closure = tuple(types.CellType() for _ in range(cells)) or None
    scope = _target if module is None else importlib.import_module(module).__dict__
    return types.FunctionType(marshal.loads(code), scope, name, None, closure)


def _set_function_state(fn: types.FunctionType, state: dict[str, Any]) -> None:
    for cell, value in zip(fn.__closure__ or (), state.pop("closure"), strict=True):
        if value is not _Empty:
            cell.cell_contents = value
    fn.__dict__.update(state.pop("dict"))
    for attr, value in state.items():
        setattr(fn, attr, value)


def _make_class(meta: type, name: str, bases: tuple[type, ...], body: dict[str, Any]) -> type:
    made: type = meta(name, bases, body)
    return made


def _set_class_state(cls: type, attrs: dict[str, Any]) -> None:
    for attr, value in attrs.items():
        setattr(cls, attr, value)
    for attr, value in attrs.items():  # as a class statement would (a cached_property needs it)
        hook = getattr(type(value), "__set_name__", None)
        if hook is not None:
            hook(value, cls, attr)


def _lru_cached(fn: types.FunctionType, maxsize: int | None, typed: bool) -> Any:
    import functools

    return functools.lru_cache(maxsize=maxsize, typed=typed)(fn)


def _mapping_proxy(mapping: dict[str, Any]) -> types.MappingProxyType[str, Any]:
    return types.MappingProxyType(mapping)


def _module_attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


# Objects of the standard library that are compared by identity: they travel as names.
_SINGLETONS = {
    "dataclasses": (
        "MISSING",
        "KW_ONLY",
        "_FIELD",
        "_FIELD_CLASSVAR",
        "_FIELD_INITVAR",
        "_HAS_DEFAULT_FACTORY",
    ),
}


def _singleton(obj: Any) -> tuple[str, str] | None:
    for module, names in _SINGLETONS.items():
        loaded = sys.modules.get(module)
        if loaded is None:
            continue
        for name in names:
            if getattr(loaded, name, None) is obj:
                return module, name
    return None


# What a class's __dict__ holds that its creation makes again.
_MADE_BY_CLASS = frozenset({"__dict__", "__weakref__", "_abc_impl", "__slotnames__"})


class _Pickler(pickle.Pickler):
    """Pickles functions and classes of ``namespace``'s cells by value."""

    def __init__(self, file: Writer, namespace: dict[str, Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.namespace = namespace

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.FunctionType and (
            obj.__globals__ is self.namespace or self._of_cells(obj)
        ):
            return self._function(obj)
        if isinstance(obj, type) and self._of_cells(obj):
            return self._class(obj)
        if kind is property:
            return property, (obj.fget, obj.fset, obj.fdel, obj.__doc__)
        if kind is staticmethod or kind is classmethod:
            return kind, (obj.__func__,)
        if kind is types.MappingProxyType:
            return _mapping_proxy, (dict(obj),)
        functools = sys.modules.get("functools")
        if functools is not None and kind is functools.cached_property:
            return functools.cached_property, (obj.func,)
        if functools is not None and kind is functools._lru_cache_wrapper:
            wrapped = obj.__wrapped__
            if type(wrapped) is types.FunctionType and (
                wrapped.__globals__ is self.namespace or self._of_cells(wrapped)
            ):  # a cell's function: cached again (empty) on the restoring side
                params = obj.cache_parameters()
                return _lru_cached, (wrapped, params["maxsize"], params["typed"])
        found = _singleton(obj)
        if found is not None:
            return _module_attribute, found
        return NotImplemented

    def _of_cells(self, obj: Any) -> bool:
        """True for a class or function of the cells: of the REPL's module, which no import finds.

        (An IPython shell's ``__main__`` module is a view of its namespace: what is
        found there is still the cells', gone on the restoring side until restored.
        A dataclass's generated methods are the cells' too.)
        """
        if obj.__module__ != self.namespace.get("__name__"):
            return False
        module = sys.modules.get(obj.__module__)
        if getattr(module, "__dict__", None) is self.namespace:
            return True
        found: Any = module
        for part in obj.__qualname__.split("."):
            found = getattr(found, part, None)
        return found is not obj

    def _function(self, fn: types.FunctionType) -> Any:
        closure = []
        for cell in fn.__closure__ or ():
            try:
                closure.append(cell.cell_contents)
            except ValueError:
                closure.append(_Empty)
        state = {
            "closure": closure,
            "dict": dict(fn.__dict__),
            "__qualname__": fn.__qualname__,
            "__module__": fn.__module__,
            "__doc__": fn.__doc__,
            "__defaults__": fn.__defaults__,
            "__kwdefaults__": fn.__kwdefaults__,
            "__annotations__": fn.__annotations__,
        }
        module = None
        if fn.__globals__ is not self.namespace:  # made by a library for the cells (a dataclass)
            module = next(
                (n for n, m in list(sys.modules.items()) if vars(m) is fn.__globals__), None
            )
            if module is None:
                raise TypeError(f"{fn.__qualname__}: its globals are no module's")
        args = (marshal.dumps(fn.__code__), fn.__name__, len(closure), _VERSION, module)
        return _make_function, args, state, None, None, _set_function_state

    def _class(self, cls: type) -> Any:
        enum = sys.modules.get("enum")
        if enum is not None and isinstance(cls, enum.EnumMeta):
            raise TypeError(
                "an Enum defined in a cell cannot be rebuilt by value; "
                "define it in a module in the workdir and import it"
            )
        slots = cls.__dict__.get("__slots__", ())
        slots = (slots,) if isinstance(slots, str) else tuple(slots)
        body: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        if "__slots__" in cls.__dict__:
            body["__slots__"] = slots
        attrs = {
            k: v
            for k, v in cls.__dict__.items()
            if k not in _MADE_BY_CLASS and k not in body and k not in slots
        }
        args = (type(cls), cls.__name__, cls.__bases__, body)
        return _make_class, args, attrs, None, None, _set_class_state


# Types pickle always holds, whose dry run would only cost time (large bytes, say).
_ALWAYS_PICKLED = frozenset({bytes, bytearray, str, int, float, complex, bool, type(None)})


class _Counter:
    """A write-only file that only counts."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_WHY]


def capture(
    namespace: dict[str, Any],
    out: Writer,
    leave_out: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Write ``namespace``'s variables to ``out``; return what went and what could not, and why.

    ``leave_out`` names variables the driver put there (the host's tools), which
    the restoring side binds afresh: they are listed apart, not pickled.
    ``ignore`` names what is not the user's state (a shell's history).
    """
    leave = set(leave_out)
    ignored = NOT_STATE | set(ignore)
    counter = _Counter()
    written = 0

    def put(data: bytes) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    put(MAGIC)
    records: list[list[Any]] = []  # [name, start, end, fresh memo]
    skipped: list[dict[str, str]] = []
    modules: dict[str, str] = {}
    tools: list[str] = []
    record = io.BytesIO()
    pickler = _Pickler(record, namespace)
    fresh = True
    for name, value in list(namespace.items()):
        if name in ignored:
            continue
        if name in leave:
            tools.append(name)
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            if type(value) not in _ALWAYS_PICKLED:  # a dry run: a failure costs no sharing
                _Pickler(counter, namespace).dump(value)
        except Exception as exc:
            skipped.append({"name": name, "type": type(value).__qualname__, "why": _why(exc)})
            continue
        try:
            pickler.dump(value)
        except Exception as exc:  # it passed the dry run: rare, and it costs the sharing
            skipped.append({"name": name, "type": type(value).__qualname__, "why": _why(exc)})
            pickler.clear_memo()  # what it memoized refers to bytes that were dropped
            record.seek(0)
            record.truncate()
            fresh = True
            continue
        start = written
        with record.getbuffer() as view:
            put(view)  # type: ignore[arg-type]  # a file object takes any buffer
        records.append([name, start, written, fresh])
        record.seek(0)
        record.truncate()
        fresh = False
    cells = {
        name: "".join(entry[2])
        for name, entry in list(linecache.cache.items())
        if name.startswith("<cell-") and len(entry) == 4
    }
    trailer = json.dumps(
        {
            "python": _VERSION,
            "records": records,
            "modules": modules,
            "cells": cells,
            "path": [p for p in sys.path if isinstance(p, str)],
        }
    ).encode()
    put(trailer)
    put(struct.pack(">Q", len(trailer)))
    return _report(
        captured=[r[0] for r in records],
        skipped=skipped,
        modules=sorted(modules),
        tools=sorted(tools),
        cells=len(cells),
    )


def _report(**lists: Any) -> dict[str, Any]:
    """A report with at most :data:`MAX_LISTED` entries a list; ``unlisted`` counts the rest."""
    report: dict[str, Any] = {"unlisted": 0}
    for key, value in lists.items():
        if not isinstance(value, list):
            report[key] = value
            continue
        report["unlisted"] += max(0, len(value) - MAX_LISTED)
        report[key] = [
            {**v, "name": v["name"][:MAX_NAME]} if isinstance(v, dict) else v[:MAX_NAME]
            for v in value[:MAX_LISTED]
        ]
    return report


def _index(blob: bytes) -> dict[str, Any]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 8:
        raise ValueError("not a sandlot REPL state (its first line is wrong)")
    (size,) = struct.unpack(">Q", blob[-8:])
    if size > len(blob) - len(MAGIC) - 8:
        raise ValueError("a REPL state whose index is longer than the state")
    index = json.loads(blob[-8 - size : -8])
    if not isinstance(index, dict):
        raise ValueError("a REPL state whose index is not an object")
    return index


def restore(namespace: dict[str, Any], blob: bytes) -> dict[str, Any]:
    """Load a :func:`capture` blob into ``namespace``; return what came back and what did not."""
    index = _index(blob)
    failed: list[dict[str, str]] = []
    restored: list[str] = []
    for entry in reversed(index.get("path", [])):  # where the modules were found, if here too
        if isinstance(entry, str) and entry not in sys.path and os.path.isdir(entry):
            sys.path.insert(0, entry)
    for name, module in index.get("modules", {}).items():
        try:
            namespace[name] = importlib.import_module(module)
        except BaseException as exc:  # an import's own code may raise anything
            failed.append({"name": name, "type": "module", "why": _why(exc)})
            continue
        restored.append(name)
    for name, source in index.get("cells", {}).items():
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    global _target
    _target = namespace
    view = io.BytesIO(blob)
    unpickler: pickle.Unpickler | None = None
    for name, start, end, fresh in index.get("records", []):
        if unpickler is None or fresh:
            unpickler = pickle.Unpickler(view)
        view.seek(start)
        try:
            value = unpickler.load()
            if view.tell() != end:
                raise ValueError("its record is longer than the index says")
        except BaseException as exc:  # unpickling runs the objects' own code
            failed.append({"name": name, "type": "?", "why": _why(exc)})
            memo = unpickler.memo
            unpickler = pickle.Unpickler(view)
            unpickler.memo = memo
            continue
        namespace[name] = value
        restored.append(name)
    numbers = [name[len("<cell-") : -1] for name in index.get("cells", {})]
    last = max((int(n) for n in numbers if n.isdigit()), default=0)
    return _report(restored=restored, failed=failed, last_cell=last)


# An IPython shell's names that are its history and its own, not the user's state.
_SHELL_NAMES = frozenset({"In", "Out", "_", "__", "___", "_ih", "_oh", "_dh", "exit", "quit"})


def _shell_ignores(shell: Any) -> list[str]:
    hidden = set(getattr(shell, "user_ns_hidden", {})) | _SHELL_NAMES
    return [
        name
        for name in shell.user_ns
        if name in hidden
        or (name.startswith("_i") and name[2:].isdigit())
        or (name[:1] == "_" and name[1:].isdigit())
        or name in ("_i", "_ii", "_iii")
    ]


def capture_shell(shell: Any, state_path: str, report_path: str) -> None:
    """In an IPython kernel: :func:`capture` its user namespace to files the host reads."""
    with open(state_path, "wb") as out:
        report = capture(shell.user_ns, out, ignore=_shell_ignores(shell))
    with open(report_path, "w") as f:
        json.dump(report, f)


def restore_shell(shell: Any, state_path: str, report_path: str) -> None:
    """In an IPython kernel: :func:`restore` a captured state into its user namespace."""
    with open(state_path, "rb") as f:
        report = restore(shell.user_ns, f.read())
    with open(report_path, "w") as f:
        json.dump(report, f)
