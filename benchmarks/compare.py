"""sandlot against an earlier commit of itself, side by side in one run.

    uv run python benchmarks/compare.py --base REF [--quick] [--ballast-mb N]

REF is checked out into a temporary, detached ``git worktree``. Every measurement runs
in a fresh process of this interpreter (``benchmarks/compare_probe.py``) with
``PYTHONPATH`` set to one tree: the base worktree, or this working tree (the new code,
uncommitted changes included). Rounds alternate which tree goes first, so the machine's
noise falls on both alike. Each process reports the ``sandlot`` it imported; a process
that imported it from the wrong tree, or failed, shows its error in its cell.

Rows: cold start (bare host, with a mount and a volume, host holding ``--ballast-mb`` MiB
of touched memory, host with torch imported), fresh sandboxes churned on two threads (the
interval between them and the machine's CPU each), REPL round trip, a cell printing 1 MB,
host call round trip, one host call carrying 43 MB of prompts, pool fan-out, and the RLM
engine on NIAH.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_probe import RESULT_MARK

HERE = Path(__file__).resolve().parent
PROBE = HERE / "compare_probe.py"
REPO = HERE.parent
console = Console(width=160)

FANOUT_ITEMS, FANOUT_POOL, FANOUT_LATENCY = 64, 4, 0.05
NIAH_POOL, NIAH_LATENCY = 16, 0.001
ROW_GROUPS = [
    *(
        "cold",
        "first",
        "collect",
        "mounts",
        "churn",
        "ballast",
        "torch",
        "repl",
        "hostcall",
        "payload",
        "fanout",
    ),
    "niah",
]


@dataclass
class Tree:
    """One side of the comparison: a checkout whose ``sandlot`` package a probe imports."""

    side: str  # "base" or "new"
    path: Path
    commit: str  # how the header names it


@dataclass
class Row:
    """One line of the table: a series of samples that a measurement reports."""

    label: str
    series: str
    unit: str = "ms"  # "ms", or "efficiency" (ideal / wall of the series)
    ideal: float = 0.0  # for "efficiency"


@dataclass
class Measure:
    """A probe run, repeated for ``rounds`` rounds in each tree; it fills ``rows``."""

    group: str
    probe: str
    args: dict[str, Any]
    rounds: int
    rows: list[Row]
    skip: str = ""  # why it is not measured (the cells say so)


@dataclass
class Outcome:
    """What one tree's processes reported for one measure, over all rounds."""

    series: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)
    isolation: str = ""
    imported: set[str] = field(default_factory=set)


def git(*args: str, cwd: Path = REPO) -> str:
    """Output of a git command that reads the repository (or adds/removes a worktree)."""
    done = subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def base_worktree(ref: str) -> Iterator[Tree]:
    """``ref`` checked out, detached, in a temporary worktree; removed afterwards."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    subject = git("log", "-1", "--format=%s", commit)
    tmp = Path(tempfile.mkdtemp(prefix="sandlot-compare-"))
    tmp.chmod(0o755)  # an unprivileged sandbox user may need to traverse it
    path = tmp / "base"
    try:
        git("worktree", "add", "--detach", "--quiet", str(path), commit)
        yield Tree("base", path, f"{commit[:12]} {subject[:70]!r} ({ref})")
    finally:
        with contextlib.suppress(SystemExit):
            git("worktree", "remove", "--force", str(path))
        shutil.rmtree(tmp, ignore_errors=True)


def new_tree() -> Tree:
    """This working tree, with whatever is uncommitted in it."""
    commit = git("rev-parse", "HEAD")
    changed = git("--no-optional-locks", "status", "--porcelain").splitlines()
    dirty = f" + uncommitted changes in {len(changed)} paths" if changed else ""
    return Tree("new", REPO, f"{commit[:12]}{dirty} (working tree {REPO})")


def alternate(
    script: Path, argv: list[str], ref: str, rounds: int
) -> tuple[list[Tree], dict[str, dict[str, list[float]]]]:
    """Run ``script argv --json FILE`` in a fresh process per tree and round, sides alternating.

    The script writes its samples to FILE as ``{series: [seconds, ...]}`` and runs
    with ``PYTHONPATH`` set to the tree it measures (the base worktree of ``ref`` or
    this one). Returns both trees (base first) and each side's samples, every
    round's joined.
    """
    with base_worktree(ref) as base:
        trees = [base, new_tree()]
        got: dict[str, dict[str, list[float]]] = {t.side: {} for t in trees}
        for turn in range(rounds):
            for tree in trees if turn % 2 else trees[::-1]:
                with tempfile.NamedTemporaryFile(suffix=".json") as out:
                    subprocess.run(
                        [sys.executable, str(script), *argv, "--json", out.name],
                        env={**os.environ, "PYTHONPATH": str(tree.path)},
                        check=True,
                    )
                    for series, samples in json.loads(Path(out.name).read_text()).items():
                        got[tree.side].setdefault(series, []).extend(samples)
    return trees, got


def side_by_side(
    title: str, rows: dict[str, str], trees: list[Tree], got: dict[str, dict[str, list[float]]]
) -> None:
    """The machine, the commits, and per series (named by ``rows``) both p50s and their ratios."""
    header(title.split(",")[0])
    for tree in trees:
        console.print(f"{tree.side}: {tree.commit}", highlight=False)
    table = Table(title=title, title_justify="left")
    for column in (
        "measurement",
        "n a side",
        "base p50",
        "new p50",
        "new/base p50",
        "new/base p95",
    ):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for series, label in rows.items():
        old, new = got["base"][series], got["new"][series]
        table.add_row(
            label,
            str(len(new)),
            fmt(pct(old, 0.5), "ms"),
            fmt(pct(new, 0.5), "ms"),
            ratio(pct(new, 0.5), pct(old, 0.5), higher_is_better=False),
            ratio(pct(new, 0.95), pct(old, 0.95), higher_is_better=False),
        )
    console.print(table)


def digest(tree: Path) -> str:
    """A short hash of the ``sandlot`` package's source in ``tree``: did it change mid-run?"""
    h = hashlib.sha256()
    for path in sorted((tree / "sandlot").rglob("*.py")):
        h.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def probe(tree: Tree, name: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process against ``tree``; its result or its error."""
    env = dict(os.environ, PYTHONPATH=str(tree.path))
    try:
        done = subprocess.run(
            [sys.executable, str(PROBE), name, json.dumps(args)],
            cwd=tree.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    out: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK) :])
    imported = out.get("sandlot_file")
    if imported and not Path(imported).resolve().is_relative_to(tree.path.resolve()):
        return {"error": f"imported sandlot from {imported}, not from {tree.path}"}
    return out


def measures(args: argparse.Namespace, torch_problem: str) -> list[Measure]:
    """What to measure, with counts for a full run or ``--quick``."""
    q = args.quick
    cold_rounds, cold_runs = (1, 3) if q else (3, 10)
    ballast = f"host + {args.ballast_mb:,} MiB ballast"
    ideal = FANOUT_ITEMS * FANOUT_LATENCY / FANOUT_POOL
    fan = f"fan-out {FANOUT_ITEMS} x {FANOUT_LATENCY * 1000:.0f} ms, pool {FANOUT_POOL}"

    def start(group: str, label: str, more: dict[str, Any], skip: str = "") -> Measure:
        """A row of the ``cold`` probe: start, ``1+1``, terminate, in the host ``more`` says."""
        rows = [Row(label, "cold")]
        return Measure(group, "cold", {"runs": cold_runs, **more}, cold_rounds, rows, skip=skip)

    def single(group: str, args: dict[str, Any], rounds: int, label: str) -> Measure:
        """A row of its own probe (named as its group), whose one series is the group's name."""
        return Measure(group, group, args, rounds, [Row(label, group)])

    out = [
        start("cold", "cold start, bare host", {}),
        start("first", "a new template's first sandbox", {"new_template": True}),
        single(
            "collect",
            {"runs": 5 if q else 20},
            1 if q else 3,
            "a full collection (gc.collect()) in a fresh sandbox",
        ),
        start("mounts", "start with a read-only mount and a volume", {"mounts": True}),
        Measure(
            "churn",
            "churn",
            {"seconds": 3 if q else 6, "threads": 2},
            2 if q else 6,
            [
                Row("fresh sandboxes on 2 threads: interval (1 / rate)", "interval"),
                Row("fresh sandboxes on 2 threads: machine CPU each", "cpu"),
            ],
        ),
        start("ballast", f"cold start, {ballast}", {"ballast_mb": args.ballast_mb}),
        start("torch", "cold start, host with torch imported", {"torch": True}, torch_problem),
        Measure(
            "repl",
            "repl",
            {"runs": 50, "mb_runs": 5} if q else {"runs": 100, "mb_runs": 10},
            1 if q else 5,
            [Row("REPL x += 1", "x+=1"), Row("REPL cell printing 1 MB", "1 MB")],
        ),
        single("hostcall", {"runs": 50 if q else 200}, 1 if q else 5, "host call round trip"),
        single("payload", {"runs": 1 if q else 2}, 1 if q else 3, "host call carrying 43 MB"),
        Measure(
            "fanout",
            "fanout",
            {"items": FANOUT_ITEMS, "size": FANOUT_POOL, "latency": FANOUT_LATENCY},
            1 if q else 5,
            [
                Row(f"{fan}: wall", "wall"),
                Row(f"{fan}: efficiency", "wall", "efficiency", ideal),
            ],
        ),
    ]
    for lines in [int(n) for n in args.lines.split(",") if n.strip()]:
        name = f"NIAH 10^{len(str(lines)) - 1}" if str(lines).strip("0") == "1" else str(lines)
        out.append(
            Measure(
                "niah",
                "niah",
                {"lines": lines, "pool": NIAH_POOL, "latency": NIAH_LATENCY},
                1 if q else 5,
                [
                    Row(f"{name} lines: head", "cold head"),
                    Row(f"{name} lines: span", "cold span"),
                    Row(f"{name} lines: tail", "cold tail"),
                    Row(f"{name} lines: wall", "cold wall"),
                    Row(f"{name} lines, RLM(warm=1): head", "warm head"),
                    Row(f"{name} lines, RLM(warm=1): wall", "warm wall"),
                ],
            )
        )
    chosen = set(args.rows.split(",")) if args.rows else set(ROW_GROUPS)
    return [m for m in out if m.group in chosen]


def torch_problem() -> str:
    """Why torch cannot be imported by this interpreter, or '' if it can."""
    done = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return ""
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return "not installed" if "ModuleNotFoundError" in last else f"import fails: {last}"


def run_all(
    plan: list[Measure], trees: list[Tree], cache: Path, timeout: float
) -> dict[tuple[int, str], Outcome]:
    """Every measure in both trees, alternating which goes first round by round."""
    results = {(i, t.side): Outcome() for i, _ in enumerate(plan) for t in trees}
    turn = 0
    for i, m in enumerate(plan):
        if m.skip:
            continue
        for r in range(m.rounds):
            order = trees if turn % 2 == 0 else trees[::-1]
            turn += 1
            for tree in order:
                args = dict(m.args)
                if m.probe == "niah":
                    args |= {"cache_dir": str(cache), "first": "cold" if r % 2 == 0 else "warm"}
                started = time.perf_counter()
                out = probe(tree, m.probe, args, timeout)
                took = time.perf_counter() - started
                got = results[(i, tree.side)]
                if out.get("error"):
                    got.errors.append(out["error"])
                    said = f"[red]{escape(out['error'])}[/]"
                else:
                    for name, samples in out["series"].items():
                        got.series.setdefault(name, []).extend(samples)
                    got.info.append(out.get("info", {}))
                    said = ", ".join(
                        f"{name} p50 {fmt(pct(s, 0.5), 'ms')} ms"
                        for name, s in out["series"].items()
                    )
                got.isolation = got.isolation or out.get("isolation", "")
                if out.get("sandlot_file"):
                    got.imported.add(out["sandlot_file"])
                console.print(
                    f"[dim]{m.rows[0].label.split(':')[0]} ({tree.side}) round {r + 1}/{m.rounds} "
                    f"({took:.1f}s):[/] {said}",
                    highlight=False,
                )
    return results


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (nearest rank), as bench.py computes it."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def fmt(value: float, unit: str) -> str:
    """A figure in its row's unit: seconds shown as ms, or an efficiency."""
    if unit == "efficiency":
        return f"{value:.3f}"
    v = value * 1000
    return f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def figures(row: Row, got: Outcome) -> tuple[float, float] | str:
    """A row's p50 and p95 for one tree, or the text its cells show instead."""
    samples = got.series.get(row.series)
    if not samples:
        if not got.errors:
            return "no samples"
        error = got.errors[0]
        return "error: " + (error if len(error) <= 60 else error[:57] + "...")
    p50, p95 = pct(samples, 0.5), pct(samples, 0.95)
    if row.unit == "efficiency":
        return row.ideal / p50, row.ideal / p95  # the slow run's efficiency is the low one
    return p50, p95


def ratio(new: float, base: float, higher_is_better: bool) -> str:
    """``new / base``, red where the new code is more than 10% worse."""
    if base <= 0:
        return "-"
    r = new / base
    worse = r < 1 / 1.1 if higher_is_better else r > 1.1
    return f"[red]{r:.2f} ![/]" if worse else f"{r:.2f}"


def versus(new: list[float], base: list[float]) -> list[str]:
    """Cells of a row of timings, side by side: count, p50s and ratio, p95s and ratio."""
    return [
        str(len(new)),
        fmt(pct(new, 0.5), "s"),
        fmt(pct(base, 0.5), "s"),
        ratio(pct(new, 0.5), pct(base, 0.5), higher_is_better=False),
        fmt(pct(new, 0.95), "s"),
        fmt(pct(base, 0.95), "s"),
        ratio(pct(new, 0.95), pct(base, 0.95), higher_is_better=False),
    ]


def versus_columns(new: str, base: str) -> list[str]:
    """The headers of :func:`versus`'s cells, naming the two sides."""
    return [
        "n a side",
        f"{new} p50",
        f"{base} p50",
        f"{new}/{base} p50",
        f"{new} p95",
        f"{base} p95",
        f"{new}/{base} p95",
    ]


def header(title: str) -> None:
    """The machine a run measures and the command that ran it."""
    uname = platform.uname()
    console.print(
        f"[bold]{title}[/] on {uname.node}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({sys.executable}), "
        f"{uname.system} {uname.release} ({uname.machine})",
        highlight=False,
    )
    console.print(f"command: {shlex.join(['python', *sys.argv])}", highlight=False)


def report(plan: list[Measure], trees: list[Tree], results: dict[tuple[int, str], Outcome]) -> None:
    """The header (machine, commits, command) and the table."""
    header("sandlot compare")
    for tree in trees:
        said = [results[(i, tree.side)].isolation for i in range(len(plan))]
        isolation = next((s for s in said if s), "?")
        imported = sorted({f for i in range(len(plan)) for f in results[(i, tree.side)].imported})
        console.print(f"{tree.side}: {tree.commit}", highlight=False, markup=False)
        console.print(f"  sandlot imported from: {', '.join(imported) or '?'}", highlight=False)
        console.print(f"  isolation: {isolation}", highlight=False, markup=False)
    t = Table(
        title="new against base: p50 and p95 of each side's samples; ratio = new / base "
        "(marked ! where the new code is more than 10% worse)",
        title_justify="left",
    )
    for c in ["measurement", "unit", "n base/new", "base p50", "base p95", "new p50", "new p95"]:
        if c == "measurement":
            t.add_column(c, no_wrap=True)
        else:
            t.add_column(c, justify="right")
    t.add_column("new/base p50", justify="right")
    t.add_column("new/base p95", justify="right")
    notes: list[str] = []
    for i, m in enumerate(plan):
        base, new = results[(i, "base")], results[(i, "new")]
        for row in m.rows:
            unit = "ideal/wall" if row.unit == "efficiency" else row.unit
            if m.skip:
                t.add_row(row.label, unit, "-", m.skip, "", m.skip, "", "-", "-")
                continue
            cells: list[str] = []
            b, n = figures(row, base), figures(row, new)
            for fig in (b, n):
                if isinstance(fig, tuple):
                    cells += [fmt(fig[0], row.unit), fmt(fig[1], row.unit)]
                else:
                    cells += [f"[red]{escape(fig)}[/]", ""]
            better_high = row.unit == "efficiency"
            if isinstance(b, tuple) and isinstance(n, tuple):
                ratios = [ratio(n[0], b[0], better_high), ratio(n[1], b[1], better_high)]
            else:
                ratios = ["-", "-"]
            counts = f"{len(base.series.get(row.series, []))}/{len(new.series.get(row.series, []))}"
            t.add_row(row.label, unit, counts, *cells, *ratios)
        for side, got in (("base", base), ("new", new)):
            for error in dict.fromkeys(got.errors):
                notes.append(f"{m.rows[0].label.split(':')[0]} ({side}): {error}")
    console.print(t)
    for i, m in enumerate(plan):
        if m.group in ("ballast", "torch", "cold", "first", "mounts") and not m.skip:
            for side in ("base", "new"):
                rss = [x["host_rss_mib"] for x in results[(i, side)].info if "host_rss_mib" in x]
                if rss:
                    notes.append(f"{m.rows[0].label} ({side}): host RSS {max(rss):,} MiB")
        if m.group == "fanout":
            for side in ("base", "new"):
                reuse = {x.get("reuse") for x in results[(i, side)].info}
                if reuse:
                    said = "reuse=True" if reuse == {True} else "no reuse parameter (default)"
                    notes.append(f"fan-out ({side}): SandboxPool(..., {said})")
    explained = {
        "fanout": f"fan-out: ideal = {FANOUT_ITEMS} x {FANOUT_LATENCY}s / {FANOUT_POOL}; "
        "efficiency p95 is the slowest run's; higher is better, so red means below 1/1.1 "
        "of base (marked !)",
        "niah": f"NIAH: scripted root LM, stand-in sub-LM of {NIAH_LATENCY * 1000:g} ms, pool "
        f"{NIAH_POOL}; head = completion() called to first sub-call started, span = to last "
        "sub-call ended, tail = to return; RLM() starts its sandbox inside the timed call, "
        "RLM(warm=1) before it",
        "cold": "cold start: start, 1+1, terminate, all three timed (bench.py startup does not "
        "time the terminate)",
        "first": "a new template's first sandbox: start (the template's with it), 1+1, "
        "terminate; a locale of its own each, 7 a process at most",
        "payload": "host call carrying 43 MB: timed inside the sandbox around one call of a "
        "tool taking 100 strings of 430,000 chars and returning their lengths",
    }
    notes += [explained[g] for g in dict.fromkeys(m.group for m in plan) if g in explained]
    for note in notes:
        console.print(f"- {note}", highlight=False, markup=False)


def main() -> None:
    """Parse the command line, measure both trees, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the commit to compare against (git ref)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument(
        "--ballast-mb",
        type=int,
        default=2048,
        help="MiB the host process allocates and touches before the ballast row's timing",
    )
    parser.add_argument(
        "--lines",
        default="",
        help="NIAH haystack sizes (default 100000,1000000; with --quick 10000,100000)",
    )
    parser.add_argument(
        "--rows", default="", help=f"only these groups, comma-separated: {','.join(ROW_GROUPS)}"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds one measuring process may take"
    )
    args = parser.parse_args()
    args.lines = args.lines or ("10000,100000" if args.quick else "100000,1000000")
    unknown = set(filter(None, args.rows.split(","))) - set(ROW_GROUPS)
    if unknown:
        parser.error(f"unknown --rows {sorted(unknown)}; choose from {ROW_GROUPS}")
    plan = measures(args, torch_problem() if "torch" in (args.rows or "torch") else "")
    new = new_tree()
    console.print(f"comparing {new.side} {new.commit} against {args.base}", highlight=False)
    started = time.perf_counter()
    before = digest(new.path)
    with base_worktree(args.base) as base, tempfile.TemporaryDirectory() as cache:
        trees = [base, new]
        results = run_all(plan, trees, Path(cache), args.timeout)
    after = digest(new.path)
    new.commit += f", sandlot/ source {before}"
    if after != before:
        new.commit += f" [CHANGED during the run: now {after}; rows mix two versions]"
    console.print(f"[dim]measured in {time.perf_counter() - started:.0f}s[/]\n")
    report(plan, trees, results)


if __name__ == "__main__":
    main()
