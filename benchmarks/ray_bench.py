"""sandlot on a Ray cluster beside the local backend, with bare Ray's own costs, in one run.

    uv run python benchmarks/ray_bench.py [--runs N] [--quick]

It re-executes itself inside ``unshare --net`` (loopback up) unless it already
runs in a network namespace with nothing but loopback, then starts a Ray
cluster on this machine (a head with no CPUs and two worker nodes, like
tests/ray_scenario.py), so every sandbox and actor lands on a worker node.

Measured for the local backend, for ``backend=RayBackend()``, and for a bare
Ray actor beside them (the floor Ray itself sets):

- time to first result: create, ``run_code("1+1")``, terminate (bare Ray: create
  an actor, call an empty method, kill it);
- REPL round trip: ``run_code("1")`` on a started sandbox (bare Ray: an empty
  method call on an actor on a worker node, sync and async actors);
- host call round trip: sandboxed code calls a host function returning at once;
- creation rate: start, first result, end, on 2 threads for a fixed time;
- fan-out efficiency: a warm pool of N maps N items that each sleep S seconds
  (bare Ray: N actors each sleeping S); efficiency is S / wall;
- node loss: a sandbox on worker b is running a cell when the node is removed;
  how long until the host gets ``SandboxDied("node_lost")`` (not with ``--quick``).

The default run takes about 3 minutes on a 2-core machine, ``--quick`` about one.

Everything the cluster started is ended by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARK = "SANDLOT_RAY_BENCH_NETNS"


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but ``lo``."""
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return {line.split(":", 1)[0].strip() for line in lines} == {"lo"}


def reexec_fenced() -> int:
    """Run this script again inside a network namespace of its own, with loopback up."""
    inner = shlex.join([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])
    env = {
        **os.environ,
        MARK: "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {inner}"],
        stdin=subprocess.DEVNULL,
        env=env,
    ).returncode


if __name__ == "__main__" and not only_loopback():
    if os.environ.get(MARK):
        sys.exit("ray_bench: inside 'unshare --net' yet more than loopback is visible")
    sys.exit(reexec_fenced())

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"  # workers use this interpreter

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench import (  # noqa: E402
    ISOLATED,
    churn,
    console,
    first_results,
    host_calls,
    ms,
    pct,
    repl_roundtrips,
    table,
    timed,
)
from ray_scenario import alive, descendants  # noqa: E402

import sandlot  # noqa: E402
from sandlot.backends.ray import RayBackend, RayLaunch  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
WORKER_CPUS = 8  # logical CPUs each worker node advertises (sandboxes ask for 1 each)


@ray.remote(num_cpus=1)
class Empty:
    """A bare actor: what Ray alone costs."""

    def ping(self) -> None:
        return None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@ray.remote(num_cpus=1)
class EmptyAsync:
    """A bare async actor, as sandlot's ``SandboxActor`` is."""

    async def ping(self) -> None:
        return None


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95."""
    return pct(samples, 0.5), pct(samples, 0.95)


def ratio(a: float, b: float) -> str:
    """``a / b`` with two decimals."""
    return f"{a / b:.2f}" if b > 0 else "-"


# -- measurements ---------------------------------------------------------------------


def sandlot_rate(backend: Any, seconds: float) -> tuple[float, list[float]]:
    def one() -> None:
        with sandlot.Sandbox(ISOLATED, backend=backend) as sb:
            sb.run_code("1")

    return churn(one, seconds)


def sandlot_fanout(backend: Any, n: int, sleep: float) -> float:
    """Wall time of a warm pool of ``n`` mapping ``n`` items that each sleep ``sleep``."""
    with sandlot.SandboxPool(ISOLATED, size=n, warm=n, reuse=True, backend=backend) as pool:
        pool.wait_warm()
        time.sleep(0.5)
        start = time.perf_counter()
        out = pool.map(
            lambda sb, i: sb.run_code(f"import time; time.sleep({sleep}); {i}").value, range(n)
        )
        wall = time.perf_counter() - start
    assert out == [str(i) for i in range(n)], out
    return wall


def bare_first_calls(runs: int) -> list[float]:
    """Create an actor, call its empty method, kill it; all timed."""

    def once() -> None:
        actor = Empty.remote()
        ray.get(actor.ping.remote())
        ray.kill(actor, no_restart=True)

    once()
    return timed(once, runs)


def bare_calls(cls: Any, runs: int) -> list[float]:
    """Empty method calls on one actor on a worker node."""
    actor = cls.remote()
    ray.get(actor.ping.remote())
    timed(lambda: ray.get(actor.ping.remote()), 20)
    out = timed(lambda: ray.get(actor.ping.remote()), runs)
    ray.kill(actor, no_restart=True)
    return out


def bare_rate(seconds: float) -> tuple[float, list[float]]:
    def one() -> None:
        actor = Empty.remote()
        ray.get(actor.ping.remote())
        ray.kill(actor, no_restart=True)

    return churn(one, seconds)


def bare_fanout(n: int, sleep: float) -> float:
    actors = [Empty.remote() for _ in range(n)]
    ray.get([a.ping.remote() for a in actors])
    start = time.perf_counter()
    ray.get([a.sleep.remote(sleep) for a in actors])
    wall = time.perf_counter() - start
    for a in actors:
        ray.kill(a, no_restart=True)
    return wall


async def node_loss(cluster: Cluster, worker_b: Any, limit: float) -> dict[str, Any]:
    """Seconds from removing worker b to ``SandboxDied`` for a sandbox running a cell there."""
    sb = sandlot.AsyncSandbox(ISOLATED, backend=RayBackend(resources={"on_b": 1}))
    await sb.start()
    launch = sb._launch
    assert isinstance(launch, RayLaunch) and launch.node_id == worker_b.node_id
    cell = asyncio.ensure_future(sb.run_code("import time; time.sleep(600)"))
    await asyncio.sleep(0.5)
    start = time.monotonic()
    await asyncio.to_thread(cluster.remove_node, worker_b, False)
    removed = time.monotonic() - start
    try:
        await asyncio.wait_for(cell, limit)
        found: dict[str, Any] = {"raised": None}
    except sandlot.SandboxDied as exc:
        found = {"raised": "SandboxDied", "cause": exc.cause}
    except TimeoutError:
        found = {"raised": f"nothing within {limit:.0f} s"}
    found["after_s"] = time.monotonic() - start
    found["remove_s"] = removed
    await sb.terminate()
    return found


# -- process bookkeeping: the Ray tests' own helpers ------------------------------------


def cluster_pids(cluster: Cluster) -> list[int]:
    pids = [
        info.process.pid
        for node in cluster.list_all_nodes()
        for infos in node.all_processes.values()
        for info in infos
    ]
    return pids + descendants(pids)


# -- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    quick = args.quick
    runs = args.runs or (3 if quick else 12)
    rt_runs = 200 if quick else 1000
    rate_s = 3.0 if quick else 10.0
    fan_n, fan_s = (2, 0.5) if quick else (8, 1.0)
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **NODE})
    pids: list[int] = []
    try:
        cluster.add_node(num_cpus=WORKER_CPUS, resources={"on_a": WORKER_CPUS}, **NODE)
        worker_b = cluster.add_node(num_cpus=WORKER_CPUS, resources={"on_b": WORKER_CPUS}, **NODE)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cluster.wait_for_nodes()
        up = time.monotonic() - t0
        console.print(f"cluster up in {up:.1f} s: head (0 CPUs) + 2 workers ({WORKER_CPUS} each)")
        rb = RayBackend()
        res: dict[str, Any] = {}

        def step(name: str, fn: Callable[[], Any]) -> None:
            t = time.monotonic()
            res[name] = fn()
            console.print(f"  {name}: {time.monotonic() - t:.1f} s")

        step("first_local", lambda: first_results(None, runs))
        step("first_ray", lambda: first_results(rb, runs))
        step("first_bare", lambda: bare_first_calls(runs))
        step("repl_local", lambda: repl_roundtrips(None, rt_runs))
        step("repl_ray", lambda: repl_roundtrips(rb, rt_runs))
        step("call_bare", lambda: bare_calls(Empty, rt_runs))
        step("call_bare_async", lambda: bare_calls(EmptyAsync, rt_runs))
        step("host_local", lambda: host_calls(None, rt_runs))
        step("host_ray", lambda: host_calls(rb, rt_runs))
        step("rate_local", lambda: sandlot_rate(None, rate_s))
        step("rate_ray", lambda: sandlot_rate(rb, rate_s))
        step("rate_bare", lambda: bare_rate(rate_s))
        step("fan_local", lambda: sandlot_fanout(None, fan_n, fan_s))
        step("fan_ray", lambda: sandlot_fanout(rb, fan_n, fan_s))
        step("fan_bare", lambda: bare_fanout(fan_n, fan_s))
        pids = cluster_pids(cluster)
        if not (args.no_node_loss or quick):
            step("loss", lambda: asyncio.run(node_loss(cluster, worker_b, 60.0)))
    finally:
        pids = sorted(set(pids + (cluster_pids(cluster) if cluster.list_all_nodes() else [])))
        ray.shutdown()
        cluster.shutdown()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        left = [p for p in pids if alive(p)]
        for pid in left:  # what is left is ours: end it by its PID
            os.kill(pid, 9)
        console.print(f"cluster ended: {len(pids)} processes, {len(left)} killed by PID")

    report(res, runs, rt_runs, rate_s, fan_n, fan_s)
    console.print(f"total {time.monotonic() - t0:.0f} s")


def report(
    res: dict[str, Any], runs: int, rt_runs: int, rate_s: float, fan_n: int, fan_s: float
) -> None:
    def cells(samples: list[float]) -> list[str]:
        p50, p95 = quantiles(samples)
        return [ms(p50), ms(p95)]

    rows = []
    for label, local, on_ray, bare, bare_label in [
        (
            f"first result: create, 1+1, terminate ({runs})",
            res["first_local"],
            res["first_ray"],
            res["first_bare"],
            "actor create + first call + kill",
        ),
        (
            f"REPL round trip run_code('1') ({rt_runs})",
            res["repl_local"],
            res["repl_ray"],
            res["call_bare_async"],
            "empty call, async actor",
        ),
        (
            f"host call round trip ({rt_runs}, timed inside)",
            res["host_local"],
            res["host_ray"],
            res["call_bare"],
            "empty call, sync actor",
        ),
    ]:
        rows.append(
            [
                label,
                *cells(local),
                *cells(on_ray),
                ratio(pct(on_ray, 0.5), pct(local, 0.5)),
                bare_label,
                *cells(bare),
                ms(pct(on_ray, 0.5) - pct(bare, 0.5)),
            ]
        )
    table(
        "latency (ms): sandlot local | sandlot on Ray (worker nodes) | bare Ray",
        [
            "measurement",
            "local p50",
            "local p95",
            "Ray p50",
            "Ray p95",
            "Ray / local p50",
            "bare Ray",
            "bare p50",
            "bare p95",
            "Ray p50 - bare p50",
        ],
        rows,
    )
    b_sync, b_async = res["call_bare"], res["call_bare_async"]
    console.print(
        f"bare empty call: sync actor p50 {ms(pct(b_sync, 0.5))} / p95 {ms(pct(b_sync, 0.95))} ms;"
        f" async actor p50 {ms(pct(b_async, 0.5))} / p95 {ms(pct(b_async, 0.95))} ms"
    )

    rows = []
    local_rate = res["rate_local"][0]
    for name, (rate, took) in [
        ("sandlot local", res["rate_local"]),
        ("sandlot on Ray", res["rate_ray"]),
        ("bare Ray actor (create, call, kill)", res["rate_bare"]),
    ]:
        rows.append([name, f"{rate:.1f}", *cells(took), ratio(rate, local_rate)])
    table(
        f"creation rate: start, first result, end; 2 threads for {rate_s:.0f} s",
        ["environment", "per second", "p50 ms each", "p95 ms each", "rate / local"],
        rows,
    )

    rows = []
    for name, wall in [
        ("sandlot local (warm pool)", res["fan_local"]),
        ("sandlot on Ray (warm pool)", res["fan_ray"]),
        ("bare Ray (started actors)", res["fan_bare"]),
    ]:
        rows.append([name, f"{wall:.3f}", f"{(wall - fan_s) * 1000:.0f}", f"{fan_s / wall:.1%}"])
    table(
        f"fan-out: {fan_n} items over {fan_n} sandboxes, each sleeps {fan_s} s",
        ["environment", "wall s", "over sleep ms", "efficiency (sleep / wall)"],
        rows,
    )
    if "loss" in res:
        loss = res["loss"]
        console.print(
            f"node loss: worker b removed (took {loss['remove_s']:.2f} s); its sandbox's cell "
            f"raised {loss['raised']} ({loss.get('cause', '-')}) "
            f"{loss['after_s']:.2f} s after the removal began"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=0, help="runs of time to first result")
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs, no node loss: about a minute"
    )
    parser.add_argument("--no-node-loss", action="store_true", help="skip the node-loss timing")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
