"""Cells from a person's input: what ``sandlot repl`` and ``sandlot sessions attach`` run.

Typed at a terminal, a cell ends where Python's own prompt would run it (a
finished statement, or a blank line after a block); piped in, cells are groups
of lines separated by blank lines.
"""

from __future__ import annotations

import codeop
import contextlib
import warnings
from collections.abc import Iterator


def cells_from(text: str) -> list[str]:
    """Piped input as cells: groups of lines separated by blank lines."""
    cells: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            cells[-1].append(line)
        elif cells[-1]:
            cells.append([])
    return ["\n".join(cell) for cell in cells if cell]


def needs_more(source: str) -> bool:
    """True when ``source`` is an unfinished statement, as Python's own prompt judges it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return codeop.compile_command(source, "<cell>", "single") is None
        except (SyntaxError, ValueError, OverflowError):
            return False  # let the sandbox report it


def read_cells() -> Iterator[str]:
    """Cells typed at ``>>> `` / ``... `` prompts, until end of input."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    lines: list[str] = []
    while True:
        try:  # Ctrl-C anywhere here drops the lines typed so far, as Python's prompt does
            lines.append(input("... " if lines else ">>> "))
            source = "\n".join(lines)
            if source.strip() and needs_more(source):
                continue
        except EOFError:
            print()
            if lines:
                yield "\n".join(lines)
            return
        except KeyboardInterrupt:
            print("\nKeyboardInterrupt")
            lines = []
            continue
        lines = []
        if source.strip():
            yield source
