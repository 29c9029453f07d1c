"""One measurement of ``benchmarks/compare.py``, run in a fresh process against one tree.

    python benchmarks/compare_probe.py MEASURE '{"runs": 10, ...}'

``compare.py`` starts this script with ``PYTHONPATH`` set to the tree it measures, so
``import sandlot`` finds that tree's package. It prints one line, ``RESULT_MARK`` then
JSON: which ``sandlot`` it imported, the samples (seconds) of each series, facts about
the host process (its resident size when the clock started), and an error if the
measurement failed. Only the public API that both the base and the new commit offer is
used, so the same script measures either.
"""

from __future__ import annotations

import ast
import gc
import inspect
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# bench.py, beside this file, holds the helpers both share (it imports the measured tree's sandlot).
from bench import HOST_LOOP, busy_seconds, churn, sandlot_niah, timed

RESULT_MARK = "COMPARE-RESULT "
PAYLOAD_STRINGS = 100
PAYLOAD_CHARS = 430_000  # 100 of these: the 43 MB of prompts of a 10^6-line NIAH batch


def rss_mib() -> float:
    """This process's resident set size, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def isolated_config() -> Any:
    """The config bench.py measures: bubblewrap, 4 MiB of output per cell."""
    import sandlot

    return sandlot.SandboxConfig(isolation="bubblewrap", max_output_bytes=4 << 20)


def weigh_host(ballast_mb: int, torch: bool) -> list[Any]:
    """Make this process bigger before timing: ``torch`` imported, ``ballast_mb`` MiB touched.

    Returns what must stay alive while the clock runs.
    """
    held: list[Any] = []
    if torch:
        import torch as torch_module

        held.append(torch_module.ones(1024))  # one allocation through torch, as a harness has
    if ballast_mb:
        size = ballast_mb << 20
        ballast = bytearray(size)  # zero pages: mapped lazily, not yet resident
        ballast[::4096] = b"\x01" * len(range(0, size, 4096))  # touch every page
        held.append(ballast)
    return held


def value_of(result: Any) -> Any:
    """A cell's last expression, as the Python literal its repr is; raises on a cell error."""
    if result.error is not None:
        raise RuntimeError(f"cell failed: {result.error}")
    return None if result.value is None else ast.literal_eval(result.value)


# -- the measurements ----------------------------------------------------------------


NEW_TEMPLATES = 7  # a host runs 8 templates at most: the untimed start's, and these
SETTLE_PAUSE = 0.3  # seconds before each such start


def cold(
    runs: int,
    ballast_mb: int = 0,
    torch: bool = False,
    mounts: bool = False,
    new_template: bool = False,
) -> dict[str, Any]:
    """Start an isolated sandbox, get ``1+1``, terminate it; from a host of a given size;
    ``mounts``: the sandbox has a read-only mount of a host directory and a volume;
    ``new_template``: each start is a new template's first (a locale of its own is a
    template of its own), as a process's first start is; at most NEW_TEMPLATES runs,
    each after a pause (untimed) in which the last template settles, as a first start
    has no other template beside it."""
    import sandlot

    held = weigh_host(ballast_mb, torch)
    config = isolated_config()
    configs = iter(
        type(config).model_validate({**config.model_dump(), "env": {"LC_MESSAGES": f"C@{i}"}})
        for i in range(NEW_TEMPLATES + 1 if new_template else 0)
    )
    scratch = ""
    if mounts:
        import tempfile

        from sandlot.volumes import Volume

        scratch = tempfile.mkdtemp(prefix="sandlot-compare-")
        os.environ["SANDLOT_VOLUMES"] = os.path.join(scratch, "volumes")
        Volume.create("compare")
        os.mkdir(os.path.join(scratch, "data"))
        mount = sandlot.Mount(source=os.path.join(scratch, "data"), target="/data")
        fields = {"mounts": [mount], "volumes": {"/cache": "compare"}}
        config = type(config).model_validate({**config.model_dump(), **fields})

    def once() -> None:
        sb = sandlot.Sandbox(next(configs, config)).start()
        try:
            assert sb.run_code("1+1").value == "2"
        finally:
            sb.terminate()

    once()  # untimed: probes the machine, builds the sandbox interpreter's environment
    rss = rss_mib()
    if new_template:
        samples = []
        for _ in range(min(runs, NEW_TEMPLATES)):
            time.sleep(SETTLE_PAUSE)
            samples += timed(once, 1)
    else:
        samples = timed(once, runs)
    del held
    if scratch:
        shutil.rmtree(scratch)
    return {"series": {"cold": samples}, "info": {"host_rss_mib": round(rss)}}


def churning(seconds: float, threads: int) -> dict[str, Any]:
    """Fresh isolated sandboxes (start, ``1``, terminate) one after another on ``threads``
    threads for ``seconds``: the interval between them, and the machine's CPU (every process
    and the kernel, from ``/proc/stat``) each one cost."""
    import sandlot

    config = isolated_config()

    def once() -> None:
        with sandlot.Sandbox(config) as sb:
            sb.run_code("1")

    once()  # untimed: the template, the environment
    busy = busy_seconds()
    rate, took = churn(once, seconds, threads)
    cpu = (busy_seconds() - busy) / len(took)
    return {"series": {"interval": [1 / rate], "cpu": [cpu]}, "info": {"made": len(took)}}


def repl(runs: int, mb_runs: int) -> dict[str, Any]:
    """``x += 1`` through the REPL, and a cell printing 1 MB."""
    import sandlot

    big = "print('x' * 1_000_000)"
    with sandlot.Sandbox(isolated_config()) as sb:
        sb.run_code("x = 0")
        for _ in range(20):
            sb.run_code("x += 1")
        small = timed(lambda: sb.run_code("x += 1"), runs)
        if value_of(sb.run_code("x")) != runs + 20:
            raise RuntimeError("x += 1 did not count every run")
        sb.run_code(big)
        mb = timed(lambda: sb.run_code(big), mb_runs)
        if len(sb.run_code(big).stdout) != 1_000_001:
            raise RuntimeError("the 1 MB cell's output came back short")
    return {"series": {"x+=1": small, "1 MB": mb}}


def hostcall(runs: int) -> dict[str, Any]:
    """A loop of calls, inside the sandbox, to a host function that returns at once."""
    import sandlot

    with sandlot.Sandbox(isolated_config(), tools={"host_fn": lambda: 1}) as sb:
        value_of(sb.run_code(HOST_LOOP + "None"))
        value_of(sb.run_code("_timed_calls(50)"))  # warm-up
        samples = value_of(sb.run_code(f"_timed_calls({runs})"))
    return {"series": {"hostcall": samples}}


PAYLOAD_SETUP = f"""
import time
_base = "".join(chr(97 + i % 26) for i in range({PAYLOAD_CHARS}))
prompts = [_base[i:] + _base[:i] for i in range({PAYLOAD_STRINGS})]
def _timed_batch(n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); lengths = prompt_lengths(prompts)
        out.append(time.perf_counter() - t)
        assert lengths == [{PAYLOAD_CHARS}] * {PAYLOAD_STRINGS}, lengths[:3]
    return out
"""


def payload(runs: int) -> dict[str, Any]:
    """One host call carrying 100 strings of 430,000 chars (43 MB), like ``llm_query_batched``."""
    import sandlot

    def prompt_lengths(prompts: list[str]) -> list[int]:
        return [len(p) for p in prompts]

    with sandlot.Sandbox(isolated_config(), tools={"prompt_lengths": prompt_lengths}) as sb:
        value_of(sb.run_code(PAYLOAD_SETUP + "None"))
        value_of(sb.run_code("prompt_lengths(['warm-up'])"))
        samples = value_of(sb.run_code(f"_timed_batch({runs})"))
    return {"series": {"payload": samples}}


def fanout(items: int, size: int, latency: float) -> dict[str, Any]:
    """``items`` cells over a warm pool of ``size``, each calling a host function that sleeps."""
    import sandlot

    def stand_in_lm(prompt: str) -> str:
        time.sleep(latency)
        return prompt[::-1]

    kwargs: dict[str, Any] = {}
    reuse = "reuse" in inspect.signature(sandlot.SandboxPool).parameters
    if reuse:  # measure host-call fan-out, not a fresh sandbox per item, in both commits
        kwargs["reuse"] = True
    pool_config = isolated_config()
    tools = {"llm_query": stand_in_lm}
    with sandlot.SandboxPool(pool_config, size=size, warm=size, tools=tools, **kwargs) as pool:
        pool.wait_warm()
        start = time.perf_counter()
        out = pool.map(lambda sb, i: sb.run_code(f"llm_query('item {i}')").value, range(items))
        wall = time.perf_counter() - start
    if out[0] != repr("0 meti"):
        raise RuntimeError(f"wrong answer from item 0: {out[0]!r}")
    return {"series": {"wall": [wall]}, "info": {"reuse": reuse}}


def haystack(lines: int, cache_dir: str) -> tuple[str, str]:
    """The NIAH haystack of ``lines`` lines, made once and shared by every process of a run."""
    from sandlot.rlm.niah import make_haystack

    text_file = Path(cache_dir, f"haystack-{lines}.txt")
    needle_file = Path(cache_dir, f"haystack-{lines}.needle")
    if needle_file.exists():
        return text_file.read_text(), needle_file.read_text()
    text, needle = make_haystack(lines)
    for path, content in ((text_file, text), (needle_file, needle)):
        part = path.with_suffix(".part")
        part.write_text(content)
        part.replace(path)  # the needle file last: its presence means both are whole
    return text, needle


def niah(lines: int, pool: int, latency: float, cache_dir: str, first: str) -> dict[str, Any]:
    """The RLM on NIAH: scripted root, stand-in sub-LM; cold (``warm=0``) and ``warm=1``.

    As bench.py splits it: head is ``completion()`` called to the first sub-call started,
    span the first sub-call started to the last one ended, tail the rest.
    """
    from sandlot.rlm.niah import NIAH_CHUNK_CHARS, make_haystack

    def run(
        text: str, needle: str, pool: int, latency: float, chunk: int, warm: int
    ) -> dict[str, float]:
        sample = sandlot_niah(text, needle, pool, latency, chunk, warm)
        if not sample.ok:
            raise RuntimeError("the RLM gave a wrong answer on the haystack")
        return {"head": sample.head, "span": sample.span, "tail": sample.tail, "wall": sample.wall}

    small, small_needle = make_haystack(200, seed=1)
    for warm in (0, 1):  # warm-up: imports, first sandbox, first socket server
        run(small, small_needle, 2, 0.0, 2000, warm)
    text, needle = haystack(lines, cache_dir)
    series: dict[str, list[float]] = {}
    order = (0, 1) if first == "cold" else (1, 0)
    for warm in order:
        gc.collect()
        times = run(text, needle, pool, latency, NIAH_CHUNK_CHARS, warm)
        for part, seconds in times.items():
            series[f"{'warm' if warm else 'cold'} {part}"] = [seconds]
    return {"series": series, "info": {"context_mb": round(len(text) / 1e6, 1)}}


COLLECT = """
import gc, time
start = time.perf_counter()
gc.collect()
time.perf_counter() - start
"""


def collect(runs: int) -> dict[str, Any]:
    """In each of ``runs`` fresh sandboxes, after its first cell: how long a full collection
    of the garbage collector takes in there (timed inside the sandbox)."""
    import sandlot

    config = isolated_config()
    sandlot.Sandbox(config).start().terminate()  # untimed: the template's start
    samples = []
    for _ in range(runs):
        with sandlot.Sandbox(config) as sb:
            assert sb.run_code("1+1").value == "2"
            samples.append(float(value_of(sb.run_code(COLLECT))))
    return {"series": {"collect": samples}, "info": {}}


MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    "cold": cold,
    "collect": collect,
    "churn": churning,
    "repl": repl,
    "hostcall": hostcall,
    "payload": payload,
    "fanout": fanout,
    "niah": niah,
}


def main() -> None:
    """Run the named measurement with its JSON arguments; print the result as one line."""
    name, args = sys.argv[1], json.loads(sys.argv[2])
    out: dict[str, Any] = {"series": {}, "info": {}}
    try:
        import sandlot

        out["sandlot_file"] = sandlot.__file__
        try:
            from sandlot.backends.local import probe

            out["isolation"] = probe().describe()
        except Exception as exc:  # a fact for the header, not a reason to fail
            out["isolation"] = f"unknown ({type(exc).__name__}: {exc})"
        out.update(MEASURES[name](**args))
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    print(RESULT_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
