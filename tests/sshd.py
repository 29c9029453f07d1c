"""An OpenSSH server on loopback, started for the tests as the "remote" machine of SSHBackend.

Its host key, the client's key, ``authorized_keys`` and ``known_hosts`` are made
in a temporary directory; it listens on 127.0.0.1 only, on a free port, accepts
only that key, and is ended by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from processes import ancestors, parent

from sandlot.backends.stream import SSHBackend  # the path every version has (benchmarks --base)

SSHD = "/usr/sbin/sshd"


@dataclass
class SSHServer:
    """A running sshd and how to reach it."""

    pid: int
    port: int
    dir: Path

    def backend(self, **options: object) -> SSHBackend:
        """An SSHBackend for this server, as the user running the tests."""
        return SSHBackend(
            "127.0.0.1",
            port=self.port,
            identity_file=self.dir / "client_key",
            ssh_options=[
                f"UserKnownHostsFile={self.dir / 'known_hosts'}",
                "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes",
            ],
            **options,  # type: ignore[arg-type]
        )

    def connection_process(self, pid: int) -> int:
        """The sshd process that serves the connection ``pid`` (a far-side process) came by."""
        return next(p for p in ancestors(pid) if parent(p) == self.pid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_sshd(root: Path) -> Iterator[SSHServer]:
    """Start sshd with keys and config under ``root``; end it by PID afterwards."""
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} is missing: install openssh-server (the SSH tests need it)")
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True
        )
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = _free_port()
    host_pub = (root / "host_key.pub").read_text().split()[:2]
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_pub)}\n")
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n"
        "X11Forwarding no\nAllowTcpForwarding no\nPrintMotd no\nLogLevel ERROR\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = (root / "sshd.log").open("w")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield SSHServer(proc.pid, port, root)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
