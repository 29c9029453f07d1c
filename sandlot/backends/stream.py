"""Stream backends: a driver on any machine that a command's stdin and stdout reach.

``SSHBackend("gpu-box")`` (or ``StreamBackend(["docker", "exec", "-i", "ctr"])``,
``["kubectl", "exec", "-i", "pod", "--"]``) starts a small bootstrap on the far
side with ``python3 -I -c`` (a few hundred bytes: command lines have caps, 64 KiB
on Modal). The bootstrap reads the driver package from stdin as a
length-prefixed zip, unpacks it into a fresh private temporary directory and
hands over to :mod:`sandlot.driver.farside`, which says ``hello``, takes its
settings, and runs the driver on the same stdin and stdout, under bubblewrap when
the far side has a working one. Frames then flow both ways over the one stream,
host calls included; the host parses them from chunks of any size.

What the host sends and when:

1. the driver package (``!Q`` length, then the zip);
2. after the far side's ``hello`` (checked: one small frame of a fixed shape,
   within ``start_timeout`` seconds), a ``start`` frame: bubblewrap or not,
   network, the drop to the unprivileged user, and the environment. Secrets
   travel here, over stdin, never on a command line;
3. the driver's init frame, with ``owner_timeout``: the driver ends itself when
   the host has sent nothing for that long (the host pings meanwhile), and it
   ends at once at end of input, so a lost owner leaves nothing running.

The host trusts nothing the far side sends: a hello that is not one, a frame
length past the bounds, silence, or a flood end the start with
:class:`~sandlot.errors.SandboxDied` (``failed_to_start``) and kill the command;
after the start, the channel's own bounds apply. A dropped connection ends the
sandbox with cause ``connection_lost``.

What the far side does not have is said once per destination, as the local
backend says it (:class:`~sandlot.backends.local.IsolationWarning`): there is no
cgroup, seccomp filter or disk watch over there, only bubblewrap's walls (when
present) and per-process rlimits. Config the far side cannot honour
(``python_packages``, ``mounts``, ``volumes``, ``gpu``) is a ConfigError, never
ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import os
import shlex
import signal
import struct
import warnings
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import cache
from typing import Any, Literal, Protocol, Self

from ..config import SandboxConfig
from ..driver import protocol
from ..errors import ConfigError, DeathCause, SandboxDied
from ..secrets import secret_values
from ..tasks import TaskScope
from . import disk
from .base import SANDBOX_UID
from .local import DRIVER_SRC, WORKDIR_INSIDE, IsolationWarning

READ_CHUNK = 1 << 16  # most bytes read from the command's stdout or stderr at once
SEND_CHUNK = 1 << 20  # most bytes written to the far side's stdin before each drain
HIGH_WATER = 8 << 20  # bytes queued for the far side at which drain() waits ...
LOW_WATER = 2 << 20  # ... until the queue is back down to this
HELLO_MAX = 1 << 12  # most bytes of the far side's hello header
START_TIMEOUT = 60.0  # seconds the far side has to say hello (an image pull may be slow)
OWNER_TIMEOUT = 60.0  # seconds of silence from the host after which the driver ends itself
FINISH_TIMEOUT = 10.0  # seconds the command gets to exit after its output ended
LOG_CHUNKS = 64  # pieces of the command's stderr kept, each at most LOG_PIECE bytes
LOG_PIECE = 1 << 12
PING = protocol.encode({"t": "ping"})
HELLO: dict[str, Any] = {
    "t": str,
    "v": int,
    "bwrap": bool,
    "problem": str,
    "root": bool,
    "python": str,
    "workdir": str,
}

# Run by the far side's python3 -I -c: read the driver package, unpack it privately, start it.
BOOTSTRAP = """\
import io, os, shutil, sys, tempfile, zipfile
def take(n):
    b = bytearray()
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            raise SystemExit("sandlot: the host closed the stream during start-up")
        b += c
    return bytes(b)
d = tempfile.mkdtemp(prefix="sandlot-stream-")
try:
    zipfile.ZipFile(io.BytesIO(take(int.from_bytes(take(8), "big")))).extractall(d)
    sys.path.insert(0, d)
    from sandlot_driver.farside import main
except BaseException:
    shutil.rmtree(d, True)
    raise
main(d)
"""

Walls = Literal["bwrap", "container"]


@cache
def driver_bundle() -> bytes:
    """The driver package as a zip (``sandlot_driver/...``), without caches."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(DRIVER_SRC.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            bundle.write(path, f"sandlot_driver/{path.relative_to(DRIVER_SRC)}")
    return out.getvalue()


class Valve(asyncio.ReadTransport):
    """The reader's flow control for a pump that feeds it: the reader pauses the valve
    when it holds more than twice its limit, and opens it once the channel has read
    it down, so the host holds a bounded amount of what a sandbox sends."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self) -> None:
        self.open.set()

    def is_reading(self) -> bool:
        return self.open.is_set()


class QueuedSink:
    """A writer whose bytes go out in order through ``send``, at most ``chunk`` bytes a call.

    ``write`` queues; ``drain`` waits while more than :data:`HIGH_WATER` bytes are
    queued. A send that fails (the far side is gone) drops the queue: the
    reader's pump reports why the sandbox ended. ``finish`` runs once what was
    queued before ``close`` is sent (a stream's end of input).
    """

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[Any]],
        chunk: int,
        finish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.send = send
        self.chunk = chunk
        self.finish = finish
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.closed = False
        self.failed: BaseException | None = None
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.tasks = TaskScope("a queued sink")
        self.task = self.tasks.spawn(self._send())

    def write(self, data: bytes) -> None:
        """Queue ``data``."""
        if self.closed or self.failed is not None or not data:
            return
        self.queue.append(bytes(data))
        self.queued += len(data)
        if self.queued >= HIGH_WATER:
            self.room.clear()
        self.wake.set()

    async def drain(self) -> None:
        """Wait while much is queued (not at all once the far side is gone)."""
        await self.room.wait()

    def close(self) -> None:
        """Send what is queued, then stop."""
        self.closed = True
        self.wake.set()

    async def wait_closed(self) -> None:
        """Wait until what was queued is sent (or the far side is gone)."""
        await asyncio.wait({self.task})  # its end, not its error; a cancellation of ours goes on

    def _batch(self) -> bytes:
        batch: list[bytes] = []
        size = 0
        while self.queue and size < self.chunk:
            item = self.queue[0]
            room = self.chunk - size
            if len(item) <= room:
                batch.append(self.queue.popleft())
                size += len(item)
            else:  # a big message goes in pieces: no send is larger than chunk
                batch.append(item[:room])
                self.queue[0] = item[room:]
                size += room
        return b"".join(batch)

    async def _send(self) -> None:
        try:
            while True:
                if not self.queue:
                    if self.closed:
                        break
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                data = self._batch()
                await self.send(data)
                self.queued -= len(data)
                if self.queued <= LOW_WATER:
                    self.room.set()
            if self.finish is not None:
                await self.finish()
        except Exception as exc:  # the far side is gone: the reader's pump reports why
            self.failed = exc
            self.queue.clear()
            self.queued = 0
        finally:
            self.room.set()


class RemoteProcess(Protocol):
    """A started command whose stdin and stdout reach the far side (the stream's two ends).

    :class:`CommandProcess` is one for a local command (``ssh``, ``docker exec
    -i``); :mod:`sandlot.backends.modal` adapts a Modal container process.
    """

    @property
    def max_write(self) -> int:
        """Most bytes one :meth:`send` may carry (the far side's input buffer cap)."""
        ...

    async def send(self, data: bytes) -> None:
        """Write ``data`` (at most :attr:`max_write` bytes) to stdin and wait until it is sent."""
        ...

    async def send_eof(self) -> None:
        """Close stdin after what was sent."""
        ...

    def output(self) -> AsyncIterator[bytes]:
        """stdout, in chunks of any size, until it ends."""
        ...

    def errors(self) -> AsyncIterator[bytes]:
        """stderr, in chunks of any size, until it ends."""
        ...

    async def wait(self) -> int:
        """Wait for the process to end; its exit status."""
        ...

    def kill(self) -> None:
        """End the process and the far side's driver, at once (it may finish in the background)."""
        ...

    def lost(
        self, code: int | None, error: BaseException | None, log: str
    ) -> tuple[DeathCause, str]:
        """Why the stream ended, from the exit status (None: unknown) or the error seen."""
        ...

    async def release(self) -> None:
        """Let go of what the process held, once it has ended."""
        ...


class StreamLaunch:
    """A driver on the far side of a :class:`RemoteProcess`, as the host sees it."""

    def __init__(self, process: RemoteProcess, where: str) -> None:
        self.process = process
        self.where = where  # the far side, in words ("ssh gpu-box", "Modal sandbox sb-...")
        self.reader = asyncio.StreamReader(limit=1 << 20)
        self._valve = Valve()
        self.reader.set_transport(self._valve)
        self.writer = QueuedSink(process.send, process.max_write, process.send_eof)
        self.workdir = ""
        self.hello: dict[str, Any] = {}
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._cause: tuple[DeathCause, str] = ("crashed", "the driver ended")
        self._log: collections.deque[bytes] = collections.deque(maxlen=LOG_CHUNKS)
        self.tasks = TaskScope("a stream sandbox")
        self._errors = self.tasks.spawn(self._read_errors())
        self._pump = self.tasks.spawn(self._read())
        self._pings: asyncio.Task[None] | None = None

    async def _read_errors(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.process.errors():
                self._log.append(data[-LOG_PIECE:])

    async def _read(self) -> None:
        error: BaseException | None = None
        code: int | None = None
        try:
            try:
                async for data in self.process.output():
                    await self._valve.open.wait()
                    self.reader.feed_data(data)
            except Exception as exc:
                error = exc
            self.reader.feed_eof()
            try:
                code = await asyncio.wait_for(self.process.wait(), FINISH_TIMEOUT)
            except Exception as exc:
                error = error or exc
                self.process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._errors), 2)
            self._cause = self.process.lost(code, error, self.log_tail())
        finally:
            self.reader.feed_eof()
            if not self.exited.done():
                self.exited.set_result(-1 if code is None else code)

    async def read_hello(self) -> dict[str, Any]:
        """The far side's hello, checked: one small frame of the fixed shape, nothing else."""
        try:
            prefix = await self.reader.readexactly(protocol.PREFIX.size)
            head_len, payload_len = protocol.PREFIX.unpack(prefix)
            if not 0 < head_len <= HELLO_MAX or payload_len:
                raise protocol.ProtocolError(
                    f"it sent {prefix!r} where a hello frame of at most {HELLO_MAX} bytes "
                    "starts (is something on the far side printing to stdout?)"
                )
            header = protocol.decode_header(await self.reader.readexactly(head_len))
        except asyncio.IncompleteReadError as exc:
            code = await self.wait()
            raise SandboxDied(
                "failed_to_start",
                f"{self.where} ended before the far side said hello (status {code}, after "
                f"{len(exc.partial)} bytes): {self.log_tail().strip() or 'no message'}",
            ) from None
        protocol.check(header, HELLO, "the far side's hello")
        if header["t"] != "hello" or header["v"] != 1:
            raise protocol.ProtocolError(f"a hello of type {header['t']!r}, version {header['v']}")
        return header

    def start_pings(self, every: float) -> None:
        """Tell the driver every ``every`` seconds that its owner lives."""

        async def ping() -> None:
            while True:
                await asyncio.sleep(every)
                self.writer.write(PING)

        self._pings = self.tasks.spawn(ping())

    async def wait(self) -> int:
        """Wait until the driver has ended and its end is known; return the exit status."""
        return await asyncio.shield(self.exited)

    def kill(self) -> None:
        """End the far side's driver and every process of the sandbox."""
        if not self.exited.done():
            self.process.kill()

    def death_cause(self) -> tuple[DeathCause, str]:
        """Why the sandbox ended: the driver's exit on the far side, or the stream's loss."""
        return self._cause

    def log_tail(self) -> str:
        """The last lines the command and the far side wrote to stderr."""
        return b"".join(self._log).decode("utf-8", "replace")[-2000:]

    async def cleanup(self) -> None:
        """End the stream and the command; release what they held."""
        self.kill()
        self.writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), FINISH_TIMEOUT + 5)
        await self.tasks.close()
        await self.writer.tasks.close()
        await self.process.release()


_warned: set[str] = set()


def far_side_gaps(use_bwrap: bool, walls: Walls, config: SandboxConfig) -> list[str]:
    """Protections a sandbox on the far side lacks, in words."""
    if walls == "container":  # Modal: its container and block_network are the walls
        return []
    gaps = []
    if not use_bwrap:
        gaps += [
            "filesystem isolation (the code can read every file the far side's user can)",
            "PID isolation (the code can see and signal the far side's processes)",
        ]
        if not config.network:
            gaps.append("network isolation (the code can open connections)")
    gaps += [
        "a seccomp filter (not applied over a stream)",
        "per-sandbox memory, process and CPU limits (no cgroup over a stream: per-process "
        "rlimits only)",
        "a disk quota (disk_mb is not watched over a stream; max_file_bytes still binds)",
    ]
    return gaps


def check_config(config: SandboxConfig, where: str, *, packages_ok: bool = False) -> None:
    """Refuse what the far side cannot honour, saying what to do instead."""
    if not packages_ok and (config.python_packages or config.requirements):
        raise ConfigError(
            f"python_packages and requirements cannot be installed by sandlot on {where}: "
            "install them in an environment there and pass its interpreter "
            "(SSHBackend(python='/path/to/venv/bin/python'))"
        )
    if config.project is not None:
        raise ConfigError(f"project= names a directory on this host; it is not built on {where}")
    if config.mounts:
        raise ConfigError(f"mounts name paths on this host; {where} cannot see them")
    if config.volumes and not packages_ok:
        raise ConfigError(f"volumes live on this host; {where} cannot mount them")
    if config.gpu is not None and not packages_ok:
        raise ConfigError(f"gpu= is not passed through over a stream to {where}")


async def start_over(
    process: RemoteProcess,
    config: SandboxConfig,
    init: dict[str, Any],
    *,
    where: str,
    walls: Walls,
    owner_timeout: float | None = OWNER_TIMEOUT,
    start_timeout: float = START_TIMEOUT,
    secrets_held: bool = False,
) -> StreamLaunch:
    """Start a driver over ``process``: ship it, agree on its walls, send its init.

    ``walls="bwrap"`` uses the far side's bubblewrap as ``config.isolation``
    says (and says what is missing); ``"container"`` trusts a container that is
    already the wall (Modal) and runs no bubblewrap inside it. ``secrets_held``:
    the far side's environment already holds the config's secrets (Modal's
    secrets), so only their names are sent.
    """
    launch = StreamLaunch(process, where)
    try:
        bundle = driver_bundle()
        launch.writer.write(struct.pack("!Q", len(bundle)) + bundle)
        try:
            hello = await asyncio.wait_for(launch.read_hello(), start_timeout)
        except TimeoutError:
            raise SandboxDied(
                "failed_to_start",
                f"{where} did not say hello within {start_timeout:g}s. {launch.log_tail()}".strip(),
            ) from None
        except protocol.ProtocolError as exc:
            raise SandboxDied(
                "failed_to_start", f"{where} does not speak sandlot's start-up: {exc}"
            ) from None
        launch.hello = hello
        if walls == "container":
            use_bwrap = False
        else:
            if config.isolation == "bubblewrap" and not hello["bwrap"]:
                raise ConfigError(
                    f"isolation='bubblewrap' was asked for, but on {where}: "
                    f"{hello['problem'][:300]}; install bubblewrap there or use isolation='auto'"
                )
            use_bwrap = hello["bwrap"] and config.isolation != "none"
        gaps = far_side_gaps(use_bwrap, walls, config)
        if gaps and config.isolation == "auto" and where not in _warned:
            _warned.add(where)
            warnings.warn(
                f"sandlot: sandboxes on {where} lack: " + "; ".join(gaps) + ".",
                IsolationWarning,
                stacklevel=4,
            )
        drop = hello["root"] and walls == "bwrap"
        secrets = secret_values(config)
        settings = {
            "t": "start",
            "bwrap": use_bwrap,
            "network": config.network,
            "drop": drop,
            # Secrets the container already holds (Modal's) are only named: the far side
            # copies them from its own environment.
            "env": {**config.env, **({} if secrets_held else secrets)},
            "pass": sorted(secrets) if secrets_held else [],
        }
        limits = {"nofile": config.max_open_files, **disk.disk_limits(config)}
        if config.max_cpu_seconds is not None:
            limits["cpu"] = config.max_cpu_seconds
        if config.memory_mb is not None and walls == "bwrap":
            limits["as"] = config.memory_mb << 20  # no cgroup over there: the per-process limit
        launch.workdir = WORKDIR_INSIDE if use_bwrap else hello["workdir"]
        full = {
            **init,
            "workdir": launch.workdir,
            "limits": limits,
            "drop_to": (SANDBOX_UID, SANDBOX_UID) if drop else None,
            "owner_timeout": owner_timeout,
            "exit_with_host": True,
        }
        launch.writer.write(protocol.encode(settings) + protocol.encode(full))
    except BaseException:
        await launch.cleanup()
        raise
    if owner_timeout is not None:
        launch.start_pings(owner_timeout / 4)
    return launch


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
        if code > 128 and code - 128 in signal.valid_signals():
            name = signal.Signals(code - 128).name
            return "killed", f"the driver on {self.where} was killed by {name}. {tail}".strip()
        return "crashed", f"the driver on {self.where} exited with status {code}. {tail}".strip()

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
                "backend=SSHBackend('host') (sandlot.backends.stream)"
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
