"""The one wire protocol between the host and a sandbox's driver.

Standard library only: this module is imported by the driver inside the sandbox
(where nothing but the interpreter may exist) and by the host.

A frame is ``!II`` (header length, payload length), a UTF-8 JSON header (an
object of at most :data:`MAX_HEADER` bytes) and at most :data:`CHUNK` raw payload
bytes. A message whose payload is larger travels as several frames: the first
carries the header with ``parts: n`` and each of the ``n - 1`` that follow at
once carries only ``{"t": "more"}`` and the next piece of the payload. Large data
(files, process output, strings and bytes inside values) is payload, never
JSON; a value whose JSON structure would not fit in a header travels in the
payload too (``vlen`` says how many of its leading bytes are that JSON).

Header field ``t`` says what a message is:

========  ===========  =====================================================
``t``     direction    meaning
========  ===========  =====================================================
``init``  host→driver  the start-up settings (sent once, first)
``req``   host→driver  a request ``op`` with a fresh ``id``
``data``  host→driver  a chunk of input for request ``id`` (``eof`` ends it)
``cancel`` host→driver cancel request ``id`` (interrupts the REPL, kills a
                       process group)
``ret``   host→driver  the answer to the driver's call ``id``
``ping``  host→driver  nothing but a sign that the host lives (see ``owner_timeout``)
``ready`` driver→host  the driver is up (sent once)
``chunk`` driver→host  streamed output for request ``id``
``res``   driver→host  the final reply to request ``id`` (``ok`` or ``error``)
``call``  driver→host  sandboxed code calls host function ``name``
``more``  both         the next piece of the payload of the message before it
========  ===========  =====================================================

Request ids and call ids are separate spaces: the host numbers requests, the
driver numbers calls.

The host trusts nothing the driver sends (sandboxed code shares the driver's
process and can forge any frame), so every message from a driver is checked
against the shapes below (:func:`check`): what a message may carry is defined
here, once, for both sides.
"""

from __future__ import annotations

import json
import os
import struct

# ``typing.TYPE_CHECKING`` without importing ``typing``: a cold driver imports only what
# serving its first cell needs (``typing`` was about 3 ms of its start).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

PREFIX = struct.Struct("!II")
CHUNK = 1 << 20  # most payload bytes in one frame
REPL_OPS = ("run_code", "serve", "save_state", "load_state")  # run in turn with the cells
IN_CALL_OPS = ("save_state",)  # of those, what runs while the running cell waits on the host
MAX_HEADER = 1 << 20  # most JSON bytes in one frame's header
MAX_MESSAGE = 1 << 28  # most payload bytes in one message (256 MiB), all its frames together
MAX_TEXT = 1 << 16  # most characters of an error's message or traceback kept in a header
MAX_CELL_OUTPUT = 96 << 20  # most output (and most value) a cell keeps: its reply fits a message

if TYPE_CHECKING:
    Header = dict[str, Any]
    Send = Callable[[Header, bytes], None]  # sends a header and its payload to the host
    Validator = Callable[[Any], bool]

    class ByteStream(Protocol):
        """What the driver speaks the protocol over: a connected socket, or a PipeStream."""

        def recv_into(self, buffer: memoryview, nbytes: int) -> int:
            """Read at most ``nbytes`` into ``buffer``; 0 at end of stream."""
            ...

        def sendall(self, data: bytes) -> None:
            """Write all of ``data``."""
            ...

else:
    Header = dict  # the host's modules name it at run time


class ProtocolError(Exception):
    """A message that does not follow the protocol (bad sizes, bad JSON, a wrong shape)."""


# -- framing -------------------------------------------------------------------


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once, not per call
_MORE = b'{"t":"more"}'


def _dumps(header: Any) -> bytes:
    return _encoder.encode(header).encode()


def encode(header: Header, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Return the frames of one message carrying ``header`` and ``payload``.

    A ``value`` whose JSON would make the header too big moves to the front of
    the payload (``vlen`` says how many bytes it takes there; see :func:`take_value`).
    """
    head = _dumps(header)
    if len(head) > MAX_HEADER - 64 and "value" in header:
        blob = _dumps(header["value"])
        header = {k: v for k, v in header.items() if k != "value"} | {"vlen": len(blob)}
        payload = blob + bytes(payload)
        head = _dumps(header)
    payload = memoryview(payload)
    if len(payload) > MAX_MESSAGE:
        raise ProtocolError(
            f"a message of {len(payload)} bytes is over the protocol's {MAX_MESSAGE} byte limit"
        )
    parts = max(1, -(-len(payload) // CHUNK))
    if parts > 1:
        head = head[:-1] + b',"parts":%d}' % parts
    if len(head) > MAX_HEADER:
        raise ProtocolError(f"a header of {len(head)} bytes is over the {MAX_HEADER} byte limit")
    if parts == 1:
        return PREFIX.pack(len(head), len(payload)) + head + payload
    first = payload[:CHUNK]
    out: list[bytes | memoryview] = [PREFIX.pack(len(head), len(first)), head, first]
    for start in range(CHUNK, len(payload), CHUNK):
        piece = payload[start : start + CHUNK]
        out += [PREFIX.pack(len(_MORE), len(piece)), _MORE, piece]
    return b"".join(out)


def check_sizes(head_len: int, payload_len: int) -> None:
    """Reject a frame prefix whose sizes exceed the protocol's bounds."""
    if not 0 < head_len <= MAX_HEADER or payload_len > CHUNK:
        raise ProtocolError(
            f"a frame of header {head_len} B and payload {payload_len} B is outside the "
            f"protocol's bounds (header 1..{MAX_HEADER} B, payload at most {CHUNK} B)"
        )


def decode_header(raw: bytes) -> Header:
    """Parse a frame's JSON header, which must be an object with a string ``t``."""
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"a frame header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise ProtocolError("a frame header is not a JSON object with a string field 't'")
    return header


def parts_of(header: Header) -> int:
    """How many frames the message that starts with ``header`` has (checked)."""
    parts = header.get("parts", 1)
    if type(parts) is not int or not 1 <= parts <= MAX_MESSAGE // CHUNK:
        raise ProtocolError(f"'parts' must be an integer from 1 to {MAX_MESSAGE // CHUNK}")
    return parts


def check_more(header: Header) -> None:
    """A continuation frame carries nothing but ``t: more``."""
    if header != {"t": "more"}:
        raise ProtocolError("a continuation frame of a message is not {'t': 'more'}")


class PipeStream:
    """Descriptors as a byte stream: read from one, write to another (or the same one).

    For a driver whose channel is its stdin and stdout (a remote process, say,
    reached through ``ssh`` or ``kubectl exec``): any byte stream carries frames.
    A local driver's socket is one too, read and written as a descriptor: the
    ``socket`` module (about 3 ms of a cold start, with ``selectors`` and its
    enums) loads only if the sandbox's code asks for it.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    def recv_into(self, buffer: memoryview, nbytes: int) -> int:
        """Read at most ``nbytes`` into ``buffer``; 0 at end of stream."""
        return os.readv(self.read_fd, [buffer[:nbytes]])

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]


def _recv_exact(sock: ByteStream, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            return None
        got += n
    return bytes(buf)


def _read_one(sock: ByteStream) -> tuple[Header, bytes] | None:
    prefix = _recv_exact(sock, PREFIX.size)
    if prefix is None:
        return None
    head_len, payload_len = PREFIX.unpack(prefix)
    check_sizes(head_len, payload_len)
    head = _recv_exact(sock, head_len)
    payload = _recv_exact(sock, payload_len) if payload_len else b""
    if head is None or payload is None:
        return None
    return decode_header(head), payload


def read_frame(sock: ByteStream) -> tuple[Header, bytes] | None:
    """Read one whole message from a blocking byte stream; ``None`` at end of stream."""
    first = _read_one(sock)
    if first is None:
        return None
    header, payload = first
    parts = parts_of(header)
    if parts == 1:
        return header, payload
    pieces = [payload]
    for _ in range(parts - 1):
        nxt = _read_one(sock)
        if nxt is None:
            return None
        check_more(nxt[0])
        pieces.append(nxt[1])
    return header, b"".join(pieces)


# -- values that may be too big for a header ---------------------------------------


def take_value(header: Header, payload: bytes) -> tuple[Any, bytes]:
    """The ``value`` a message carries and the payload after it (see :func:`encode`)."""
    vlen = header.get("vlen")
    if vlen is None:
        return header.get("value"), payload
    if type(vlen) is not int or not 0 <= vlen <= len(payload):
        raise ProtocolError("'vlen' is not a length within the payload")
    try:
        structure = json.loads(payload[:vlen])
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"a value's structure is not JSON: {exc}") from None
    return structure, payload[vlen:]


# -- shapes --------------------------------------------------------------------------
#
# A shape is: a type (``int`` means an integer that is not a bool; ``object``
# anything), ``None``, a tuple of shapes (any one of them), a list holding one
# shape (a list of such), or a dict of field shapes (an object with those fields;
# a field name ending in ``?`` may be absent; other fields are ignored).


class _Id:
    """The shape of a request or call id: an integer from 0 to 2**53."""


ID = _Id()
ERROR: dict[str, Any] = {"name": str, "value": str, "traceback?": str}

FROM_DRIVER: dict[str, dict[str, Any]] = {
    "ready": {"ok": bool, "pid?": int, "python?": str, "executable?": str, "error?": ERROR},
    "chunk": {"id": ID, "stream?": ("stdout", "stderr", "kernel"), "last?": bool},
    "res": {"id": ID, "ok": bool, "error?": (None, ERROR)},
    "call": {"id": ID, "name": str, "value?": object, "vlen?": int, "cell?": bool},
}

# What a listing says an entry is: what ``lstat`` found, the link itself, not its target.
FILE_KINDS = ("file", "dir", "link", "fifo", "socket", "device")

KINDS = (
    "POSITIONAL_ONLY",
    "POSITIONAL_OR_KEYWORD",
    "VAR_POSITIONAL",
    "KEYWORD_ONLY",
    "VAR_KEYWORD",
)
VARIABLE = {"name": str, "type": str, "why": str}  # a REPL variable a snapshot could not hold
SERVED: dict[str, Any] = {  # a served function, as the serving sandbox describes it
    "name": str,
    "concurrent": bool,
    "doc": str,
    "params": [
        {
            "name": str,
            "kind": KINDS,
            "annotation": (str, None),
            "default": (str, None),
            "default_exact": bool,
        }
    ],
    "returns": (str, None),
    "schema": dict,
}

# The fields of a successful ``res``, per request ``op``.
REPLIES: dict[str, dict[str, Any]] = {
    "run_code": {
        "out": int,
        "err": int,
        "val": (int, None),
        "error": (None, ERROR),
        "truncated": bool,
    },
    "serve": {"functions": [SERVED], "models": [str]},
    "exec": {"returncode": int, "killed?": (str, None), "dropped?": int, "spawn_error?": str},
    "invoke": {"value?": object, "vlen?": int},
    "define_tool": {},
    "save_state": {
        "captured": [str],
        "skipped": [VARIABLE],
        "modules": [str],
        "tools": [str],
        "cells": int,
        "unlisted": int,
    },
    "load_state": {"restored": [str], "failed": [VARIABLE], "last_cell": int, "unlisted": int},
    "kernel": {"ended": ("shutdown", "cancelled", "died"), "returncode?": (int, None)},
    "write": {"size": int},
    "put_tar": {"members": int},
    "read": {"size": int},
    # What the tar stream cannot carry (sockets) or what stopped being a file while read.
    "get_tar": {"skipped?": [{"name": str, "type": FILE_KINDS}]},
    "list": {"entries": [{"name": str, "type": FILE_KINDS, "size": int}]},
    "exists": {"exists": bool, "is_dir": bool},
    "remove": {},
    "mkdir": {},
}


_validators: dict[int, tuple[Any, Validator]] = {}


def _compile(shape: Any) -> Validator:
    """A function telling whether a value has ``shape``, built once per shape."""
    if shape is object:
        return lambda v: True
    if shape is None:
        return lambda v: v is None
    if shape is ID:
        return lambda v: type(v) is int and 0 <= v <= 1 << 53
    if isinstance(shape, str):
        return lambda v: bool(v == shape)
    if isinstance(shape, type):
        return lambda v: type(v) is shape
    if isinstance(shape, tuple):
        if all(isinstance(s, str) for s in shape):  # one of some literals
            literals = frozenset(shape)
            return lambda v: type(v) is str and v in literals
        if all(isinstance(s, type) or s is None for s in shape):  # one of some types
            types = frozenset(type(None) if s is None else s for s in shape)
            return lambda v: type(v) in types
        if len(shape) == 2 and None in shape:  # a shape, or None
            only = _compile(next(s for s in shape if s is not None))
            return lambda v: v is None or only(v)
        raise TypeError(f"no validator for the shape {shape!r}")
    if isinstance(shape, list):
        item = _compile(shape[0])
        return lambda v: type(v) is list and all(map(item, v))
    required = [(k, _compile(f)) for k, f in shape.items() if not k.endswith("?")]
    optional = [(k[:-1], _compile(f)) for k, f in shape.items() if k.endswith("?")]

    def fields(v: Any) -> bool:
        if type(v) is not dict:
            return False
        for name, f in required:
            if name not in v or not f(v[name]):
                return False
        return all(name not in v or f(v[name]) for name, f in optional)

    return fields


def check(value: Any, shape: Any, what: str) -> None:
    """Raise :class:`ProtocolError` unless ``value`` has ``shape``."""
    known = _validators.get(id(shape))
    if known is None or known[0] is not shape:
        known = _validators[id(shape)] = (shape, _compile(shape))
    if not known[1](value):
        text = repr(value)
        raise ProtocolError(
            f"{what} does not have the protocol's shape: {text[:300]}"
            + ("..." if len(text) > 300 else "")
        )


def no_thread(what: str, exc: RuntimeError) -> RuntimeError:
    """The error for a thread the sandbox could not start: it is at its process limit."""
    return RuntimeError(
        f"the sandbox cannot start a thread for {what} ({exc}); it is at its process "
        "limit (SandboxConfig.max_processes): end some of its processes"
    )


def error_info(exc: BaseException, tb: str = "", message: str | None = None) -> Header:
    """Describe an exception as plain data: name, message (``str(exc)`` unless given), traceback.

    Message and traceback are clipped to :data:`MAX_TEXT` characters.
    """
    text = message
    try:
        text = str(exc) if text is None else text
    except Exception:  # an exception whose __str__ itself fails
        text = f"<{type(exc).__name__} whose message could not be shown>"
    return {"name": type(exc).__name__, "value": clip(text), "traceback": clip(tb)}


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, keeping its head and its tail."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"
