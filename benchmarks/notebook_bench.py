"""Notebook sessions beside a bare Jupyter kernel, in one run.

    uv run python benchmarks/notebook_bench.py [--runs N] [--cells N] [--base REF [--rounds N]]

Measured on this machine, side by side:

- kernel start: ``start_session`` until the kernel answers (a sandbox, the
  relay, ipykernel on IPC sockets; the environment already built) beside a bare
  ``jupyter_client.AsyncKernelManager`` starting ipykernel on the host (TCP, no
  sandbox) until ``wait_for_ready``;
- attach: ``aattach(session_id)`` from a process that did not start the
  session, until the handle is usable (a connection and one request);
- cell round trip for ``1+1``: through the session API, through the MCP server
  (``execute_code`` over stdio with the SDK's own client, as Claude Code
  calls it), and through a bare ``jupyter_client`` round trip
  (``execute_interactive``) to a host kernel.

The issue's goals: attach <= 10 ms, ``execute_code`` through MCP <= 10 ms p50,
kernel start within 1.5x of a bare ipykernel's.

With ``--base REF``, sandlot's rows are measured against commit REF as well,
side by side: REF is checked out into a temporary worktree (as ``compare.py``
does) and each round runs this script once per tree, in a fresh process with
``PYTHONPATH`` set to that tree (its own session server and sessions folder),
the order turning each round; the table gives both sides' p50 over all
rounds and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import console, ms, pct, table
from compare import alternate, side_by_side

from sandlot.notebook import aattach, astart_session


def row(name: str, samples: list[float], base: float | None) -> list[str]:
    p50 = pct(samples, 0.5)
    ratio = f"{p50 / base:.2f}x" if base else "1.00x"
    return [name, str(len(samples)), ms(p50), ms(pct(samples, 0.95)), ratio]


async def bare_kernel(runs: int, cells: int) -> tuple[list[float], list[float]]:
    from jupyter_client.manager import AsyncKernelManager

    starts: list[float] = []
    trips: list[float] = []
    for i in range(runs):
        began = time.perf_counter()
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        starts.append(time.perf_counter() - began)
        if i == 0:
            for _ in range(cells):
                t = time.perf_counter()
                await kc.execute_interactive("1+1", output_hook=lambda msg: None)
                trips.append(time.perf_counter() - t)
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return starts, trips


async def sessions(runs: int, cells: int, notebooks: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"start": [], "attach": [], "api": []}
    warm = await astart_session(notebook_dir=notebooks)  # builds or finds the environment
    await warm.shutdown()
    for i in range(runs):
        began = time.perf_counter()
        session = await astart_session(notebook_dir=notebooks, persist=True)
        out["start"].append(time.perf_counter() - began)
        if i == 0:
            for _ in range(cells):
                t = time.perf_counter()
                await session.execute("1+1")
                out["api"].append(time.perf_counter() - t)
            for _ in range(cells):
                t = time.perf_counter()
                other = await aattach(session.session_id)
                out["attach"].append(time.perf_counter() - t)
                await other.close()
            out["mcp"] = await through_mcp(session.session_id, cells)
        await session.shutdown()
    return out


async def through_mcp(session_id: str, cells: int) -> list[float]:
    """``execute_code`` round trips through ``sandlot mcp`` over stdio."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sandlot.cli", "mcp", "--session", session_id],
        env=dict(os.environ),
    )
    trips = []
    async with Client(params) as client:
        await client.call_tool("execute_code", {"session_id": session_id, "code": "1+1"})
        for _ in range(cells):
            t = time.perf_counter()
            await client.call_tool("execute_code", {"session_id": session_id, "code": "1+1"})
            trips.append(time.perf_counter() - t)
    return trips


SANDLOT_ROWS = {
    "start": "start_session",
    "attach": "aattach(session_id)",
    "api": "session.execute of '1+1'",
    "mcp": "mcp execute_code (stdio)",
}


async def measure(runs: int, cells: int) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Every series, in a sessions folder of this process's own."""
    with tempfile.TemporaryDirectory(prefix="sandlot-nb-bench-") as tmp:
        os.environ["SANDLOT_SESSIONS_DIR"] = str(Path(tmp) / "sessions")
        os.environ.setdefault("SANDLOT_SESSIONS_LINGER", "2")
        bare_start, bare_trip = await bare_kernel(runs, cells)
        ours = await sessions(runs, cells, str(Path(tmp) / "notebooks"))
    return bare_start, bare_trip, ours


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="kernel starts of each kind")
    parser.add_argument("--cells", type=int, default=100, help="round trips of each kind")
    parser.add_argument("--base", help="also measure this commit (git ref), side by side")
    parser.add_argument("--rounds", type=int, default=4, help="with --base: rounds a side")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # one side's samples, for --base
    args = parser.parse_args()
    if args.base:
        argv = ["--runs", str(args.runs), "--cells", str(args.cells)]
        trees, got = alternate(Path(__file__), argv, args.base, args.rounds)
        side_by_side(
            f"Notebook sessions, {args.rounds} rounds a side (ms)", SANDLOT_ROWS, trees, got
        )
        return
    bare_start, bare_trip, ours = await measure(args.runs, args.cells)
    if args.json:
        Path(args.json).write_text(json.dumps(ours))
        return
    base_start = pct(bare_start, 0.5)
    table(
        f"Kernel start (p50 / p95 ms over {args.runs})",
        ["way", "n", "p50", "p95", "vs bare"],
        [
            row("bare ipykernel on the host (jupyter_client, TCP)", bare_start, base_start),
            row("sandlot start_session (sandbox + relay + ipykernel)", ours["start"], base_start),
        ],
    )
    table(
        f"Attach by session id (p50 / p95 ms over {args.cells})",
        ["way", "n", "p50", "p95", "vs bare"],
        [row("aattach(session_id), another connection", ours["attach"], None)],
    )
    base_trip = pct(bare_trip, 0.5)
    table(
        f"Cell round trip, '1+1' (p50 / p95 ms over {args.cells})",
        ["way", "n", "p50", "p95", "vs bare"],
        [
            row("bare jupyter_client execute_interactive", bare_trip, base_trip),
            row("sandlot session.execute", ours["api"], base_trip),
            row("sandlot mcp execute_code (stdio, SDK client)", ours["mcp"], base_trip),
        ],
    )
    console.print("goals: attach <= 10 ms; execute_code via MCP <= 10 ms p50; start <= 1.5x bare")


if __name__ == "__main__":
    asyncio.run(main())
