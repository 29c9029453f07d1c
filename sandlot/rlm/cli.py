"""``sandlot rlm``: ask a Recursive Language Model, run the needle-in-a-haystack test, view runs.

Heavy imports (the LM client, the engine) happen inside the commands, so
``sandlot --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

rlm_app = typer.Typer(
    help="Recursive Language Models: ask, needle-in-a-haystack, view a trajectory.",
    no_args_is_help=True,
    add_completion=False,
)


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
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the page in a web browser afterwards.")
    ] = False,
) -> None:
    """Render a trajectory as one self-contained HTML page and print its path."""
    import webbrowser

    from sandlot.cli import _fail, _say

    from .view import write_html

    if not file.is_file():
        _fail(f"{file}: no such file" if not file.exists() else f"{file}: not a file")
    try:
        page = write_html(file, output)
    except UnicodeDecodeError:
        _fail(f"{file}: not a JSONL trajectory (not UTF-8 text)")
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(str(page))
    if open_page and not webbrowser.open(page.resolve().as_uri()):
        _say("warning: found no web browser to open the page with")
