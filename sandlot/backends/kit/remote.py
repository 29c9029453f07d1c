"""A driver at the far end of a remote process's stdin and stdout, as the host starts it.

The SSH backend (a local command such as ``ssh HOST``, ``docker exec -i``,
``kubectl exec -i``) and the Modal backend (a container process) differ only in
how they start that process; each adapts it to :class:`RemoteProcess` and
hands it to :func:`start_over`. The process runs
:data:`~sandlot.backends.kit.bootstrap.BOOTSTRAP` with ``python3 -I -c`` (a few
hundred bytes: command lines have caps, 64 KiB on Modal), which reads the
driver package from stdin as a length-prefixed zip, unpacks it into a fresh
private temporary directory and hands over to :mod:`sandlot.driver.farside`,
which says ``hello``, takes its settings, and runs the driver on the same stdin
and stdout, under bubblewrap when the far side has a working one. Frames then
flow both ways over the one stream, host calls included; the host parses them
from chunks of any size.

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
:class:`~sandlot.errors.SandboxDied` (``failed_to_start``) and kill the process;
after the start, the channel's own bounds apply. A dropped connection ends the
sandbox with cause ``connection_lost``.

What the far side does not have is said once per destination, as the local
backend says it (:class:`~sandlot.backends.kit.bootstrap.IsolationWarning`):
there is no cgroup, seccomp filter or disk watch over there, only bubblewrap's
walls (when present) and per-process rlimits. Config the far side cannot honour
(``python_packages``, ``mounts``, ``volumes``, ``gpu``) is a ConfigError, never
ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import struct
import warnings
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from ...config import SandboxConfig
from ...driver import protocol
from ...driver.places import SANDBOX_UID, WORKDIR_INSIDE
from ...errors import ConfigError, DeathCause, SandboxDied
from ...secrets import secret_values
from ...tasks import TaskScope
from .. import disk
from .bootstrap import OWNER_TIMEOUT, START_TIMEOUT, IsolationWarning, driver_bundle
from .flow import QueuedSink, Valve

SEND_CHUNK = 1 << 20  # most bytes written to the far side's stdin before each drain
HELLO_MAX = 1 << 12  # most bytes of the far side's hello header
FINISH_TIMEOUT = 10.0  # seconds the process gets to exit after its output ended
LOG_CHUNKS = 64  # pieces of the process's stderr kept, each at most LOG_PIECE bytes
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


Walls = Literal["bwrap", "container"]


class RemoteProcess(Protocol):
    """A started process whose stdin and stdout reach the far side (the stream's two ends).

    :class:`~sandlot.backends.ssh.CommandProcess` is one for a local command
    (``ssh``, ``docker exec -i``); :mod:`sandlot.backends.modal` adapts a Modal
    container process.
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


def driver_exit(driver: str, code: int, tail: str) -> tuple[DeathCause, str]:
    """Why ``driver`` (in words: "the driver on ssh gpu-box") ended with exit status ``code``:
    killed by signal N for a status of 128 + N, as a shell reports it, else crashed."""
    if code > 128 and code - 128 in signal.valid_signals():
        name = signal.Signals(code - 128).name
        return "killed", f"{driver} was killed by {name}. {tail}".strip()
    return "crashed", f"{driver} exited with status {code}. {tail}".strip()


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
