"""Stage 3 and the whole experiment: the harnesses, N runs side by side, the records.

``run_harness(env, execution, config, run_dir)`` runs one harness over one
session; ``run_experiment(config)`` runs all three stages for each of
``harness.runs`` runs, at most ``harness.max_parallel`` at once, each with its
own session and its own ``run-<k>/`` directory, and writes a summary.
``deploy_experiment(config)`` is stages 1 and 2 with a session that outlives
the process, and the text that tells an outside agent how to attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rlm.engine import RLM
from ..rlm.trajectory import TrajectoryWriter
from ..sink import private_opener
from ..sync import blocking_twin
from .agent import EventHook, SingleAgent
from .config import ExperimentConfig, ExternalHarness, RLMHarness, SingleAgentHarness
from .outputs import RunResult, new_batch_dir, save_workspace, write_json
from .stages import EnvironmentHandle, ExecutionHandle, asetup_environment, asetup_execution

TRANSCRIPT = "transcript.jsonl"
NOTEBOOK = "notebook.ipynb"
SUMMARY = "summary.json"


@dataclass
class ExperimentResult:
    """All runs of one invocation: their results and the directory that holds them."""

    name: str
    directory: Path
    runs: list[RunResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when every run gave its answer."""
        return bool(self.runs) and all(r.status == "answered" for r in self.runs)


async def arun_harness(
    env: EnvironmentHandle,
    execution: ExecutionHandle | None,
    config: ExperimentConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    run: str = "run-1",
    on_event: EventHook | None = None,
) -> RunResult:
    """Stage 3: run the configured harness (single_agent or rlm) and record it in ``run_dir``.

    single_agent drives ``execution``'s session; rlm ignores it (the engine
    makes its own sandboxes from the environment's config). The transcript is
    ``run_dir/transcript.jsonl`` (a temporary record only in memory without
    ``run_dir``); ``summary.json`` is written at the end, however it ends.
    """
    config = config or env.config
    harness = config.harness
    folder = Path(run_dir) if run_dir is not None else None
    sink = env.sink
    writer = TrajectoryWriter(folder / TRANSCRIPT if folder is not None else None, sink)
    result = RunResult(run=run, status="failed", stop_reason="error")
    agent: SingleAgent | None = None
    try:
        if isinstance(harness, SingleAgentHarness):
            if execution is None:
                raise ValueError("the single_agent harness needs a session: run setup_execution")
            agent = SingleAgent(
                harness.lm.client(), execution.session, config, writer, run=run, on_event=on_event
            )
            result = await agent.arun()
        elif isinstance(harness, RLMHarness):
            result = await _run_rlm(env, config, harness, writer, run, on_event)
        else:  # ExternalHarness
            raise ValueError("the external harness runs no agent: use deploy, then attach")
    finally:
        writer.close()
        if agent is not None and agent.result is not None:  # also when cancelled
            result = agent.result
        result.redacted(sink)
        if folder is not None:
            result.run_dir = str(folder)
            write_json(folder / SUMMARY, result.to_dict())
    return result


run_harness = blocking_twin(arun_harness)


async def _run_rlm(
    env: EnvironmentHandle,
    config: ExperimentConfig,
    harness: RLMHarness,
    writer: TrajectoryWriter,
    run: str,
    on_event: EventHook | None,
) -> RunResult:
    root = harness.lm.client()
    sub = harness.sub_lm.client() if harness.sub_lm is not None else None
    started = time.monotonic()

    def hook(event: dict[str, Any]) -> None:
        if event.get("type") != "sub_call_begin":
            writer.write(event)
        if on_event is not None:
            on_event({**event, "run": run})

    rlm = RLM.from_config(
        root,
        sub,
        harness.rlm,
        sandbox=env.serve_config or env.session_config,
        on_event=hook,
        backend=env.backend,
    )
    done = await rlm.acompletion(harness.context or "", config.task)
    usage = done.usage
    answer = (
        done.answer if isinstance(done.answer, str) or done.answer is None else str(done.answer)
    )
    return RunResult(
        run=run,
        status="answered" if done.finished else "stopped",
        stop_reason="answered" if done.finished else done.stop_reason,
        answer=answer,
        error=done.error,
        turns=done.iterations,
        tool_calls=sum(1 for e in done.trajectory if e.get("type") == "code"),
        prompt_tokens=sum(m.prompt_tokens for m in usage.models.values()),
        completion_tokens=sum(m.completion_tokens for m in usage.models.values()),
        cost=usage.cost,
        seconds=round(time.monotonic() - started, 3),
    )


async def _one_run(
    env: EnvironmentHandle,
    config: ExperimentConfig,
    folder: Path,
    run: str,
    on_event: EventHook | None,
) -> RunResult:
    """Stages 2 and 3 for one run, in ``folder``; the session ends with it, however it ends."""
    folder.mkdir()
    execution: ExecutionHandle | None = None
    sink = env.sink
    log = open(folder / "run.log", "a", encoding="utf-8", opener=private_opener)  # noqa: SIM115

    def note(event: dict[str, Any]) -> None:
        line = f"{time.strftime('%H:%M:%S')} {event.get('type')}"
        for key in ("stage", "turn", "name", "stop_reason", "status", "error"):
            if event.get(key) not in (None, False, ""):
                line += f" {key}={str(event[key])[:200]!r}"
        log.write(sink.text(line) + "\n")
        log.flush()
        if on_event is not None:
            on_event(event)

    try:
        if config.harness.needs_session:
            note({"type": "stage", "run": run, "stage": "execution"})
            execution = await asetup_execution(
                env, config, notebook=folder / NOTEBOOK, name=f"{config.name}-{run}"
            )
            note(
                {
                    "type": "stage",
                    "run": run,
                    "stage": "harness",
                    "session_id": execution.session_id,
                    "seconds": round(execution.seconds, 3),
                }
            )
        else:
            note({"type": "stage", "run": run, "stage": "harness"})
        try:
            result = await arun_harness(env, execution, config, folder, run=run, on_event=note)
        except Exception as exc:
            result = RunResult(
                run=run, status="failed", stop_reason="error", error=f"{type(exc).__name__}: {exc}"
            )
        if execution is not None and execution.mode == "filesystem":
            report = await save_workspace(execution.session, folder / "workspace")
            result.extra["workspace"] = {"written": report.written, "skipped": report.skipped}
            write_json(folder / SUMMARY, result.redacted(sink).to_dict())
        return result
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # stage 2 failed: the run failed, the others go on
        result = RunResult(
            run=run, status="failed", stop_reason="error", error=f"{type(exc).__name__}: {exc}"
        )
        return result.redacted(sink)
    finally:
        if execution is not None:
            await asyncio.shield(execution.aclose())
        note({"type": "stage", "run": run, "stage": "done"})
        log.close()


async def arun_experiment(
    config: ExperimentConfig,
    *,
    source: str | Path | None = None,
    on_event: EventHook | None = None,
    on_directory: Callable[[Path], None] | None = None,
) -> ExperimentResult:
    """All three stages, for each of ``harness.runs`` runs (``harness.max_parallel`` at once).

    The runs' records go to a new directory under ``outputs.dir/<name>/``; it
    also gets a copy of the experiment file (``source``) and the checked config.
    Cancelling this (Ctrl-C in ``sandlot experiment run``) stops every run
    after or inside its current step, ends every session, and writes each
    run's transcript end and summary before the cancellation goes on.
    """
    if isinstance(config.harness, ExternalHarness):
        raise ValueError("the external harness runs no agent: use deploy_experiment")
    batch = new_batch_dir(config.outputs.dir, config.name)
    if on_directory is not None:
        on_directory(batch)
    if source is not None:
        (batch / "experiment.yaml").write_bytes(Path(source).read_bytes())
    write_json(batch / "config.json", config.model_dump(mode="json"))
    result = ExperimentResult(config.name, batch)
    if on_event is not None:
        on_event({"type": "stage", "run": "*", "stage": "environment"})
    env = await asetup_environment(config)
    if on_event is not None:
        on_event(
            {"type": "stage", "run": "*", "stage": "environment ready", "detail": env.describe()}
        )
    slots = asyncio.Semaphore(config.harness.max_parallel)
    names = [f"run-{k}" for k in range(1, config.harness.runs + 1)]

    async def limited(run: str) -> RunResult:
        async with slots:
            return await _one_run(env, config, batch / run, run, on_event)

    try:
        # Cancelled, the group cancels every run and waits for each to write its end.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(limited(run)) for run in names]
    except asyncio.CancelledError:
        result.interrupted = True
        result.runs = [_finished(batch / run, run) for run in names]
        write_json(batch / SUMMARY, [r.to_dict() for r in result.runs])
        raise
    result.runs = [task.result() for task in tasks]
    write_json(batch / SUMMARY, [r.to_dict() for r in result.runs])
    return result


def _finished(folder: Path, run: str) -> RunResult:
    """What a cancelled run left in its ``summary.json`` (a run that never started: nothing)."""
    import json

    with contextlib.suppress(OSError, ValueError, TypeError):
        data = json.loads((folder / SUMMARY).read_text())
        data.pop("tokens", None)
        return RunResult(**data)
    return RunResult(run=run, status="interrupted", stop_reason="interrupted", run_dir=str(folder))


run_experiment = blocking_twin(arun_experiment)


async def adeploy_experiment(config: ExperimentConfig) -> tuple[EnvironmentHandle, ExecutionHandle]:
    """Stages 1 and 2 with a session that outlives this process (until idle or shut down).

    Its notebook goes to a new directory under ``outputs.dir/<name>/``.
    """
    env = await asetup_environment(config)
    batch = new_batch_dir(config.outputs.dir, config.name)
    execution = await asetup_execution(
        env, config, notebook=batch / NOTEBOOK, name=config.name, persist=True
    )
    return env, execution


def attach_text(config: ExperimentConfig, execution: ExecutionHandle) -> str:
    """What ``deploy`` prints: the session, the MCP client config, the prompt for the agent."""
    from ..mcp.clients import render_config

    args = [] if execution.mode == "notebook" else ["--mode", execution.mode]
    block = render_config(
        "sandlot",
        [*args, "--session", execution.session_id],
        session_id=execution.session_id,
        info=execution.session.info,
    )
    head = [
        f"# Session {execution.session_id} ({execution.mode} mode) is ready.",
        f"# Notebook: {execution.notebook_path}" if execution.notebook_path else "",
        f"# Work in it yourself: sandlot sessions attach {execution.session_id}",
        f"# End it: sandlot sessions shutdown {execution.session_id}",
        "",
    ]
    return (
        "\n".join(line for line in head if line or not head)
        + "\n"
        + block
        + ("\n# The task:\n" + config.task.strip() + "\n")
    )
