"""sandlot's benchmarks, each one command, each printing a table of sandlot beside its peers.

    uv run --extra bench python benchmarks/bench.py startup     # time to first result
    uv run --extra bench python benchmarks/bench.py roundtrip   # REPL round trip
    uv run --extra bench python benchmarks/bench.py hostcall    # host function round trip
    uv run --extra bench python benchmarks/bench.py fanout      # pool fan-out efficiency
    uv run --extra bench python benchmarks/bench.py density     # memory per idle sandbox
    uv run --extra bench python benchmarks/bench.py rate        # sandboxes created per second
    uv run --extra bench python benchmarks/bench.py all

Peers (``benchmarks/peers.py``) run in the same process and the same run. Where a
peer is not isolated, its figure is a floor for latency, not a rival for safety.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandlot
from sandlot.backends.local import probe

try:
    import peers as peer_module

    PEERS: list[Any] = list(peer_module.PEERS)
except ImportError as exc:  # the bench extra is not installed
    PEERS = []
    PEER_PROBLEM = f"peers not loaded ({exc}); install with: uv sync --extra bench"
else:
    PEER_PROBLEM = ""

console = Console(width=150)
ISOLATED = sandlot.SandboxConfig(isolation="bubblewrap", max_output_bytes=4 << 20)


def ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    """Wall times of ``runs`` calls of ``fn``."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def usable_peers() -> Iterator[Any]:
    """Peer adapters that work on this machine (and say why the others do not)."""
    if PEER_PROBLEM:
        console.print(f"[yellow]{PEER_PROBLEM}[/]")
    for cls in PEERS:
        problem = cls.available()
        if problem is None:
            yield cls
        else:
            console.print(f"[yellow]peer {cls.name}: skipped: {problem}[/]")


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print one result table."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c in ("environment", "isolated") else "right")
    for row in rows:
        t.add_row(*row)
    console.print(t)


def yes(flag: bool) -> str:
    """'yes' or 'no'."""
    return "yes" if flag else "no"


# -- 1. time to first result ---------------------------------------------------------


def first_result(
    make: Callable[[], Any], run: Callable[[Any], Any], close: Callable[[Any], Any], runs: int
) -> list[float]:
    """Times from creating an environment to its first result (closing it is not timed)."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        env = make()
        run(env)
        out.append(time.perf_counter() - start)
        close(env)
    return out


def bench_startup(runs: int) -> None:
    """Create an isolated sandbox and get ``1+1`` from its REPL: cold, and warm from a pool."""

    def check(sb: sandlot.Sandbox) -> None:
        assert sb.run_code("1+1").value == "2"

    def make() -> sandlot.Sandbox:
        return sandlot.Sandbox(ISOLATED).start()

    first_result(make, check, sandlot.Sandbox.terminate, 1)  # probes the machine once
    cold_t = first_result(make, check, sandlot.Sandbox.terminate, runs)
    base = pct(cold_t, 0.5)
    rows = [["sandlot cold", "yes", ms(base), ms(pct(cold_t, 0.95)), "1.0"]]
    with sandlot.SandboxPool(ISOLATED, size=4, warm=4) as pool:
        warm_t = []
        for _ in range(runs):
            pool.wait_warm()
            time.sleep(0.05)  # let the previous round's clean-up finish
            start = time.perf_counter()
            with pool.sandbox(clean=True) as sb:
                check(sb)
                warm_t.append(time.perf_counter() - start)  # returning it is not timed
    rows.append(
        [
            "sandlot warm (pool)",
            "yes",
            ms(pct(warm_t, 0.5)),
            ms(pct(warm_t, 0.95)),
            f"{pct(warm_t, 0.5) / base:.2f}",
        ]
    )
    for cls in usable_peers():

        def peer_make(cls: Any = cls) -> Any:
            peer = cls()
            peer.start()
            return peer

        first_result(peer_make, lambda p: p.run("print(1+1)"), lambda p: p.close(), 1)
        t = first_result(
            peer_make, lambda p: p.run("print(1+1)"), lambda p: p.close(), max(5, runs // 3)
        )
        rows.append(
            [
                cls.name,
                yes(cls.isolated),
                ms(pct(t, 0.5)),
                ms(pct(t, 0.95)),
                f"{pct(t, 0.5) / base:.2f}",
            ]
        )
    table(
        f"time to first result of 1+1 ({runs} runs; peers {max(5, runs // 3)})",
        ["environment", "isolated", "p50 ms", "p95 ms", "p50 / sandlot cold"],
        rows,
    )


# -- 2. REPL round trip ---------------------------------------------------------------


def bench_roundtrip(runs: int) -> None:
    """``x += 1`` through the REPL, and a cell printing 1 MB."""
    rows = []
    big = "print('x' * 1_000_000)"
    with sandlot.Sandbox(ISOLATED) as sb:
        sb.run_code("x = 0")
        small = timed(lambda: sb.run_code("x += 1"), runs)
        assert sb.run_code("x").value == str(runs)
        mb = timed(lambda: sb.run_code(big), max(20, runs // 20))
        assert len(sb.run_code(big).stdout) == 1_000_001
    rows.append(
        [
            "sandlot",
            "yes",
            ms(pct(small, 0.5)),
            ms(pct(small, 0.95)),
            ms(pct(mb, 0.5)),
            ms(pct(mb, 0.95)),
        ]
    )
    for cls in usable_peers():
        peer = cls()
        peer.start()
        try:
            peer.run("x = 0")
            p_small = timed(lambda peer=peer: peer.run("x += 1"), runs)
            p_mb = timed(lambda peer=peer: peer.run(big), max(20, runs // 20))
        finally:
            peer.close()
        rows.append(
            [
                cls.name,
                yes(cls.isolated),
                ms(pct(p_small, 0.5)),
                ms(pct(p_small, 0.95)),
                ms(pct(p_mb, 0.5)),
                ms(pct(p_mb, 0.95)),
            ]
        )
    table(
        f"REPL round trip ({runs} runs of x += 1)",
        ["environment", "isolated", "x+=1 p50 ms", "x+=1 p95 ms", "1 MB p50 ms", "1 MB p95 ms"],
        rows,
    )


# -- 3. host call round trip ----------------------------------------------------------

HOST_LOOP = """
import time, threading
def _timed_calls(n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); host_fn(); out.append(time.perf_counter() - t)
    return out
def _threaded(threads, n):
    results = []
    def work():
        results.extend(_timed_calls(n))
    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts: t.start()
    for t in ts: t.join()
    return results, time.perf_counter() - t0
"""


def bench_hostcall(runs: int) -> None:
    """Sandboxed code calls a host function that returns at once: alone, and 16 threads."""
    rows = []
    with sandlot.Sandbox(ISOLATED, tools={"host_fn": lambda: 1}) as sb:
        sb.run_code(HOST_LOOP)
        single = eval(sb.run_code(f"_timed_calls({runs})").value or "[]")
        many, wall = eval(sb.run_code(f"_threaded(16, {max(10, runs // 16)})").value or "[]")
    rows.append(
        [
            "sandlot",
            "yes",
            ms(pct(single, 0.5)),
            ms(pct(single, 0.95)),
            ms(statistics.fmean(single)),
            ms(pct(many, 0.5)),
            ms(pct(many, 0.95)),
            f"{len(many) / wall:,.0f}",
        ]
    )
    for cls in usable_peers():
        if not cls.host_calls:
            rows.append(
                [cls.name, yes(cls.isolated), "n/a", "n/a", "n/a", "n/a", "n/a", "no host calls"]
            )
            continue
        peer = cls()
        peer.start()
        try:
            peer.host_call(10)
            start = time.perf_counter()
            peer.host_call(runs)  # a loop of calls inside, like sandlot's
            mean = (time.perf_counter() - start) / runs
        finally:
            peer.close()
        rows.append([cls.name, yes(cls.isolated), "-", "-", ms(mean), "-", "-", "-"])
    table(
        f"host call round trip ({runs} calls in a loop inside; then 16 threads at once)",
        [
            "environment",
            "isolated",
            "p50 ms",
            "p95 ms",
            "mean ms",
            "16 threads p50 ms",
            "16 threads p95 ms",
            "calls/s (16 threads)",
        ],
        rows,
    )


# -- 4. fan-out efficiency ------------------------------------------------------------


def bench_fanout(items: int, sizes: list[int], latency: float) -> None:
    """``items`` items, each calling a host function that sleeps ``latency``, over pools."""
    rows = []

    def stand_in_lm(prompt: str) -> str:
        time.sleep(latency)
        return prompt[::-1]

    for size in sizes:
        with sandlot.SandboxPool(
            ISOLATED, size=size, warm=size, tools={"llm_query": stand_in_lm}
        ) as pool:
            pool.wait_warm()
            start = time.perf_counter()
            out = pool.map(lambda sb, i: sb.run_code(f"llm_query('item {i}')").value, range(items))
            actual = time.perf_counter() - start
        assert out[0] == repr("0 meti")
        ideal = items * latency / size
        rows.append([str(size), f"{ideal:.2f}", f"{actual:.2f}", f"{ideal / actual:.3f}"])
    table(
        f"fan-out: {items} items, host call of {latency * 1000:.0f} ms each (warm pools)",
        ["pool size", "ideal s", "actual s", "efficiency"],
        rows,
    )


# -- 5. density -----------------------------------------------------------------------


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of processes, in KiB (shared pages split among sharers)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def sandbox_pids(sb: sandlot.AsyncSandbox) -> list[int]:
    """Host pids of a sandbox's processes (bubblewrap and the driver)."""
    launch = sb._launch
    assert launch is not None
    cgroup = getattr(launch, "cgroup", None)
    return sorted(cgroup.pids()) if cgroup is not None else [launch.proc.pid]  # type: ignore[attr-defined]


def bench_density(count: int, peer_count: int) -> None:
    """Memory per idle sandbox, and how many fit in this machine's memory."""
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    async def hold() -> tuple[int, float, int]:
        boxes: list[sandlot.AsyncSandbox] = []
        sem = asyncio.Semaphore(8)

        async def one() -> None:
            async with sem:
                sb = await sandlot.AsyncSandbox(ISOLATED).start()
                await sb.run_code("1")
                boxes.append(sb)

        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        took = time.perf_counter() - start
        failures = [r for r in results if isinstance(r, BaseException)]
        alive = [b for b in boxes if b.is_alive]
        per = pss_kib([p for b in alive for p in sandbox_pids(b)]) / max(1, len(alive))
        checks = await asyncio.gather(*(b.run_code("2+2") for b in alive))
        answered = sum(1 for c in checks if c.value == "4")
        await asyncio.gather(*(b.terminate() for b in boxes))
        if failures:
            console.print(f"[red]{len(failures)} starts failed: {failures[0]!r}[/]")
        return answered, took, int(per)

    answered, took, per_kib = asyncio.run(hold())
    fits = int(mem_total / 1024 / per_kib)
    rows = [
        [
            "sandlot",
            "yes",
            f"{per_kib / 1024:.1f}",
            f"{answered} of {count} in {took:.1f}s",
            f"{fits:,}",
        ]
    ]
    for cls in usable_peers():
        instances = []
        try:
            for _ in range(peer_count):
                peer = cls()
                peer.start()
                peer.run("1")
                instances.append(peer)
            pids = [p for peer in instances for p in peer.pids()]
            if pids:
                per = pss_kib(pids) / len(instances)
                rows.append(
                    [
                        cls.name,
                        yes(cls.isolated),
                        f"{per / 1024:.1f}",
                        f"{len(instances)} held",
                        f"{int(mem_total / 1024 / per):,}",
                    ]
                )
            else:
                rows.append([cls.name, yes(cls.isolated), "in host process", "-", "-"])
        finally:
            for peer in instances:
                peer.close()
    table(
        f"density: idle sandboxes held at once ({mem_total / 2**30:.0f} GiB machine)",
        ["environment", "isolated", "PSS per idle MiB", "held and answering", "would fit in RAM"],
        rows,
    )


# -- 6. creation rate -----------------------------------------------------------------


def bench_rate(seconds: float, workers: int) -> None:
    """Sandboxes started (to a first result) and ended per second, sustained."""
    rows = []

    def churn(make: Callable[[], None]) -> tuple[int, list[float]]:
        stop = time.monotonic() + seconds
        counts: list[float] = []
        lock = threading.Lock()

        def work() -> None:
            while time.monotonic() < stop:
                t = time.perf_counter()
                make()
                with lock:
                    counts.append(time.perf_counter() - t)

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return len(counts), counts

    def sandlot_one() -> None:
        with sandlot.Sandbox(ISOLATED) as sb:
            sb.run_code("1")

    n, lat = churn(sandlot_one)
    rows.append(["sandlot", "yes", f"{n / seconds:.1f}", ms(pct(lat, 0.5)), ms(pct(lat, 0.95))])
    for cls in usable_peers():

        def peer_one(cls: Any = cls) -> None:
            peer = cls()
            peer.start()
            peer.run("1")
            peer.close()

        n, lat = churn(peer_one)
        rows.append(
            [
                cls.name,
                yes(cls.isolated),
                f"{n / seconds:.1f}",
                ms(pct(lat, 0.5)),
                ms(pct(lat, 0.95)),
            ]
        )
    table(
        f"creation rate: start, first result, end; {workers} workers for {seconds:.0f}s",
        ["environment", "isolated", "per second", "p50 ms each", "p95 ms each"],
        rows,
    )


def main() -> None:
    """Parse the command line and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "which", choices=["startup", "roundtrip", "hostcall", "fanout", "density", "rate", "all"]
    )
    parser.add_argument("--runs", type=int, default=0, help="samples (default per benchmark)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller sizes")
    parser.add_argument("--no-peers", action="store_true", help="measure sandlot only")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.1,
        help="fanout: seconds each stand-in host call sleeps (default 0.1)",
    )
    args = parser.parse_args()
    quick = args.quick
    if args.no_peers:
        global PEER_PROBLEM
        PEERS.clear()
        PEER_PROBLEM = ""
    iso = probe().describe()
    console.print(
        f"[bold]sandlot benchmarks[/] on {platform.node()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    console.print(f"isolation: {iso}")
    chosen = ["startup", "roundtrip", "hostcall", "fanout", "density", "rate"]
    for name in chosen if args.which == "all" else [args.which]:
        started = time.perf_counter()
        if name == "startup":
            bench_startup(args.runs or (10 if quick else 50))
        elif name == "roundtrip":
            bench_roundtrip(args.runs or (200 if quick else 2000))
        elif name == "hostcall":
            bench_hostcall(args.runs or (200 if quick else 2000))
        elif name == "fanout":
            bench_fanout(64 if quick else 512, [4, 16] if quick else [4, 16, 64], args.latency)
        elif name == "density":
            bench_density(20 if quick else 500, 3 if quick else 10)
        elif name == "rate":
            bench_rate(5 if quick else 30, 2)
        console.print(f"[dim]{name}: {time.perf_counter() - started:.0f}s[/]\n")


if __name__ == "__main__":
    main()
