"""``sandlot exec``, ``sandlot run`` and ``sandlot repl``: a command, a Python file, a REPL
in a fresh sandbox, with the sandbox options the three share.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, NamedTuple, TextIO

import typer
from rich.console import Console
from rich.text import Text

from .. import __version__
from ..backends import envs
from ..cell_input import cells_from, read_cells
from ..config import SandboxConfig
from ..console import EXIT_ERROR, Guard, RawOpt, expected_errors, say
from ..driver.places import WORKDIR_INSIDE
from ..errors import ConfigError
from ..results import CodeResult
from ..secrets import Redactor, secret_values
from ..sink import Sink
from ..sync import Sandbox
from .common import BackendOpt, positive

app = typer.Typer(add_completion=False)

# Streamed output is written out as it comes and never held, so the per-process
# cap that protects the host's memory for buffered calls can be much larger here.
STREAM_OUTPUT_LIMIT = 1 << 30
# With --timeout, the sandbox lives this much longer than the command may run,
# so that uploads, downloads and the command's own timeout fit in its lifetime.
LIFETIME_MARGIN = 120.0
# A --timeout never shortens the lifetime the library gives a sandbox anyway.
DEFAULT_LIFETIME: float = SandboxConfig.model_fields["timeout"].default
EXIT_TIMEOUT = 124


def _write(stream: TextIO, data: bytes) -> None:
    """Write raw bytes to a text stream's buffer (decoded if it has none) and flush."""
    buffer: IO[bytes] | None = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()  # keep order with text already written through the text layer
        buffer.write(data)
        buffer.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


def _exit_status(returncode: int) -> int:
    """A process's status as a shell reports it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict; a malformed one is a ConfigError."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _config(
    *,
    timeout: float | None = None,
    memory_mb: int | None = None,
    network: bool = False,
    env: Sequence[str] = (),
    secrets: Sequence[str] = (),
    env_file: Path | None = None,
    packages: Sequence[str] = (),
    requirements: Sequence[Path] = (),
    project: Path | None = None,
    index_url: str | None = None,
    find_links: Sequence[str] = (),
) -> SandboxConfig:
    """The sandbox configuration for the CLI's options (library defaults elsewhere)."""
    fields: dict[str, Any] = {
        "network": network,
        "env": _parse_env(env),
        "secrets": list(secrets),
        "max_output_bytes": STREAM_OUTPUT_LIMIT,
        "python_packages": list(packages),
        "requirements": [str(r) for r in requirements],
        "index_url": index_url,
        "find_links": list(find_links),
    }
    if env_file is not None:
        fields["env_file"] = str(env_file)
    if project is not None:
        fields["project"] = str(project)
    if memory_mb is not None:
        fields["memory_mb"] = memory_mb
    if timeout is not None:
        fields["timeout"] = max(timeout + LIFETIME_MARGIN, DEFAULT_LIFETIME)
    return SandboxConfig(**fields)


def _prepared(config: SandboxConfig) -> SandboxConfig:
    """``config`` with its environment built (saying so while it builds) and its secrets read.

    Building here, before the sandbox starts, lets the CLI say what it builds;
    reading the secrets checks the env file and the names early.
    """
    secret_values(config)
    spec = envs.spec_for(config, WORKDIR_INSIDE)
    python = envs.base_python()
    if envs.ready_env(python, spec) is None:
        started = time.perf_counter()
        envs.ensure_env(python, spec, announce=say)
        say(f"built in {time.perf_counter() - started:.1f} s")
    return config


def _download_target(path: str) -> PurePosixPath:
    """Check that a --download path stays inside the workdir (and, on the host, the cwd)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise typer.BadParameter(
            f"{path!r} must be a path relative to the sandbox's workdir, without '..'",
            param_hint="'--download'",
        )
    return pure


# -- running -------------------------------------------------------------------


def _stream(
    sb: Sandbox, argv: Sequence[str], timeout: float | None, redactor: Redactor, raw: bool
) -> int:
    """Run ``argv`` in ``sb``, copying its output to ours as it comes; return an exit status.

    The output passes a :class:`Sink` per stream: secret values are shown as
    ``[redacted NAME]``, and on a terminal control characters as escapes unless ``raw``.
    """
    proc = sb.exec_stream(*argv, timeout=timeout)
    outputs = {"stdout": sys.stdout, "stderr": sys.stderr}
    sinks = {name: Sink.to(out, redactor, raw=raw) for name, out in outputs.items()}
    streams = {name: sink.stream() for name, sink in sinks.items()}
    try:
        for chunk in proc:
            _write(outputs[chunk.stream], streams[chunk.stream].feed(chunk.data))
    finally:  # what is held back is shown even when the sandbox dies mid-stream
        for name, held in streams.items():
            _write(outputs[name], held.flush())
    result = proc.result
    assert result is not None
    if result.stdout:  # what did not stream, such as a command that could not start
        _write(sys.stdout, sinks["stdout"].text(result.stdout).encode())
    if result.stderr:
        _write(sys.stderr, sinks["stderr"].text(result.stderr).encode())
    if result.truncated:
        say(f"warning: output beyond {STREAM_OUTPUT_LIMIT} bytes was dropped")
    if result.timed_out:
        say(
            f"error: the command ran past its {timeout:g}s timeout and was killed", style="bold red"
        )
        return EXIT_TIMEOUT
    return _exit_status(result.returncode)


CommandArg = Annotated[
    list[str],
    typer.Argument(
        help="The command and its arguments (put them after '--').",
        metavar="CMD",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        callback=positive,
        metavar="S",
        help="Kill the command after S seconds (exit status 124).",
    ),
]


UploadOpt = Annotated[
    Path | None,
    typer.Option(
        "--upload",
        exists=True,
        file_okay=False,
        dir_okay=True,
        metavar="DIR",
        help="Copy the contents of DIR into the sandbox's workdir first.",
    ),
]
WithOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--with",
        metavar="PKG",
        help="Install PKG (a requirement, as uv takes it) in the sandbox's environment. "
        "Repeatable. Built once on the host, cached by content.",
    ),
]
RequirementsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--requirements",
        "--with-requirements",
        "-r",
        exists=True,
        dir_okay=False,
        metavar="FILE",
        help="Install the packages a requirements file lists. Repeatable.",
    ),
]
IndexUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--index-url",
        metavar="URL",
        help="Install packages from this index instead of uv's default (a requirements "
        "file or a project may not name one).",
    ),
]
FindLinksOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--find-links",
        metavar="LOC",
        help="Also install wheels found in LOC (a directory or a page of links). Repeatable.",
    ),
]
ProjectOpt = Annotated[
    bool,
    typer.Option(
        "--project",
        help="The uploaded directory (--upload, else the current one, which is then "
        "uploaded) is a Python project: install its dependencies as 'uv sync' would "
        "(uv.lock, pyproject.toml or requirements files) and make it importable.",
    ),
]
EnvFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        exists=True,
        dir_okay=False,
        metavar="FILE",
        help="Pass a .env file's entries in as secrets; their values are redacted from "
        "what sandlot prints.",
    ),
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", metavar="K=V", help="Set an environment variable. Repeatable."),
]
SecretOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secret",
        metavar="NAME",
        help="Pass the host's environment variable NAME in (redacted from output). Repeatable.",
    ),
]


# Left out of every upload the CLI makes: history, environments, caches, and .env files
# (pass those with --env-file: their values then enter as secrets and are redacted).
UPLOAD_SKIPS = (
    ".git",
    ".hg",
    ".venv",
    ".env",
    ".env.*",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
)


def _upload(sb: Sandbox, directory: Path) -> None:
    """Copy ``directory``'s entries into the workdir, leaving out ``UPLOAD_SKIPS``."""
    sb.files.upload(directory, ".", exclude=UPLOAD_SKIPS)


@dataclass(frozen=True)
class SandboxOptions:
    """The options exec, run and repl share: what the sandbox holds, where it runs, how
    its output shows. Declared once; :func:`_with_sandbox_options` gives them to each."""

    with_: WithOpt = None
    requirements: RequirementsOpt = None
    project: ProjectOpt = False
    index_url: IndexUrlOpt = None
    find_links: FindLinksOpt = None
    env_file: EnvFileOpt = None
    env: EnvOpt = None
    secret: SecretOpt = None
    backend: BackendOpt = None
    raw: RawOpt = False


def _with_sandbox_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command``, whose last parameter is ``options: SandboxOptions``, with that parameter
    spread into the options themselves (where Typer reads them) and gathered back for it."""
    signature = inspect.signature(command, eval_str=True)
    *own, last = signature.parameters.values()
    assert last.name == "options" and last.kind is last.KEYWORD_ONLY, command
    shared = inspect.signature(SandboxOptions, eval_str=True).parameters.values()

    @functools.wraps(command)
    def run(**given: Any) -> None:
        options = SandboxOptions(**{p.name: given.pop(p.name) for p in shared})
        command(**given, options=options)

    spread = [p.replace(kind=p.KEYWORD_ONLY) for p in shared]
    run.__signature__ = signature.replace(parameters=[*own, *spread])  # type: ignore[attr-defined]
    return run


@contextmanager
def _sandbox(
    guard: Guard, upload: Path | None, options: SandboxOptions, **more: Any
) -> Iterator[tuple[Sandbox, Redactor]]:
    """A started sandbox of the options, with ``upload``'s entries in its workdir (with
    --project and no --upload, the current directory's), and the redactor of its
    secrets (set on ``guard`` too, for error messages). ``more``: ``_config``'s other
    options."""
    if options.project and upload is None:
        upload = Path.cwd()
    config = _config(
        env=options.env or [],
        secrets=options.secret or [],
        env_file=options.env_file,
        packages=options.with_ or [],
        requirements=options.requirements or [],
        project=upload if options.project else None,
        index_url=options.index_url,
        find_links=options.find_links or [],
        **more,
    )
    config = _prepared(config)
    guard.redactor = Redactor.for_config(config)
    from ..backends.template import ENV_VAR  # one sandbox, then exit: a template is no gain

    os.environ.setdefault(ENV_VAR, "0")
    with Sandbox(config, backend=options.backend) as sb:
        if upload is not None:
            _upload(sb, upload)  # a directory's entries land in the workdir itself
        yield sb, guard.redactor


@app.command("exec", context_settings={"allow_interspersed_args": False})
@_with_sandbox_options
def exec_command(
    command: CommandArg,
    upload: UploadOpt = None,
    download: Annotated[
        list[str] | None,
        typer.Option(
            "--download",
            metavar="PATH",
            help="Afterwards copy PATH (relative to the workdir; a file or a "
            "directory) to the same path under the current directory, "
            "replacing what is there. Repeatable.",
        ),
    ] = None,
    timeout: TimeoutOpt = None,
    memory_mb: Annotated[
        int | None,
        typer.Option(
            "--memory-mb", metavar="N", help="Memory limit of the sandbox in MiB (default 2048)."
        ),
    ] = None,
    network: Annotated[
        bool,
        typer.Option("--network", help="Allow network access (off by default)."),
    ] = False,
    *,
    options: SandboxOptions,
) -> None:
    """Run a command in a fresh sandbox and exit with its status.

    Example: sandlot exec --upload ./myrepo --project --download report.xml --
    python -m pytest --junitxml=report.xml
    """
    targets = [_download_target(p) for p in download or []]
    more = {"timeout": timeout, "memory_mb": memory_mb, "network": network}
    with expected_errors() as guard, _sandbox(guard, upload, options, **more) as (sb, redactor):
        status = _stream(sb, command, timeout, redactor, options.raw)
        failed = False
        for target in targets:
            try:
                sb.download(str(target), Path.cwd() / target)
            except OSError as exc:  # FileOperationError too: it is an OSError
                problem = redactor.redact(str(exc))
                say(f"error: cannot download {str(target)!r}: {problem}", style="bold red")
                failed = True
    if status == 0 and failed:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(status)


@app.command("run", context_settings={"ignore_unknown_options": True})
@_with_sandbox_options
def run_command(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=True,
            dir_okay=False,
            help="The Python file to run.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="Arguments for the script ('--' before any that look like sandlot's own options).",
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOpt = None,
    upload: UploadOpt = None,
    *,
    options: SandboxOptions,
) -> None:
    """Run one Python file in a fresh sandbox and exit with its status."""
    with expected_errors() as guard, _sandbox(guard, upload, options, timeout=timeout) as opened:
        sb, redactor = opened
        sb.upload(file, file.name)
        found = sb.run_code("import sys; sys.executable", raise_on_error=True).value
        python = ast.literal_eval(found) if found else "python3"
        status = _stream(sb, [python, file.name, *(args or [])], timeout, redactor, options.raw)
    raise typer.Exit(status)


# -- the REPL ------------------------------------------------------------------


def _run_cell(
    sb: Sandbox, code: str, interactive: bool, out: Console, err: Console, shown: _Shown
) -> bool:
    """Run one cell and show what it gave; False when it raised.

    At a terminal, Ctrl-C while the cell runs (or its output prints) interrupts
    the cell, not the REPL, as Python's prompt does.
    """
    if not interactive:
        result = sb.run_code(code)
        _show(result, out, err, shown)
        return result.ok
    try:
        result = sb.run_code(code)  # Ctrl-C cancels the call, which interrupts the cell
        _show(result, out, err, shown)
        return result.ok
    except KeyboardInterrupt:
        print("\nKeyboardInterrupt", file=sys.stderr)
        return True


class _Shown(NamedTuple):
    """The sinks of a REPL's stdout and stderr."""

    out: Sink
    err: Sink


def _show(result: CodeResult, out: Console, err: Console, shown: _Shown) -> None:
    """Print a cell's stdout, stderr, value and error as Python's prompt does, through
    the sinks (secrets hidden, control characters escaped on a terminal)."""
    if result.stdout:
        _write(sys.stdout, shown.out.text(result.stdout).encode())
    if result.stderr:
        _write(sys.stderr, shown.err.text(result.stderr).encode())
    if result.value is not None:
        out.print(shown.out.text(result.value), markup=False, highlight=out.is_terminal)
    if result.error is not None:
        error = result.error.traceback.rstrip() or str(result.error)
        err.print(Text(shown.err.text(error), style="red"))
    if result.truncated:
        say("warning: output was truncated (SandboxConfig.max_output_bytes)")


@app.command("repl")
@_with_sandbox_options
def repl_command(
    upload: UploadOpt = None,
    *,
    options: SandboxOptions,
) -> None:
    """An interactive Python session in a fresh sandbox; its state lasts until you leave.

    At a terminal it prompts like Python. With piped input, each group of lines
    separated by a blank line is one cell; the exit status is 1 if any cell raised.
    """
    interactive = sys.stdin.isatty()
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    cells: Iterator[str] | list[str]
    cells = read_cells() if interactive else cells_from(sys.stdin.read())
    failed = False
    with expected_errors() as guard, _sandbox(guard, upload, options) as (sb, redactor):
        if interactive:
            err.print(
                f"sandlot {__version__}: Python in a sandbox (workdir {sb.workdir}). "
                "Ctrl-D leaves.",
                markup=False,
            )
        raw = options.raw
        shown = _Shown(
            Sink.to(sys.stdout, redactor, raw=raw), Sink.to(sys.stderr, redactor, raw=raw)
        )
        for cell in cells:
            ok = _run_cell(sb, cell, interactive, out, err, shown)
            failed = failed or not ok
    raise typer.Exit(1 if failed and not interactive else 0)
