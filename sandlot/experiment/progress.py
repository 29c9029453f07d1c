"""A live view of an experiment's runs for the terminal, and plain progress lines elsewhere.

``ExperimentProgress`` is an ``on_event`` hook: it keeps, per run, the stage,
the turn, the tool calls, the tokens and the cost, and renders them as a rich
table (refreshed by ``rich.live.Live``). Without a terminal it writes one line
per stage, turn and end instead, so a log shows how far a run got.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import RenderableType
from rich.table import Table


@dataclass
class _Run:
    stage: str = "waiting"
    turn: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost: float | None = None
    started: float = 0.0
    status: str = ""


class ExperimentProgress:
    """Counts per run from the harness's events; a rich renderable, or lines on ``stream``."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream  # None: rendered by Live instead of written as lines
        self.lock = threading.Lock()
        self.runs: dict[str, _Run] = {}
        self.stage = "starting"
        self.started = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        """The ``on_event`` hook."""
        with self.lock:
            line = self._take(event)
        if line and self.stream is not None:
            self.stream.write(f"sandlot: {line}\n")
            self.stream.flush()

    def _take(self, event: dict[str, Any]) -> str | None:
        run = str(event.get("run", "*"))
        kind = event.get("type")
        if run == "*":
            self.stage = str(event.get("stage"))
            detail = event.get("detail")
            return f"{self.name}: {self.stage}" + (f": {detail}" if detail else "")
        state = self.runs.setdefault(run, _Run(started=time.monotonic()))
        if kind == "stage":
            state.stage = str(event.get("stage"))
            return f"{run}: stage {state.stage}"
        if kind in ("lm_call", "code") and event.get("turn", event.get("iteration")) is not None:
            state.turn = int(event.get("turn") or event.get("iteration") or 0)
            usage = event.get("usage") or {}
            state.tokens += int(usage.get("prompt_tokens") or 0)
            state.tokens += int(usage.get("completion_tokens") or 0)
            if usage.get("cost") is not None:
                state.cost = (state.cost or 0.0) + float(usage["cost"])
            if kind == "code":
                state.tool_calls += 1
                return None
            return f"{run}: turn {state.turn}, {state.tokens:,} tokens"
        if kind == "tool_call":
            state.tool_calls += 1
            return f"{run}: tool {str(event.get('name'))[:60]}" + (
                " (error)" if event.get("error") else ""
            )
        if kind == "run_end":
            state.status = str(event.get("status") or event.get("stop_reason"))
            return f"{run}: {state.status} ({event.get('stop_reason')})"
        return None

    def __rich__(self) -> RenderableType:
        with self.lock:
            table = Table(
                "run", "stage", "turn", "tool calls", "tokens", "cost", "time",
                title=f"{self.name}: {self.stage} ({time.monotonic() - self.started:.0f} s)",
            )  # fmt: skip
            for name, r in self.runs.items():
                table.add_row(
                    name,
                    r.status or r.stage,
                    str(r.turn),
                    str(r.tool_calls),
                    f"{r.tokens:,}",
                    f"{r.cost:.4f}" if r.cost is not None else "-",
                    f"{time.monotonic() - r.started:.0f} s",
                )
            return table
