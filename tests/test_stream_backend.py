"""The stream backend for real: SSHBackend against an OpenSSH server on loopback.

The server (tests/sshd.py) is started here with keys made here; the "remote"
machine is this one, so the tests can see both sides: the far side's processes
by PID and its temporary directory. A dropped connection (the ssh client
killed, or sshd's process for the connection killed) must end the sandbox
with cause ``connection_lost`` and leave nothing running and nothing on disk.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict
from processes import alive
from sshd import SSHServer, running_sshd

import sandlot
from sandlot import backends
from sandlot.backends.disk import process_tree
from sandlot.backends.kit.remote import StreamLaunch
from sandlot.backends.ssh import SSHBackend
from sandlot.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _launch(sb: sandlot.Sandbox) -> StreamLaunch:
    launch = sb._async._launch  # the test looks at both ends of the stream
    assert isinstance(launch, StreamLaunch)
    return launch


def _far_side(sb: sandlot.Sandbox) -> tuple[Path, list[int]]:
    """The far side's temporary directory and every process under its bootstrap."""
    root = Path(_launch(sb).hello["workdir"]).parent
    pid = int((root / ".owner").read_text().split()[0])
    return root, sorted(process_tree(pid))


def _gone(root: Path, pids: list[int], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not root.exists() and not any(alive(p) for p in pids):
            return
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    raise AssertionError(f"left behind: processes {left}, directory exists: {root.exists()}")


def test_a_sandbox_over_ssh_works_as_a_local_one_behind_the_same_walls(sshd: SSHServer) -> None:
    calls: list[int] = []

    def where(x: int) -> int:
        calls.append(os.getpid())
        return x * 2

    box = sandlot.Sandbox(strict(memory_mb=512), backend=sshd.backend(), tools={"where": where})
    with box as sb:
        assert sb.workdir == "/workspace"
        r = sb.run_code("import os, socket\nx = 20\n(os.getuid(), socket.gethostname(), where(x))")
        assert r.value == "(65534, 'sandlot', 40)" and calls == [os.getpid()]
        assert sb.run_code("x + 1").value == "21"  # the interpreter lives on
        reach = sb.run_code(
            f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {sshd.port}), 2)\n"
            "    print('reached')\nexcept OSError as e:\n    print('refused', e.errno)"
        )
        assert reach.stdout.startswith("refused")  # no network: not even the far side's sshd
        arrivals = [
            time.monotonic()
            for _ in sb.exec_stream("sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done")
        ]
        assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0.4  # as printed
        blob = os.urandom(3 << 20)  # three frames' worth each way
        sb.files.write("blob.bin", blob)
        assert sb.files.read("blob.bin") == blob
        root, pids = _far_side(sb)
        assert root.stat().st_mode & 0o777 == 0o700
    _gone(root, pids)


def test_secrets_travel_over_stdin_and_appear_on_no_command_line(
    sshd: SSHServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SANDLOT_STREAM_SECRET", secret)
    cfg = strict(secrets=["SANDLOT_STREAM_SECRET"], env={"PLAIN": "yes"})
    with sandlot.Sandbox(cfg, backend=sshd.backend()) as sb:
        got = sb.run_code("import os\nos.environ['SANDLOT_STREAM_SECRET'], os.environ['PLAIN']")
        assert got.value == repr((secret, "yes"))
        ssh_pid = _launch(sb).process.proc.pid  # type: ignore[attr-defined]
        assert b"ssh" in Path(f"/proc/{ssh_pid}/cmdline").read_bytes()
        showing = []
        for entry in os.listdir("/proc"):  # both sides: the far side is this machine
            if entry.isdigit():
                try:
                    if secret.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        showing.append(int(entry))
                except OSError:
                    continue
        assert showing == []


def _drop_test(sshd: SSHServer, drop: str) -> None:
    with sandlot.Sandbox(strict(), backend=sshd.backend()) as sb:
        sb.exec("sh", "-c", "sleep 300 & echo started", timeout=10)
        root, pids = _far_side(sb)
        assert len(pids) >= 3  # the bootstrap, bubblewrap, the driver (and the sleep)
        if drop == "client":
            os.kill(_launch(sb).process.proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        else:
            os.kill(sshd.connection_process(pids[0]), signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(sandlot.SandboxDied) as info:
            sb.run_code("import time; time.sleep(30)", timeout=20)
        assert info.value.cause == "connection_lost", info.value
        assert "connection" in str(info.value) and "lost" in str(info.value)
        assert time.monotonic() - started < 10
    _gone(root, pids)


def test_killing_the_ssh_client_ends_the_sandbox_and_leaves_nothing(sshd: SSHServer) -> None:
    _drop_test(sshd, "client")


def test_killing_sshds_process_for_the_connection_ends_the_sandbox_and_leaves_nothing(
    sshd: SSHServer,
) -> None:
    _drop_test(sshd, "server")


def test_without_bubblewrap_the_driver_runs_in_the_far_sides_private_directory(
    sshd: SSHServer, tmp_path: Path
) -> None:
    (tmp_path / "sent.txt").write_text("sent")
    with sandlot.Sandbox(sandlot.SandboxConfig(isolation="none"), backend=sshd.backend()) as sb:
        assert "/sandlot-stream-" in sb.workdir
        r = sb.run_code("import os\nopen('f', 'w').write('x')\nos.getcwd()")
        assert r.value == repr(sb.workdir)
        # What a driver loads on demand works after its drop to the sandbox user, even
        # where that user cannot read the interpreter's files (here: one in root's home).
        assert sb.exec("echo", "ran").stdout == "ran\n"
        assert sb.run_code("import gc\ngc.isenabled()").value == "True"
        sb.files.write("d/g.txt", "y")
        sb.upload(tmp_path, "up")
        assert sorted(f.name for f in sb.files.list("up")) == ["sent.txt"]
        sb.files.remove("d", recursive=True)
        assert not sb.files.exists("d")
        root, pids = _far_side(sb)
    _gone(root, pids)


def test_what_the_far_side_cannot_honour_is_refused_with_what_to_do(
    sshd: SSHServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="python="):
        sandlot.Sandbox(strict(python_packages=["rich"]), backend=sshd.backend()).start()
    with pytest.raises(ConfigError, match="volumes"):
        sandlot.Sandbox(strict(volumes={"/data": "v"}), backend=sshd.backend()).start()
    monkeypatch.delenv("SANDLOT_SSH_HOST", raising=False)
    with pytest.raises(ConfigError, match="SANDLOT_SSH_HOST"):
        backends.resolve("ssh")
    monkeypatch.setenv("SANDLOT_SSH_HOST", "user@example")
    monkeypatch.setenv("SANDLOT_SSH_PORT", "2222")
    backend = backends.resolve("ssh")
    assert isinstance(backend, SSHBackend) and backend.name == "ssh user@example:2222"


def test_a_far_side_that_cannot_be_reached_fails_to_start_with_sshs_words() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = SSHBackend("127.0.0.1", port=port, ssh_options=["ConnectTimeout=5"])
    with pytest.raises(sandlot.SandboxDied) as info:
        sandlot.Sandbox(strict(), backend=backend).start()
    assert info.value.cause == "failed_to_start"
    assert "refused" in str(info.value).lower(), info.value


def test_a_notebook_session_runs_its_kernel_on_the_far_side(
    sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """backend="ssh" by name, from the session server: the kernel's traffic rides the stream."""
    from session_servers import own_session_server

    from sandlot.notebook import start_session

    known = sshd.dir / "known_hosts"
    monkeypatch.setenv("SANDLOT_SSH_HOST", "127.0.0.1")
    monkeypatch.setenv("SANDLOT_SSH_PORT", str(sshd.port))
    monkeypatch.setenv("SANDLOT_SSH_IDENTITY", str(sshd.dir / "client_key"))
    monkeypatch.setenv("SANDLOT_SSH_PYTHON", sys.executable)  # a Python with ipykernel
    options = f"UserKnownHostsFile={known};GlobalKnownHostsFile=/dev/null;StrictHostKeyChecking=yes"
    monkeypatch.setenv("SANDLOT_SSH_OPTIONS", options)

    def ssh_clients(server: int) -> list[int]:
        return [
            p
            for p in process_tree(server)
            if alive(p) and Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"ssh")
        ]

    with own_session_server(tmp_path / "sessions", 1.0) as folder:
        # memory_mb is an address-space rlimit over a stream: the kernel's threads need room.
        config = strict(memory_mb=4096)
        with start_session(config, backend="ssh", notebook_dir=tmp_path) as session:
            r = session.execute("answer = 6 * 7\nprint('far', answer)\nanswer")
            assert (r.error, r.text, r.stdout) == (None, "42", "far 42\n")
            assert session.execute("answer + 1").text == "43"  # the kernel keeps its state
            log = (folder / "server.log").read_text()
            server = int(next(x for x in log.splitlines() if " listening on " in x).split()[3])
            assert ssh_clients(server), "the session's sandbox is not behind an ssh client"
            notebook = Path(session.notebook_path or "")
        cells = json.loads(notebook.read_text())["cells"]
        assert [c["source"] for c in cells] == [
            "answer = 6 * 7\nprint('far', answer)\nanswer",
            "answer + 1",
        ]
        deadline = time.monotonic() + 10
        while ssh_clients(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ssh_clients(server)  # the session's end closed its connection


def test_a_local_snapshot_restores_on_another_host(sshd: SSHServer, tmp_path: Path) -> None:
    path = tmp_path / "moved.snap"
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code(
            "def area(r):\n    return round(3.14159 * r * r, 2)\nsizes = [1, 2, 3]\n"
            "open('notes.txt', 'w').write('from the first host')",
            raise_on_error=True,
        )
        sb.snapshot(path)
    remote = sandlot.Sandbox.restore(path, strict(memory_mb=512), backend=sshd.backend())
    with remote as sb2:
        assert isinstance(sb2._async._launch, StreamLaunch)  # it is the SSH backend's
        value = sb2.run_code("[area(s) for s in sizes], open('notes.txt').read()").value
        assert value == "([3.14, 12.57, 28.27], 'from the first host')"
