"""The events of an RLM trajectory, one small data class per type.

``type`` tells them apart (:data:`RLMEvent` is the discriminated union), and
every event carries ``run`` (the run's id; a child RLM has its own) and ``t``
(seconds since the run started), which the run stamps as it records the event.
:func:`event_dict` lays an event out as the JSON object written to the
trajectory file, handed to ``on_event`` and read by the viewer
(``viewer/trajectory.js``): ``run``, ``t``, ``type``, then the fields in the
order they are declared here. Timings: an event is recorded when the thing it
describes has finished, so its span is ``[t - seconds, t]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12


class ContextInfo(TypedDict):
    """What the context was: its Python type's name and its size in characters."""

    type: str
    size: int


class Models(TypedDict):
    """The models of a run: the root LM and the sub-LM."""

    root: str
    sub: str


class Limits(TypedDict):
    """The limits a run was started with (see ``RLM``'s arguments)."""

    max_iterations: int
    max_llm_calls: int
    max_depth: int
    max_time: float
    max_tokens: int | None
    max_errors: int
    pool_size: int


class CallUsage(TypedDict):
    """What one root LM turn cost."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None


@dataclass(frozen=True, kw_only=True)
class _Recorded:
    """What every event carries, stamped by the run that records it."""

    run: str = ""  # the run's id
    t: float = 0.0  # seconds since the run started


@dataclass(frozen=True, kw_only=True)
class RunStart(_Recorded):
    """A run began: a root run (``depth`` 0) or a child RLM started by ``parent``."""

    type: Literal["run_start"] = "run_start"
    depth: int
    parent: str | None
    started_at: float  # epoch seconds
    query: str
    context: ContextInfo
    models: Models
    limits: Limits
    forked: bool = False  # started from a copy of the parent's REPL (``rlm_query(fork=True)``)


@dataclass(frozen=True, kw_only=True)
class LMCall(_Recorded):
    """One root LM turn; ``error`` (and no ``usage``) when the call failed."""

    type: Literal["lm_call"] = "lm_call"
    iteration: int
    prompt_chars: int
    messages: int  # how many messages the prompt held
    last: bool  # the turn that asks for a best answer at a limit
    seconds: float
    reply: str
    usage: CallUsage | None
    error: str | None


@dataclass(frozen=True, kw_only=True)
class CodeRun(_Recorded):
    """One code block run in the REPL: what the LM was shown, and its error if any."""

    type: Literal["code"] = "code"
    iteration: int
    block: int
    seconds: float
    code: str
    output: str
    error: str | None  # "Name: message"
    truncated: int  # characters dropped from the middle of the output


@dataclass(frozen=True, kw_only=True)
class SubCallBegin(_Recorded):
    """A sub-LM call or child RLM began (handed to ``on_event`` only, never written)."""

    type: Literal["sub_call_begin"] = "sub_call_begin"
    kind: Literal["llm", "rlm"]
    batch: int | None  # the index in its batch, or None for a single call
    child: str | None = None  # the child run's id, for "rlm"


@dataclass(frozen=True, kw_only=True)
class SubCall(_Recorded):
    """A sub-LM call or child RLM made from the REPL ended; prompt and response cut short."""

    type: Literal["sub_call"] = "sub_call"
    iteration: int
    kind: Literal["llm", "rlm"]
    model: str
    batch: int | None
    seconds: float
    prompt_chars: int
    prompt: str
    response: str
    tokens: int  # all the call used, a child run's included
    error: str | None
    child: str | None  # the child run's id, for "rlm"


@dataclass(frozen=True, kw_only=True)
class RunEnd(_Recorded):
    """A run ended: its answer (None if it gave none) and why it stopped."""

    type: Literal["run_end"] = "run_end"
    answer: Any
    finished: bool
    stop_reason: str
    error: str | None
    iterations: int
    usage: dict[str, Any]  # Usage.to_dict()
    seconds: float


RLMEvent = Annotated[
    RunStart | LMCall | CodeRun | SubCallBegin | SubCall | RunEnd, Field(discriminator="type")
]


def event_dict(event: RLMEvent, **stamp: Any) -> dict[str, Any]:
    """``event`` as the JSON object the trajectory holds (its values are not copied).

    ``stamp`` sets fields in the object without making another event: the run
    stamps ``run`` and ``t`` as it records it.
    """
    names = _NAMES.get(type(event))
    if names is None:
        names = _NAMES[type(event)] = tuple(f.name for f in fields(event))
    laid_out = {name: getattr(event, name) for name in names}
    laid_out.update(stamp)
    return laid_out


_NAMES: dict[type, tuple[str, ...]] = {}  # each event class's fields, in order
