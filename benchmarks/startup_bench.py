"""What starting sandlot costs: ``import sandlot`` and ``sandlot --help`` beside their floors.

    uv run python benchmarks/startup_bench.py [--base REF] [--runs N]

Every sample is a fresh process of this interpreter, timed from start to exit. Two
floors run in the same rounds: bare Python (``python -c pass``) and a two-command
Typer app printing its ``--help`` (what any help page of this command line costs:
Typer, and Rich to draw it). With ``--base REF``, REF is checked out into a
temporary, detached ``git worktree`` (as ``compare.py`` does) and each row runs
against both trees through ``PYTHONPATH``; rounds interleave every row and tree, in
an order that turns each round, so the machine's noise falls on all alike.

Targets (issue 21): ``import sandlot`` within 1.5x of bare Python, and
``sandlot --help`` within 1.5x of the Typer floor.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Tree, base_worktree, fmt, header, new_tree, pct

console = Console(width=160)

TYPER_FLOOR = """
import typer
app = typer.Typer(name="floor", help="Two commands.", add_completion=False)
@app.command()
def one() -> None:
    "The first."
@app.command()
def two() -> None:
    "The second."
app(prog_name="floor")
"""


@dataclass(frozen=True)
class Row:
    """One line of the table: a command line, run against a tree or (a floor) against none."""

    label: str
    argv: tuple[str, ...]
    floor: bool = False


ROWS = (
    Row("python -c pass", ("-c", "pass"), floor=True),
    Row("Typer app --help (2 commands)", ("-c", TYPER_FLOOR, "--help"), floor=True),
    Row("import sandlot", ("-c", "import sandlot")),
    Row("from sandlot import Sandbox", ("-c", "from sandlot import Sandbox")),
    Row("sandlot --help", ("-m", "sandlot.cli", "--help")),
    Row("sandlot mcp --help", ("-m", "sandlot.cli", "mcp", "--help")),
)


def sample(argv: tuple[str, ...], tree: Tree | None) -> float:
    """Wall time of one fresh interpreter running ``argv`` (with ``tree`` on its path)."""
    env = dict(os.environ, COLUMNS="100")
    if tree is not None:
        env["PYTHONPATH"] = str(tree.path)
    cwd = tree.path if tree is not None else None  # the tree, not this one, first on the path
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, timeout=120, check=False
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return took


def check_tree(tree: Tree) -> None:
    """Refuse to measure a tree whose ``sandlot`` is not the one its processes import."""
    env = dict(os.environ, PYTHONPATH=str(tree.path))
    found = subprocess.run(
        [sys.executable, "-c", "import sandlot; print(sandlot.__file__)"],
        cwd=tree.path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.path.resolve()):
        raise SystemExit(f"{tree.side}: imported sandlot from {found}, not from {tree.path}")


def measure(trees: list[Tree], runs: int) -> dict[tuple[str, str], list[float]]:
    """``runs`` rounds; each runs every floor once and every other row once per tree."""
    jobs = [(row, None) for row in ROWS if row.floor]
    jobs += [(row, tree) for row in ROWS if not row.floor for tree in trees]
    for row, tree in jobs:  # warm the file cache and the bytecode of every tree
        sample(row.argv, tree)
    samples: dict[tuple[str, str], list[float]] = {}
    for n in range(runs):
        shift = n % len(jobs)
        for row, tree in jobs[shift:] + jobs[:shift]:
            key = (row.label, tree.side if tree is not None else "floor")
            samples.setdefault(key, []).append(sample(row.argv, tree))
    return samples


def report(trees: list[Tree], samples: dict[tuple[str, str], list[float]], runs: int) -> None:
    """The header (machine, command, trees) and the table."""
    header("sandlot start-up")
    for tree in trees:
        console.print(f"{tree.side}: {tree.commit}", highlight=False, markup=False)
    floor = pct(samples[("python -c pass", "floor")], 0.5)
    typer_floor = pct(samples[("Typer app --help (2 commands)", "floor")], 0.5)
    t = Table(
        title=f"wall time of a fresh process, ms ({runs} rounds; x = p50 / a floor's p50)",
        title_justify="left",
    )
    t.add_column("measurement", no_wrap=True)
    for tree in trees:
        for c in ("p50", "p95", "x bare", "x Typer"):
            t.add_column(f"{tree.side} {c}", justify="right")
    for row in ROWS:
        cells: list[str] = []
        for tree in trees:
            got = samples[(row.label, "floor" if row.floor else tree.side)]
            p50 = pct(got, 0.5)
            cells += [fmt(p50, "ms"), fmt(pct(got, 0.95), "ms")]
            cells += [f"{p50 / floor:.2f}", f"{p50 / typer_floor:.2f}"]
        t.add_row(row.label, *cells)
    console.print(t)
    new = trees[-1].side
    imported = pct(samples[("import sandlot", new)], 0.5)
    helped = pct(samples[("sandlot --help", new)], 0.5)
    for what, value, bound, name in (
        ("import sandlot", imported, floor, "bare Python"),
        ("sandlot --help", helped, typer_floor, "the Typer floor"),
    ):
        verdict = "met" if value <= 1.5 * bound else "[red]missed[/]"
        console.print(
            f"- {what} ({new}): {value / bound:.2f}x {name} (target 1.5x): {verdict}",
            highlight=False,
        )


def main() -> None:
    """Parse the command line, measure, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="also measure this commit (git ref), side by side")
    parser.add_argument("--runs", type=int, default=30, help="rounds (default 30)")
    args = parser.parse_args()
    new = new_tree()
    if args.base is None:
        check_tree(new)
        report([new], measure([new], args.runs), args.runs)
        return
    with base_worktree(args.base) as base:
        trees = [base, new]
        for tree in trees:
            check_tree(tree)
        report(trees, measure(trees, args.runs), args.runs)


if __name__ == "__main__":
    main()
