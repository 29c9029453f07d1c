"""sandlot through SSHBackend on loopback beside the local backend, in one run.

    uv run python benchmarks/stream_bench.py [--runs N] [--base REF [--rounds N]]

It starts OpenSSH's sshd on 127.0.0.1 with keys made for the run (the tests'
tests/sshd.py), so the "remote" machine is this one: what the figures show is
what the stream adds (ssh's start-up and encryption, the bootstrap that ships
the driver, the pipes on both sides), not a network. Both backends run the
sandbox under bubblewrap.

- time to first result: create, ``run_code("1+1")``, terminate;
- REPL round trip: ``run_code("1")`` on a started sandbox;
- host call round trip: sandboxed code calls a host function returning at once
  (timed inside the sandbox).

sshd is ended by its PID at the end. With ``--base REF`` every row is measured
against commit REF as well, side by side: each round runs this script once per
tree in a fresh process (``compare.alternate``), the order turning each round.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench import console, first_results, host_calls, ms, pct, repl_roundtrips, table
from compare import alternate, side_by_side
from sshd import running_sshd

from sandlot.backends.local import IsolationWarning, LocalBackend

ROWS = {
    "first_local": "local: first result (create, 1+1, terminate)",
    "first_ssh": "ssh: first result",
    "repl_local": "local: REPL round trip run_code('1')",
    "repl_ssh": "ssh: REPL round trip",
    "host_local": "local: host call round trip (timed inside)",
    "host_ssh": "ssh: host call round trip",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of time to first result")
    parser.add_argument("--base", help="also measure this commit (git ref), side by side")
    parser.add_argument("--rounds", type=int, default=3, help="with --base: rounds a side")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # one side's samples, for --base
    args = parser.parse_args()
    if args.base:
        trees, got = alternate(Path(__file__), ["--runs", str(args.runs)], args.base, args.rounds)
        side_by_side(f"SSH and local backends, {args.rounds} rounds a side (ms)", ROWS, trees, got)
        return
    rt_runs = max(args.runs * 10, 50)
    # The far side lacks cgroups and seccomp over a stream; said once, not the point here.
    warnings.simplefilter("ignore", IsolationWarning)
    res: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_sshd(Path(tmp)) as server:
        for name, backend in (("local", LocalBackend()), ("ssh", server.backend())):
            res[f"first_{name}"] = first_results(backend, args.runs)
            res[f"repl_{name}"] = repl_roundtrips(backend, rt_runs)
            res[f"host_{name}"] = host_calls(backend, rt_runs)
    if args.json:
        Path(args.json).write_text(json.dumps(res))
        return
    rows = []
    for label, key in (
        (f"first result: create, 1+1, terminate ({args.runs})", "first"),
        (f"REPL round trip run_code('1') ({rt_runs})", "repl"),
        (f"host call round trip ({rt_runs}, timed inside)", "host"),
    ):
        local, ssh = res[f"{key}_local"], res[f"{key}_ssh"]
        p50_local, p50_ssh = pct(local, 0.5), pct(ssh, 0.5)
        rows.append(
            [
                label,
                ms(p50_local),
                ms(pct(local, 0.95)),
                ms(p50_ssh),
                ms(pct(ssh, 0.95)),
                f"{p50_ssh / p50_local:.2f}",
                ms(p50_ssh - p50_local),
            ]
        )
    table(
        "latency (ms): sandlot local | sandlot through SSHBackend on loopback",
        [
            "measurement",
            "local p50",
            "local p95",
            "ssh p50",
            "ssh p95",
            "ssh / local p50",
            "ssh - local p50",
        ],
        rows,
    )
    console.print(f"machine: {platform.machine()}, {platform.python_version()}, {platform.node()}")


if __name__ == "__main__":
    main()
