"""``sandlot experiment view DIR``: a run's transcript and notebook as one self-contained page.

The page is built the way the RLM trajectory viewer builds its own (the same
shell, styles and JS helpers, :mod:`sandlot.rlm.view`): the data sits in a JSON
element and a script whose hash the Content-Security-Policy names turns it into
DOM text nodes, so nothing an LM or a sandbox wrote becomes markup, and the page
loads nothing from anywhere. DIR is one run (``run-<k>/``) or an invocation's
directory, whose runs are shown one after the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..resources import package_text
from ..rlm.trajectory import read_trajectory
from ..rlm.view import page_script, render_page
from ..sink import private_opener
from .outputs import read_notebook_cells

MAX_EVENTS = 20_000

_CSS = package_text("sandlot.experiment", "viewer/experiment.css")

_JS_EXPERIMENT = package_text("sandlot.experiment", "viewer/experiment.js")

_JS = page_script(_JS_EXPERIMENT)


def _run_dirs(folder: Path) -> list[Path]:
    if (folder / "transcript.jsonl").is_file():
        return [folder]
    found = [p for p in sorted(folder.glob("run-*")) if (p / "transcript.jsonl").is_file()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def collect(folder: str | Path) -> dict[str, Any]:
    """The page's data: each run's transcript events and notebook cells (both bounded)."""
    root = Path(folder)
    runs = []
    for run in _run_dirs(root):
        events = []
        for number, event in enumerate(read_trajectory(run / "transcript.jsonl")):
            if number >= MAX_EVENTS:
                break
            events.append(event)
        runs.append(
            {
                "label": run.name,
                "events": events,
                "cells": read_notebook_cells(run / "notebook.ipynb"),
            }
        )
    if not runs:
        raise ValueError(f"{root}: no transcript.jsonl here or in its run-* directories")
    name = next(
        (e.get("experiment") for r in runs for e in r["events"] if e.get("experiment")),
        root.name,
    )
    return {"name": str(name), "runs": runs}


def render_experiment(data: dict[str, Any]) -> str:
    """The page for :func:`collect`'s data."""
    return render_page(
        f"Experiment {data.get('name', '')}",
        data,
        _JS,
        data_id="experiment-data",
        generator="sandlot experiment view",
        what="experiment",
        css=_CSS,
        data_images=True,
    )


def write_view(folder: str | Path, html_path: str | Path | None = None) -> Path:
    """Write the page for the run (or runs) in ``folder``; default ``folder/view.html``."""
    target = Path(html_path) if html_path is not None else Path(folder) / "view.html"
    page = render_experiment(collect(folder))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8", opener=private_opener) as out:  # it quotes sandboxes
        out.write(page)
    return target
