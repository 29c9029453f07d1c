"""The host's end of the protocol: requests in flight, streams, and calls inward.

Many requests share one connection. Each gets an id and a queue; the reader task
puts every ``chunk`` and the final ``res`` message for that id on its queue.
Calls from the sandbox to host functions are answered by the router, each in its
own task, so a slow tool never blocks the channel.

Everything read here comes from a sandbox and may be forged, so the reader
bounds what it holds: a header is at most 1 MiB and a message at most
:data:`protocol.MAX_MESSAGE`; every message is checked against the protocol's
shapes (a malformed one ends the sandbox, never the reader); at most
:data:`MAX_CALLS` host calls of one sandbox run at once (the rest wait their
turn), so one sandbox cannot take every worker thread; and when more than
:data:`HIGH_WATER` bytes of one sandbox's messages wait to be consumed, the
reader stops reading from it until its consumers catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .driver import protocol
from .tasks import TaskScope


@dataclass
class CellCall:
    """A host call the REPL's thread of ``channel``'s sandbox waits on (``live`` until answered).

    The driver says which calls come from the REPL's thread. A request that runs
    in the REPL's turn, sent to that sandbox while the call is live, would wait
    for the cell that waits on it.
    """

    channel: Channel
    live: bool = True


# The cell's call this task answers, if any (tasks it starts inherit it; ``live`` tells).
CELL_WAITING: contextvars.ContextVar[CellCall | None] = contextvars.ContextVar(
    "sandlot_cell_waiting", default=None
)


def cell_waits(channel: Channel) -> bool:
    """Whether the code running now answers a live call that ``channel``'s cell waits on."""
    call = CELL_WAITING.get()
    return call is not None and call.live and call.channel is channel


Frame = tuple[protocol.Header, bytes]
CallHandler = Callable[[str, Any, bytes], Awaitable[tuple[Any, bytes]]]
EndHandler = Callable[[BaseException], Awaitable[BaseException]]

MAX_CALLS = 16  # host calls of one sandbox running at once
HIGH_WATER = 64 << 20  # bytes of one sandbox's unconsumed messages before the reader waits
LOW_WATER = 16 << 20  # ... and the level at which it reads again
TASK_COST = 2048  # what a waiting call costs the host beyond its bytes, counted against HIGH_WATER
JSON_WEIGHT = 32  # parsed JSON takes up to about 30 times its text in memory: charge it so
MAX_VALUE_JSON = 8 << 20  # most bytes of a call's value structure (vlen) the host will parse
PARSE_ON_THREAD = 1 << 20  # a value structure larger than this is parsed off the event loop


class Closed(Exception):
    """The channel ended; ``Channel.closed_by`` says why."""


class Violation(Closed):
    """The sandbox broke the protocol; the channel ended and the sandbox must die."""


class ByteSink(Protocol):
    """The writing half of a connection to a driver (``asyncio.StreamWriter`` is one)."""

    def write(self, data: bytes) -> None:
        """Queue ``data``."""
        ...

    async def drain(self) -> None:
        """Wait until the queue is small enough to write more."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...

    async def wait_closed(self) -> None:
        """Wait until it is closed."""
        ...


class Request:
    """One request in flight: its id and the messages that answer it."""

    def __init__(self, channel: Channel, rid: int, max_reply: int, idle: float | None) -> None:
        self.channel = channel
        self.id = rid
        self.max_reply = max_reply  # most payload bytes its reply may carry beyond one frame
        self.idle = idle  # most seconds to wait for each of its messages (None: no bound)
        self.frames: asyncio.Queue[tuple[Frame, int] | BaseException] = asyncio.Queue()

    async def next(self) -> Frame:
        """The next ``chunk`` or ``res`` message; raises if the channel closed.

        With ``idle`` set, raises :class:`TimeoutError` when none comes that soon.
        """
        if self.idle is None:
            item = await self.frames.get()
        else:
            item = await asyncio.wait_for(self.frames.get(), self.idle)
        if isinstance(item, BaseException):
            raise item
        frame, cost = item
        self.channel.release(cost)
        return frame

    async def result(self) -> Frame:
        """Skip to the final ``res`` message."""
        while True:
            header, payload = await self.next()
            if header["t"] == "res":
                return header, payload

    def send_data(self, payload: bytes, eof: bool = False) -> None:
        """Send a piece of this request's input."""
        self.channel.write({"t": "data", "id": self.id, "eof": eof}, payload)

    async def send_all(self, data: bytes) -> None:
        """Send ``data`` as this request's input in frames of at most a chunk, then its end.

        It waits for the channel to drain after each frame, so input of any size
        crosses without piling up in the host's memory.
        """
        view = memoryview(data)
        for start in range(0, len(view), protocol.CHUNK):
            self.send_data(bytes(view[start : start + protocol.CHUNK]))
            await self.channel.drain()
        self.send_data(b"", eof=True)

    def cancel(self) -> None:
        """Ask the driver to interrupt or kill what this request started."""
        self.channel.write({"t": "cancel", "id": self.id})

    def done(self) -> None:
        """Forget this request; the messages still queued for it are dropped."""
        self.channel.requests.pop(self.id, None)
        while not self.frames.empty():
            item = self.frames.get_nowait()
            if not isinstance(item, BaseException):
                self.channel.release(item[1])


class Channel:
    """Framed, multiplexed messages over one stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: ByteSink,
        on_call: CallHandler,
        on_end: EndHandler,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.on_call = on_call
        self.on_end = on_end
        self.requests: dict[int, Request] = {}
        self.ids = itertools.count(1)
        self.closed_by: BaseException | None = None
        self.call_slots = asyncio.Semaphore(MAX_CALLS)
        self.tasks = TaskScope("a sandbox's channel")  # the reader and the calls it answers
        self.buffered = 0  # bytes read from the sandbox and not yet consumed
        self.room = asyncio.Event()
        self.room.set()

    # -- reading -----------------------------------------------------------------

    async def _read_one(self) -> tuple[protocol.Header, bytes, int] | None:
        try:
            prefix = await self.reader.readexactly(protocol.PREFIX.size)
            head_len, payload_len = protocol.PREFIX.unpack(prefix)
            protocol.check_sizes(head_len, payload_len)
            head = await self.reader.readexactly(head_len)
            payload = await self.reader.readexactly(payload_len) if payload_len else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return protocol.decode_header(head), payload, JSON_WEIGHT * head_len + payload_len

    async def read_frame(self) -> tuple[Frame, int] | None:
        """Read one whole message and check its shape; ``None`` at end of stream.

        Returns the message and its cost (about the bytes it holds). A message
        that breaks the protocol raises :class:`protocol.ProtocolError`, and so
        does one longer than its kind allows: a ``chunk`` is one frame, a ``res``
        at most what its request allows (a reply to no request in flight is
        read and dropped frame by frame).
        """
        first = await self._read_one()
        if first is None:
            return None
        header, payload, cost = first
        kind = header["t"]
        shape = protocol.FROM_DRIVER.get(kind)
        if shape is None:
            raise protocol.ProtocolError(f"a driver may not send a message of type {kind!r}")
        protocol.check(header, shape, f"a {kind!r} message")
        parts = protocol.parts_of(header)
        if parts > 1:
            keep = True
            if kind == "chunk":
                raise protocol.ProtocolError("a 'chunk' message of more than one frame")
            if kind == "res":
                req = self.requests.get(header["id"])
                keep = req is not None
                if req is not None and (parts - 1) * protocol.CHUNK > req.max_reply:
                    raise protocol.ProtocolError(
                        f"a reply of {parts} frames to request {req.id}, which allows "
                        f"{req.max_reply} bytes"
                    )
            pieces = [payload]
            for _ in range(parts - 1):
                nxt = await self._read_one()
                if nxt is None:
                    return None
                protocol.check_more(nxt[0])
                if keep:
                    pieces.append(nxt[1])
                    cost += nxt[2]
            payload = b"".join(pieces) if keep else b""
        return (header, payload), cost

    def start(self) -> None:
        """Start routing messages."""
        self.tasks.spawn(self._read_loop())

    async def _read_loop(self) -> None:
        reason: BaseException = Closed("the sandbox closed the connection")
        try:
            while (item := await self.read_frame()) is not None:
                (header, payload), cost = item
                kind = header["t"]
                if kind == "call":
                    self._start_call(header, payload, cost)
                elif kind in ("chunk", "res"):
                    req = self.requests.get(header["id"])
                    if req is not None:
                        self.buffered += cost
                        req.frames.put_nowait(((header, payload), cost))
                        if kind == "res":
                            self.requests.pop(req.id, None)
                else:
                    raise protocol.ProtocolError(f"a {kind!r} message after start-up")
                if self.buffered > HIGH_WATER:
                    self.room.clear()
                    await self.room.wait()
        except protocol.ProtocolError as exc:
            reason = Violation(f"the sandbox broke the protocol: {exc}")
        self.close(await self.on_end(reason))

    def release(self, cost: int) -> None:
        """``cost`` bytes were consumed; let the reader go on below the low-water mark."""
        self.buffered -= cost
        if self.buffered <= LOW_WATER and not self.room.is_set():
            self.room.set()

    # -- calls from the sandbox -----------------------------------------------------

    def _start_call(self, header: protocol.Header, payload: bytes, cost: int) -> None:
        vlen = header.get("vlen", 0)
        if not 0 <= vlen <= min(len(payload), MAX_VALUE_JSON):
            raise protocol.ProtocolError(
                f"'vlen' {vlen} is not a length within the payload and at most {MAX_VALUE_JSON}"
            )
        cost += TASK_COST + JSON_WEIGHT * vlen
        self.buffered += cost
        self.tasks.spawn(self._answer(header, payload, cost))

    async def _answer(self, header: protocol.Header, payload: bytes, cost: int) -> None:
        """Run the call when one of the sandbox's call slots is free, and send its answer."""
        cid, name = header["id"], header["name"]
        call = CellCall(self) if header.get("cell") else None
        if call is not None:  # for this task and what it starts, while it lasts
            CELL_WAITING.set(call)
        try:
            async with self.call_slots:
                try:
                    if header.get("vlen", 0) > PARSE_ON_THREAD:
                        unpacked = await asyncio.to_thread(protocol.take_value, header, payload)
                    else:
                        unpacked = protocol.take_value(header, payload)
                    value, result = await self.on_call(name, *unpacked)
                    head = {"t": "ret", "id": cid, "ok": True, "value": value}
                    frame = protocol.encode(head, result)
                except Exception as exc:
                    # A served library's error reads as its own: summary and remote traceback.
                    error = protocol.error_info(
                        exc, getattr(exc, "remote_traceback", ""), getattr(exc, "summary", None)
                    )
                    frame = protocol.encode({"t": "ret", "id": cid, "ok": False, "error": error})
                if self.closed_by is None:
                    self.writer.write(frame)
                    # A sandbox that stops reading its answers holds this slot, not host memory.
                    with contextlib.suppress(ConnectionError):
                        await self.writer.drain()
        finally:
            if call is not None:
                call.live = False
            self.release(cost)

    # -- writing -------------------------------------------------------------------

    def write(self, header: protocol.Header, payload: bytes = b"") -> None:
        """Queue a message for sending (ordered with every other write)."""
        if self.closed_by is not None:
            raise self.closed_by
        self.writer.write(protocol.encode(header, payload))

    async def drain(self) -> None:
        """Wait until the written messages are handed to the kernel (flow control).

        Raises :class:`Closed` when the connection is lost meanwhile (the sandbox died).
        """
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise Closed(f"the connection to the sandbox was lost: {exc}") from None

    def request(
        self,
        op: str,
        payload: bytes = b"",
        *,
        max_reply: int = 0,
        idle: float | None = None,
        **fields: Any,
    ) -> Request:
        """Send request ``op`` and return its handle.

        Its reply may carry at most ``max_reply`` payload bytes beyond one frame;
        ``idle`` bounds the wait for each of its messages (see :meth:`Request.next`).
        """
        req = Request(self, next(self.ids), max_reply, idle)
        self.requests[req.id] = req
        try:
            self.write({"t": "req", "id": req.id, "op": op, **fields}, payload)
        except BaseException:
            req.done()
            raise
        return req

    def close(self, reason: BaseException) -> None:
        """Fail every request in flight with ``reason``; later writes raise it.

        The reader and the calls in flight are cancelled (not the one calling
        this); ``await channel.tasks.close()`` waits for their end.
        """
        if self.closed_by is None:
            self.closed_by = reason
        for req in list(self.requests.values()):
            req.frames.put_nowait(self.closed_by)
        self.requests.clear()
        self.tasks.cancel()
        self.room.set()
