"""``sandlot experiment``: deploy an experiment for an outside agent, run it, view a run.

``deploy FILE`` runs stages 1 and 2 and prints how to attach; ``run FILE`` runs
all three with a live progress view (Ctrl-C stops cleanly, a second Ctrl-C
kills); ``view DIR`` writes a run's transcript and notebook as one HTML page.
Heavy imports happen inside the commands, so ``sandlot --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..console import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    OpenPageOpt,
    err_console,
    fail,
    group,
    say,
    write_page,
)

if TYPE_CHECKING:
    from .config import ExperimentConfig

experiment_app = group("Experiments from one YAML file: deploy for an outside agent, run, view.")

FileArg = Annotated[Path, typer.Argument(help="The experiment's YAML file.", metavar="FILE")]


def _load(file: Path) -> ExperimentConfig:
    """The checked config of ``file``; a bad one ends the command with every problem listed."""
    from ..errors import ConfigError
    from .config import load_config

    try:
        return load_config(file)
    except ConfigError as exc:
        err_console().print(f"sandlot: error: {exc}", style="bold red", markup=False)
        raise typer.Exit(EXIT_ERROR) from None


def _needs_extra() -> None:
    try:
        import mcp  # noqa: F401
        import openai  # noqa: F401
    except ImportError as exc:
        fail(
            f"sandlot experiment needs the notebook and rlm extras ({exc.name} is missing): "
            "pip install 'sandlot[notebook,rlm]'"
        )


@experiment_app.command("deploy")
def deploy_command(file: FileArg) -> None:
    """Stages 1 and 2: a warm session that outlives this command; print how to attach to it."""
    from ..console import expected_errors
    from ..sync import portal
    from .runner import adeploy_experiment, attach_text

    _needs_extra()
    config = _load(file)
    with expected_errors():
        say(f"{config.name}: setting up the environment and the session...", style="dim")
        env, execution = portal().wait(adeploy_experiment(config))
        say(f"{config.name}: ready ({env.describe()})", style="dim")
        typer.echo(attach_text(config, execution), nl=False)
        execution.close(shutdown=False)


@experiment_app.command("run")
def run_command(
    file: FileArg,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live progress view.")] = False,
) -> None:
    """All three stages, with a live progress view; a summary table at the end.

    Exit status: 0 when every run answered, 1 when a limit or a failure stopped
    one, 2 for a bad file, 130 after Ctrl-C (the outputs so far are kept; a
    second Ctrl-C kills at once).
    """
    from rich.console import Console
    from rich.live import Live

    from ..console import expected_errors
    from .progress import ExperimentProgress
    from .runner import ExperimentResult, arun_experiment

    _needs_extra()
    config = _load(file)
    console = Console(stderr=True)
    live = not quiet and console.is_terminal
    progress = ExperimentProgress(config.name, None if live else (None if quiet else sys.stderr))
    where: list[Path] = []
    presses = 0

    def kill_now() -> None:
        os.write(2, b"\nsandlot: killed\n")
        os._exit(EXIT_INTERRUPTED)

    async def main() -> ExperimentResult | None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                kill_now()
            os.write(2, b"\nsandlot: stopping the runs (Ctrl-C again to kill)...\n")
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await arun_experiment(
                config, source=file, on_event=progress, on_directory=where.append
            )
        except asyncio.CancelledError:
            return None
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            if presses:  # what is left (the summary) is cut short by another Ctrl-C too
                signal.signal(signal.SIGINT, lambda _signum, _frame: kill_now())

    result: ExperimentResult | None = None
    with expected_errors():
        if live:
            with Live(progress, console=console, refresh_per_second=4):
                result = asyncio.run(main())
        else:
            result = asyncio.run(main())
    if result is None:
        folder = where[0] if where else Path(config.outputs.dir) / config.name
        _print_summary(folder)
        say(f"interrupted; the outputs so far are in {folder}")
        raise typer.Exit(EXIT_INTERRUPTED)
    _print_summary(result.directory)
    typer.echo(f"outputs: {result.directory}")
    raise typer.Exit(0 if result.ok else 1)


def _print_summary(folder: Path) -> None:
    """The summary table of the runs in ``folder`` (from their ``summary.json``), on stdout."""
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..sink import Sink
    from .outputs import SUMMARY_COLUMNS, RunResult

    rows: list[Any] = []
    for run in sorted(folder.glob("run-*"), key=lambda p: (len(p.name), p.name)):
        try:
            data = json.loads((run / "summary.json").read_text())
            data.pop("tokens", None)
            rows.append(RunResult(**data).row())
        except (OSError, ValueError, TypeError):
            rows.append([run.name, "no summary", *[""] * (len(SUMMARY_COLUMNS) - 2)])
    if not rows:
        return
    table = Table(*SUMMARY_COLUMNS)
    shown = Sink.to(sys.stdout)  # an answer or an error may quote a sandbox
    for row in rows:
        table.add_row(*(Text(shown.text(cell)) for cell in row))  # Text: no markup
    console = Console(highlight=False)
    if not console.is_terminal:  # a log or a pipe: the whole table, not one cut to 80 columns
        console.width = 200
    console.print(table)


@experiment_app.command("view")
def view_command(
    folder: Annotated[
        Path, typer.Argument(help="A run's directory (run-<k>/) or an invocation's.", metavar="DIR")
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="OUT.html", help="Default: DIR/view.html."),
    ] = None,
    open_page: OpenPageOpt = False,
) -> None:
    """Write the run's transcript and notebook as one self-contained HTML page; print its path."""
    from .view import write_view

    if not folder.is_dir():
        fail(f"{folder}: not a directory")
    write_page(
        lambda: write_view(folder, output), f"{folder}: a transcript is not UTF-8 text", open_page
    )
