"""What a sandbox cannot do: reach the network, read or write the host, outlive its owner."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import pids_with, remover_drained, strict, template_processes, wait_gone

import sandlot
from sandlot.backends import template as templates
from sandlot.backends.cgroups import AHEAD, LEDGER_SUFFIX
from sandlot.backends.disk import process_tree


def test_network_is_unreachable_even_the_hosts_loopback(sb: sandlot.Sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        r = sb.run_code(
            "import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    out = 'connected'\nexcept OSError as e:\n    out = type(e).__name__\n"
            "try:\n    socket.getaddrinfo('pypi.org', 443)\n    dns = 'resolved'\n"
            "except OSError as e:\n    dns = type(e).__name__\n(out, dns)"
        )
    finally:
        server.close()
    assert r.error is None, r.error
    assert "connected" not in (r.value or "")
    assert "resolved" not in (r.value or "")


def test_host_files_outside_mounts_are_invisible(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    here = Path(__file__).resolve()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.txt").write_text("shared data")
    with sandlot.Sandbox(strict(mounts={str(shared): "/data"})) as box:
        for path in (secret, here, Path.home() / ".bashrc"):
            r = box.run_code(f"open({str(path)!r}).read()")
            assert r.error is not None, f"{path} was readable"
            assert r.error.name in ("FileNotFoundError", "PermissionError")
        assert box.run_code("open('/data/data.txt').read()").value == "'shared data'"
        r = box.run_code("open('/data/new.txt', 'w')")
        assert r.error is not None and r.error.name == "OSError"  # read-only mount
        assert box.run_code("open('/etc/hostname').read() != ''").value == "True"


def test_writes_outside_the_workdir_fail_and_tmp_is_private(tmp_path: Path) -> None:
    rw = tmp_path / "rw"
    rw.mkdir()
    rw.chmod(0o777)
    mount = sandlot.Mount(source=str(rw), target="/out", writable=True)
    with sandlot.Sandbox(strict(mounts=[mount])) as box:
        for target in ("/usr/evil", "/etc/passwd", "/evil"):
            r = box.run_code(f"open({target!r}, 'a').write('x')")
            assert r.error is not None, f"{target} was writable"
        assert box.run_code("open('inside.txt', 'w').write('ok')").value == "2"
        assert box.files.read("inside.txt") == b"ok"
        assert box.run_code("open('/out/o.txt', 'w').write('out')").value == "3"
        box.run_code("open('/tmp/marker-sandlot', 'w').write('x')")
    assert (rw / "o.txt").read_text() == "out"
    assert not Path("/tmp/marker-sandlot").exists()


def test_only_named_secrets_and_env_enter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDLOT_NAMED_SECRET", "named-value")
    monkeypatch.setenv("SANDLOT_OTHER_SECRET", "other-value")
    cfg = strict(secrets=["SANDLOT_NAMED_SECRET"], env={"MODE": "demo"})
    with sandlot.Sandbox(cfg) as box:
        r = box.run_code("import os\nsorted(os.environ.items())")
        assert r.value is not None
        assert "named-value" in r.value and "'MODE', 'demo'" in r.value
        assert "other-value" not in r.value
        assert "('HOME', '/tmp')" in r.value  # not the host's home
        p = box.exec("env")
        assert "SANDLOT_OTHER_SECRET" not in p.stdout and "SANDLOT_NAMED_SECRET" in p.stdout
    with pytest.raises(sandlot.ConfigError, match="SANDLOT_MISSING"):
        sandlot.Sandbox(strict(secrets=["SANDLOT_MISSING"])).start()


def test_code_runs_unprivileged_in_its_own_pid_namespace(sb: sandlot.Sandbox) -> None:
    expected = 65534 if os.getuid() == 0 else os.getuid()
    assert (
        sb.run_code("import os\n(os.getuid(), os.geteuid())").value == f"({expected}, {expected})"
    )
    p = sb.exec("ps", "-e", "-o", "pid=")
    pids = p.stdout.split()
    assert 0 < len(pids) < 10, p.stdout  # only the sandbox's own processes


def test_memory_bomb_ends_with_out_of_memory_and_host_survives() -> None:
    with sandlot.Sandbox(strict(memory_mb=200)) as box:
        with pytest.raises(sandlot.SandboxDied) as info:
            box.run_code("hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))")
        assert info.value.cause == "out_of_memory"
        assert not box.is_alive
    with sandlot.Sandbox(strict()) as again:
        assert again.run_code("1 + 1").value == "2"


def test_fork_bomb_is_contained() -> None:
    with sandlot.Sandbox(strict(max_processes=40)) as box:
        r = box.run_code(
            textwrap.dedent("""
            import os, time
            children = []
            try:
                while True:
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(60)
                        os._exit(0)
                    children.append(pid)
            except OSError as e:
                err = type(e).__name__
            (len(children), err)
        """)
        )
        assert r.error is None, r.error
        assert r.value is not None
        count = int(r.value.strip("()").split(",")[0])
        assert count < 40
        box.run_code(
            "import signal\nfor c in children: os.kill(c, signal.SIGKILL)\n"
            "for c in children: os.waitpid(c, 0)"
        )
        p = box.exec("bash", "-c", ":(){ :|:& };:", timeout=2)
        assert "Resource temporarily unavailable" in p.stderr
        cgroup = box.async_sandbox._launch.cgroup  # type: ignore[union-attr]
        assert cgroup is not None and 0 < len(cgroup.pids()) <= 40
        assert box.run_code("2 + 2").value == "4"  # the REPL still answers
    assert cgroup.pids() == set()


def test_processes_are_gone_after_terminate(tmp_path: Path) -> None:
    token = f"sandlot-detached-{os.getpid()}-{time.monotonic_ns()}"
    box = sandlot.Sandbox(strict()).start()
    box.exec(
        "bash",
        "-c",
        f"setsid nohup python3 -c 'import time; time.sleep(600)' {token} >/dev/null 2>&1 &",
    )
    box.run_code(f"import subprocess\nsubprocess.Popen(['sleep', '600', '{token}'[:0] or '600'])")
    deadline = time.monotonic() + 5
    while not pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_with(token), "the detached process did not start"
    box.terminate()
    assert wait_gone(token) == []


@pytest.mark.parametrize("templates_on", ["1", "0"], ids=["template", "cold"])
def test_processes_are_gone_after_the_host_is_killed(tmp_path: Path, templates_on: str) -> None:
    """Whether forked or cold, the driver's parent is PID 1 of the sandbox's namespace, and
    the whole namespace ends with it once the host is gone."""
    token = f"sandlot-orphan-{os.getpid()}-{time.monotonic_ns()}"
    host = tmp_path / "host.py"
    host.write_text(
        textwrap.dedent(f"""
        import sys, time, sandlot
        box = sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")).start()
        box.exec("bash", "-c", "setsid nohup python3 -c 'import time; time.sleep(600)' {token} "
                 ">/dev/null 2>&1 &")
        print(box.async_sandbox._launch.host_dir, flush=True)
        time.sleep(600)
    """)
    )
    env = {**os.environ, templates.ENV_VAR: templates_on}
    proc = subprocess.Popen([sys.executable, str(host)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        host_dir = Path(proc.stdout.readline().strip())
        # The detached process may still be on its way through setsid and exec.
        deadline = time.monotonic() + 5
        while not pids_with(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host_dir.exists() and pids_with(token)
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(token) == []
    # The next process that starts a sandbox sweeps what the killed one left.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sandlot; sandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap'))"
            ".start().terminate()",
        ],
        check=True,
    )
    assert not host_dir.exists()


def _strays(within: float = 5.0) -> list[int]:
    """This process's descendants, less its templates (which outlive their sandboxes), once
    they stop changing or ``within`` seconds pass: the kernel may take a moment to tear down
    the last of an ended sandbox's processes."""
    me = os.getpid()
    deadline = time.monotonic() + within
    while True:
        strays = sorted(process_tree(me) - {me} - template_processes(me))
        if not strays or time.monotonic() > deadline:
            return strays
        time.sleep(0.05)


def _mine() -> list[str]:
    """State directories and cgroup ledgers of this process's sandboxes (not those of the
    cgroups made ahead for the next ones).

    A cgroup's ledger goes only once the cgroup is gone, so a leaked cgroup shows here.
    """
    from sandlot.backends.local import OWNER_FILE, _owner, _state_root

    found = []
    for path in _state_root().iterdir():
        if path.name.endswith(AHEAD + LEDGER_SUFFIX):
            continue
        try:
            owner = (path / OWNER_FILE if path.is_dir() else path).read_text().split("\n", 1)[0]
        except OSError:
            continue
        if owner == _owner():
            found.append(path.name)
    return sorted(found)


def test_two_hundred_sandboxes_leave_nothing_behind() -> None:
    import asyncio

    sandlot.Sandbox(strict()).start().terminate()  # warm up the portal and caches
    # Earlier tests' garbage (a file object, a socket) is collected now, not midway through
    # the churn, where its descriptor closing would be counted against the sandboxes.
    gc.collect()

    fds = len(os.listdir("/proc/self/fd"))
    remover_drained()  # an ended fork's cgroups and directory go on the host's remover thread
    before = _mine()

    async def churn() -> None:
        async def one() -> None:
            async with sandlot.AsyncSandbox(strict()) as box:
                await box.exec("bash", "-c", "sleep 600 &")

        for _ in range(20):
            await asyncio.gather(*(one() for _ in range(10)))

    asyncio.run(churn())
    assert _strays() == []
    # None left open by the sandboxes (one closed meanwhile by another part is no leak).
    assert len(os.listdir("/proc/self/fd")) <= fds
    remover_drained()
    assert _mine() == before


def test_a_start_cancelled_midway_leaves_nothing_behind() -> None:
    import asyncio

    sandlot.Sandbox(strict()).start().terminate()  # the template is made before, not counted
    remover_drained()
    before = _mine()

    async def cancel_at(delay: float) -> bool:
        box = sandlot.AsyncSandbox(strict())
        task = asyncio.create_task(box.start())
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        await box.terminate()
        return False

    async def sweep() -> list[bool]:
        # From before the fork, through the fork on its thread, to the driver's hello.
        return [await cancel_at(d / 1000) for d in (0, 1, 2, 3, 5, 8, 12, 20, 30, 45)]

    # A cancel that lands while the fork runs on its thread lets the start finish (and the
    # sandbox is then ended); under load few of the ten may land elsewhere: sweep again.
    cancelled: list[bool] = []
    for _ in range(3):
        cancelled += asyncio.run(sweep())
        if sum(cancelled) >= 3:
            break
    assert sum(cancelled) >= 3
    assert _strays() == []
    remover_drained()
    assert _mine() == before


def test_the_suites_loop_check_sees_a_descriptor_closed_while_registered() -> None:
    """tests/selector_check.py, run on the portal's loop after every module (conftest),
    catches the stale entry that would hang a later start: a registered descriptor whose
    file went (here replaced at its number, as when a new socket reuses it) without
    remove_reader. epoll forgets the old file; the selector keeps the number, and
    add_reader on it afterwards only modifies the entry, so epoll never watches the new one."""
    import asyncio

    from selector_check import unwatched

    loop = asyncio.new_event_loop()
    old, old_peer = socket.socketpair()
    new, new_peer = socket.socketpair()
    try:
        number = old.fileno()
        loop.add_reader(number, lambda: None)
        assert unwatched(loop) == []
        os.dup2(new.fileno(), number)  # the old file goes, a new one takes its number
        loop.add_reader(number, lambda: None)  # a modify: epoll is not told
        problems = unwatched(loop)
        assert len(problems) == 1, problems
        assert f"descriptor {number} (socket:[" in problems[0]
        assert "epoll does not watch it" in problems[0]
        loop.remove_reader(number)
        assert unwatched(loop) == []
    finally:
        loop.close()
        for end in (old, old_peer, new, new_peer):
            end.close()


@pytest.mark.skipif(os.getuid() != 0, reason="templates are used where the host runs as root")
def test_a_template_that_cannot_start_leaves_cold_starts_and_one_warning(tmp_path: Path) -> None:
    """A bubblewrap that refuses the template (a stricter policy might) costs only speed."""
    real = shutil.which("bwrap")
    assert real is not None
    wrapper = tmp_path / "bwrap"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *template.main*) echo "no templates here" >&2; exit 1;; esac\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    host = tmp_path / "host.py"
    host.write_text(
        textwrap.dedent("""
        import warnings, sandlot
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for _ in range(3):
                with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")) as box:
                    assert box.run_code("1 + 1").value == "2"
                    print(box.info["started"])
        for w in said:
            print("WARNING", w.message)
    """)
    )
    done = subprocess.run(
        [sys.executable, str(host)],
        env={**os.environ, "SANDLOT_BWRAP": str(wrapper)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if not line.startswith("WARNING")] == ["cold"] * 3
    (warning,) = [line for line in lines if line.startswith("WARNING")]
    assert "start cold (no template)" in warning and "no templates here" in warning
