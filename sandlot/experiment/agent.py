"""The single-agent harness: an LM with tools drives a session until it answers or a limit stops it.

The LM is any OpenAI-compatible endpoint that calls tools. Its tools follow the
session's mode: ``execute_code``, ``add_markdown``, ``read_file`` and
``write_file`` in a notebook; ``exec``, ``read_file``, ``write_file`` and
``list_files`` in a filesystem; the served functions themselves in mcp mode. A
reply with no tool call is the answer.

Everything the LM sees of the session is data from a sandbox: each tool result
is cut to ``harness.tool_output_chars`` (head and tail kept). A bad tool call
(unknown name, arguments that are not a JSON object, a tool that fails) is
answered with an error as the tool's result and the run goes on. Every step is
appended to the transcript as it happens (``transcript.jsonl``; its events are
listed in ``docs/experiments.md``); the notebook is the other half of the record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ToolFailure
from ..notebook import AsyncNotebookSession
from ..rlm.lm import OpenAICompatibleLM
from ..rlm.lm_protocol import Completion, LMError
from ..rlm.trajectory import TrajectoryWriter
from .config import ExperimentConfig, LimitsConfig, SingleAgentHarness
from .outputs import RunResult

EventHook = Callable[[dict[str, Any]], None]

SYSTEM_PROMPT = """\
You are a research agent working in a sandlot {mode} session (id {session_id}).
Work through the tools: {tools}. State persists between calls. {mode_note}
Take small steps and look at each result before the next. When the task is done, reply \
with your final answer as plain text, without calling a tool: that ends the run.
"""
MODE_NOTES = {
    "notebook": "Every execute_code call is a cell of a Jupyter notebook that a person will "
    "read; use add_markdown for notes and findings.",
    "filesystem": "Your workspace is a directory in an isolated sandbox without network.",
    "mcp": "The tools are the only functions you can call.",
}


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_STR = {"type": "string"}
_NUM = {"type": "number"}
_FILES: dict[str, tuple[str, dict[str, Any]]] = {
    "read_file": ("Read a text file of the workspace.", _schema({"path": _STR}, ["path"])),
    "write_file": (
        "Write a text file in the workspace (its directories are made).",
        _schema({"path": _STR, "content": _STR}, ["path", "content"]),
    ),
}
BUILTIN_TOOLS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "notebook": {
        "execute_code": (
            "Run Python code as a new notebook cell; returns its output, value and error.",
            _schema(
                {"code": _STR, "timeout": {**_NUM, "description": "seconds (optional)"}}, ["code"]
            ),
        ),
        "add_markdown": (
            "Add a markdown cell (a plan, notes, findings) to the notebook.",
            _schema({"text": _STR}, ["text"]),
        ),
        **_FILES,  # the kernel's workspace: the directory its cells run in
    },
    "filesystem": {
        "exec": (
            "Run a shell command in the workspace; returns exit status, stdout and stderr.",
            _schema({"command": _STR, "timeout": _NUM}, ["command"]),
        ),
        **_FILES,
        "list_files": ("List a directory of the workspace.", _schema({"path": _STR}, [])),
    },
    "mcp": {},
}


def tool_specs(mode: str, functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` for a session of ``mode`` (``functions``: its served functions)."""
    specs = [
        {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
        for n, (d, p) in BUILTIN_TOOLS[mode].items()
    ]
    if mode == "mcp":
        for fn in functions:
            specs.append(
                {
                    "type": "function",
                    "function": {
                        "name": str(fn.get("name")),
                        "description": str(fn.get("description") or "")[:2000],
                        "parameters": fn.get("inputSchema") or _schema({}, []),
                    },
                }
            )
    return specs


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        raise ToolFailure(f"the arguments are not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(value, dict):
        raise ToolFailure(f"the arguments must be a JSON object, not {type(value).__name__}")
    return value


def _text_arg(args: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name, default)
    if not isinstance(value, str):
        raise ToolFailure(f"argument {name!r} must be a string")
    return value


def _number_arg(args: Mapping[str, Any], name: str) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ToolFailure(f"argument {name!r} must be a positive number of seconds")
    return float(value)


class SingleAgent:
    """One run of the single-agent harness over one session."""

    def __init__(
        self,
        lm: OpenAICompatibleLM,
        session: AsyncNotebookSession,
        config: ExperimentConfig,
        writer: TrajectoryWriter,
        *,
        run: str = "run-1",
        on_event: EventHook | None = None,
    ) -> None:
        if not isinstance(config.harness, SingleAgentHarness):
            raise ValueError(f"SingleAgent runs a single_agent harness, not {config.harness.type}")
        self.lm = lm
        self.session = session
        self.config = config
        self.harness = config.harness
        self.limits: LimitsConfig = self.harness.limits
        self.writer = writer
        self.run = run
        self.on_event = on_event
        self.mode = session.mode
        self.tools = tool_specs(self.mode, list(session.info.functions))
        self.tool_names = [t["function"]["name"] for t in self.tools]
        from ..mcp import render  # the notebook extra: imported when a harness runs

        self.renderer = render
        self.render = render.RenderLimits(stdout=self.harness.tool_output_chars // 2)
        self.turns = 0
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost: float | None = None
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.limits.max_time
        self.result: RunResult | None = None  # how the run ended, once it has (even cancelled)
        self.images: list[tuple[str, str]] = []  # (MIME type, base64) the last cells displayed

    # -- record --------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Append ``event`` to the transcript (flushed) and pass it on to ``on_event``."""
        event = {"run": self.run, "t": round(time.monotonic() - self.t0, 6), **event}
        event = self.writer.write(event)  # as recorded: through the run's sink
        if self.on_event is not None:
            self.on_event(event)

    # -- the loop ------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """The conversation's start: the system prompt and the task with the session's prompt."""
        system = (self.harness.system_prompt or SYSTEM_PROMPT).format(
            mode=self.mode,
            session_id=self.session.session_id,
            tools=", ".join(self.tool_names) or "(none)",
            mode_note=MODE_NOTES[self.mode],
        )
        user = self.config.task.strip()
        if self.session.prompt:
            user += "\n\n# What the session holds\n\n" + self.session.prompt
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def spent(self) -> tuple[str, str] | None:
        """The limit that is reached, if one is: (stop reason, what was reached)."""
        lim = self.limits
        if time.monotonic() >= self.deadline:
            return "max_time", f"max_time of {lim.max_time:g} s is up"
        if self.turns >= lim.max_turns:
            return "max_turns", f"all {lim.max_turns} turns are used"
        if lim.max_tool_calls is not None and self.calls >= lim.max_tool_calls:
            return "max_tool_calls", f"all {lim.max_tool_calls} tool calls are used"
        tokens = self.prompt_tokens + self.completion_tokens
        if lim.max_tokens is not None and tokens >= lim.max_tokens:
            return "max_tokens", f"{tokens:,} tokens used of max_tokens={lim.max_tokens:,}"
        if lim.max_cost is not None and (self.cost or 0.0) >= lim.max_cost:
            return "max_cost", f"cost {self.cost:.4f} reached max_cost={lim.max_cost:g}"
        return None

    async def arun(self) -> RunResult:
        """Run until the LM answers or a limit, an LM failure or a cancellation stops it."""
        messages = self.messages()
        self.emit(
            {
                "type": "run_start",
                "experiment": self.config.name,
                "harness": "single_agent",
                "model": self.lm.model,
                "mode": self.mode,
                "session_id": self.session.session_id,
                "notebook": self.session.notebook_path,
                "limits": self.limits.model_dump(),
                "tools": self.tool_names,
                "messages": messages,
                "started_at": time.time(),
            }
        )
        result = RunResult(run=self.run, status="failed", stop_reason="error")
        try:
            result = await self._loop(messages)
        except asyncio.CancelledError:
            result = self._result("interrupted", "interrupted", None, "stopped by Ctrl-C")
            raise
        except Exception as exc:
            result = self._result("failed", "error", None, f"{type(exc).__name__}: {exc}")
        finally:
            self.result = result
            self.emit({"type": "run_end", **result.to_dict()})
        return result

    def _result(self, status: str, reason: str, answer: str | None, error: str | None) -> RunResult:
        return RunResult(
            run=self.run,
            status=status,
            stop_reason=reason,
            answer=answer,
            error=error,
            turns=self.turns,
            tool_calls=self.calls,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost,
            seconds=round(time.monotonic() - self.t0, 3),
            session_id=self.session.session_id,
            notebook=self.session.notebook_path,
        )

    async def _loop(self, messages: list[dict[str, Any]]) -> RunResult:
        while True:
            spent = self.spent()
            if spent is not None:
                return self._result("stopped", spent[0], None, spent[1])
            completion = await self._turn(messages)
            if completion is None:
                return self._result("stopped", "max_time", None, "max_time is up")
            if isinstance(completion, str):
                return self._result("failed", "lm_error", None, completion)
            if not completion.tool_calls:
                return self._result("answered", "answered", completion.text, None)
            messages.append(
                {
                    "role": "assistant",
                    "content": completion.text or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in completion.tool_calls
                    ],
                }
            )
            for call in completion.tool_calls:
                content = await self._tool(call.id, call.name, call.arguments)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
            if self.images:
                messages.append(self._images_message())

    def _images_message(self) -> dict[str, Any]:
        """The images the turn's cells displayed, as a user message (tool results hold text)."""
        shown = [
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
            for mime, data in self.images
        ]
        self.emit(
            {
                "type": "images",
                "turn": self.turns,
                "count": len(shown),
                "mime_types": [mime for mime, _ in self.images],
                "base64_chars": sum(len(data) for _, data in self.images),
            }
        )
        self.images = []
        text = f"The {len(shown)} image(s) the cells above displayed, in order:"
        return {"role": "user", "content": [{"type": "text", "text": text}, *shown]}

    async def _turn(self, messages: list[dict[str, Any]]) -> Completion | str | None:
        """One LM call: its completion, the error's text, or None when the time ran out."""
        self.turns += 1
        started = time.monotonic()
        error: str | None = None
        completion: Completion | None = None
        try:
            completion = await asyncio.wait_for(
                self.lm.acomplete(messages, tools=self.tools or None),
                max(0.0, self.deadline - started),
            )
        except TimeoutError:
            error = f"no reply before max_time of {self.limits.max_time:g} s was up"
        except LMError as exc:
            error = str(exc)
        if completion is not None:
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
            if completion.cost is not None:
                self.cost = (self.cost or 0.0) + completion.cost
        self.emit(
            {
                "type": "lm_call",
                "turn": self.turns,
                "seconds": round(time.monotonic() - started, 6),
                "reply": completion.text if completion else None,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in (completion.tool_calls if completion else ())
                ],
                "finish_reason": completion.finish_reason if completion else None,
                "usage": {
                    "model": self.lm.model,
                    "prompt_tokens": completion.prompt_tokens if completion else 0,
                    "completion_tokens": completion.completion_tokens if completion else 0,
                    "cost": completion.cost if completion else None,
                },
                "error": error,
            }
        )
        if completion is None:
            return None if error and error.startswith("no reply before") else error
        return completion

    async def _tool(self, call_id: str, name: str, raw: str) -> str:
        """Run one tool call; its result (or error) as the text the LM is shown."""
        self.calls += 1
        started = time.monotonic()
        failed = True
        try:
            if name not in self.tool_names:
                raise ToolFailure(f"there is no tool {name[:100]!r}; the tools: {self.tool_names}")
            spent = self.spent()
            if spent is not None and spent[0] in ("max_time", "max_tool_calls"):
                raise ToolFailure(f"not run: {spent[1]}")
            text = await self._dispatch(name, _arguments(raw))
            failed = False
        except ToolFailure as exc:
            text = f"error: {exc}"
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # the session said no: the LM gets to read why
            text = f"error: {type(exc).__name__}: {exc}"
        shown, _ = self.renderer.clip(
            text, self.harness.tool_output_chars, "the notebook or workspace"
        )
        self.emit(
            {
                "type": "tool_call",
                "turn": self.turns,
                "id": call_id,
                "name": name[:200],
                "arguments": raw[:100_000],
                "seconds": round(time.monotonic() - started, 6),
                "result": shown,
                "error": failed,
            }
        )
        return shown

    async def _dispatch(self, name: str, args: dict[str, Any]) -> str:
        session = self.session
        remaining = max(1.0, self.deadline - time.monotonic())
        if name == "execute_code":
            asked = _number_arg(args, "timeout")
            timeout = min(asked or remaining, remaining)
            ex = await session.execute(_text_arg(args, "code"), timeout=timeout)
            where = session.notebook_path or "the notebook"
            blocks = self.renderer.render_execution(ex, session.session_id, where, self.render)
            text = "\n".join(b.text for b in blocks if b.type == "text")
            images = [(b.mime_type, b.data) for b in blocks if b.type == "image"]
            if not images:
                return text
            if self.harness.images:
                self.images += images
                return text + f"\n[{len(images)} image(s): shown to you after the tool results]"
            return text + f"\n[{len(images)} image(s) are in the notebook]"
        if name == "add_markdown":
            position = await session.add_markdown(_text_arg(args, "text"))
            return f"markdown cell added at position {position}"
        if name == "exec":
            asked = _number_arg(args, "timeout")
            done = await session.exec(
                _text_arg(args, "command"), min(asked or remaining, remaining)
            )
            return self.renderer.render_exec(done)
        if name == "read_file":
            return await session.read_file(_text_arg(args, "path"))
        if name == "write_file":
            size = await session.write_file(_text_arg(args, "path"), _text_arg(args, "content"))
            return f"wrote {size} bytes"
        if name == "list_files":
            entries = await session.list_files(_text_arg(args, "path", "."))
            return json.dumps(entries[:1000])
        value = await session.call_function(name, args)
        return value if isinstance(value, str) else json.dumps(value, default=repr)[:1_000_000]
