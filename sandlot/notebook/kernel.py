"""The host's side of a Jupyter kernel that runs in a sandbox.

:class:`KernelConnection` opens a ``kernel`` request on the sandbox's channel
(see ``sandlot/driver/kernel.py``): Jupyter messages go in as ``data`` frames
and come back as ``chunk`` frames, whatever the backend. The host builds the
messages' headers itself; the relay inside signs them with a key the host never
sees. Replies are routed to their request by the parent's message id, so cells
and inspections never take each other's messages.

A timeout interrupts the cell (SIGINT from inside the sandbox's PID
namespace) and, when the interrupt does not take within the grace period,
restarts the kernel. Cells run with ``allow_stdin`` off: ``input()`` fails at
once instead of waiting for a reader that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
import uuid
from typing import Any

from ..channel import Request
from ..sandbox import AsyncSandbox
from ..tasks import TaskScope
from .execution import Collector, Execution, ExecutionError, OnOutput
from .wire import KernelDied

MAX_KERNEL_MESSAGE = 64 << 20  # the largest message a kernel may send, all its chunks together
PROTOCOL_VERSION = "5.3"
# Seconds of quiet after a cell's reply before its outputs are taken as complete. iopub is
# a socket of its own: a big output ahead of the idle status can arrive well after the reply.
IDLE_GRACE = 5.0


def now_iso() -> str:
    """The time now, as Jupyter writes it in headers and notebooks."""
    return datetime.datetime.now(datetime.UTC).isoformat()


class KernelConnection:
    """One kernel in one sandbox, and the cells sent to it."""

    def __init__(self, sandbox: AsyncSandbox, *, env: dict[str, str] | None = None) -> None:
        self.sandbox = sandbox
        self.env = env or {}
        self.session_id = uuid.uuid4().hex
        self.kernel_id = uuid.uuid4().hex
        self.status = "starting"
        self.last_words = ""
        self.dropped = 0  # kernel messages over MAX_KERNEL_MESSAGE, not delivered
        self._request_cm: contextlib.AbstractAsyncContextManager[Request] | None = None
        self._request: Request | None = None
        self._reader = TaskScope("a notebook kernel")  # the request's reader
        self._waiters: dict[str, asyncio.Queue[tuple[str, dict[str, Any]]]] = {}
        self._relay_events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lock = asyncio.Lock()  # one cell at a time, in order of arrival
        self._ended = asyncio.Event()

    # -- the request and its reader --------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        """Start the kernel and wait until it answers on its shell and iopub channels."""
        self._ended = asyncio.Event()
        self._request_cm = self.sandbox.link.request("kernel", env=self.env)
        self._request = await self._request_cm.__aenter__()
        self._reader.spawn(self._read_loop(self._request))
        await self._wait_ready(timeout)
        self.status = "idle"

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ended.is_set():
                raise KernelDied(f"the kernel ended while starting{self._words()}")
            msg_id = self._send("shell", "kernel_info_request", {})
            queue = self._waiters[msg_id] = asyncio.Queue()
            try:
                got_reply = got_iopub = False
                while not (got_reply and got_iopub):
                    wait = min(1.0, deadline - time.monotonic())
                    channel, _ = await asyncio.wait_for(queue.get(), max(wait, 0.01))
                    got_reply |= channel == "shell"
                    got_iopub |= channel == "iopub"
                return
            except TimeoutError:
                continue
            finally:
                self._waiters.pop(msg_id, None)
        raise KernelDied(f"the kernel did not answer within {timeout:g}s{self._words()}")

    def _words(self) -> str:
        return f"; it printed:\n{self.last_words}" if self.last_words.strip() else ""

    async def _read_loop(self, request: Request) -> None:
        pieces: list[bytes] = []
        size = 0
        dropping = False  # a message past the limit: its pieces are skipped, the rest goes on
        try:
            while True:
                header, payload = await request.next()
                if header["t"] == "res":
                    break
                if header.get("stream") != "kernel":
                    continue
                size += len(payload)
                last = header.get("last", True)
                if size > MAX_KERNEL_MESSAGE:
                    pieces, dropping = [], True
                elif not dropping:
                    pieces.append(payload)
                if not last:
                    continue
                if dropping:
                    self.dropped += 1
                else:
                    self._route(b"".join(pieces))
                pieces, size, dropping = [], 0, False
        except Exception as exc:  # the sandbox died or broke the protocol
            self.last_words = self.last_words or str(exc)
        finally:
            self.status = "dead"
            self._ended.set()
            for queue in self._waiters.values():
                queue.put_nowait(("ended", {}))

    def _route(self, data: bytes) -> None:
        try:
            item = json.loads(data)
        except ValueError:
            return
        if not isinstance(item, dict):
            return
        relay = item.get("relay")
        if isinstance(relay, str):
            if relay == "died":
                log = item.get("log")
                self.last_words = log[-4000:] if isinstance(log, str) else ""
            self._relay_events.put_nowait({"relay": relay})
            return
        channel, msg = item.get("channel"), item.get("msg")
        if channel not in ("shell", "iopub", "control", "stdin") or not isinstance(msg, dict):
            return
        parent = msg.get("parent_header")
        msg_id = parent.get("msg_id") if isinstance(parent, dict) else None
        queue = self._waiters.get(msg_id) if isinstance(msg_id, str) else None
        if queue is not None:
            queue.put_nowait((channel, msg))

    def _send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        if self._request is None or self._ended.is_set():
            raise KernelDied(f"the kernel is not running{self._words()}")
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "msg_type": msg_type,
                "username": "sandlot",
                "session": self.session_id,
                "date": now_iso(),
                "version": PROTOCOL_VERSION,
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
        }
        self._request.send_data(json.dumps({"channel": channel, "msg": msg}).encode())
        return msg_id

    def _relay(self, word: str) -> None:
        if self._request is not None and not self._ended.is_set():
            self._request.send_data(json.dumps({"relay": word}).encode())

    # -- cells -------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        max_output_bytes: int = 1 << 20,
        silent: bool = False,
        on_output: OnOutput | None = None,
        collector: Collector | None = None,
    ) -> Execution:
        """Run ``code``; return its result once the kernel is idle again.

        Outputs go to ``on_output`` as they come (nbformat output dicts). At
        ``timeout`` seconds the cell is interrupted, and the kernel restarted
        if the interrupt does not take within the sandbox's grace period.
        """
        async with self._lock:
            collector = collector or Collector(max_output_bytes)
            return await self._execute(code, timeout, collector, silent, on_output)

    async def _execute(
        self,
        code: str,
        timeout: float | None,
        collector: Collector,
        silent: bool,
        on_output: OnOutput | None,
    ) -> Execution:
        if self._ended.is_set():
            raise KernelDied(f"the kernel is not running{self._words()}")
        started = time.monotonic()
        content = {
            "code": code,
            "silent": silent,
            "store_history": not silent,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        msg_id = self._send("shell", "execute_request", content)
        queue = self._waiters[msg_id] = asyncio.Queue()
        self.status = "busy"
        ex = collector.execution
        try:
            finished = await self._collect(queue, collector, on_output, timeout)
            if not finished:
                ex.timed_out = True
                self._relay("interrupt")
                grace = max(self.sandbox.config.interrupt_grace, 1.0)
                if await self._collect(queue, collector, on_output, grace):
                    ex.interrupted = True
                else:
                    await self.restart()
                    ex.restarted = True
                    ex.error = ExecutionError(
                        "TimeoutError",
                        f"the cell ran past its {timeout:g}s timeout and did not stop when "
                        "interrupted, so the kernel was restarted (its variables are gone)",
                        "",
                    )
        finally:
            self._waiters.pop(msg_id, None)
            if self.status == "busy":
                self.status = "idle" if not self._ended.is_set() else "dead"
        await _emit(collector.finish(), on_output)
        ex.done = True
        ex.duration = time.monotonic() - started
        return ex

    async def _collect(
        self,
        queue: asyncio.Queue[tuple[str, dict[str, Any]]],
        collector: Collector,
        on_output: OnOutput | None,
        timeout: float | None,
    ) -> bool:
        """Take messages until the reply and the idle status are in; False at ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        replied = idle = False
        while not (replied and idle):
            left = None if deadline is None else deadline - loop.time()
            if replied:  # the idle status follows the reply; do not wait for ever
                left = IDLE_GRACE if left is None else min(left, IDLE_GRACE)
            try:
                channel, msg = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                return replied
            if channel == "ended":
                collector.execution.error = ExecutionError(
                    "KernelDied", f"the kernel ended while the cell ran{self._words()}", ""
                )
                return True
            if channel == "restarted":  # no reply will come from the kernel that is gone
                collector.execution.restarted = True
                collector.execution.error = collector.execution.error or ExecutionError(
                    "KernelRestarted",
                    "the kernel was restarted while the cell ran (its variables are gone)",
                    "",
                )
                return True
            header = msg.get("header")
            msg_type = header.get("msg_type") if isinstance(header, dict) else None
            content = msg.get("content")
            if not isinstance(msg_type, str) or not isinstance(content, dict):
                continue
            if channel == "shell" and msg_type == "execute_reply":
                collector.reply(content)
                replied = True
            elif channel == "iopub":
                if msg_type == "status":
                    idle |= content.get("execution_state") == "idle"
                    continue
                await _emit(collector.add(msg_type, content), on_output)
        return True

    # -- control -----------------------------------------------------------------------

    def interrupt(self) -> None:
        """Interrupt the running cell (KeyboardInterrupt in the kernel)."""
        self._relay("interrupt")

    async def restart(self, timeout: float = 60.0) -> None:
        """A fresh kernel in the same sandbox: every variable is gone."""
        self.status = "restarting"
        if not self._ended.is_set():
            while not self._relay_events.empty():
                self._relay_events.get_nowait()
            self._relay("restart")
            while True:
                event = await asyncio.wait_for(self._relay_events.get(), timeout)
                if event["relay"] == "started":
                    break
            for queue in self._waiters.values():  # a running cell's kernel is gone: wake it
                queue.put_nowait(("restarted", {}))
            await self._wait_ready(timeout)
        else:
            await self._close_request()
            await self.start(timeout)
        self.status = "idle"

    async def _close_request(self) -> None:
        await self._reader.close()
        if self._request_cm is not None:
            with contextlib.suppress(Exception):
                await self._request_cm.__aexit__(None, None, None)
        self._request_cm = self._request = None

    async def shutdown(self) -> None:
        """End the kernel (the sandbox lives on)."""
        self._relay("shutdown")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), 5)
        await self._close_request()
        self.status = "dead"


async def _emit(outputs: list[dict[str, Any]], on_output: OnOutput | None) -> None:
    """Hand ``outputs`` to ``on_output``, awaiting it where it returns an awaitable."""
    if on_output is None:
        return
    for output in outputs:
        pending = on_output(output)
        if pending is not None:
            await pending
