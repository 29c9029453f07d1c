"""Snapshots: the time to write a REPL to a file and to start a sandbox from it.

    uv run python benchmarks/snapshot_bench.py              # 5 rounds of each state
    uv run python benchmarks/snapshot_bench.py --runs 1 --quick --children 2

For each state, built by one cell: ``snapshot`` (``sb.snapshot(path)``),
``restore`` (``Sandbox.restore(path)`` until a cell reads the state back) and,
beside it, the way without snapshots: a fresh sandbox that runs the same cell
again, then the same read. Rounds interleave the two. A cell that loads or
computes for long makes restoring win by that much; a cell that only
allocates shows what the pickling itself costs. Then ``fork(n)`` (default 8)
until every child answers, beside n fresh sandboxes that re-run the cell at
once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

import sandlot

console = Console()

STATES = {
    "a few variables and functions": (
        "import json\nrows = [{'id': i, 'name': str(i)} for i in range(1000)]\n"
        "def lookup(i):\n    return rows[i]['name']\n"
        "class Index(dict):\n    pass\nindex = Index((r['name'], r) for r in rows)\n",
        "lookup(7), len(index)",
    ),
    "100 MiB in 100 bytes objects": (
        "import hashlib\n"
        "blocks = [hashlib.sha256(str(i).encode()).digest() * 32768 for i in range(100)]\n",
        "sum(map(len, blocks))",
    ),
    "300k small objects (about 60 MB)": (
        "records = [(i, str(i), float(i), {'k': i}) for i in range(300_000)]\n",
        "len(records), records[-1][1]",
    ),
    "2 s of computing, 1 KB of result": (
        "import hashlib\nh = b''\nt = __import__('time').perf_counter()\n"
        "while __import__('time').perf_counter() - t < 2:\n"
        "    h = hashlib.sha256(h).digest()\n"
        "digest = h.hex()\n",
        "len(digest)",
    ),
}
QUICK = ["a few variables and functions", "100 MiB in 100 bytes objects"]


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}"


def measure(
    name: str, build: str, read: str, path: Path, config: sandlot.SandboxConfig, runs: int
) -> list[str]:
    """One state's table row: snapshot, file size, restore, rebuild, and their ratio."""
    with sandlot.Sandbox(config) as sb:
        sb.run_code(build, raise_on_error=True)
        expected = sb.run_code(read, raise_on_error=True).value
        took = [seconds(lambda: sb.snapshot(path)) for _ in range(runs)]
    size = path.stat().st_size
    restore: list[float] = []
    rebuild: list[float] = []

    def restored() -> None:
        with sandlot.Sandbox.restore(path, config) as sb2:
            assert sb2.run_code(read, raise_on_error=True).value == expected

    def rebuilt() -> None:
        with sandlot.Sandbox(config) as sb3:
            sb3.run_code(build, raise_on_error=True)
            assert sb3.run_code(read, raise_on_error=True).value == expected

    for i in range(runs):
        order = [(restore, restored), (rebuild, rebuilt)]
        for samples, fn in order if i % 2 == 0 else order[::-1]:
            samples.append(seconds(fn))
    ratio = statistics.median(restore) / statistics.median(rebuild)
    return [name, ms(took), f"{size / 1e6:.1f}", ms(restore), ms(rebuild), f"{ratio:.2f}"]


def measure_fork(
    name: str, build: str, read: str, config: sandlot.SandboxConfig, runs: int, n: int
) -> list[str]:
    """One state's fork row: ``fork(n)`` until every child answers, beside n fresh + re-run."""
    forked: list[float] = []
    fresh: list[float] = []
    with sandlot.Sandbox(config) as sb:
        sb.run_code(build, raise_on_error=True)
        expected = sb.run_code(read, raise_on_error=True).value

        def fork() -> None:
            children = sb.fork(n)
            try:
                assert all(c.run_code(read).value == expected for c in children)
            finally:
                for child in children:
                    child.terminate()

        def rebuild() -> None:
            async def one() -> None:
                async with sandlot.AsyncSandbox(config) as box:
                    await box.run_code(build, raise_on_error=True)
                    assert (await box.run_code(read)).value == expected

            async def all_of_them() -> None:
                await asyncio.gather(*(one() for _ in range(n)))

            asyncio.run(all_of_them())

        for i in range(runs):
            order = [(forked, fork), (fresh, rebuild)]
            for samples, fn in order if i % 2 == 0 else order[::-1]:
                samples.append(seconds(fn))
    ratio = statistics.median(forked) / statistics.median(fresh)
    return [name, ms(forked), ms(fresh), f"{ratio:.2f}"]


def main() -> None:
    """Measure each state's snapshot, restore and rebuild; print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two small states only")
    parser.add_argument("--children", type=int, default=8, help="sandboxes a fork makes")
    args = parser.parse_args()
    config = sandlot.SandboxConfig(isolation="bubblewrap", memory_mb=2048)
    console.print(
        f"[bold]snapshots[/] on {platform.node()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {args.runs} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="sandlot-snapbench-") as tmp:
        path = Path(tmp) / "state.snap"
        rows = [
            measure(name, *STATES[name], path, config, args.runs)
            for name in (QUICK if args.quick else STATES)
        ]
    forks = [
        measure_fork(name, *STATES[name], config, args.runs, args.children)
        for name in (QUICK if args.quick else STATES)
    ]
    print_table(
        "snapshot, restore, and rebuilding by re-running the cell (p50 ms)",
        ["state", "snapshot", "file MB", "restore", "fresh + re-run", "ratio"],
        rows,
    )
    print_table(
        f"fork({args.children}) until every child answers, beside {args.children} fresh "
        "sandboxes re-running the cell at once (p50 ms)",
        ["state", "fork", "fresh + re-run", "ratio"],
        forks,
    )


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """One table of rows, the first column text."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "state" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
