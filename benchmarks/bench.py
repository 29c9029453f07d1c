"""sandlot's benchmarks, each one command, each printing a table of sandlot beside its peers.

    uv run --extra bench python benchmarks/bench.py startup     # time to first result
    uv run --extra bench python benchmarks/bench.py roundtrip   # REPL round trip
    uv run --extra bench python benchmarks/bench.py hostcall    # host function round trip
    uv run --extra bench python benchmarks/bench.py fanout      # pool fan-out efficiency
    uv run --extra bench python benchmarks/bench.py density     # memory per idle sandbox
    uv run --extra bench python benchmarks/bench.py rate        # sandboxes created per second
    uv run --extra bench python benchmarks/bench.py all         # the six above
    uv run --extra bench python benchmarks/bench.py rlm         # RLM engine overhead on NIAH

``--as-user`` runs the chosen benchmarks in a host that is not root (uid 4242, with
the system's interpreter of this Python version; see ``tests/other_user.py``), as
most hosts are: bubblewrap makes a user namespace there, and so does each template.
It needs a root shell to start from, and skips the peers; ``SANDLOT_TEMPLATES`` goes
along.

``rlm`` is not part of ``all`` (with its defaults it takes about 25 minutes); its options:
``--lines 10000,100000,1000000 --pools 1,4,16 --latency 0.2 --runs 3 --chunk-chars 50000``.

Peers (``benchmarks/peers.py``) run in the same process and the same run. Where a
peer is not isolated, its figure is a floor for latency, not a rival for safety.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import gc
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandlot
from sandlot.backends import envs, local
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


def ints(text: str) -> list[int]:
    """``"1,4,16"`` as ``[1, 4, 16]``."""
    return [int(part) for part in text.split(",") if part.strip()]


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


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every core, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def templates_off(off: bool) -> Iterator[None]:
    """Sandboxes started inside start cold where ``off`` (``SANDLOT_TEMPLATES=0``)."""
    old = os.environ.get("SANDLOT_TEMPLATES")
    if off:
        os.environ["SANDLOT_TEMPLATES"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SANDLOT_TEMPLATES", None)
        else:
            os.environ["SANDLOT_TEMPLATES"] = old


def bwrap_floor(bwrap: str) -> Callable[[], None]:
    """bubblewrap with minimal walls (the host's root read-only, new namespaces) running
    ``python -I -S -c pass``: the least a cold start can cost."""
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    argv += ["--unshare-uts", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += [sys.executable, "-I", "-S", "-c", "pass"]

    def run() -> None:
        subprocess.run(argv, check=True)

    return run


# CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS
SIX_NAMESPACES = 0x10000000 | 0x20000 | 0x20000000 | 0x40000000 | 0x8000000 | 0x4000000


def fork_floor() -> None:
    """fork, unshare(user, mount, pid, net, ipc, uts), exit: what a new sandbox costs the kernel."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(SIX_NAMESPACES) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0, "unshare failed"


def bench_startup(runs: int) -> None:
    """Create an isolated sandbox and get ``1+1`` from its REPL: from a template, cold, and
    warm from a pool; beside the floors, in interleaved rounds."""

    def check(sb: sandlot.Sandbox) -> None:
        assert sb.run_code("1+1").value == "2"

    def fresh(cold: bool, config: sandlot.SandboxConfig = ISOLATED) -> Callable[[], None]:
        def one() -> None:
            with templates_off(cold):
                sb = sandlot.Sandbox(config).start()
            check(sb)
            sb.terminate()  # inside the timing: its CPU is the sandbox's too

        return one

    # A template of its own (its locale is its key), ended after each start, untimed: each
    # start is that of a new template's first sandbox, as a process's first start is.
    first = "sandlot, a new template's first"
    own = ISOLATED.model_copy(update={"env": {"LC_MESSAGES": "C@bench-first"}})

    # A machine's very first start: its cache empty (a new one each time, set untimed), so
    # the sandbox's environment and the driver's compiled copy are made, then a template.
    # The copy takes the bytecode sandlot's own directory holds where it is valid (an install
    # by pip compiles it, one by uv does not): the row says how many modules had it, and a
    # second row starts from a copy of sandlot's driver with none.
    held, modules = envs.installed_bytecode()
    machine = f"sandlot, a machine's first (empty cache; bytecode of {held}/{modules})"
    bare = "sandlot, a machine's first (empty cache; no bytecode)"
    caches: list[str] = []
    users_cache = os.environ.get("SANDLOT_CACHE")  # put back after each such start
    installed = envs.DRIVER_SRC
    unbuilt = Path(tempfile.mkdtemp(prefix="sandlot-bench-driver-")) / "driver"
    shutil.copytree(installed, unbuilt, ignore=shutil.ignore_patterns("__pycache__"))

    def empty_cache(driver: Path = installed) -> None:
        caches.append(tempfile.mkdtemp(prefix="sandlot-bench-cache-"))
        os.environ["SANDLOT_CACHE"] = caches[-1]
        envs.DRIVER_SRC = driver

    def drop_cache() -> None:
        local.end_templates(lambda key: str(key[0]).startswith(caches[-1]))
        envs.DRIVER_SRC = installed
        if users_cache is None:
            os.environ.pop("SANDLOT_CACHE")
        else:
            os.environ["SANDLOT_CACHE"] = users_cache
        shutil.rmtree(caches.pop())

    # A fresh host process's first sandbox, as a script's or a command's: timed inside that
    # process from Sandbox(...) to its first 1+1 (its interpreter and `import sandlot` are
    # not counted, nor its machine CPU, most of which they are).
    process = "sandlot, a fresh process's first (Sandbox() to 1+1)"
    script = (
        "import sys, time\n"
        "import sandlot\n"
        "from sandlot import Sandbox, SandboxConfig\n"
        "config = SandboxConfig.model_validate_json(sys.argv[1])\n"
        "start = time.perf_counter()\n"
        "sb = Sandbox(config).start()\n"
        "assert sb.run_code('1+1').value == '2'\n"
        "print(sandlot.__file__, time.perf_counter() - start)\n"
        "sb.terminate()\n"
    )
    # The same sandlot as this process's (-P: not the working directory's; its root first).
    root = os.path.dirname(os.path.dirname(sandlot.__file__))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))

    def fresh_process() -> float:
        done = subprocess.run(
            [sys.executable, "-P", "-c", script, ISOLATED.model_dump_json()],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        if done.returncode != 0:
            raise RuntimeError(f"the fresh process failed: {done.stderr[-2000:]}")
        used, took = done.stdout.split()[-2:]
        assert used == sandlot.__file__, f"the fresh process imported {used}"
        return float(took)

    kinds: dict[str, Callable[[], float | None]] = {
        "sandlot (template)": fresh(False),
        first: fresh(False, own),
        machine: fresh(False),
        bare: fresh(False),
        process: fresh_process,
        "sandlot cold (SANDLOT_TEMPLATES=0)": fresh(True),
    }
    before = {machine: empty_cache, bare: functools.partial(empty_cache, unbuilt)}
    after = {
        first: functools.partial(
            local.end_templates, lambda key: ("LC_MESSAGES", "C@bench-first") in key[2]
        ),
        machine: drop_cache,
        bare: drop_cache,
    }
    iso = probe()
    if iso.bwrap is not None:
        kinds["floor: bwrap + python -I -S -c pass"] = bwrap_floor(iso.bwrap)
    kinds["floor: fork + unshare 6 namespaces"] = fork_floor
    for name, one in kinds.items():
        before.get(name, lambda: None)()
        one()  # start each kind's template, caches and interpreters once
        after.get(name, lambda: None)()
    took: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
    for i in range(runs):
        order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
        for name in order:
            before.get(name, lambda: None)()
            time.sleep(0.02)  # let the previous one's clean-up finish
            busy, start = busy_seconds(), time.perf_counter()
            own_time = kinds[name]()
            took[name].append(time.perf_counter() - start if own_time is None else own_time)
            cpu[name] += busy_seconds() - busy
            after.get(name, lambda: None)()
    shutil.rmtree(unbuilt.parent)
    base = pct(took["sandlot (template)"], 0.5)
    rows = [
        [
            name,
            "yes",
            ms(pct(t, 0.5)),
            ms(pct(t, 0.95)),
            f"{pct(t, 0.5) / base:.2f}",
            "" if name == process else ms(cpu[name] / runs),
        ]
        for name, t in took.items()
    ]
    with sandlot.SandboxPool(ISOLATED, size=4, warm=4) as pool:
        warm_t = []
        for _ in range(runs):
            pool.wait_warm()
            time.sleep(0.05)  # let the previous round's clean-up finish
            start = time.perf_counter()
            with pool.sandbox() as sb:  # a fresh one each time (no reuse)
                check(sb)
                warm_t.append(time.perf_counter() - start)  # returning it is not timed
    rows.append(
        [
            "sandlot warm (pool)",
            "yes",
            ms(pct(warm_t, 0.5)),
            ms(pct(warm_t, 0.95)),
            f"{pct(warm_t, 0.5) / base:.2f}",
            "",
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
                "",
            ]
        )
    table(
        f"time to first result of 1+1, start to end ({runs} interleaved rounds; "
        f"pool and peers after, {max(5, runs // 3)} runs, not counting the end)",
        ["environment", "isolated", "p50 ms", "p95 ms", "p50 / template", "machine CPU ms"],
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


# -- one backend's latencies (ray_bench.py and stream_bench.py set backends side by side) --


def first_results(backend: Any, runs: int) -> list[float]:
    """Create, ``1+1``, terminate; all three timed."""

    def once() -> None:
        sb = sandlot.Sandbox(ISOLATED, backend=backend).start()
        assert sb.run_code("1+1").value == "2"
        sb.terminate()

    once()  # warm-up (the backend's probes, a Ray backend's first worker)
    return timed(once, runs)


def repl_roundtrips(backend: Any, runs: int) -> list[float]:
    """``run_code("1")`` on a started sandbox."""
    with sandlot.Sandbox(ISOLATED, backend=backend) as sb:
        timed(lambda: sb.run_code("1"), 20)
        return timed(lambda: sb.run_code("1"), runs)


def host_calls(backend: Any, calls: int) -> list[float]:
    """A loop of host calls timed inside the sandbox."""
    with sandlot.Sandbox(ISOLATED, backend=backend, tools={"host_fn": lambda: 1}) as sb:
        sb.run_code(HOST_LOOP)
        sb.run_code("_timed_calls(20)")
        samples: list[float] = eval(sb.run_code(f"_timed_calls({calls})").value or "[]")
        return samples


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


def bench_fanout(items: int, sizes: list[int], latency: float, waves: int = 0) -> None:
    """``items`` items (or ``waves`` times the pool's size), each calling a host function that
    sleeps ``latency``, over pools: each borrower reusing a sandbox, or getting a fresh one
    (from a template, or cold)."""
    rows = []
    fixed = items

    def stand_in_lm(prompt: str) -> str:
        time.sleep(latency)
        return prompt[::-1]

    modes = {
        "reuse": (True, False),
        "fresh (template)": (False, False),
        "fresh (cold)": (False, True),
    }
    for size in sizes:
        items = waves * size if waves else fixed
        for mode, (reuse, cold) in modes.items():
            with (
                templates_off(cold),
                sandlot.SandboxPool(
                    ISOLATED, size=size, warm=size, reuse=reuse, tools={"llm_query": stand_in_lm}
                ) as pool,
            ):
                pool.wait_warm()
                start = time.perf_counter()
                out = pool.map(
                    lambda sb, i: sb.run_code(f"llm_query('item {i}')").value, range(items)
                )
                actual = time.perf_counter() - start
            assert out[0] == repr("0 meti")
            ideal = items * latency / size
            times = [f"{ideal:.2f}", f"{actual:.2f}", f"{ideal / actual:.3f}"]
            rows.append([str(size), str(items), mode, *times])
    table(
        f"fan-out: host call of {latency * 1000:.0f} ms each (warm pools)",
        ["pool size", "items", "sandboxes", "ideal s", "actual s", "efficiency"],
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


def churn(make: Callable[[], None], seconds: float, workers: int = 2) -> tuple[float, list[float]]:
    """``make`` over and over on ``workers`` threads for ``seconds``: rate, and each one's time."""
    stop = time.monotonic() + seconds
    took: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            make()
            with lock:
                took.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(took) / (time.perf_counter() - start), took


def bench_rate(seconds: float, workers: list[int]) -> None:
    """Sandboxes started (to a first result) and ended per second, sustained, by ``workers``
    threads each making one after another (cold starts and peers with the first count only)."""
    rows = []

    def sandlot_one() -> None:
        with sandlot.Sandbox(ISOLATED) as sb:
            sb.run_code("1")

    kinds = [("sandlot (template)", False, n) for n in workers] + [
        ("sandlot cold", True, workers[0])
    ]
    for label, cold, n in kinds:
        with templates_off(cold):
            sandlot_one()
            busy = busy_seconds()
            rate, lat = churn(sandlot_one, seconds, n)
            each = (busy_seconds() - busy) / len(lat)
        rows.append(
            [label, str(n), "yes", f"{rate:.1f}", ms(pct(lat, 0.5)), ms(pct(lat, 0.95)), ms(each)]
        )
    for cls in usable_peers():

        def peer_one(cls: Any = cls) -> None:
            peer = cls()
            peer.start()
            peer.run("1")
            peer.close()

        rate, lat = churn(peer_one, seconds, workers[0])
        rows.append(
            [
                cls.name,
                str(workers[0]),
                yes(cls.isolated),
                f"{rate:.1f}",
                ms(pct(lat, 0.5)),
                ms(pct(lat, 0.95)),
                "",
            ]
        )
    table(
        f"creation rate: start, first result, end; {seconds:.0f}s per row",
        [
            "environment",
            "workers",
            "isolated",
            "per second",
            "p50 ms each",
            "p95 ms each",
            "machine CPU ms",
        ],
        rows,
    )


# -- 7. RLM engine overhead on needle in a haystack -----------------------------------

# rlms 0.1.3 has no FINAL_VAR: its REPL finishes on ``answer["ready"] = True``. The rlms run
# gets the same script with only the finishing line changed to that (sandlot's REPL accepts both).
NIAH_FINISH_FINAL_VAR = "print(magic)\n```\nFINAL_VAR(magic)\n"
NIAH_FINISH_ANSWER_DICT = 'print(magic)\nanswer["content"] = magic\nanswer["ready"] = True\n```\n'


def rlms_niah_policy(chunk_chars: int) -> Callable[[Any], str]:
    """sandlot's scripted NIAH root policy, finishing the way rlms's REPL expects."""
    from sandlot.rlm.niah import niah_policy

    base = niah_policy(chunk_chars)

    def policy(messages: Any) -> str:
        reply = base(messages)
        if "FINAL_VAR(" in reply:
            assert NIAH_FINISH_FINAL_VAR in reply, "the NIAH script's finish changed"
            reply = reply.replace(NIAH_FINISH_FINAL_VAR, NIAH_FINISH_ANSWER_DICT)
        return reply

    return policy


def niah_chunk_count(text: str, chunk: int) -> int:
    """How many chunks the scripted root's code cuts ``text`` into (its loop, on the host)."""
    count = start = 0
    while start < len(text):
        end = text.rfind("\n", start, start + chunk) + 1 or min(start + chunk, len(text))
        if end <= start:
            end = min(start + chunk, len(text))
        count += 1
        start = end
    return count


class RecordingLM:
    """Wraps a sandlot LM; appends each call's start and end (``perf_counter``) to ``calls``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model: str = inner.model
        self.calls: list[tuple[float, float]] = []

    async def acomplete(self, messages: Any) -> Any:
        """The inner LM's answer, timed."""
        start = time.perf_counter()
        done = await self.inner.acomplete(messages)
        self.calls.append((start, time.perf_counter()))
        return done


class NiahSample:
    """One timed completion: wall time, answer check, and where the time went."""

    def __init__(
        self, start: float, end: float, calls: list[tuple[float, float]], ok: bool
    ) -> None:
        self.wall = end - start
        self.ok = ok
        self.calls = len(calls)
        first = min((c[0] for c in calls), default=end)
        last = max((c[1] for c in calls), default=end)
        self.head = first - start  # start of completion() to the first sub-call's start
        self.span = max(0.0, last - first)  # first sub-call's start to the last one's end
        self.tail = end - last  # last sub-call's end to completion() returning
        self.mean_call = statistics.fmean(c[1] - c[0] for c in calls) if calls else 0.0


def sandlot_niah(
    text: str, needle: str, pool: int, latency: float, chunk: int, warm: int = 0
) -> NiahSample:
    """sandlot's RLM on the haystack: scripted root, stand-in sub-LM, ``pool`` calls at once.

    With ``warm=1`` the RLM keeps a sandbox started for the completion (started,
    and waited for, before the clock starts), as a long-lived RLM would.
    """
    from sandlot.rlm.engine import RLM
    from sandlot.rlm.niah import NIAH_QUERY, ScriptedRootLM, StandInSubLM, niah_policy

    sub = RecordingLM(StandInSubLM(latency))
    with RLM(
        ScriptedRootLM(niah_policy(chunk)),
        sub,
        pool_size=pool,
        max_llm_calls=100_000,  # the default 200 would refuse the 10^6-line haystack's chunks
        max_time=3600,
        warm=warm,
    ) as engine:
        engine.start()
        start = time.perf_counter()
        result = engine.completion(text, NIAH_QUERY)
        end = time.perf_counter()
    ok = result.finished and str(result.answer) == needle
    if not ok:
        console.print(f"[red]sandlot: wrong answer {result.answer!r} ({result.error})[/]")
    return NiahSample(start, end, sub.calls, ok)


def rlms_niah(text: str, needle: str, pool: int, latency: float, chunk: int) -> NiahSample:
    """rlms's RLM (LocalREPL) on the same haystack, script and stand-in."""
    from sandlot.rlm.niah import NIAH_QUERY, StandInSubLM

    loop = peer_module.RlmsLoop(rlms_niah_policy(chunk), StandInSubLM(latency), pool)
    start = time.perf_counter()
    try:
        answer: str | None = loop.completion(text, NIAH_QUERY)
    except Exception as exc:  # a failed run is a wrong answer in the table
        answer = f"{type(exc).__name__}: {exc}"
    end = time.perf_counter()
    ok = answer is not None and answer.strip() == needle
    if not ok:
        console.print(f"[red]rlms: wrong answer {answer!r}[/]")
    return NiahSample(start, end, loop.calls, ok)


def bench_rlm(
    line_counts: list[int],
    pools: list[int],
    latency: float,
    runs: int,
    chunk: int,
    with_rlms: bool,
) -> bool:
    """RLM engine overhead on NIAH: wall time against the ideal (sub-LM time / pool size).

    Returns False if any run got a wrong answer (or the wrong number of sub-calls).
    """
    from sandlot.rlm.niah import make_haystack

    engines: list[tuple[str, Callable[..., NiahSample]]] = [
        ("sandlot", sandlot_niah),
        ("sandlot warm", functools.partial(sandlot_niah, warm=1)),
    ]
    if with_rlms:
        problem = PEER_PROBLEM or peer_module.RlmsLoop.available()
        if problem is None:
            engines.append(("rlms", rlms_niah))
        else:
            console.print(f"[yellow]rlms: skipped: {problem}[/]")
    has_rlms = any(name == "rlms" for name, _ in engines)
    if has_rlms:
        from importlib.metadata import version

        console.print(
            f"rlms {version('rlms')}: RLM(environment='local'), llm_query_batched bounded by "
            f"LMHandler.batch_max_concurrent set to the pool size (as shipped: "
            f"{peer_module.RlmsLoop.SHIPPED_BATCH_CONCURRENCY}, no RLM argument sets it)"
        )
    small, small_needle = make_haystack(200, seed=1)
    for _name, fn in engines:  # warm-up: imports, first sandbox, first socket server
        fn(small, small_needle, 2, 0.0, 2000)
    all_ok = True
    rows: list[list[str]] = []
    parts: list[list[str]] = []
    for lines in line_counts:
        made = time.perf_counter()
        text, needle = make_haystack(lines)
        chunks = niah_chunk_count(text, chunk)
        console.print(
            f"[dim]haystack of {lines:,} lines ({len(text) / 1e6:.1f} MB, {chunks} chunks) "
            f"made in {time.perf_counter() - made:.1f}s[/]"
        )
        for pool in pools:
            samples: dict[str, list[NiahSample]] = {name: [] for name, _ in engines}
            for i in range(runs):
                order = engines if i % 2 == 0 else engines[::-1]
                said = []
                for name, fn in order:
                    gc.collect()
                    sample = fn(text, needle, pool, latency, chunk)
                    sample.ok = sample.ok and sample.calls == chunks
                    samples[name].append(sample)
                    said.append(f"{name} {sample.wall:.2f}s {'ok' if sample.ok else 'WRONG'}")
                console.print(
                    f"[dim]{lines:,} lines, pool {pool}, run {i + 1}/{runs}: {', '.join(said)}[/]"
                )
            ideal = chunks * latency / pool
            wave = math.ceil(chunks / pool) * latency
            row = [f"{lines:,}", str(pool), str(chunks), f"{ideal:.2f}", f"{wave:.2f}"]
            p50 = {}
            for name, _ in engines:
                walls = [s.wall for s in samples[name]]
                p50[name] = statistics.median(walls)
                cell = (
                    f"{p50[name]:.2f}" if runs == 1 else f"{p50[name]:.2f}/{pct(walls, 0.95):.2f}"
                )
                row += [
                    cell,
                    f"{100 * (p50[name] - ideal) / p50[name]:.1f}",
                    f"{100 * (p50[name] - wave) / p50[name]:.1f}",
                ]
                mid = statistics.median
                ss = samples[name]
                parts.append(
                    [
                        f"{lines:,}",
                        str(pool),
                        name,
                        ms(mid(s.head for s in ss)),
                        f"{mid(s.span for s in ss):.2f}",
                        ms(mid(s.span for s in ss) - wave),
                        ms(mid(s.mean_call for s in ss) - latency),
                        ms(mid(s.tail for s in ss)),
                    ]
                )
            if has_rlms:
                row.append(f"{p50['rlms'] / p50['sandlot']:.2f}")
            bad = [
                f"{name} {sum(not s.ok for s in samples[name])} of {runs}"
                for name, _ in engines
                if not all(s.ok for s in samples[name])
            ]
            all_ok = all_ok and not bad
            row.append("yes" if not bad else "WRONG: " + ", ".join(bad))
            rows.append(row)
    wall = "wall s" if runs == 1 else "wall s p50/p95"
    columns = ["lines", "pool", "chunks", "ideal s", "wave bound s"]
    for name, _ in engines:
        columns += [f"{name} {wall}", f"{name} overhead % (ideal)", f"{name} overhead % (wave)"]
    if has_rlms:
        columns.append("rlms / sandlot p50")
    columns.append("answers ok")
    width = console.width
    console.width = max(width, 180)  # 13 columns: keep "17.40/17.62" from being cut
    table(
        f"RLM engine overhead on NIAH: sub-LM stand-in of {latency * 1000:.0f} ms, "
        f"{chunk:,}-char chunks, {runs} run{'s' if runs > 1 else ''} each "
        "(ideal = chunks x latency / pool; wave bound = ceil(chunks / pool) x latency; "
        "overhead = (wall - bound) / wall, at p50)",
        columns,
        rows,
    )
    table(
        "where the time went (medians): head = completion() called to first sub-call started; "
        "span = first sub-call started to last ended; tail = last sub-call ended to return",
        [
            "lines",
            "pool",
            "environment",
            "head ms",
            "span s",
            "span - wave bound ms",
            "sub-call over latency ms (mean)",
            "tail ms",
        ],
        parts,
    )
    console.width = width
    return all_ok


def as_other_user(args: list[str]) -> int:
    """Run this script with ``args`` in a host that is not root (see ``--as-user``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from other_user import SRC, other_user_command, other_user_home

    with tempfile.TemporaryDirectory(prefix="sandlot-bench-") as root:
        home = other_user_home(Path(root))
        argv = [f"{SRC}/benchmarks/bench.py", *args, "--no-peers"]
        env = {k: v for k, v in os.environ.items() if k == "SANDLOT_TEMPLATES"}
        return subprocess.run(other_user_command(argv, home, env)).returncode


def main() -> None:
    """Parse the command line and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "which",
        choices=["startup", "roundtrip", "hostcall", "fanout", "density", "rate", "all", "rlm"],
    )
    parser.add_argument("--runs", type=int, default=0, help="samples (default per benchmark)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller sizes")
    parser.add_argument("--no-peers", action="store_true", help="measure sandlot only")
    parser.add_argument(
        "--as-user", action="store_true", help="run in a host that is not root (from a root shell)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=None,
        help="fanout, rlm: seconds each stand-in call takes (default 0.1 fanout, 0.2 rlm)",
    )
    parser.add_argument(
        "--lines", default="", help="rlm: haystack sizes in lines (default 10000,100000,1000000)"
    )
    parser.add_argument("--pools", default="", help="rlm: pool sizes (default 1,4,16)")
    parser.add_argument("--sizes", default="", help="fanout: pool sizes (default 4,16,64)")
    parser.add_argument(
        "--waves", type=int, default=0, help="fanout: items per row = waves x pool size"
    )
    parser.add_argument(
        "--workers", default="2,4", help="rate: threads making sandboxes, one row each"
    )
    parser.add_argument(
        "--chunk-chars", type=int, default=0, help="rlm: chunk size of the script (default 50000)"
    )
    args = parser.parse_args()
    if args.as_user:
        sys.exit(as_other_user([a for a in sys.argv[1:] if a != "--as-user"]))
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
    failed = False
    for name in chosen if args.which == "all" else [args.which]:
        started = time.perf_counter()
        if name == "startup":
            bench_startup(args.runs or (10 if quick else 50))
        elif name == "roundtrip":
            bench_roundtrip(args.runs or (200 if quick else 2000))
        elif name == "hostcall":
            bench_hostcall(args.runs or (200 if quick else 2000))
        elif name == "fanout":
            latency = 0.1 if args.latency is None else args.latency
            sizes = ints(args.sizes or ("4,16" if quick else "4,16,64"))
            bench_fanout(64 if quick else 512, sizes, latency, args.waves)
        elif name == "density":
            bench_density(20 if quick else 500, 3 if quick else 10)
        elif name == "rate":
            bench_rate(5 if quick else 30, ints(args.workers))
        elif name == "rlm":
            from sandlot.rlm.niah import NIAH_CHUNK_CHARS

            ok = bench_rlm(
                ints(args.lines or ("2000" if quick else "10000,100000,1000000")),
                ints(args.pools or ("1,4" if quick else "1,4,16")),
                args.latency if args.latency is not None else 0.02 if quick else 0.2,
                args.runs or (1 if quick else 3),
                args.chunk_chars or (5000 if quick else NIAH_CHUNK_CHARS),
                with_rlms=not args.no_peers,
            )
            if not ok:
                failed = True
        console.print(f"[dim]{name}: {time.perf_counter() - started:.0f}s[/]\n")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
