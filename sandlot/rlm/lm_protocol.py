"""What an LM is to sandlot, and what it trades in: messages, completions, usage.

Any object with a ``model`` name and an ``acomplete(messages)`` coroutine is an
LM to sandlot (``AsyncLM``); one with a blocking ``complete(messages)`` works too
(``SyncLM``), run on a worker thread. ``OpenAICompatibleLM`` offers both.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    """One chat message, as OpenAI-compatible servers take it."""

    role: str
    content: str


@dataclass(frozen=True)
class ToolCall:
    """One function call an LM asked for.

    ``arguments`` is the JSON text the LM wrote, as it wrote it: it may be
    malformed, and the caller decides what to tell the LM about that.
    """

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """One LM answer and what it cost.

    ``cost`` is in the provider's currency (usually USD) and is ``None`` where the
    provider does not report it. ``tool_calls`` holds the calls the LM asked for
    when it was offered tools (its ``text`` may then be empty).
    """

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


class LMError(Exception):
    """An LM call failed for good (after any retries); the message says why."""


@runtime_checkable
class AsyncLM(Protocol):
    """An LM sandlot can call without blocking: ``await lm.acomplete(messages)``."""

    model: str

    async def acomplete(self, messages: Sequence[Message]) -> Completion:
        """Answer the conversation ``messages`` with one completion."""
        ...


@runtime_checkable
class SyncLM(Protocol):
    """An LM with a blocking call only; sandlot runs it on a worker thread."""

    model: str

    def complete(self, messages: Sequence[Message]) -> Completion:
        """Answer the conversation ``messages`` with one completion."""
        ...


LM = AsyncLM | SyncLM


async def acomplete(lm: LM, messages: Sequence[Message]) -> Completion:
    """Call ``lm`` whichever protocol it implements."""
    if isinstance(lm, AsyncLM):
        return await lm.acomplete(messages)
    return await asyncio.to_thread(lm.complete, messages)


def check_lm(lm: object, what: str) -> LM:
    """Return ``lm`` if it implements an LM protocol, else say what is missing."""
    if isinstance(lm, AsyncLM | SyncLM):
        return lm
    raise TypeError(
        f"{what}: {type(lm).__name__} is not an LM; it needs a 'model' attribute and an "
        "'async acomplete(messages)' or 'complete(messages)' method returning a "
        "sandlot.rlm.Completion (OpenAICompatibleLM is one)"
    )


@dataclass
class ModelUsage:
    """Calls and tokens spent on one model."""

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Usage:
    """What a run spent, per model. Safe to update from several threads."""

    models: dict[str, ModelUsage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion, seconds: float) -> None:
        """Count one successful call."""
        with self._lock:
            entry = self.models.setdefault(completion.model, ModelUsage())
            entry.calls += 1
            entry.prompt_tokens += completion.prompt_tokens
            entry.completion_tokens += completion.completion_tokens
            entry.seconds += seconds
            if completion.cost is not None:
                entry.cost = (entry.cost or 0.0) + completion.cost

    def add_error(self, model: str, seconds: float) -> None:
        """Count one failed call."""
        with self._lock:
            entry = self.models.setdefault(model, ModelUsage())
            entry.errors += 1
            entry.seconds += seconds

    def merge(self, other: Usage) -> None:
        """Add ``other``'s counts (a child RLM's) to these."""
        with self._lock:
            for model, theirs in other.models.items():
                mine = self.models.setdefault(model, ModelUsage())
                mine.calls += theirs.calls
                mine.errors += theirs.errors
                mine.prompt_tokens += theirs.prompt_tokens
                mine.completion_tokens += theirs.completion_tokens
                mine.seconds += theirs.seconds
                if theirs.cost is not None:
                    mine.cost = (mine.cost or 0.0) + theirs.cost

    @property
    def calls(self) -> int:
        """Successful calls over all models."""
        return sum(m.calls for m in self.models.values())

    @property
    def total_tokens(self) -> int:
        """Tokens over all models."""
        return sum(m.total_tokens for m in self.models.values())

    @property
    def cost(self) -> float | None:
        """Cost over the models that reported one; ``None`` if none did."""
        costs = [m.cost for m in self.models.values() if m.cost is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: per-model counts and the totals."""
        with self._lock:
            models = {
                name: {
                    "calls": m.calls,
                    "errors": m.errors,
                    "prompt_tokens": m.prompt_tokens,
                    "completion_tokens": m.completion_tokens,
                    "cost": m.cost,
                    "seconds": round(m.seconds, 6),
                }
                for name, m in self.models.items()
            }
        return {
            "models": models,
            "calls": self.calls,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
        }
