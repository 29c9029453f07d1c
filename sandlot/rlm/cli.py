"""``sandlot rlm``: ask a Recursive Language Model, run the needle-in-a-haystack test, view runs.

Heavy imports (the LM client, the engine) happen inside the commands, so
``sandlot --help`` stays fast.

The LM clients live on the host: every sub-LM call crosses from the sandbox to
the host's router, so the API key (from the environment or ``--env-file``)
never enters a sandbox, and the values of ``--env-file`` are redacted from all
the run shows or saves.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import backends
from ..console import OpenPageOpt, RawOpt, fail, group, write_page
from ..sink import Sink

rlm_app = group("Recursive Language Models: ask, needle-in-a-haystack, view a trajectory.")


@rlm_app.command("view")
def view_command(
    file: Annotated[Path, typer.Argument(help="A trajectory (JSONL) file.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="OUT.html",
            help="Where to write the page (default: FILE with the suffix .html).",
        ),
    ] = None,
    open_page: OpenPageOpt = False,
) -> None:
    """Render a trajectory as one self-contained HTML page and print its path."""
    from .view import write_html

    if not file.is_file():
        fail(f"{file}: no such file" if not file.exists() else f"{file}: not a file")
    write_page(
        lambda: write_html(file, output),
        f"{file}: not a JSONL trajectory (not UTF-8 text)",
        open_page,
    )


# -- ask and niah --------------------------------------------------------------

ModelOpt = Annotated[str, typer.Option("--model", help="The root LM's model name.")]
SubModelOpt = Annotated[
    str | None,
    typer.Option("--sub-model", "--recursive-model", help="The sub-LM's model (default: --model)."),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="An OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else OpenAI's).",
    ),
]
ApiKeyEnvOpt = Annotated[
    str,
    typer.Option("--api-key-env", help="The environment variable that holds the API key."),
]
PoolOpt = Annotated[
    int, typer.Option("--pool-size", min=1, help="Sub-calls at once (and child sandboxes).")
]
ParallelOpt = Annotated[
    bool,
    typer.Option("--force-parallel", help="Make the LM chunk the context and batch sub-calls."),
]
IterOpt = Annotated[int, typer.Option("--max-iterations", min=1, help="Root LM turns.")]
CallsOpt = Annotated[int, typer.Option("--max-llm-calls", min=0, help="Sub-LM calls in all.")]
DepthOpt = Annotated[int, typer.Option("--max-depth", min=0, help="Levels of child RLMs.")]
TimeOpt = Annotated[float, typer.Option("--max-time", min=1, help="Seconds for the run.")]
TrajOpt = Annotated[
    Path | None, typer.Option("--trajectory", help="Append the run's events to this JSONL file.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No live progress view.")]
EnvFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        metavar="FILE",
        help="A .env file read on the host: the API key (the --api-key-env variable) and "
        "OPENAI_BASE_URL come from it when the environment and --base-url do not set them. "
        "The sub-LM calls run on the host, so the key never enters a sandbox; the file's "
        "values are redacted from what the LMs see, the trajectory and the terminal.",
    ),
]


@dataclass(frozen=True)
class LMSettings:
    """Where the LM clients connect, and the secret values the run must redact.

    ``secrets`` holds every entry of ``--env-file`` and the API key in use; its
    values are never printed.
    """

    api_key: str | None
    base_url: str | None
    secrets: dict[str, str]

    def __repr__(self) -> str:
        return f"LMSettings(base_url={self.base_url!r}, secrets=[{', '.join(self.secrets)}])"


def _settings(env_file: Path | None, api_key_env: str, base_url: str | None) -> LMSettings:
    """The API key and base URL: the options, then the environment, then ``env_file``.

    A malformed or missing ``env_file`` ends the command (status 2) with the
    file and line, never the line's text.
    """
    import os

    from sandlot.errors import ConfigError
    from sandlot.secrets import read_env_file

    values: dict[str, str] = {}
    if env_file is not None:
        try:
            values = read_env_file(env_file)
        except ConfigError as exc:
            fail(str(exc))
    key_name = api_key_env
    key = os.environ.get(api_key_env) or values.get(api_key_env) or None
    if key is None and os.environ.get("OPENAI_API_KEY"):
        key_name, key = "OPENAI_API_KEY", os.environ["OPENAI_API_KEY"]  # the client's own default
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or values.get("OPENAI_BASE_URL")
    secrets = dict(values)
    if key is not None and secrets.get(key_name) != key:
        secrets[key_name if key_name not in secrets else f"{key_name} (environment)"] = key
    return LMSettings(key, base_url or None, secrets)


def _lms(model: str, sub_model: str | None, settings: LMSettings, api_key_env: str) -> Any:
    """The root and sub LM clients for the options given."""
    from .lm import OpenAICompatibleLM

    if settings.api_key is None and settings.base_url is None:
        fail(
            f"no API key: set {api_key_env} in the environment or in --env-file FILE "
            "(for a local server that needs none, give its --base-url)"
        )
    try:
        root = OpenAICompatibleLM(model, base_url=settings.base_url, api_key=settings.api_key)
    except (ImportError, ValueError) as exc:
        fail(str(exc))
    return root, root.with_model(sub_model) if sub_model else root


def _run(rlm_kwargs: dict[str, Any], context: Any, query: str, quiet: bool) -> Any:
    """Run one completion with a live progress view on stderr; return the result."""
    from rich.console import Console
    from rich.live import Live

    from .engine import RLM
    from .progress import RunProgress

    progress = RunProgress(query)
    console = Console(stderr=True)
    show = not quiet and console.is_terminal
    try:
        rlm = RLM(**rlm_kwargs, on_event=progress if show else None)
        if not show:
            return rlm.completion(context, query)
        with Live(progress, console=console, refresh_per_second=8, transient=False):
            return rlm.completion(context, query)
    except (TypeError, ValueError) as exc:
        fail(str(exc))


def _report(result: Any) -> None:
    """Say on stderr how the run ended and what it spent."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=True, highlight=False)
    how = "finished" if result.finished else f"stopped ({result.stop_reason})"
    # Escaped: an error is text from the LM or the sandbox (a "[redacted NAME]" is no markup).
    error = Sink.to(sys.stderr).text(result.error) if result.error else None
    console.print(
        f"[bold]{how}[/] after {result.iterations} turns in {result.seconds:.1f} s"
        + (f": {escape(error)}" if error else "")
    )
    table = Table("model", "calls", "errors", "prompt tokens", "completion tokens", "cost")
    for name, m in result.usage.models.items():
        cost = f"{m.cost:.4f}" if m.cost is not None else "-"
        table.add_row(
            name,
            str(m.calls),
            str(m.errors),
            f"{m.prompt_tokens:,}",
            f"{m.completion_tokens:,}",
            cost,
        )
    console.print(table)
    if result.trajectory_path is not None:
        console.print(f"trajectory: {escape(str(result.trajectory_path))}")


@rlm_app.command("ask")
def ask_command(
    context_file: Annotated[
        Path,
        typer.Option(
            "--context", help="The context: a text file, or a .json file read as JSON data."
        ),
    ],
    query: Annotated[str, typer.Option("--query", help="What to ask about the context.")],
    model: ModelOpt = "gpt-5",
    sub_model: SubModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    pool_size: PoolOpt = 4,
    force_parallel: ParallelOpt = False,
    max_iterations: IterOpt = 30,
    max_llm_calls: CallsOpt = 200,
    max_depth: DepthOpt = 1,
    max_time: TimeOpt = 600.0,
    trajectory: TrajOpt = None,
    quiet: QuietOpt = False,
    env_file: EnvFileOpt = None,
    raw_output: RawOpt = False,
) -> None:
    """Ask a Recursive Language Model about a long context; the answer goes to stdout.

    The LMs are called from the host (sub-LM calls included), so the API key
    never enters a sandbox. Exit status: 0 when the LM gave its answer, 1 when a
    limit stopped it (the best partial answer is printed), 2 for bad input.
    """
    import json

    try:
        raw = context_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the context file {context_file}: {exc}")
    context: Any = raw
    if context_file.suffix == ".json":
        try:
            context = json.loads(raw)
        except json.JSONDecodeError as exc:
            fail(f"{context_file}: not valid JSON ({exc}); rename it to read it as text")
    settings = _settings(env_file, api_key_env, base_url)
    root, sub = _lms(model, sub_model, settings, api_key_env)
    result = _run(
        {
            "root_lm": root,
            "sub_lm": sub,
            "pool_size": pool_size,
            "force_parallel": force_parallel,
            "max_iterations": max_iterations,
            "max_llm_calls": max_llm_calls,
            "max_depth": max_depth,
            "max_time": max_time,
            "trajectory": trajectory,
            "secrets": settings.secrets,
        },
        context,
        query,
        quiet,
    )
    _report(result)
    answer = result.answer  # made in the sandbox: redacted by the engine, escaped here
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    typer.echo(Sink.to(sys.stdout, raw=raw_output).text(text))
    raise typer.Exit(0 if result.finished else 1)


@rlm_app.command("niah")
def niah_command(
    lines: Annotated[
        int, typer.Option("--num-lines", "--lines", min=1, help="Lines in the haystack.")
    ] = 100_000,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="Where the sandboxes run: a backend's name (sandlot.backends; 'local', "
            "bubblewrap sandboxes on this machine, is the one built in). The LMs are "
            "called from the host whatever the mode. Default: $SANDLOT_BACKEND, else local.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the haystack and needle.")] = 0,
    stand_in: Annotated[
        bool,
        typer.Option(
            "--stand-in",
            help="No LM: a scripted root policy and a sub-LM stand-in (--sub-latency) play "
            "the LMs, to test the engine itself.",
        ),
    ] = False,
    sub_latency: Annotated[
        float, typer.Option("--sub-latency", min=0, help="The stand-in's latency (s).")
    ] = 0.2,
    model: ModelOpt = "gpt-5",
    sub_model: Annotated[
        str | None,
        typer.Option("--recursive-model", "--sub-model", help="The sub-LM's model."),
    ] = "gpt-5-nano",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    env_file: EnvFileOpt = None,
    pool_size: PoolOpt = 4,
    force_parallel: ParallelOpt = False,
    max_iterations: IterOpt = 10,
    max_time: TimeOpt = 1800.0,
    trajectory: TrajOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Needle in a haystack: hide a number in N generated lines and ask the RLM for it.

    Takes the seed's flags (--mode, --num-lines, --model, --recursive-model,
    --max-iterations, --pool-size, --force-parallel, --env-file). Prints
    ``Result``, ``Expected`` and ``Match``; exit status 0 on a match, 1 if not,
    2 for bad input (an unknown --mode, a malformed --env-file).

    Unlike the seed, whose sandboxes made the sub-LM calls themselves and so
    held the API key and a network, sandlot calls every LM from the host: code
    the LM writes (which the haystack's text can steer) runs with no key and no
    network to send one to.
    """
    from .niah import NIAH_QUERY, ScriptedRootLM, StandInSubLM, make_haystack, niah_policy

    if mode is not None and mode not in backends.names():
        fail(
            f"--mode {mode!r} does not exist in sandlot; the modes that exist now: "
            f"{', '.join(backends.names())} (the backends registered in sandlot.backends; "
            "the LMs are called from the host)"
        )
    settings = _settings(env_file, api_key_env, base_url)
    haystack, needle = make_haystack(lines, seed)
    root: Any
    sub: Any
    if stand_in:
        root, sub = ScriptedRootLM(niah_policy()), StandInSubLM(sub_latency)
    else:
        root, sub = _lms(model, sub_model, settings, api_key_env)
    result = _run(
        {
            "root_lm": root,
            "sub_lm": sub,
            "pool_size": pool_size,
            "force_parallel": force_parallel,
            "max_iterations": max_iterations,
            "max_llm_calls": max(200, lines // 500),
            "max_time": max_time,
            "trajectory": trajectory,
            "secrets": settings.secrets,
            "backend": mode,
        },
        haystack,
        NIAH_QUERY,
        quiet,
    )
    _report(result)
    got = str(result.answer).strip() if result.answer is not None else None
    typer.echo(f"Result:   {got}")
    typer.echo(f"Expected: {needle}")
    typer.echo(f"Match:    {got == needle}")
    raise typer.Exit(0 if got == needle else 1)
