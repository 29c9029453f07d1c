"""Flow control for bytes that a backend pumps between the host and a driver.

:class:`Valve` lets an ``asyncio.StreamReader`` that a pump feeds pause that
pump; :class:`QueuedSink` is a writer whose bytes go out in order through any
send coroutine. The remote-process start (:mod:`sandlot.backends.kit.remote`)
and the Ray backend's relay use both.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

from ...tasks import TaskScope

HIGH_WATER = 8 << 20  # bytes queued for the far side at which drain() waits ...
LOW_WATER = 2 << 20  # ... until the queue is back down to this


class Valve(asyncio.ReadTransport):
    """The reader's flow control for a pump that feeds it: the reader pauses the valve
    when it holds more than twice its limit, and opens it once the channel has read
    it down, so the host holds a bounded amount of what a sandbox sends."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self) -> None:
        self.open.set()

    def is_reading(self) -> bool:
        return self.open.is_set()


class QueuedSink:
    """A writer whose bytes go out in order through ``send``, at most ``chunk`` bytes a call.

    ``write`` queues; ``drain`` waits while more than :data:`HIGH_WATER` bytes are
    queued. A send that fails (the far side is gone) drops the queue: the
    reader's pump reports why the sandbox ended. ``finish`` runs once what was
    queued before ``close`` is sent (a stream's end of input).
    """

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[Any]],
        chunk: int,
        finish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.send = send
        self.chunk = chunk
        self.finish = finish
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.closed = False
        self.failed: BaseException | None = None
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.tasks = TaskScope("a queued sink")
        self.task = self.tasks.spawn(self._send())

    def write(self, data: bytes) -> None:
        """Queue ``data``."""
        if self.closed or self.failed is not None or not data:
            return
        self.queue.append(bytes(data))
        self.queued += len(data)
        if self.queued >= HIGH_WATER:
            self.room.clear()
        self.wake.set()

    async def drain(self) -> None:
        """Wait while much is queued (not at all once the far side is gone)."""
        await self.room.wait()

    def close(self) -> None:
        """Send what is queued, then stop."""
        self.closed = True
        self.wake.set()

    async def wait_closed(self) -> None:
        """Wait until what was queued is sent (or the far side is gone)."""
        await asyncio.wait({self.task})  # its end, not its error; a cancellation of ours goes on

    def _batch(self) -> bytes:
        batch: list[bytes] = []
        size = 0
        while self.queue and size < self.chunk:
            item = self.queue[0]
            room = self.chunk - size
            if len(item) <= room:
                batch.append(self.queue.popleft())
                size += len(item)
            else:  # a big message goes in pieces: no send is larger than chunk
                batch.append(item[:room])
                self.queue[0] = item[room:]
                size += room
        return b"".join(batch)

    async def _send(self) -> None:
        try:
            while True:
                if not self.queue:
                    if self.closed:
                        break
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                data = self._batch()
                await self.send(data)
                self.queued -= len(data)
                if self.queued <= LOW_WATER:
                    self.room.set()
            if self.finish is not None:
                await self.finish()
        except Exception as exc:  # the far side is gone: the reader's pump reports why
            self.failed = exc
            self.queue.clear()
            self.queued = 0
        finally:
            self.room.set()
