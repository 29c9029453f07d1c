"""``sandlot rlm``: ask a Recursive Language Model, run the needle-in-a-haystack test, view runs.

Heavy imports (the LM client, the engine) happen inside the commands, so
``sandlot --help`` stays fast.
"""

from __future__ import annotations

import typer

rlm_app = typer.Typer(
    help="Recursive Language Models: ask, needle-in-a-haystack, view a trajectory.",
    no_args_is_help=True,
    add_completion=False,
)
