"""The ``sandlot`` sandbox type against Inspect AI's own provider checks and its eval loop.

Inspect ships its conformance checks for sandbox providers in
``inspect_ai.util._sandbox.self_check``; every one runs here against a real
sandlot sandbox. ``test_exec_as_user`` is the one that cannot pass: it is checked to
fail the way docs/inspect.md says (see ``EXPECTED_TO_FAIL``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from inspect_ai.event import SandboxEvent
from inspect_ai.log import read_eval_log
from inspect_ai.util import SandboxEnvironment, SandboxUserUnsupportedError
from inspect_ai.util._sandbox import self_check

from sandlot import ConfigError
from sandlot.integrations.inspect_ai import SandlotSandboxEnvironment, load_config

pytestmark = pytest.mark.anyio

#: Checks sandlot fails by design, and why (docs/inspect.md says the same).
EXPECTED_TO_FAIL = {
    "test_exec_as_user": (
        "every command in a sandlot sandbox runs as its one unprivileged user: no root to "
        "run adduser as, and /etc is the host's, read-only"
    ),
}

TASK = "sandlot_self_check"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def one_sample() -> AsyncIterator[dict[str, SandboxEnvironment]]:
    await SandlotSandboxEnvironment.task_init(TASK, None)
    environments = await SandlotSandboxEnvironment.sample_init(TASK, None, {})
    yield environments
    await SandlotSandboxEnvironment.sample_cleanup(TASK, None, environments, False)
    await SandlotSandboxEnvironment.task_cleanup(TASK, None, True)


CHECKS = [getattr(self_check, name) for name in self_check.__all__]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_inspect_self_check(check: object, one_sample: dict[str, SandboxEnvironment]) -> None:
    if check.__name__ in EXPECTED_TO_FAIL:  # type: ignore[attr-defined]
        # adduser as root is refused with Inspect's error for an unsupported user.
        with pytest.raises(SandboxUserUnsupportedError, match="cannot run one as 'root'"):
            await check(one_sample["default"])  # type: ignore[operator]
        return
    await check(one_sample["default"])  # type: ignore[operator]


TASK_DIR = Path(__file__).parent / "data" / "inspect"
MISBEHAVIOURS = "fork_bomb,memory_bomb,endless_loop,big_write"


def test_inspect_eval_runs_every_sample_in_its_own_sandbox_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """``inspect eval task.py --sandbox sandlot``: tools, scorer, misbehaving samples, cleanup."""
    work = tmp_path / "task"
    shutil.copytree(TASK_DIR, work)
    state = tmp_path / "tmp"
    state.mkdir()
    logs = tmp_path / "logs"
    env = {**os.environ, "TMPDIR": str(state), "SAMPLES": "6"}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "inspect"),
            "eval",
            "task.py",
            "--sandbox",
            "sandlot",  # sandlot.yaml beside task.py is found
            "--max-sandboxes",
            "4",
            "--no-fail-on-error",
            "--display",
            "none",
            "--log-dir",
            str(logs),
            "-T",
            f"misbehave={MISBEHAVIOURS}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (log_file,) = logs.glob("*.eval")
    log = read_eval_log(str(log_file))
    assert log.status == "success"
    samples = {str(s.id): s for s in log.samples or []}
    assert len(samples) == 10
    for n in range(2, 8):
        sample = samples[f"square-{n}"]
        score = sample.scores["square_in_sandbox"]  # type: ignore[index]
        # The scorer read the sandbox's own result.txt, and the config file was in force.
        assert (score.value, score.answer, score.metadata) == ("C", str(n * n), {"config": "found"})
        actions = [e.action for e in sample.events if isinstance(e, SandboxEvent)]
        assert actions.count("exec") >= 3 and "read_file" in actions, actions
    # Each misbehaving sample ends as its tool's error or its sample's, and the others went on.
    loop = samples["misbehave-endless_loop"]
    assert any(
        getattr(m, "error", None) is not None and m.error.type == "timeout"  # type: ignore[union-attr]
        for m in loop.messages
    )
    assert loop.scores["square_in_sandbox"].value == "C"  # type: ignore[index]
    memory = samples["misbehave-memory_bomb"]
    assert memory.error is None, memory.error
    big = samples["misbehave-big_write"]
    assert big.error is not None and "disk_mb=256" in big.error.message, big.error
    fork = samples["misbehave-fork_bomb"]
    # The bomb runs on in the background at the sandbox's process limit: that sample only.
    assert fork.error is None or "process limit" in fork.error.message, fork.error
    # Nothing of the eval's sandboxes is left: no state directory, no cgroup ledger.
    assert list((state / f"sandlot-{os.getuid()}").iterdir()) == []


def test_a_config_file_error_names_its_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "sandlot.yaml"
    bad.write_text("memory_mb: 512\nwarm: 2\nmemroy_mb: 5\n")
    with pytest.raises(ConfigError, match=r"sandlot.yaml:3: memroy_mb: "):
        load_config(bad)
    bad.write_text("memory_mb: lots\n")
    with pytest.raises(ConfigError, match=r"sandlot.yaml:1: memory_mb: "):
        load_config(bad)
    bad.write_text("services:\n  default: {}\n  db: {}\n")
    with pytest.raises(ConfigError, match=r"multi-service samples \(default, db\) are not"):
        load_config(bad)
    compose = tmp_path / "compose.yaml"
    compose.write_text("services: {}\n")
    with pytest.raises(ConfigError, match=r"not Docker's compose\.yaml"):
        load_config(compose)
    good = tmp_path / "ok.yaml"
    good.write_text("backend: ray\nray: {num_cpus: 0.5}\nrequirements: [reqs.txt]\n")
    loaded = load_config(good)
    assert loaded.backend == "ray" and loaded.ray.num_cpus == 0.5
    assert loaded.requirements == [str(tmp_path / "reqs.txt")]  # beside the file


def test_inspect_sandbox_cleanup_removes_what_a_killed_eval_left(tmp_path: Path) -> None:
    """``inspect sandbox cleanup sandlot``: a killed process's sandbox dirs and cgroups go."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sandlot, time\nsandlot.Sandbox().start()\nprint(1, flush=True)\ntime.sleep(60)",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "1\n"
    holder.kill()  # as a crashed eval: no cleanup of its own
    holder.wait()
    root = tmp_path / f"sandlot-{os.getuid()}"
    left = sorted(p.name for p in root.iterdir())
    assert any(name.endswith(".cgroup") for name in left), left  # its cgroups' ledgers
    done = subprocess.run(
        [str(Path(sys.executable).parent / "inspect"), "sandbox", "cleanup", "sandlot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(root.iterdir()) == []
