"""Progress notifications while a cell runs, so that a client does not give up on the call.

Clients cut tool calls that stay silent (Claude Code after one to five
minutes, whatever its settings say), and a person watching wants to see that a
long cell is alive. So a running cell reports progress on its outputs (at most
one notification a second, however much it prints) and, when it prints
nothing, a heartbeat every few seconds: time so far, outputs so far, and the
last thing printed. A client that asked for no progress gets nothing, and a
notification that fails to send never fails the tool call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from mcp.server.mcpserver import Context

from ..notebook import Execution

MIN_GAP = 1.0  # seconds between notifications caused by output
LAST_LINE = 160  # characters of the last printed line in a message


def describe(output: dict[str, Any]) -> str:
    """A few words on one notebook output, for a progress message."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text")
        text = text if isinstance(text, str) else ""
        lines = [line for line in text.splitlines() if line.strip()]
        return f"{output.get('name')}: {lines[-1][:LAST_LINE]}" if lines else ""
    if kind == "error":
        return f"error: {output.get('ename')}"
    data = output.get("data")
    if isinstance(data, dict):
        return f"{kind} ({', '.join(str(m) for m in list(data)[:3])})"
    return str(kind)


class CellProgress:
    """Sends progress for one tool call that waits on a cell."""

    def __init__(
        self, ctx: Context[Any, Any], interval: float, started: float, so_far: Execution
    ) -> None:
        """Progress for a cell whose call began at ``started`` (monotonic) and gave ``so_far``."""
        self.ctx = ctx
        self.interval = interval
        self.started = started
        self.last_sent = 0.0
        self.sent = 0
        self.outputs = len(so_far.results) + bool(so_far.stdout) + bool(so_far.stderr)
        printed = [line for line in so_far.stdout.splitlines() if line.strip()]
        self.last = f"stdout: {printed[-1][:LAST_LINE]}" if printed else ""

    async def output(self, output: dict[str, Any]) -> None:
        """The ``on_output`` callback: count it, and report if the last report is a second old."""
        self.outputs += 1
        self.last = describe(output) or self.last
        if time.monotonic() - self.last_sent >= MIN_GAP:
            await self.send()

    async def heartbeat(self) -> None:
        """Report at least every ``interval`` seconds until cancelled."""
        await self.send()
        while True:
            await asyncio.sleep(max(0.1, self.last_sent + self.interval - time.monotonic()))
            if time.monotonic() - self.last_sent >= self.interval - 0.05:
                await self.send()

    async def send(self) -> None:
        self.last_sent = time.monotonic()
        self.sent += 1
        elapsed = self.last_sent - self.started
        message = f"running for {elapsed:.0f} s, {self.outputs} outputs so far"
        if self.last:
            message += f"; last: {self.last}"
        with contextlib.suppress(Exception):
            await self.ctx.report_progress(self.sent, None, message)
