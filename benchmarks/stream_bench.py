"""sandlot through SSHBackend on loopback beside the local backend, in one run.

    uv run python benchmarks/stream_bench.py [--runs N]

It starts OpenSSH's sshd on 127.0.0.1 with keys made for the run (the tests'
tests/sshd.py), so the "remote" machine is this one: what the figures show is
what the stream adds (ssh's start-up and encryption, the bootstrap that ships
the driver, the pipes on both sides), not a network. Both backends run the
sandbox under bubblewrap.

- time to first result: create, ``run_code("1+1")``, terminate;
- REPL round trip: ``run_code("1")`` on a started sandbox;
- host call round trip: sandboxed code calls a host function returning at once
  (timed inside the sandbox).

sshd is ended by its PID at the end.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench import console, first_results, host_calls, ms, pct, repl_roundtrips, table
from sshd import running_sshd

from sandlot.backends.kit.bootstrap import IsolationWarning
from sandlot.backends.local import LocalBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of time to first result")
    args = parser.parse_args()
    rt_runs = max(args.runs * 10, 50)
    # The far side lacks cgroups and seccomp over a stream; said once, not the point here.
    warnings.simplefilter("ignore", IsolationWarning)
    res: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_sshd(Path(tmp)) as server:
        for name, backend in (("local", LocalBackend()), ("ssh", server.backend())):
            res[f"first_{name}"] = first_results(backend, args.runs)
            res[f"repl_{name}"] = repl_roundtrips(backend, rt_runs)
            res[f"host_{name}"] = host_calls(backend, rt_runs)
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
