"""The one wire protocol between the host and a sandbox's driver.

Standard library only: this module is imported by the driver inside the sandbox
(where nothing but the interpreter may exist) and by the host.

A frame is ``!II`` (header length, payload length), a UTF-8 JSON header (a dict)
and raw payload bytes. Large data (files, process output) travels in the payload
in chunks of at most :data:`CHUNK` bytes, never inside the JSON header.

Header field ``t`` says what a frame is:

========  ===========  =====================================================
``t``     direction    meaning
========  ===========  =====================================================
``req``   host→driver  a request ``op`` with a fresh ``id``
``data``  host→driver  a chunk of input for request ``id`` (``eof`` ends it)
``cancel`` host→driver cancel request ``id`` (interrupts the REPL, kills a
                       process group)
``ret``   host→driver  the answer to the driver's call ``id``
``ready`` driver→host  the driver is up (sent once)
``chunk`` driver→host  streamed output for request ``id``
``res``   driver→host  the final reply to request ``id`` (``ok`` or ``error``)
``call``  driver→host  sandboxed code calls host function ``name``
========  ===========  =====================================================

Request ids and call ids are separate spaces: the host numbers requests, the
driver numbers calls.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

PREFIX = struct.Struct("!II")
CHUNK = 1 << 20
MAX_HEADER = 1 << 28
MAX_PAYLOAD = 1 << 26

Header = dict[str, Any]


class ProtocolError(Exception):
    """A frame that does not follow the protocol (bad sizes, bad JSON)."""


def encode(header: Header, payload: bytes = b"") -> bytes:
    """Return one frame carrying ``header`` and ``payload``."""
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(head) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"frame too large: header {len(head)} B, payload {len(payload)} B")
    return PREFIX.pack(len(head), len(payload)) + head + payload


def check_sizes(head_len: int, payload_len: int) -> None:
    """Reject a frame prefix whose sizes exceed the protocol's bounds."""
    if head_len > MAX_HEADER or payload_len > MAX_PAYLOAD:
        raise ProtocolError(f"frame too large: header {head_len} B, payload {payload_len} B")


def decode_header(raw: bytes) -> Header:
    """Parse a frame's JSON header, which must be an object."""
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    return header


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            return None
        got += n
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[Header, bytes] | None:
    """Read one frame from a blocking socket; ``None`` at end of stream."""
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


def error_info(exc: BaseException, tb: str = "") -> Header:
    """Describe an exception as plain data: name, message, traceback text."""
    return {"name": type(exc).__name__, "value": str(exc), "traceback": tb}
