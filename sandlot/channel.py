"""The host's end of the protocol: requests in flight, streams, and calls inward.

Many requests share one connection. Each gets an id and a queue; the reader task
puts every ``chunk`` and the final ``res`` frame for that id on its queue. Calls
from the sandbox to host functions are answered by the router, each in its own
task, so a slow tool never blocks the channel.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from .driver import protocol

Frame = tuple[protocol.Header, bytes]
CallHandler = Callable[[str, Any, bytes], Awaitable[tuple[Any, bytes]]]
EofHandler = Callable[[BaseException], Awaitable[BaseException]]


class Closed(Exception):
    """The channel ended; ``Channel.closed_by`` says why."""


class Request:
    """One request in flight: its id and the frames that answer it."""

    def __init__(self, channel: Channel, rid: int) -> None:
        self.channel = channel
        self.id = rid
        self.frames: asyncio.Queue[Frame | BaseException] = asyncio.Queue()

    async def next(self) -> Frame:
        """The next ``chunk`` or ``res`` frame; raises if the channel closed."""
        item = await self.frames.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def result(self) -> Frame:
        """Skip to the final ``res`` frame."""
        while True:
            header, payload = await self.next()
            if header["t"] == "res":
                return header, payload

    def send_data(self, payload: bytes, eof: bool = False) -> None:
        """Send a piece of this request's input."""
        self.channel.write({"t": "data", "id": self.id, "eof": eof}, payload)

    def cancel(self) -> None:
        """Ask the driver to interrupt or kill what this request started."""
        self.channel.write({"t": "cancel", "id": self.id})

    def done(self) -> None:
        """Forget this request (its remaining frames are dropped)."""
        self.channel.requests.pop(self.id, None)


class Channel:
    """Framed, multiplexed messages over one stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_call: CallHandler,
        on_eof: EofHandler,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.on_call = on_call
        self.on_eof = on_eof
        self.requests: dict[int, Request] = {}
        self.ids = itertools.count(1)
        self.closed_by: BaseException | None = None
        self.calls: set[asyncio.Task[None]] = set()
        self.read_task: asyncio.Task[None] | None = None

    async def read_frame(self) -> Frame | None:
        """Read one frame; ``None`` at end of stream."""
        try:
            prefix = await self.reader.readexactly(protocol.PREFIX.size)
            head_len, payload_len = protocol.PREFIX.unpack(prefix)
            protocol.check_sizes(head_len, payload_len)
            header = protocol.decode_header(await self.reader.readexactly(head_len))
            payload = await self.reader.readexactly(payload_len) if payload_len else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return header, payload

    def start(self) -> None:
        """Start routing frames."""
        self.read_task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        reason: BaseException = Closed("the sandbox closed the connection")
        try:
            while (frame := await self.read_frame()) is not None:
                header, payload = frame
                kind = header.get("t")
                if kind == "call":
                    task = asyncio.create_task(self._answer(header, payload))
                    self.calls.add(task)
                    task.add_done_callback(self.calls.discard)
                    continue
                req = self.requests.get(header.get("id", -1))
                if req is not None:
                    req.frames.put_nowait(frame)
                    if kind == "res":
                        req.done()
        except protocol.ProtocolError as exc:
            reason = Closed(f"the sandbox sent a malformed frame: {exc}")
        self.close(await self.on_eof(reason))

    async def _answer(self, header: protocol.Header, payload: bytes) -> None:
        cid = header["id"]
        try:
            value, data = await self.on_call(header["name"], header.get("value"), payload)
            frame = protocol.encode({"t": "ret", "id": cid, "ok": True, "value": value}, data)
        except Exception as exc:
            error = {
                "name": type(exc).__name__,
                "value": getattr(exc, "summary", str(exc)),
                "traceback": getattr(exc, "remote_traceback", ""),
            }
            frame = protocol.encode({"t": "ret", "id": cid, "ok": False, "error": error})
        if self.closed_by is None:
            self.writer.write(frame)

    def write(self, header: protocol.Header, payload: bytes = b"") -> None:
        """Queue a frame for sending (ordered with every other write)."""
        if self.closed_by is not None:
            raise self.closed_by
        self.writer.write(protocol.encode(header, payload))

    async def drain(self) -> None:
        """Wait until the written frames are handed to the kernel (flow control)."""
        await self.writer.drain()

    def request(self, op: str, payload: bytes = b"", **fields: Any) -> Request:
        """Send request ``op`` and return its handle."""
        req = Request(self, next(self.ids))
        self.requests[req.id] = req
        try:
            self.write({"t": "req", "id": req.id, "op": op, **fields}, payload)
        except BaseException:
            req.done()
            raise
        return req

    def close(self, reason: BaseException) -> None:
        """Fail every request in flight with ``reason``; later writes raise it."""
        if self.closed_by is None:
            self.closed_by = reason
        for req in list(self.requests.values()):
            req.frames.put_nowait(self.closed_by)
        self.requests.clear()
        for task in self.calls:
            task.cancel()
