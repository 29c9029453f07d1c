"""The RLM loop: a root LM writes code in a sandboxed REPL over a context it never reads whole.

One ``RLM.completion(context, query)`` is a tree of runs: the top run, and a
child run for every ``rlm_query`` made while ``depth < max_depth``. The runs of
a tree share one budget (sub-LM calls, tokens, the deadline), one trajectory
file, one bound on concurrent sub-LM calls (``pool_size``) and one sandbox pool
per depth for the children. A limit never raises: the run stops and returns its
best partial answer with the reason.

Secret values (the sandbox config's ``env_file`` entries and named ``secrets``,
and the RLM's extra ``secrets``) never leave the engine: one ``Redactor`` made
with the RLM replaces them with ``[redacted NAME]`` in every message sent to an
LM, every event recorded or passed to ``on_event``, and the result's answer and
error.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field

from .. import backends, snapshots
from ..backends import BackendSpec
from ..config import SandboxConfig, _Strict
from ..errors import ConfigError, SandboxDied, SandboxError
from ..pool import AsyncSandboxPool
from ..results import CodeResult
from ..sandbox import AsyncSandbox
from ..secrets import Redactor, secret_values
from ..sink import Sink
from ..sync import blocking_twin
from ..tasks import TaskScope
from . import prompts
from .events import (
    CallUsage,
    CodeRun,
    ContextInfo,
    LMCall,
    RLMEvent,
    RunEnd,
    RunStart,
    SubCall,
    SubCallBegin,
    event_dict,
)
from .lm_protocol import LM, Completion, LMError, Message, Usage, acomplete, check_lm
from .prelude import PRELUDE, SUBMITTED, final_var_code, load_context_code
from .trajectory import TrajectoryWriter, preview

StopReason = Literal[
    "final",
    "max_iterations",
    "max_llm_calls",
    "max_time",
    "max_tokens",
    "max_errors",
    "lm_error",
    "sandbox_failed",
]
EventHook = Callable[[dict[str, Any]], None]

# Names the REPL gives every run; user tools may not take them.
RESERVED = frozenset(
    {
        "context",
        "answer",
        "llm_query",
        "llm_query_batched",
        "parallel_llm_query",
        "rlm_query",
        "rlm_query_batched",
        "SUBMIT",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
    }
)
CHILD_QUERY = (
    "The context is a task given to you by another model. Do what it asks and finish "
    "with the result."
)
# What the prelude defines: not among the parent's variables a forked child is told of.
_PRELUDE_NAMES = frozenset({*RESERVED, "RLMSubmitted", "ToolError"})
_CODE_BLOCK = re.compile(r"```(?:repl|python|py)[ \t]*\n(.*?)```", re.DOTALL)
_ANY_BLOCK = re.compile(r"```.*?```", re.DOTALL)
_FINAL_VAR = re.compile(r"^\s*FINAL_VAR\(\s*[\"']?([A-Za-z_]\w*)[\"']?\s*\)", re.MULTILINE)
_FINAL_LINE = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.MULTILINE)
_FINAL_LINES = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.MULTILINE | re.DOTALL)


def find_code_blocks(reply: str) -> list[str]:
    """The code of each ```repl / ```python block in ``reply``, in order."""
    return [m.group(1) for m in _CODE_BLOCK.finditer(reply) if m.group(1).strip()]


def find_final(reply: str) -> tuple[Literal["FINAL", "FINAL_VAR"], str] | None:
    """A ``FINAL(...)`` or ``FINAL_VAR(name)`` line outside code blocks, if the reply has one."""
    text = _ANY_BLOCK.sub("", reply)
    match = _FINAL_VAR.search(text)
    if match:
        return "FINAL_VAR", match.group(1)
    match = _FINAL_LINE.search(text) or _FINAL_LINES.search(text)
    if match:
        inner = match.group(1).strip()
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(inner)
            if isinstance(value, str):
                inner = value
        return "FINAL", inner
    return None


def truncate_middle(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to ``limit`` chars with head and tail kept; and how many were dropped."""
    if len(text) <= limit:
        return text, 0
    dropped = len(text) - limit
    head = limit * 2 // 3
    tail = limit - head
    marker = f"\n[... {dropped:,} characters cut from the middle of this output ...]\n"
    return text[:head] + marker + text[len(text) - tail :], dropped


def _merge_secrets(found: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``found`` and ``extra`` in one name -> value map that loses no value.

    A name in both with two values keeps both: the extra one under ``NAME (2)``.
    """
    merged = dict(found)
    for name, value in extra.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigError(f"RLM secrets must map names to str values (got {name!r})")
        key, n = name, 1
        while key in merged and merged[key] != value:
            n += 1
            key = f"{name} ({n})"
        merged[key] = value
    return merged


def format_output(result: CodeResult) -> str:
    """What the LM sees of one code block's run: output, value, error.

    A block that ended by submitting the answer shows no traceback for that.
    """
    parts = [p.rstrip("\n") for p in (result.stdout, result.stderr) if p]
    if result.value is not None:
        parts.append(result.value)
    submitted = result.error is not None and result.error.name == SUBMITTED
    if result.error is not None and not submitted:
        parts.append(result.error.traceback or str(result.error))
    if parts:
        return "\n".join(parts)
    return "(answer submitted)" if submitted else "(no output)"


@dataclass
class RLMResult:
    """What ``RLM.completion`` returns, finished or not.

    ``finished`` is True when the root LM gave its answer. Otherwise a limit (or
    a failure) stopped the run: ``stop_reason`` names it, ``error`` says what
    happened, and ``answer`` is the best partial answer (or ``None``).
    """

    answer: Any
    finished: bool
    stop_reason: StopReason
    error: str | None
    iterations: int
    usage: Usage
    trajectory: list[dict[str, Any]]
    seconds: float
    run_id: str
    trajectory_path: Path | None = None


class _Refused(Exception):
    """A sub-call was refused because a budget is spent."""


@dataclass
class _Tree:
    """What all runs of one completion share."""

    rlm: RLM
    writer: TrajectoryWriter
    deadline: float
    llm_slots: asyncio.Semaphore
    usage_tokens: int = 0
    llm_calls: int = 0
    pools: dict[int, AsyncSandboxPool] = field(default_factory=dict)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def spent(self) -> tuple[StopReason, str] | None:
        """The budget that is spent, if one is."""
        rlm = self.rlm
        if self.remaining() <= 0:
            return "max_time", f"the run's max_time of {rlm.max_time:g} s is up"
        if rlm.max_tokens is not None and self.usage_tokens >= rlm.max_tokens:
            return "max_tokens", (
                f"{self.usage_tokens:,} tokens used of max_tokens={rlm.max_tokens:,}"
            )
        return None

    def take_call(self) -> None:
        """Count one sub-LM call, or refuse it if a budget is spent."""
        spent = self.spent()
        if spent is not None:
            raise _Refused(spent[1])
        if self.llm_calls >= self.rlm.max_llm_calls:
            raise _Refused(f"all max_llm_calls={self.rlm.max_llm_calls} sub-LM calls are used")
        self.llm_calls += 1

    def pool(self, depth: int) -> AsyncSandboxPool:
        """The sandbox pool for child runs at ``depth`` (one per depth: no waits in a circle).

        No reuse: each child's code sees its own context and nothing a sibling left.
        """
        if depth not in self.pools:
            self.pools[depth] = AsyncSandboxPool(
                self.rlm.sandbox, size=self.rlm.pool_size, reuse=False, backend=self.rlm.backend
            )
        return self.pools[depth]


class RLMConfig(_Strict):
    """The RLM's limits and settings as data: ``RLM.from_config(root, sub, RLMConfig(...))``.

    Each field is the :class:`RLM` keyword argument of the same name, with the same
    default; what cannot be data (LMs, tools, hooks, a backend object) stays a
    keyword argument of :meth:`RLM.from_config`.
    """

    pool_size: int = Field(4, ge=1, description="Sub-LM calls at once; child sandboxes per depth.")
    max_iterations: int = Field(30, ge=1, description="Root LM turns per run.")
    max_llm_calls: int = Field(200, ge=0, description="Sub-LM calls for the whole tree.")
    max_depth: int = Field(1, ge=0, description="Levels of child RLMs.")
    max_time: float = Field(600.0, gt=0, description="Seconds for the whole completion.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens for the whole tree.")
    max_errors: int = Field(5, ge=1, description="Consecutive failed turns before a stop.")
    max_output_chars: int = Field(20_000, ge=200, description="Output of a block the LM sees.")
    sub_chars: int = Field(100_000, ge=1, description="Chunk size the prompt suggests.")
    force_parallel: bool = Field(False, description="Make the LM chunk and batch sub-calls.")
    system_prompt: str | None = Field(None, description="Replace the system prompt.")
    warm: int = Field(0, ge=0, description="Sandboxes kept started for the next completions.")


class RLM:
    """A Recursive Language Model: ``RLM(root_lm, sub_lm).completion(context, query)``.

    Args:
        root_lm: the LM that writes the code (any ``AsyncLM`` or ``SyncLM``).
        sub_lm: the LM behind ``llm_query``; also the root LM of child runs.
            Defaults to ``root_lm``.
        sandbox: the config of every sandbox the runs use.
        pool_size: how many sub-LM calls run at once (``llm_query_batched``), and
            how many sandboxes child RLMs get at each depth.
        max_iterations: root LM turns per run.
        max_llm_calls: sub-LM calls for the whole tree (``llm_query`` prompts and
            every LM call a child run makes).
        max_depth: ``rlm_query`` starts a child run while the caller's depth is
            below this (the top run is depth 0); at the limit it is a plain call.
        max_time: seconds for the whole completion.
        max_tokens: prompt and completion tokens for the whole tree, or None.
        max_errors: consecutive turns that fail (a code error, a reply without code
            or answer) before the run stops.
        tools: host functions the REPL may call, by name (or a list of functions).
        trajectory: a JSONL file every event is appended to as it happens.
        models: more LMs ``llm_query(..., model=name)`` may pick, by name; the
            root and sub LM are always there under their ``model`` names.
        max_output_chars: how much of one code block's output the LM is shown
            (head and tail kept).
        sub_chars: the chunk size the system prompt suggests for sub-LM prompts.
        force_parallel: use the system prompt that makes the LM chunk the context
            and use ``llm_query_batched``.
        system_prompt: replace the system prompt (``str.format`` fields as in
            ``prompts.SYSTEM_PROMPT`` are filled in).
        on_event: called with every trajectory event, and with transient
            ``sub_call_begin`` events, as they happen (for progress views).
        warm: keep this many sandboxes started for the next completions, so a
            run does not wait for a cold start. They live until ``close()``: use
            ``with RLM(..., warm=1) as rlm`` (or ``async with``); ``start()``
            warms them before the first completion.
        secrets: more secret values to redact, by name (an LM client's API key,
            say), on top of the sandbox config's (``env_file`` entries and named
            ``secrets``, read when the RLM is made). Every message sent to an LM,
            every trajectory and ``on_event`` event, and the result's answer and
            error show ``[redacted NAME]`` in place of a value; ``redactor`` is
            the ``sandlot.secrets.Redactor`` that does it.
        backend: where the sandboxes run: a backend, a name (``"local"``), or
            None for ``$SANDLOT_BACKEND``, else local.

    Raises:
        ConfigError: a limit is out of range, a tool is misnamed, or the sandbox
            config's secrets cannot be read (a named one is not set on the host,
            the env file is missing or malformed).
    """

    def __init__(
        self,
        root_lm: LM,
        sub_lm: LM | None = None,
        *,
        sandbox: SandboxConfig | None = None,
        pool_size: int = 4,
        max_iterations: int = 30,
        max_llm_calls: int = 200,
        max_depth: int = 1,
        max_time: float = 600.0,
        max_tokens: int | None = None,
        max_errors: int = 5,
        tools: Mapping[str, Callable[..., Any]] | Sequence[Callable[..., Any]] | None = None,
        trajectory: str | Path | None = None,
        models: Mapping[str, LM] | None = None,
        max_output_chars: int = 20_000,
        sub_chars: int = 100_000,
        force_parallel: bool = False,
        system_prompt: str | None = None,
        on_event: EventHook | None = None,
        warm: int = 0,
        secrets: Mapping[str, str] | None = None,
        backend: BackendSpec = None,
    ) -> None:
        self.root_lm = check_lm(root_lm, "RLM root_lm")
        self.sub_lm = check_lm(sub_lm, "RLM sub_lm") if sub_lm is not None else self.root_lm
        self.sandbox = sandbox if sandbox is not None else SandboxConfig()
        self.backend = backends.resolve(backend)
        for name, value, low in (
            ("pool_size", pool_size, 1),
            ("max_iterations", max_iterations, 1),
            ("max_llm_calls", max_llm_calls, 0),
            ("max_depth", max_depth, 0),
            ("max_errors", max_errors, 1),
            ("max_output_chars", max_output_chars, 200),
            ("sub_chars", sub_chars, 1),
            ("warm", warm, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"RLM {name} must be an int of at least {low} (got {value!r})")
        if not max_time > 0:
            raise ConfigError(f"RLM max_time must be positive seconds (got {max_time!r})")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"RLM max_tokens must be at least 1 or None (got {max_tokens!r})")
        self.pool_size = pool_size
        self.max_iterations = max_iterations
        self.max_llm_calls = max_llm_calls
        self.max_depth = max_depth
        self.max_time = float(max_time)
        self.max_tokens = max_tokens
        self.max_errors = max_errors
        self.tools = _tool_map(tools)
        self.trajectory = Path(trajectory) if trajectory is not None else None
        self.models: dict[str, LM] = {self.root_lm.model: self.root_lm}
        self.models[self.sub_lm.model] = self.sub_lm
        for name, lm in (models or {}).items():
            self.models[name] = check_lm(lm, f"RLM models[{name!r}]")
        self.max_output_chars = max_output_chars
        self.sub_chars = sub_chars
        self.force_parallel = force_parallel
        self.system_prompt = system_prompt
        self.on_event = on_event
        self.warm = warm
        # One redactor for all a completion shows or keeps; see the module's docstring.
        self.redactor = Redactor(_merge_secrets(secret_values(self.sandbox), secrets or {}))
        self.sink = Sink(self.redactor)  # the same, for events and answers
        self._warm_pool: AsyncSandboxPool | None = None
        self._warm_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(
        cls, root_lm: LM, sub_lm: LM | None = None, config: RLMConfig | None = None, **runtime: Any
    ) -> RLM:
        """An RLM with the limits of ``config``; ``runtime`` takes the other keyword arguments
        (``sandbox``, ``tools``, ``trajectory``, ``models``, ``on_event``, ``secrets``,
        ``backend``)."""
        settings = (config or RLMConfig()).model_dump()
        return cls(root_lm, sub_lm, **settings, **runtime)

    # -- warm sandboxes ------------------------------------------------------------

    def _ready_pool(self) -> AsyncSandboxPool | None:
        """The pool of warm sandboxes for top runs, if ``warm`` asks for one on this loop."""
        if self.warm == 0:
            return None
        loop = asyncio.get_running_loop()
        if self._warm_pool is None:
            # Not a bound: completions beyond the warm ones start sandboxes of their own.
            # No reuse: completions may serve different users; each gets a fresh sandbox.
            self._warm_pool = AsyncSandboxPool(
                self.sandbox, size=1 << 16, warm=self.warm, reuse=False, backend=self.backend
            )
            self._warm_loop = loop
        return self._warm_pool if self._warm_loop is loop else None

    async def astart(self) -> Self:
        """Start the ``warm`` sandboxes and wait until they are ready."""
        pool = self._ready_pool()
        if pool is not None:
            await pool.start()
            await pool.wait_warm()
        return self

    async def aclose(self) -> None:
        """Terminate the warm sandboxes; the RLM may be used again (and warms again)."""
        pool, self._warm_pool = self._warm_pool, None
        if pool is not None:
            await pool.close()

    start = blocking_twin(astart)
    close = blocking_twin(aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- completions -----------------------------------------------------------------

    async def acompletion(self, context: Any, query: str) -> RLMResult:
        """Answer ``query`` about ``context`` (a str, or JSON data: dict, list, ...).

        ``completion`` is its blocking twin, safe to call from any thread that is
        not sandlot's own loop.
        """
        data, kind, chars = _encode_context(context)
        info, desc = _describe(context, chars)
        tree = _Tree(
            rlm=self,
            writer=TrajectoryWriter(self.trajectory),
            deadline=time.monotonic() + self.max_time,
            llm_slots=asyncio.Semaphore(self.pool_size),
        )
        run = _Run(tree, depth=0, parent=None, root_lm=self.root_lm)
        pool = self._ready_pool()
        try:
            if pool is None:
                return await run.run(info, desc, data, kind, query)
            async with pool.sandbox() as sandbox:  # retired in the background
                return await run.run(info, desc, data, kind, query, sandbox=sandbox)
        finally:
            for pool in tree.pools.values():
                await pool.close()
            tree.writer.close()

    completion = blocking_twin(acompletion)


def _tool_map(
    tools: Mapping[str, Callable[..., Any]] | Sequence[Callable[..., Any]] | None,
) -> dict[str, Callable[..., Any]]:
    if tools is None:
        return {}
    if isinstance(tools, Mapping):
        named = dict(tools)
    else:
        named = {getattr(fn, "__name__", ""): fn for fn in tools}
    for name, fn in named.items():
        if not name.isidentifier() or name.startswith("_"):
            raise ConfigError(f"RLM tool name {name!r} must be a public Python identifier")
        if name in RESERVED:
            raise ConfigError(f"RLM tool name {name!r} is taken by the REPL; rename the tool")
        if not callable(fn):
            raise ConfigError(f"RLM tool {name!r} is not callable: {fn!r}")
    return named


def _encode_context(context: Any) -> tuple[bytes, str, int]:
    """The context as file bytes, how to read it back, and its size in characters."""
    if isinstance(context, str):
        return context.encode("utf-8"), "text", len(context)
    try:
        text = json.dumps(context, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"RLM context must be a str or JSON data (dict, list, numbers, ...); "
            f"{type(context).__name__} could not be encoded: {exc}"
        ) from None
    return text.encode("utf-8"), "json", len(text)


def _describe(context: Any, chars: int) -> tuple[ContextInfo, str]:
    """What a run's events and its LM are told of ``context`` (``chars`` long as sent)."""
    info: ContextInfo = {"type": type(context).__name__, "size": chars}
    return info, prompts.describe_context(context, chars)


@dataclass(frozen=True)
class _Fork:
    """A copy of a run's REPL that child runs start from (``rlm_query(..., fork=True)``)."""

    snap: snapshots.Snapshot
    info: ContextInfo
    desc: str
    variables: tuple[str, ...]  # the parent's own, as the child's LM is told of them
    skipped: tuple[str, ...]  # what the copy could not hold, with why


def _tool_doc(fn: Callable[..., Any]) -> str:
    try:
        signature = str(inspect.signature(fn))
    except (TypeError, ValueError):
        signature = "(...)"
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    return f"`{signature}` {doc[0] if doc else ''}".strip()


class _Run:
    """One run of the loop: a root LM, its sandbox, its turns."""

    def __init__(
        self,
        tree: _Tree,
        *,
        depth: int,
        parent: str | None,
        root_lm: LM,
        fork: _Fork | None = None,
    ) -> None:
        self.tree = tree
        self.fork = fork
        self.rlm = tree.rlm
        self.depth = depth
        self.parent = parent
        self.root_lm = root_lm
        self.run_id = uuid.uuid4().hex[:12]
        self.usage = Usage()
        self.iteration = 0
        self.errors = 0
        self.final: tuple[Any, str] | None = None
        self.partial: Any = None
        self.refusal: str | None = None  # why a sub-call was refused, once one was
        self.t0 = time.monotonic()
        self.sandbox: AsyncSandbox | None = None
        self.owns_sandbox = False  # False for a sandbox borrowed from a pool
        self.preparing: asyncio.Task[None]
        self.info: ContextInfo = {"type": "", "size": 0}
        self.desc = ""

    # -- events ------------------------------------------------------------------

    def emit(self, event: RLMEvent, *, persist: bool = True) -> None:
        """Record ``event`` (unless transient) and pass it to ``on_event``, secrets redacted."""
        t = round(time.monotonic() - self.t0, 6)
        record = self.rlm.sink.data(event_dict(event, run=self.run_id, t=t))
        if persist:
            self.tree.writer.write(record)
        if self.rlm.on_event is not None:
            self.rlm.on_event(record)

    def sub_call_began(
        self, kind: Literal["llm", "rlm"], batch: int | None, child: str | None
    ) -> None:
        """Tell ``on_event`` a sub-call began (transient: the trajectory records its end only)."""
        if self.rlm.on_event is not None:  # nobody else would see it: not even built
            self.emit(SubCallBegin(kind=kind, batch=batch, child=child), persist=False)

    def sub_call_ended(
        self,
        kind: Literal["llm", "rlm"],
        lm: LM,
        batch: int | None,
        started: float,
        prompt: str,
        response: str,
        tokens: int,
        error: str | None,
        child: str | None,
    ) -> None:
        """Record a sub-LM call or child RLM that began at ``started`` (prompt and reply cut)."""
        self.emit(
            SubCall(
                iteration=self.iteration,
                kind=kind,
                model=lm.model,
                batch=batch,
                seconds=round(time.monotonic() - started, 6),
                prompt_chars=len(prompt),
                prompt=preview(prompt),
                response=preview(response),
                tokens=tokens,
                error=error,
                child=child,
            )
        )

    # -- the sandbox -------------------------------------------------------------

    def tools(self) -> dict[str, Callable[..., Any]]:
        return {
            "llm_query": self.llm_query,
            "llm_query_batched": self.llm_query_batched,
            "parallel_llm_query": self.llm_query_batched,
            "rlm_query": self.rlm_query,
            "rlm_query_batched": self.rlm_query_batched,
            "_rlm_submit": self.submit,
            **self.rlm.tools,
        }

    async def prepare(self, sandbox: AsyncSandbox, data: bytes, kind: str) -> None:
        """Give ``sandbox`` the tools, the prelude and the context (or the parent's REPL)."""
        for name, fn in self.tools().items():
            sandbox.register_tool(name, fn)
        if self.fork is not None:
            await sandbox.load_snapshot(self.fork.snap)  # the tools first: it names them
            steps = [PRELUDE]  # afresh: a clean answer, the conventions as this run's
        else:
            path = f"{sandbox.workdir}/.rlm/context.{'txt' if kind == 'text' else 'json'}"
            await sandbox.files.write(path, data)
            steps = [PRELUDE, load_context_code(path, kind)]
        for code in steps:
            result = await sandbox.run_code(code, timeout=max(self.tree.remaining(), 1.0))
            if result.error is not None:
                raise SandboxError(f"the RLM prelude failed in the sandbox: {result.error}")
        self.sandbox = sandbox

    async def start_own_sandbox(self, data: bytes, kind: str) -> None:
        sandbox = AsyncSandbox(self.rlm.sandbox, backend=self.rlm.backend)
        await sandbox.start()
        try:
            await self.prepare(sandbox, data, kind)
        except BaseException:
            await sandbox.terminate()
            raise
        self.owns_sandbox = True

    # -- host tools the REPL calls -----------------------------------------------

    def pick(self, model: str | None, default: LM) -> LM:
        if model is None:
            return default
        if not isinstance(model, str) or model not in self.rlm.models:
            known = ", ".join(sorted(self.rlm.models))
            raise LookupError(f"unknown model {model!r}; this RLM knows: {known}")
        return self.rlm.models[model]

    def submit(self, value: Any, how: str) -> None:
        """``_rlm_submit``: the REPL's finishing conventions end up here."""
        if how == "partial":
            self.partial = value
        elif self.final is None:
            self.final = (value, how)

    async def lm_call(self, lm: LM, messages: Sequence[Message]) -> tuple[Completion, float]:
        """One LM call, bounded by the deadline, counted in usage; no secret reaches the LM."""
        redactor = self.rlm.redactor
        if redactor:
            messages = [{**m, "content": redactor.redact(m["content"])} for m in messages]
        started = time.monotonic()
        try:
            completion = await asyncio.wait_for(
                acomplete(lm, messages), timeout=max(self.tree.remaining(), 0.001)
            )
        except TimeoutError:
            self.usage.add_error(lm.model, time.monotonic() - started)
            raise LMError(f"{lm.model}: no answer before the run's max_time ran out") from None
        except Exception as exc:
            self.usage.add_error(lm.model, time.monotonic() - started)
            if isinstance(exc, LMError):
                raise
            raise LMError(f"{lm.model}: {type(exc).__name__}: {exc}") from exc
        seconds = time.monotonic() - started
        self.usage.add(completion, seconds)
        self.tree.usage_tokens += completion.prompt_tokens + completion.completion_tokens
        return completion, seconds

    async def sub_llm(self, prompt: Any, model: str | None, batch: int | None) -> str:
        """One plain sub-LM call, counted against the tree's budget."""
        if not isinstance(prompt, str):
            raise TypeError(f"llm_query: the prompt must be a str, not {type(prompt).__name__}")
        lm = self.pick(model, self.rlm.sub_lm)
        try:
            self.tree.take_call()
        except _Refused as exc:
            self.refusal = str(exc)
            raise
        async with self.tree.llm_slots:
            started = time.monotonic()
            self.sub_call_began("llm", batch, None)
            error = None
            text = ""
            tokens = 0
            try:
                completion, _ = await self.lm_call(lm, [{"role": "user", "content": prompt}])
                text = completion.text
                tokens = completion.prompt_tokens + completion.completion_tokens
            except LMError as exc:
                error = str(exc)
                raise
            finally:
                self.sub_call_ended("llm", lm, batch, started, prompt, text, tokens, error, None)
        return text

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        """Ask the sub-LM one prompt."""
        return await self.sub_llm(prompt, model, None)

    async def llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """Ask the sub-LM many prompts at once (``pool_size`` at a time); answers in order."""
        return await self.batch(prompts, model, self.sub_llm, "llm_query_batched")

    async def rlm_query(self, prompt: str, model: str | None = None, fork: bool = False) -> str:
        """A child RLM on ``prompt`` (a plain sub-LM call at the depth limit).

        With ``fork``, the child's REPL starts as a copy of this one's at the call,
        and ``prompt`` is its query.
        """
        if not fork:
            return await self.child(prompt, model, None)
        if not isinstance(prompt, str):
            raise TypeError(f"rlm_query: the prompt must be a str, not {type(prompt).__name__}")
        async with self.forked("rlm_query") as origin:
            return await self.child(prompt, model, None, origin)

    async def rlm_query_batched(
        self, prompts: list[str], model: str | None = None, fork: bool = False
    ) -> list[str]:
        """Child RLMs on many prompts at once; answers in order (``fork``: as ``rlm_query``)."""
        name = "rlm_query_batched"
        if not fork:
            return await self.batch(prompts, model, self.child, name)
        self.check_batch(prompts, model, name)
        async with self.forked(name) as origin:
            return await self.batch(
                prompts, model, lambda p, m, i: self.child(p, m, i, origin), name
            )

    @contextlib.asynccontextmanager
    async def forked(self, name: str) -> AsyncIterator[_Fork]:
        """A copy of this run's REPL as it is now (its code waits on this call), for children."""
        if self.depth >= self.rlm.max_depth:
            raise ValueError(
                f"{name}(fork=True) starts a child RLM, and this run is at "
                f"max_depth={self.rlm.max_depth}: put what the sub-LM needs in the prompt"
            )
        sandbox = await self.ready()
        if not sandbox.link.cell_waits():  # else the copy would wait for the cell to end
            raise ValueError(
                f"{name}(fork=True) copies the REPL while the code that calls it waits, so it "
                "must be called from the REPL's own thread, not from a thread the code started"
            )
        limits = self.rlm.sandbox
        bound = snapshots.DEFAULT_MAX_BYTES
        if limits.memory_mb is not None and limits.disk_mb is not None:
            bound = (limits.memory_mb + limits.disk_mb) << 20  # what the REPL and workdir can hold
        async with snapshots.private(sandbox, "sandlot-rlm-fork-", bound) as (taken, snap):
            own = [n for n in taken.captured if not n.startswith("_") and n not in _PRELUDE_NAMES]
            yield _Fork(
                snap=snap,
                info=self.info,
                desc=self.desc,
                variables=tuple(own),
                skipped=tuple(f"{s.name} ({s.why})" for s in taken.skipped),
            )

    def check_batch(self, prompts: Any, model: str | None, name: str) -> None:
        """Refuse a batch that is not a list of str, or names an unknown model: whole, once."""
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"{name}: prompts must be a list of str")
        self.pick(model, self.rlm.sub_lm)

    async def batch(
        self,
        prompts: Any,
        model: str | None,
        one: Callable[[str, str | None, int | None], Awaitable[str]],
        name: str,
    ) -> list[str]:
        self.check_batch(prompts, model, name)

        async def guarded(index: int, prompt: str) -> str:
            try:
                return str(await one(prompt, model, index))
            except Exception as exc:
                return f"Error: {exc}"

        return list(await asyncio.gather(*(guarded(i, p) for i, p in enumerate(prompts))))

    async def child(
        self, prompt: Any, model: str | None, batch: int | None, fork: _Fork | None = None
    ) -> str:
        """Run a child RLM one level deeper on ``prompt``; plain sub-LM call at the limit.

        The child's context is ``prompt``; or, from ``fork``, the copy of this
        run's REPL, with ``prompt`` as its query.
        """
        if self.depth >= self.rlm.max_depth:
            return await self.sub_llm(prompt, model, batch)
        if not isinstance(prompt, str):
            raise TypeError(f"rlm_query: the prompt must be a str, not {type(prompt).__name__}")
        lm = self.pick(model, self.rlm.sub_lm)
        started = time.monotonic()
        if fork is None:
            data, kind, chars = _encode_context(prompt)
            info, desc = _describe(prompt, chars)
            query = CHILD_QUERY
        else:
            data, kind, info, desc, query = b"", "text", fork.info, fork.desc, prompt
        child = _Run(self.tree, depth=self.depth + 1, parent=self.run_id, root_lm=lm, fork=fork)
        self.sub_call_began("rlm", batch, child.run_id)
        async with self.tree.pool(self.depth + 1).sandbox() as sandbox:
            result = await child.run(info, desc, data, kind, query, sandbox=sandbox)
        self.usage.merge(result.usage)
        error = None if result.finished else (result.error or result.stop_reason)
        reply, tokens = str(result.answer), result.usage.total_tokens
        self.sub_call_ended("rlm", lm, batch, started, prompt, reply, tokens, error, child.run_id)
        if result.answer is None:
            raise LMError(f"the child RLM gave no answer: {error}")
        return result.answer if isinstance(result.answer, str) else json.dumps(result.answer)

    # -- the loop ----------------------------------------------------------------

    async def run(
        self,
        info: ContextInfo,
        desc: str,
        data: bytes,
        kind: str,
        query: str,
        *,
        sandbox: AsyncSandbox | None = None,
    ) -> RLMResult:
        """Run the loop on the context ``data`` (of ``kind``; or this run's fork) to an end."""
        rlm = self.rlm
        self.info, self.desc = info, desc
        self.emit(
            RunStart(
                depth=self.depth,
                parent=self.parent,
                started_at=time.time(),
                query=query,
                context=info,
                models={"root": self.root_lm.model, "sub": rlm.sub_lm.model},
                limits={
                    "max_iterations": rlm.max_iterations,
                    "max_llm_calls": rlm.max_llm_calls,
                    "max_depth": rlm.max_depth,
                    "max_time": rlm.max_time,
                    "max_tokens": rlm.max_tokens,
                    "max_errors": rlm.max_errors,
                    "pool_size": rlm.pool_size,
                },
                forked=self.fork is not None,
            )
        )
        try:
            # The sandbox starts while the root LM thinks about its first turn; the scope
            # ends it with the loop (an outer cancellation meanwhile is raised after that).
            async with TaskScope("an RLM run") as scope:
                self.preparing = scope.spawn(
                    self.start_own_sandbox(data, kind)
                    if sandbox is None
                    else self.prepare(sandbox, data, kind),
                    awaited=True,  # by ready()
                )
                reason, detail, answer = await self.loop(desc, query, data, kind)
        except (SandboxError, OSError) as exc:
            reason, detail, answer = "sandbox_failed", f"{exc}", self.best_partial()
        except asyncio.CancelledError:
            self.end("cancelled", "the run was cancelled", self.best_partial())
            raise
        finally:
            if self.owns_sandbox and self.sandbox is not None:
                await self.sandbox.terminate()
        return self.end(reason, detail, answer)

    async def ready(self) -> AsyncSandbox:
        """The run's sandbox, once it is started and holds the context."""
        try:
            await self.preparing
        except (SandboxError, OSError) as exc:
            raise SandboxError(f"the sandbox could not be prepared: {exc}") from exc
        assert self.sandbox is not None
        return self.sandbox

    def end(self, reason: str, detail: str | None, answer: Any) -> RLMResult:
        seconds = time.monotonic() - self.t0
        answer = self.rlm.sink.data(answer)
        if detail is not None:
            detail = self.rlm.redactor.redact(detail)
        finished = reason == "final"
        self.emit(
            RunEnd(
                answer=answer,
                finished=finished,
                stop_reason=reason,
                error=detail,
                iterations=self.iteration,
                usage=self.usage.to_dict(),
                seconds=round(seconds, 6),
            )
        )
        return RLMResult(
            answer=answer,
            finished=finished,
            stop_reason=reason,  # type: ignore[arg-type]
            error=detail,
            iterations=self.iteration,
            usage=self.usage,
            trajectory=self.tree.writer.events,
            seconds=seconds,
            run_id=self.run_id,
            trajectory_path=self.rlm.trajectory,
        )

    def best_partial(self) -> Any:
        return self.partial if self.partial not in (None, "") else None

    def limit_reached(self) -> tuple[StopReason, str] | None:
        rlm = self.rlm
        spent = self.tree.spent()
        if spent is not None:
            return spent
        if self.iteration >= rlm.max_iterations:
            return "max_iterations", f"{rlm.max_iterations} turns without a final answer"
        if self.errors >= rlm.max_errors:
            return "max_errors", f"{self.errors} failed turns in a row"
        return None

    async def loop(
        self, desc: str, query: str, data: bytes, kind: str
    ) -> tuple[StopReason, str | None, Any]:
        rlm = self.rlm
        system = prompts.system_prompt(
            rlm.system_prompt or prompts.SYSTEM_PROMPT,
            context_desc=desc,
            parallelism=rlm.pool_size,
            sub_chars=rlm.sub_chars,
            depth=self.depth,
            max_depth=rlm.max_depth,
            tools={name: _tool_doc(fn) for name, fn in rlm.tools.items()},
            force_parallel=rlm.force_parallel,
        )
        if self.fork is None:
            first = prompts.FIRST_TURN.format(query=query, context_desc=desc)
        else:
            first = prompts.forked_turn(query, desc, self.fork.variables, self.fork.skipped)
        messages: list[Message] = [
            {"role": "system", "content": system},
            {"role": "user", "content": first},
        ]
        refused_before = False
        while True:
            limit = self.limit_reached()
            if limit is None and refused_before:
                limit = "max_llm_calls", f"the sub-LM budget is spent: {self.refusal}"
            if limit is not None:
                return await self.stop_at_limit(limit, messages)
            refused_before = self.refusal is not None
            self.iteration += 1
            try:
                reply = await self.root_turn(messages)
            except LMError as exc:
                return "lm_error", f"the root LM failed: {exc}", self.best_partial()
            feedback, failed = await self.act(reply, data, kind)
            if self.final is not None:
                return "final", None, self.final[0]
            self.errors = self.errors + 1 if failed else 0
            if self.refusal is not None and not refused_before:
                feedback.append(prompts.BUDGET_SPENT.format(detail=self.refusal))
            feedback.append(
                prompts.NEXT_TURN.format(
                    iteration=self.iteration + 1, max_iterations=rlm.max_iterations
                )
            )
            messages.append({"role": "assistant", "content": reply})
            messages.append({"role": "user", "content": "\n\n".join(feedback)})

    async def root_turn(self, messages: list[Message], *, last: bool = False) -> str:
        """Ask the root LM for its next turn and record it."""
        if self.depth > 0:
            try:
                self.tree.take_call()
            except _Refused as exc:
                raise LMError(str(exc)) from None
        prompt_chars = sum(len(m["content"]) for m in messages)
        started = time.monotonic()
        turn = LMCall(
            iteration=self.iteration,
            prompt_chars=prompt_chars,
            messages=len(messages),
            last=last,
            seconds=0.0,
            reply="",
            usage=None,
            error=None,
        )
        try:
            completion, seconds = await self.lm_call(self.root_lm, messages)
        except LMError as exc:
            self.emit(replace(turn, seconds=round(time.monotonic() - started, 6), error=str(exc)))
            raise
        usage: CallUsage = {
            "model": completion.model,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cost": completion.cost,
        }
        reply = completion.text
        self.emit(replace(turn, seconds=round(seconds, 6), reply=reply, usage=usage))
        return reply

    async def act(self, reply: str, data: bytes, kind: str) -> tuple[list[str], bool]:
        """Run the reply's code blocks and FINAL line: what the LM is shown, and if it failed."""
        feedback: list[str] = []
        failed = False
        blocks = find_code_blocks(reply)
        for index, code in enumerate(blocks):
            shown, ok = await self.run_block(index, code, data, kind)
            label = (
                f"REPL output (block {index + 1} of {len(blocks)}):"
                if len(blocks) > 1
                else "REPL output:"
            )
            feedback.append(f"{label}\n{shown}")
            failed = failed or not ok
            if self.final is not None:
                return feedback, failed
        final = find_final(reply)
        if final is not None:
            how, text = final
            if how == "FINAL":
                self.final = (text, "FINAL")
                return feedback, failed
            shown, ok = await self.run_block(len(blocks), final_var_code(text), data, kind)
            if self.final is not None:
                return feedback, failed
            feedback.append(f"FINAL_VAR({text}) did not finish the run:\n{shown}")
            failed = True
        elif not blocks:
            feedback.append(prompts.NO_CODE)
            failed = True
        return feedback, failed

    async def run_block(self, index: int, code: str, data: bytes, kind: str) -> tuple[str, bool]:
        """Run one code block; its output as the LM sees it, and whether it ran without error."""
        sandbox = await self.ready()
        started = time.monotonic()
        error: str | None = None
        try:
            result = await sandbox.run_code(code, timeout=max(self.tree.remaining(), 0.001))
            shown = format_output(result)
            if result.error is not None and result.error.name != SUBMITTED:
                error = str(result.error)
            if self.final is None and error is None:
                await sandbox.run_code("_rlm_poll()")
        except SandboxDied as exc:
            error = f"SandboxDied: {exc}"
            shown = await self.revive(exc, data, kind)
        # Redacted before the cut, so the cut cannot leave half a secret unrecognised.
        shown = self.rlm.redactor.redact(shown)
        shown, dropped = truncate_middle(shown, self.rlm.max_output_chars)
        self.emit(
            CodeRun(
                iteration=self.iteration,
                block=index,
                seconds=round(time.monotonic() - started, 6),
                code=code,
                output=shown,
                error=error,
                truncated=dropped,
            )
        )
        return shown, error is None

    async def revive(self, exc: SandboxDied, data: bytes, kind: str) -> str:
        """After the sandbox died: a new one with the context, and what to tell the LM."""
        lost = f"The sandbox died while running this code ({exc}). Its variables are lost."
        if self.tree.remaining() <= 0:
            return lost
        old, owned = self.sandbox, self.owns_sandbox
        self.sandbox, self.owns_sandbox = None, False
        if old is not None and owned:
            await old.terminate()
        try:
            await self.start_own_sandbox(data, kind)
        except (SandboxError, OSError) as again:
            raise SandboxDied("failed_to_start", f"{exc}; restarting it failed: {again}") from again
        how = "from the parent's REPL copy" if self.fork else "with `context` loaded"
        return lost + f" A new sandbox was started {how} again; redo what you need."

    async def stop_at_limit(
        self, limit: tuple[StopReason, str], messages: list[Message]
    ) -> tuple[StopReason, str | None, Any]:
        """Stop for ``limit``; ask the root LM for its best answer if budget is left for it."""
        reason, detail = limit
        if self.sandbox is not None and self.sandbox.is_alive:
            with contextlib.suppress(SandboxError):
                await self.sandbox.run_code("_rlm_poll()\n_rlm_partial()")
        if self.final is not None:
            return "final", None, self.final[0]
        answer = self.best_partial()
        if (
            reason in ("max_iterations", "max_errors", "max_llm_calls")
            and self.tree.spent() is None
        ):
            ask: list[Message] = [
                *messages,
                {"role": "user", "content": prompts.LAST_CHANCE.format(reason=detail)},
            ]
            try:
                reply = await self.root_turn(ask, last=True)
            except LMError:
                reply = ""
            final = find_final(reply)
            if final is not None and final[0] == "FINAL":
                answer = final[1]
            elif final is not None and self.sandbox is not None:
                with contextlib.suppress(SandboxError):
                    await self.sandbox.run_code(final_var_code(final[1]))
                if self.final is not None:
                    answer, self.final = self.final[0], None
            elif reply.strip() and answer is None:
                answer = reply.strip()
        return reason, f"stopped: {detail}", answer
