"""What the command lines print on stderr, and how they fail.

Shared by ``sandlot`` (:mod:`sandlot.cli`) and ``sandlot rlm``
(:mod:`sandlot.rlm.cli`), so that neither imports the other: expected failures
print one ``sandlot: error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from .errors import SandboxError
from .secrets import Redactor

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
    """Print ``message`` as one ``sandlot:`` line on stderr (coloured on a terminal)."""
    err_console().print(Text(f"sandlot: {one_line(message)}", style=style))


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
