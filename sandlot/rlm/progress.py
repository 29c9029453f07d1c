"""A live view of an RLM run for the terminal: turns, sub-calls in flight, tokens, time.

``RunProgress`` is an ``on_event`` hook; it keeps counts as events arrive (from
whatever thread) and renders them as a small rich table, refreshed by
``rich.live.Live``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


class RunProgress:
    """Counts from an RLM's events, rendered on demand (``rich`` renderable)."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.iteration = 0
        self.max_iterations: int | None = None
        self.phase = "starting the sandbox and asking the root LM"
        self.in_flight = 0
        self.sub_done = 0
        self.sub_failed = 0
        self.children = 0
        self.tokens = 0
        self.cost: float | None = None
        self.last_output = ""
        self.top: str | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        """The ``on_event`` hook."""
        with self.lock:
            self._take(event)

    def _take(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "run_start":
            if self.top is None:
                self.top = event["run"]
                self.max_iterations = event["limits"]["max_iterations"]
            else:
                self.children += 1
        elif kind == "sub_call_begin":
            self.in_flight += 1
        elif kind == "sub_call":
            self.in_flight -= 1
            self.sub_done += 1
            self.sub_failed += event["error"] is not None
            self.tokens += event.get("tokens") or 0
        elif kind == "lm_call" and event["run"] == self.top:
            self.iteration = event["iteration"]
            usage = event.get("usage") or {}
            self.tokens += usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
            if usage.get("cost") is not None:
                self.cost = (self.cost or 0.0) + usage["cost"]
            self.phase = "running the root LM's code"
        elif kind == "code" and event["run"] == self.top:
            lines = [line for line in event["output"].splitlines() if line.strip()]
            self.last_output = lines[-1][:160] if lines else ""
            self.phase = "asking the root LM"
        elif kind == "run_end" and event["run"] == self.top:
            self.phase = f"done: {event['stop_reason']}"

    def __rich__(self) -> RenderableType:
        with self.lock:
            table = Table.grid(padding=(0, 2))
            table.add_column(style="bold")
            table.add_column()
            turns = f"{self.iteration}" + (
                f" of {self.max_iterations}" if self.max_iterations else ""
            )
            table.add_row("turn", turns)
            table.add_row("now", self.phase)
            failed = f", {self.sub_failed} failed" if self.sub_failed else ""
            table.add_row(
                "sub-calls",
                f"{self.in_flight} in flight, {self.sub_done} done{failed}"
                + (f", {self.children} child runs" if self.children else ""),
            )
            cost = f" (${self.cost:.4f})" if self.cost is not None else ""
            table.add_row("tokens", f"{self.tokens:,}{cost}")
            table.add_row("elapsed", f"{time.monotonic() - self.started:.1f} s")
            if self.last_output:
                table.add_row("last output", Text(self.last_output, overflow="ellipsis"))
            return Group(Text(f"RLM: {self.query[:120]}", style="bold cyan"), table)
