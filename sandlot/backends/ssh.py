"""The SSH backend, and any command whose stdin and stdout reach a far side.

``SSHBackend("gpu-box")`` (or ``StreamBackend(["docker", "exec", "-i", "ctr"])``,
``["kubectl", "exec", "-i", "pod", "--"]``) runs the command with the driver's
small bootstrap appended (:data:`~sandlot.backends.kit.bootstrap.BOOTSTRAP`,
``python3 -I -c ...``) and starts the driver over the command's stdin and
stdout with :func:`~sandlot.backends.kit.remote.start_over`, which says what
travels when and what the host checks. This module only runs the command
(:class:`CommandProcess`) and says what its exit means: for ``ssh``, status 255
is a lost connection, not the driver's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

from ..config import SandboxConfig
from ..errors import ConfigError, DeathCause
from .kit import remote
from .kit.bootstrap import BOOTSTRAP, OWNER_TIMEOUT, START_TIMEOUT
from .kit.remote import FINISH_TIMEOUT, SEND_CHUNK, StreamLaunch, check_config, start_over

READ_CHUNK = 1 << 16  # most bytes read from the command's stdout or stderr at once


class CommandProcess:
    """A local command (``ssh``, ``docker exec -i``) whose stdin and stdout reach the far side."""

    max_write = SEND_CHUNK

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        command: str,
        where: str,
        lost_status: frozenset[int],
    ) -> None:
        self.proc = proc
        self.command = command  # the program's name, for messages
        self.where = where
        self.lost_status = lost_status  # exit statuses that mean the connection failed (ssh: 255)

    @classmethod
    async def start(cls, argv: Sequence[str], where: str, lost_status: frozenset[int]) -> Self:
        """Start ``argv`` with pipes for stdin, stdout and stderr, in a session of its own."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return cls(proc, os.path.basename(argv[0]), where, lost_status)

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the command's stdin and wait until the pipe takes it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def send_eof(self) -> None:
        """Close the command's stdin."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    @staticmethod
    async def _chunks(stream: asyncio.StreamReader | None) -> AsyncIterator[bytes]:
        assert stream is not None
        while data := await stream.read(READ_CHUNK):
            yield data

    def output(self) -> AsyncIterator[bytes]:
        """The command's stdout as it comes."""
        return self._chunks(self.proc.stdout)

    def errors(self) -> AsyncIterator[bytes]:
        """The command's stderr as it comes."""
        return self._chunks(self.proc.stderr)

    async def wait(self) -> int:
        """Wait for the command to exit; its status (negative: the signal that killed it)."""
        return await self.proc.wait()

    def kill(self) -> None:
        """Kill the command's process group: the connection drops, the far side ends."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def lost(
        self, code: int | None, error: BaseException | None, log: str
    ) -> tuple[DeathCause, str]:
        """Why the stream ended, in terms of the command's exit."""
        command, tail = self.command, log.strip()
        if error is not None:
            return "connection_lost", f"the stream to {self.where} failed: {error!r}. {tail}"
        if code is None or code < 0:
            how = "did not end" if code is None else f"was killed by {signal.Signals(-code).name}"
            return "connection_lost", f"the connection to {self.where} was lost: {command} {how}"
        if code in self.lost_status:
            return (
                "connection_lost",
                f"the connection to {self.where} was lost ({command} exited with status "
                f"{code}). {tail}".strip(),
            )
        return remote.driver_exit(f"the driver on {self.where}", code, tail)

    async def release(self) -> None:
        """Nothing beyond the pipes, which end with the process."""
        self.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), FINISH_TIMEOUT)


class StreamBackend:
    """Runs each sandbox's driver through ``command``, whose stdin and stdout reach the far side.

    - ``command``: the argv that reaches the far side, such as ``["docker",
      "exec", "-i", "box"]`` or ``["kubectl", "exec", "-i", "pod", "--"]``; the
      bootstrap's ``python -I -c ...`` is appended to it;
    - ``python``: the far side's interpreter (a virtual environment's, to give the
      sandboxes its packages);
    - ``shell``: append the bootstrap as one shell-quoted word (for commands that
      hand a string to a remote shell, as ``ssh`` does);
    - ``lost_status``: exit statuses of ``command`` that mean its connection
      failed rather than the driver (255 for ``ssh``);
    - ``owner_timeout``: seconds of silence from this host after which the far
      side's driver ends itself (None: only at end of input);
    - ``start_timeout``: seconds the far side has to answer.
    """

    # The far side's Python is used as it is: sandlot installs nothing there.
    installs_packages = False

    def __init__(
        self,
        command: Sequence[str],
        *,
        python: str = "python3",
        shell: bool = False,
        name: str | None = None,
        lost_status: Sequence[int] = (),
        owner_timeout: float | None = OWNER_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        if not command:
            raise ConfigError("StreamBackend(command=...) needs a command")
        self.command = list(command)
        self.python = python
        self.shell = shell
        self.name = name or shlex.join(self.command)
        self.lost_status = frozenset(lost_status)
        self.owner_timeout = owner_timeout
        self.start_timeout = start_timeout

    def argv(self) -> list[str]:
        """The local command line: ``command`` and the bootstrap (which holds no secret)."""
        boot = [self.python, "-I", "-c", BOOTSTRAP]
        return [*self.command, shlex.join(boot)] if self.shell else [*self.command, *boot]

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> StreamLaunch:
        """Start the command, the driver at its far end, and connect to it."""
        check_config(config, self.name)
        try:
            process = await CommandProcess.start(self.argv(), self.name, self.lost_status)
        except OSError as exc:
            raise ConfigError(f"cannot run {self.command[0]!r}: {exc}") from None
        return await start_over(
            process,
            config,
            init,
            where=self.name,
            walls="bwrap",
            owner_timeout=self.owner_timeout,
            start_timeout=self.start_timeout,
        )


class SSHBackend(StreamBackend):
    """Runs each sandbox on ``host`` through ``ssh`` (key or agent authentication, no prompts).

    The far side needs ``python3`` (or ``python=``) and, for the local backend's
    walls, bubblewrap. ``ssh_options`` are ``-o`` options (``"StrictHostKeyChecking=yes"``);
    ``~/.ssh/config`` applies as for any ``ssh``.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        identity_file: str | os.PathLike[str] | None = None,
        ssh_options: Sequence[str] = (),
        python: str = "python3",
        ssh: str = "ssh",
        owner_timeout: float | None = OWNER_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        if not host or host.startswith("-"):
            raise ConfigError(f"SSHBackend: {host!r} is not a host name")
        argv = [ssh, "-T", "-o", "BatchMode=yes"]
        argv += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if port is not None:
            argv += ["-p", str(port)]
        if identity_file is not None:
            argv += ["-i", os.fspath(identity_file), "-o", "IdentitiesOnly=yes"]
        if user is not None:
            argv += ["-l", user]
        for option in ssh_options:
            argv += ["-o", option]
        argv += ["--", host]
        where = f"ssh {user + '@' if user else ''}{host}{f':{port}' if port else ''}"
        super().__init__(
            argv,
            python=python,
            shell=True,
            name=where,
            lost_status=(255,),
            owner_timeout=owner_timeout,
            start_timeout=start_timeout,
        )

    @classmethod
    def from_env(cls) -> SSHBackend:
        """``backend="ssh"``: the host from ``$SANDLOT_SSH_HOST`` (``[user@]host``), and
        ``$SANDLOT_SSH_PORT``, ``$SANDLOT_SSH_IDENTITY``, ``$SANDLOT_SSH_PYTHON`` and
        ``$SANDLOT_SSH_OPTIONS`` (``-o`` options, separated by ``;``) if set."""
        host = os.environ.get("SANDLOT_SSH_HOST", "")
        if not host:
            raise ConfigError(
                "backend='ssh' needs a host: set $SANDLOT_SSH_HOST=[user@]host (and "
                "$SANDLOT_SSH_PORT, $SANDLOT_SSH_IDENTITY if needed), or pass "
                "backend=SSHBackend('host') (sandlot.backends.ssh)"
            )
        port = os.environ.get("SANDLOT_SSH_PORT")
        if port is not None and not port.isdigit():
            raise ConfigError(f"$SANDLOT_SSH_PORT={port!r} is not a port number")
        return cls(
            host,
            port=int(port) if port else None,
            identity_file=os.environ.get("SANDLOT_SSH_IDENTITY") or None,
            python=os.environ.get("SANDLOT_SSH_PYTHON") or "python3",
            ssh_options=[
                o.strip() for o in os.environ.get("SANDLOT_SSH_OPTIONS", "").split(";") if o.strip()
            ],
        )
