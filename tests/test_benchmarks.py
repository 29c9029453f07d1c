"""The benchmark script runs and prints its tables (figures are judged in RESULTS.md, not here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def bench(
    script: str, *args: str, timeout: float = 120, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with ``args``; it must exit 0 (its output says why not)."""
    env = {**os.environ, "COLUMNS": str(columns)} if columns else None
    done = subprocess.run(
        [sys.executable, str(SCRIPT.with_name(script)), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_benchmark_commands_print_their_tables() -> None:
    for which, title in (
        ("roundtrip", "REPL round trip"),
        ("hostcall", "host call round trip"),
        ("startup", "time to first result"),
    ):
        done = bench("bench.py", which, "--runs", "10", "--no-peers")
        assert title in done.stdout
        assert "│ sandlot" in done.stdout


@pytest.mark.skipif(os.getuid() != 0, reason="a test running as root starts the other user's host")
def test_the_benchmarks_run_in_a_host_that_is_not_root_with_as_user() -> None:
    done = bench("bench.py", "startup", "--runs", "5", "--as-user", columns=200)
    assert "uid 4242 (yours)" in done.stdout  # tests/other_user.py's user
    rows = {line.split("│")[1].strip() for line in done.stdout.splitlines() if "│" in line}
    assert {"sandlot (template)", "sandlot cold (SANDLOT_TEMPLATES=0)"} <= rows


def test_rate_benchmark_prints_a_row_per_worker_count() -> None:
    done = bench("bench.py", "rate", "--quick", "--no-peers", "--workers", "1,3", columns=200)
    assert "creation rate" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("│ sandlot")]
    assert [row.split("│")[2].strip() for row in rows] == [
        "1",
        "3",
        "1",
    ]  # template, template, cold
    assert all(float(row.split("│")[4]) > 0 for row in rows)  # sandboxes a second


def test_rlm_benchmark_prints_its_tables_and_right_answers() -> None:
    with_rlms = importlib.util.find_spec("rlm") is not None  # the bench extra
    done = bench("bench.py", "rlm", "--quick", *([] if with_rlms else ["--no-peers"]))
    assert "RLM engine overhead on NIAH" in done.stdout
    assert "where the time went" in done.stdout
    assert "│ sandlot" in done.stdout
    assert ("│ rlms" in done.stdout) == with_rlms
    assert "WRONG" not in done.stdout and "wrong answer" not in done.stdout


def test_the_test_suite_workflow_benchmark_runs_every_way_and_prints_its_table() -> None:
    done = bench("workflows.py", "suite", "--runs", "1", timeout=300)
    assert "Seed 001: a project's test suite end to end" in done.stdout
    for way in ("bare pytest", "uv run --isolated", "sandlot exec --project"):
        assert f"│ {way}" in done.stdout


def test_the_stream_benchmark_prints_ssh_beside_local() -> None:
    done = bench("stream_bench.py", "--runs", "2")
    assert "sandlot through SSHBackend on loopback" in done.stdout
    assert "host call round trip" in done.stdout


def test_the_start_up_benchmark_prints_its_rows_beside_the_floors() -> None:
    done = bench("startup_bench.py", "--runs", "1")
    for row in ("python -c pass", "Typer app --help", "import sandlot", "sandlot --help"):
        assert f"│ {row}" in done.stdout
    assert "target 1.5x" in done.stdout


def test_the_integrations_benchmark_prints_a_row_per_adapter() -> None:
    done = bench("integrations_bench.py", "--rounds", "1", "--steps", "2", columns=250)
    for framework in ("OpenAI Agents SDK", "smolagents", "Deep Agents", "rlms", "MCP"):
        assert framework in done.stdout, done.stdout


def test_the_inspect_benchmark_prints_sandlot_beside_local() -> None:
    done = bench("inspect_bench.py", "--samples", "4", "--rounds", "1", "--overhead", "2")
    for row in ("sample_init to first exec result", "sample_cleanup", "whole eval, 4 samples"):
        assert f"│ {row}" in done.stdout


def test_the_snapshot_benchmark_prints_restore_beside_re_running_the_cell() -> None:
    done = bench("snapshot_bench.py", "--runs", "1", "--quick", "--children", "2", columns=200)
    assert "│ 100 MiB in 100 bytes objects" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "100 MiB" in line)
    assert float(row.split("│")[3]) > 100  # the file holds the 100 MiB (in MB)


def test_the_rlm_fork_benchmark_prints_both_ways_of_handing_children_their_data() -> None:
    done = bench("rlm_fork_bench.py", "--runs", "1", "--lines", "3000", "--latency", "0.01")
    rows = [line for line in done.stdout.splitlines() if line.startswith("│ 3,000 lines")]
    assert len(rows) == 2, done.stdout  # NIAH, and the prepared parent
    ratios = [float(row.split("│")[-2]) for row in rows]
    assert all(r > 0 for r in ratios)
