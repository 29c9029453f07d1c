"""The Ray backend on a real multi-node Ray cluster, started on this machine.

The whole cluster (a head and two worker nodes with resources of their own)
runs in tests/ray_scenario.py, in a network namespace this test makes, so it
reaches nothing beyond its own loopback and leaves nothing listening outside.
The scenario reports what it saw as JSON; the tests here assert on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import strict

import sandlot
from sandlot import backends
from sandlot.backends.ray import RayBackend, actor_options

pytest.importorskip("ray")

SCENARIO = Path(__file__).with_name("ray_scenario.py")


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not _can_unshare():
        pytest.skip("needs 'unshare --net' (root) to fence the Ray cluster in")
    out = tmp_path_factory.mktemp("ray") / "scenario.out"
    script = f"ip link set lo up && exec {sys.executable} {SCENARIO}"
    # Files, not pipes: a process that outlived the scenario would hold a pipe open.
    with out.open("w") as sink:
        done = subprocess.run(
            ["unshare", "--net", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=200,
            env={
                **os.environ,
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            },
        )
    text = out.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, text[-6000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
    return result


def test_a_sandbox_lands_where_its_resources_ask_and_works_there(report: dict[str, Any]) -> None:
    assert report["placed_on"] == "b"  # RayBackend(resources={"on_b": 1}): only node b has it
    assert report["repl"] == "42" and report["repl_state"] == "40"
    assert report["secret"] == "'from-the-host-env-file'"  # read on the host, not the node
    assert report["workdir"] == "/workspace"
    uid, host_tree_visible = eval(report["isolated"])  # a tuple repr from the sandbox
    assert (
        uid == 65534 and host_tree_visible is False
    )  # bubblewrap and the sandbox user, as locally
    assert report["hostname"] == "sandlot"


def test_a_snapshot_from_one_node_restores_on_another(report: dict[str, Any]) -> None:
    assert report["restored"] == {"node": "a", "value": "(21, b'end')"}


def test_host_calls_run_in_the_process_that_owns_the_sandbox(report: dict[str, Any]) -> None:
    assert eval(report["host_call"]) == {"pid": report["test_pid"], "echo": "KEY"}
    assert report["host_calls_in"] == [report["test_pid"]]


def test_process_output_streams_and_files_travel_in_chunks(report: dict[str, Any]) -> None:
    stream = report["stream"]
    assert stream["data"] == "1\n2\n3\n4\n"
    arrivals = stream["arrivals"]
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0.5  # as printed, not at the end
    files = report["files"]
    assert files["same"] and files["size"] == (3 << 20) + 3
    assert files["inside"] == str((3 << 20) + 3)


def test_a_pool_spreads_over_the_nodes_within_the_clusters_cap(report: dict[str, Any]) -> None:
    assert report["spread_results"] == ["0", "3", "6", "9", "12", "15"]
    assert report["spread_most_at_once"] == 4  # the cap over the cluster: {"sandbox": 2} x 2
    # {"sandbox": 1} per sandbox, 2 per node: the first four went two to each node
    nodes = report["spread_nodes"]
    assert len(nodes) == 6 and nodes.count("a") >= 2 and nodes.count("b") >= 2


def test_a_lost_node_or_a_killed_actor_ends_the_sandbox_with_its_cause(
    report: dict[str, Any],
) -> None:
    lone = report["lone"]
    assert lone["raised"] == "SandboxDied" and lone["cause"] == "node_lost", lone
    assert lone["after_s"] < 10, lone  # within Ray's detection time (short health checks)
    killed = report["actor_killed"]
    assert killed["raised"] == "SandboxDied" and killed["cause"] == "killed", killed


def test_a_pool_map_recovers_from_a_lost_node(report: dict[str, Any]) -> None:
    assert report["map_results"] == ["0", "1", "2", "3"]
    attempts = report["map_attempts"]
    retried = [a for a in attempts.values() if a[0] == "b"]
    assert retried and all(a == ["b", "a"] for a in retried), attempts  # again, on node a
    assert all(a == ["a"] for a in attempts.values() if a[0] == "a"), attempts


def test_nothing_listens_beyond_loopback_and_nothing_is_left(report: dict[str, Any]) -> None:
    assert report["listening"], "the cluster listens somewhere"
    assert set(report["listening"]) <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}
    assert report["actors_total"] >= 10 and report["actors_alive"] == []
    assert report["ray_pids"] >= 5 and report["ray_pids_left"] == []
    assert report["sandbox_pids"] >= 10 and report["sandbox_pids_left"] == []


def test_a_notebook_session_runs_its_kernel_in_a_ray_actor(report: dict[str, Any]) -> None:
    seen = report["notebook_on_ray"]
    assert "error" not in seen, seen
    assert seen["value"] == "42" and seen["stdout"] == "from the kernel 42\n"
    assert seen["actors_added"] == 1 and seen["listed"]  # the session's sandbox, an actor
    assert seen["actors_left"] == 0  # ending the session ended its actor


def test_an_inspect_eval_runs_each_samples_sandbox_as_a_ray_actor(report: dict[str, Any]) -> None:
    seen = report["inspect_on_ray"]
    assert seen["returncode"] == 0 and seen["status"] == "success", seen["output"]
    # Every sample scored on its sandbox's state, under the ray.yaml config.
    assert seen["scores"] == {f"square-{n}": ["C", {"config": "ray"}] for n in range(2, 6)}, seen
    # Only the nodes that advertise "sandbox" took the samples' sandboxes, and none is left.
    assert seen["actor_nodes"] and set(seen["actor_nodes"]) <= set(report["worker_nodes"])
    assert seen["actors_alive"] == 0


def test_actor_options_follow_the_config() -> None:
    options = actor_options(strict(cpus=2, memory_mb=512, gpu=2), {"sandbox": 1})
    assert options["num_cpus"] == 2 and options["num_gpus"] == 2
    assert options["memory"] == 512 << 20
    assert options["resources"] == {"sandbox": 1}
    assert options["max_restarts"] == 0 and options["scheduling_strategy"] == "SPREAD"
    # Sandboxes mostly wait on LMs: by default four share a CPU; the backend reserves more.
    assert actor_options(strict(), {})["num_cpus"] == 0.25
    assert actor_options(strict(), {}, num_cpus=1)["num_cpus"] == 1
    assert actor_options(strict(cpus=2), {}, num_cpus=1)["num_cpus"] == 2
    assert "num_gpus" not in actor_options(strict(), {})
    assert actor_options(strict(gpu="0,1"), {})["num_gpus"] == 2
    named = actor_options(strict(gpu="A100"), {})
    assert named["num_gpus"] == 1 and "accelerator_type:A100" in named["resources"]
    with pytest.raises(sandlot.ConfigError, match="give a count"):
        actor_options(strict(gpu="all"), {})


def test_a_start_that_cannot_be_placed_says_why_then_times_out_and_leaves_no_actor(
    report: dict[str, Any],
) -> None:
    seen = report["waits"]
    assert seen["raised"] == "SandboxDied" and seen["cause"] == "failed_to_start", seen
    assert 2 <= seen["seconds"] < 8, seen
    detail = seen["detail"]
    assert "start_timeout=2" in detail and "short of on_a" in detail, detail
    assert "free now on the cluster: on_a 0, CPU" in detail, detail
    assert "1 SandboxActor" in detail, detail  # the holder of node a's on_a
    assert seen["actors_added"] == 0, seen  # the waiting actor was removed
    notices = seen["notices"]
    assert len(notices) == 1 and "has waited" in notices[0], notices
    assert "short of on_a" in notices[0] and "RayBackend(start_timeout=...)" in notices[0]


def test_bad_reservations_are_refused() -> None:
    with pytest.raises(sandlot.ConfigError, match="give 0 or more CPUs"):
        RayBackend(num_cpus=-1)
    with pytest.raises(sandlot.ConfigError, match="seconds above 0"):
        RayBackend(start_timeout=0)


def test_ray_is_a_registered_name_and_an_extra() -> None:
    assert "ray" in backends.names()
    assert isinstance(backends.resolve("ray"), RayBackend)
    # Without Ray installed, the name says how to get it.
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from sandlot import backends, ConfigError\n"
        "try:\n    backends.resolve('ray')\nexcept ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'sandlot[ray]'" in out.stdout, out.stderr


def test_a_sandbox_on_ray_cannot_make_the_host_hold_what_it_floods(
    report: dict[str, Any],
) -> None:
    """250 MB of host calls waiting for answers: the host holds its channel's high-water
    mark and Ray's own buffers, not the flood (measured: 131-153 MB grown with the pump's
    flow control, 357 MB without it)."""
    assert report["flood_done"] == "'all answered'"
    assert report["flood_grown_mb"] < 220, report["flood_grown_mb"]


def test_what_no_node_has_is_refused_at_once(report: dict[str, Any]) -> None:
    for name in ("custom", "gpu"):
        seen = report["unplaceable"][name]
        assert seen["raised"] == "ConfigError", seen
        assert "no node of the Ray cluster has" in seen["detail"]
        assert seen["seconds"] < 10


def test_sandboxes_die_with_the_process_that_owns_them(report: dict[str, Any]) -> None:
    """A second process (backend="ray", the cluster from $RAY_ADDRESS) dies mid-session."""
    owner = report["owner"]
    assert owner.get("value") == "42", owner
    assert owner["actor_state"] == "DEAD"
    assert owner["sandbox_alive"] is False
