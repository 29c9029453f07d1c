"""What the command lines print on stderr, how they fail, and how a group is made.

Shared by ``sandlot`` (:mod:`sandlot.cli`) and ``sandlot rlm``
(:mod:`sandlot.rlm.cli`), so that neither imports the other: expected failures
print one ``sandlot: error: ...`` line and exit with status 2; every subcommand
group is made by :func:`group`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from .errors import SandboxError
from .secrets import Redactor
from .sink import Sink

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def err_console() -> Console:
    """A console on stderr that neither highlights nor wraps."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def one_line(message: str, limit: int = 1000) -> str:
    """``message`` folded onto one line: a heading ending in ':' then '; '-joined lines."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    text = lines[0]
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text if len(text) <= limit else text[: limit - 1] + "…"


def say(message: str, style: str = "yellow") -> None:
    """Print ``message`` as one ``sandlot:`` line on stderr (coloured on a terminal).

    A message may quote a sandbox: on a terminal its control characters show as escapes.
    """
    line = Sink.to(sys.stderr).text(f"sandlot: {one_line(message)}")
    err_console().print(Text(line, style=style))


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` as an error line on stderr and exit with ``code``."""
    say(f"error: {message}", style="bold red")
    raise typer.Exit(code)


class Guard:
    """What :func:`expected_errors` knows: set ``redactor`` once the secrets are read."""

    redactor: Redactor | None = None

    def hide(self, text: str) -> str:
        """``text`` with the secret values redacted, once there is a redactor."""
        return self.redactor.redact(text) if self.redactor is not None else text


@contextlib.contextmanager
def expected_errors() -> Iterator[Guard]:
    """Turn sandlot's errors into one line and exit status 2, and Ctrl-C into 130.

    A sandbox's death message may carry what its code wrote (the driver's last
    words): it is redacted with the guard's redactor.
    """
    guard = Guard()
    try:
        yield guard
    except SandboxError as exc:
        fail(guard.hide(str(exc)) or type(exc).__name__)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


def write_page(write: Callable[[], Path], not_text: str, open_page: bool) -> None:
    """Write a page with ``write`` and show it; a source that is not UTF-8 fails with
    ``not_text``, one that cannot be read or rendered with its own message."""
    try:
        page = write()
    except UnicodeDecodeError:
        fail(not_text)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    show_page(page, open_page)


def show_page(page: Path, open_page: bool) -> None:
    """Print the path of a page just written; with ``open_page`` open it in a web browser."""
    import webbrowser

    typer.echo(str(page))
    if open_page and not webbrowser.open(page.resolve().as_uri()):
        say("warning: found no web browser to open the page with")


def group(help: str) -> typer.Typer:
    """A subcommand group of ``sandlot`` (``sandlot rlm``, ``sandlot volume``, ...) saying
    ``help``: called bare it shows that help; like the root, it offers no shell completion."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False)


RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="Print the sandbox's output as it is, terminal control sequences included "
        "(secrets are still redacted). Without it a terminal shows control characters "
        "other than newline and tab as escapes such as \\x1b.",
    ),
]

OpenPageOpt = Annotated[
    bool, typer.Option("--open", help="Open the page in a web browser afterwards.")
]
