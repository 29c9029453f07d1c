"""``AsyncSandbox``: one isolated, live Python interpreter with processes and files.

The sandbox holds the policy (timeouts, lifetime, tools, errors); its backend
only starts the driver and reports how it ended. ``Sandbox`` in
:mod:`sandlot.sync` is the blocking twin of this class.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import dataclasses
import fcntl
import os
import termios
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from . import backends, snapshots
from .backends import BackendSpec
from .backends.base import Backend, Launched
from .channel import Channel, Closed, Request, Violation, cell_waits
from .config import Mount, SandboxConfig
from .driver import protocol
from .errors import (
    FILE_OPS,
    CallTimeout,
    CodeError,
    DeathCause,
    SandboxDied,
    SandboxError,
    error_from_reply,
)
from .files import AsyncFiles
from .link import Link
from .results import (
    CodeResult,
    ExecResult,
    ExecutionError,
    OutputChunk,
    RestoreResult,
    SnapshotResult,
)
from .router import Router
from .serving.library import ExposeAs, McpServerSpec, RemoteLibrary, serve_interface
from .signatures import same_parameters
from .tasks import TaskScope
from .untar import DownloadResult

STARTUP_TIMEOUT = 60.0
ARGV_INLINE = 64 << 10  # argv bytes that travel in the request's header; more go as its input
FILE_OP_IDLE = 120.0  # seconds a file operation waits for the sandbox's next message
_live: weakref.WeakSet[AsyncSandbox] = weakref.WeakSet()


class _ChannelEnd:
    """The host's end of a channel that is a local socket, for the start-up timeout to describe.

    Bytes waiting there at the timeout were sent by the driver and never seen by
    this process's event loop (it was not woken for the socket); none means the
    driver did not send. A descriptor that is no longer the socket it was made as
    was closed or replaced by something else in this process, behind the loop's back.
    """

    def __init__(self, writer: object) -> None:
        transport = getattr(writer, "transport", None)
        self.socket = None if transport is None else transport.get_extra_info("socket")
        self.inode = self._inode()

    def _inode(self) -> int | None:
        try:
            return None if self.socket is None else os.fstat(self.socket.fileno()).st_ino
        except OSError:
            return None

    def note(self) -> str:
        """What became of the channel, in words after a space ('' where it cannot be told)."""
        if self.socket is None or self.inode is None or (fd := self.socket.fileno()) < 0:
            return ""
        if self._inode() != self.inode:
            return (
                f" (its channel's descriptor {fd} is no longer the socket it was: something "
                "else in this process closed or replaced it, unknown to the event loop)"
            )
        waiting = array.array("i", [0])
        try:
            fcntl.ioctl(fd, termios.FIONREAD, waiting)
        except OSError:
            return ""
        if waiting[0] == 0:
            return " (nothing from it waits unread on the channel)"
        return (
            f" ({waiting[0]} bytes from it wait unread on the channel: this process's "
            "event loop was not woken for them)"
        )


def live_sandboxes() -> list[AsyncSandbox]:
    """Sandboxes started in this process and not yet terminated."""
    return [sb for sb in _live if sb.is_alive]


class AsyncSandbox:
    """An isolated sandbox; ``async with AsyncSandbox(config) as sb`` starts and ends it."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        backend: BackendSpec = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.backend: Backend = backends.resolve(backend)
        self._shown: list[Mount] = []  # host directories its start adds (a fork's snapshot)
        self.router = Router()
        for name, fn in (tools or {}).items():
            self.router.register(name, fn)
        # The requests of the layers above (files, served libraries): see sandlot.link.
        self.link: Link = _SandboxLink(self)
        self.files = AsyncFiles(self.link)
        self._launch: Launched | None = None
        self._channel: Channel | None = None
        self._dead: SandboxDied | None = None
        self._ended_by: tuple[DeathCause, str] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._busy = 0
        self._tasks = TaskScope("a sandbox")  # its exit watch and what its timers start
        self._death_lock = asyncio.Lock()
        # The driver's pid, python and executable, once started; and how the backend
        # started it ("template" or "cold"), where it says so.
        self.info: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it was started on
        self.loop_thread: threading.Thread | None = None
        self.restored: RestoreResult | None = None  # what load_snapshot brought back, if called

    # -- lifetime --------------------------------------------------------------

    @property
    def is_alive(self) -> bool:
        """True between a successful ``start`` and the sandbox's end (or the host's ending it)."""
        return self._channel is not None and self._dead is None and self._ended_by is None

    @property
    def started(self) -> bool:
        """True once ``start`` has been called (even if the sandbox has ended since)."""
        return self._launch is not None

    @property
    def workdir(self) -> str:
        """The sandbox's working directory as its code sees it."""
        return self._require_launch().workdir

    async def start(self) -> Self:
        """Start the sandbox and wait until its interpreter is ready."""
        if self._launch is not None:
            raise SandboxError("this sandbox was already started; create a new one")
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.current_thread()
        init = {
            "t": "init",
            "max_output_bytes": self.config.max_output_bytes,
            "tools": [{"name": t.name, "doc": t.doc} for t in self.router.tools.values()],
        }
        config = self.config
        if self._shown:  # not in self.config: its own forks and copies name no such mount
            config = config.model_copy(update={"mounts": [*config.mounts, *self._shown]})
        launch = await self.backend.launch(config, init)  # it sends init, completed
        self._launch = launch
        channel = Channel(launch.reader, launch.writer, self.router.call, self._on_end)
        channel_end = _ChannelEnd(launch.writer)
        ready: protocol.Header | None = None
        problem = ""
        try:
            first = await asyncio.wait_for(channel.read_frame(), STARTUP_TIMEOUT)
            if first is not None:
                ready = first[0][0]
                if ready["t"] != "ready":
                    raise protocol.ProtocolError(
                        f"its first message is {ready['t']!r}, not 'ready'"
                    )
        except TimeoutError:
            ready = None
            problem = f"the driver sent nothing within {STARTUP_TIMEOUT:g} s of its start"
            problem += channel_end.note()
        except protocol.ProtocolError as exc:
            ready, problem = None, f"the driver broke the protocol at start-up: {exc}"
        except BaseException:  # cancelled while it started: it must not outlive the caller
            launch.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(launch.wait(), 5)
            await launch.cleanup()
            raise
        if ready is None or not ready["ok"]:
            # Ended by the host's watch (its disk, its memory) before it was ready: say that.
            cause, why = launch.death_cause() if ready is None else ("crashed", "")
            launch.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(launch.wait(), 5)
            if cause in ("disk", "out_of_memory"):
                await launch.cleanup()
                raise SandboxDied(cause, f"while starting: {why}")
            detail = problem
            if ready is not None:
                err = ready.get("error") or {"name": "Error", "value": "no detail"}
                detail = f"{err['name']}: {err['value']}\n{err.get('traceback', '')}"
            await launch.cleanup()
            said = "\n".join(p for p in (detail.strip(), launch.log_tail().strip()) if p)
            raise SandboxDied(
                "failed_to_start",
                said or f"the driver ended before it was ready: {why or 'no detail'}",
            )
        self.info = {k: ready[k] for k in ("pid", "python", "executable") if k in ready}
        if isinstance(started := getattr(launch, "started", None), str):
            self.info["started"] = started
        self._channel = channel
        channel.start()
        self._tasks.spawn(self._watch_exit())
        if self.config.timeout is not None:
            self._set_timer("lifetime", self.config.timeout)
        self._touch()
        _live.add(self)
        return self

    async def terminate(self) -> None:
        """End the sandbox and every process in it; safe to call more than once."""
        if self._launch is None:
            return
        if self._dead is not None and self._channel is None:
            # It died on its own: wait for the cleanup that may still be running.
            async with self._death_lock:
                return
        await self._end("terminated", "terminate() was called")

    async def __aenter__(self) -> Self:
        return self if self.started else await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.terminate()

    def _set_timer(self, name: str, delay: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        cause: DeathCause = "lifetime" if name == "lifetime" else "idle"
        detail = (
            f"the sandbox's lifetime of {delay:g}s (SandboxConfig.timeout) ran out"
            if name == "lifetime"
            else f"no call for {delay:g}s (SandboxConfig.idle_timeout)"
        )
        self._timers[name] = loop.call_later(
            delay, lambda: self._tasks.spawn(self._end(cause, detail))
        )

    def _touch(self) -> None:
        if self.config.idle_timeout is not None and self._busy == 0:
            self._set_timer("idle", self.config.idle_timeout)

    async def _end(self, cause: DeathCause, detail: str) -> None:
        """Kill the sandbox on the host's initiative and release everything."""
        if self._ended_by is None:
            self._ended_by = (cause, detail)
        launch = self._launch
        if launch is None:
            return
        launch.kill()
        await self._settle()

    async def _watch_exit(self) -> None:
        assert self._launch is not None
        await self._launch.wait()
        await self._settle()

    async def _on_end(self, reason: BaseException) -> BaseException:
        # The connection ended: the driver is gone or going. Wait for it briefly;
        # one that broke the protocol is killed at once.
        launch = self._launch
        assert launch is not None
        if isinstance(reason, Violation):
            if self._ended_by is None:
                self._ended_by = ("protocol", f"{reason}; the host killed the sandbox")
            launch.kill()
        try:
            await asyncio.wait_for(launch.wait(), 2)
        except TimeoutError:
            launch.kill()
        return self._death()

    async def _violation(self, problem: str) -> SandboxDied:
        """End a sandbox that sent a reply the protocol does not allow."""
        await self._end("protocol", f"the sandbox broke the protocol: {problem}")
        return self._death()

    async def _reply(self, header: protocol.Header, op: str, what: str) -> protocol.Header:
        """Check a ``res`` message: a failed one raises its error, a malformed one kills.

        Every reply a sandbox sends passes here, so the errors of every request
        are mapped to exceptions in one place (:func:`sandlot.errors.error_from_reply`).
        """
        if not header["ok"]:
            raise error_from_reply(op, header.get("error") or _NO_DETAIL, what)
        try:
            protocol.check(header, protocol.REPLIES[op], f"the reply to {op!r}")
        except protocol.ProtocolError as exc:
            raise await self._violation(str(exc)) from None
        return header

    async def _value(self, header: protocol.Header, payload: bytes) -> tuple[Any, bytes]:
        """The encoded value a reply carries; a malformed one kills the sandbox."""
        try:
            return protocol.take_value(header, payload)
        except protocol.ProtocolError as exc:
            raise await self._violation(str(exc)) from None

    def _cell_limit(self) -> int:
        """The most output, and the longest value, a cell keeps (the same rule as the driver's)."""
        return min(self.config.max_output_bytes, protocol.MAX_CELL_OUTPUT)

    def _death(self) -> SandboxDied:
        if self._dead is None:
            assert self._launch is not None
            if self._ended_by is not None:
                cause, detail = self._ended_by
            else:
                cause, detail = self._launch.death_cause()
            self._dead = SandboxDied(cause, detail)
        return self._dead

    async def _settle(self) -> None:
        """Once the driver has exited: fail what is in flight and release resources."""
        async with self._death_lock:
            launch, channel = self._launch, self._channel
            if launch is None or (self._dead is not None and channel is None):
                return
            with contextlib.suppress(Exception):
                await asyncio.wait_for(launch.wait(), 10)
            dead = self._death()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            if channel is not None:
                channel.close(dead)
            self._channel = None
            _live.discard(self)
            try:
                await launch.cleanup()
            finally:
                try:
                    if channel is not None:
                        await channel.tasks.close()
                finally:
                    await self._tasks.close()  # the exit watch, the timers' ends

    # -- plumbing --------------------------------------------------------------

    def _require_launch(self) -> Launched:
        if self._launch is None:
            raise SandboxError("the sandbox is not started; call start() or use 'with'")
        return self._launch

    def _cell_waits(self) -> bool:
        """Whether the code running now is a host function this sandbox's cell waits on."""
        return self._channel is not None and cell_waits(self._channel)

    def _refuse_in_cells_call(self, op: str) -> None:
        """Raise if ``op``, which runs in the REPL's turn, would wait for the cell waiting here."""
        if self._cell_waits():
            raise SandboxError(
                f"{op}: this sandbox's cell is waiting on the host function that asks for it, "
                "and it would wait for that cell to end: return first, or do it after "
                "(a snapshot or fork of the caller works from there)"
            )

    def _require_channel(self) -> Channel:
        if self._dead is not None or self._ended_by is not None:
            # Ended, or being ended: the kill is sent, but the kernel ends the processes when
            # they next run, and on a busy machine the driver could still answer meanwhile.
            raise self._death()
        if self._channel is None:
            raise SandboxError("the sandbox is not started; call start() or use 'with'")
        return self._channel

    @contextlib.asynccontextmanager
    async def _request(
        self, op: str, payload: bytes = b"", **fields: Any
    ) -> AsyncIterator[Request]:
        """Send a request; cancel it in the sandbox if the caller gives up on it.

        What the reply may hold is bounded per ``op`` (a forged reply cannot make
        the host buffer more), and a file operation whose sandbox goes silent for
        :data:`FILE_OP_IDLE` seconds ends the sandbox instead of waiting forever.
        """
        channel = self._require_channel()
        if op in protocol.REPL_OPS and op not in protocol.IN_CALL_OPS:  # wait for the cell
            self._refuse_in_cells_call(op)
        if op == "run_code":  # output and value, each held to the cell's limit, and some room
            max_reply = 2 * self._cell_limit() + (1 << 20)
        else:
            max_reply = protocol.MAX_MESSAGE if op == "invoke" else 0
        quiet = FILE_OP_IDLE if op in FILE_OPS else None
        req = channel.request(op, payload, max_reply=max_reply, idle=quiet, **fields)
        self._busy += 1
        idle = self._timers.pop("idle", None)
        if idle is not None:
            idle.cancel()
        finished = False
        try:
            yield req
            finished = True
        except SandboxDied:
            raise
        except Closed:
            raise self._death() from None
        except TimeoutError:
            if req.idle is None:
                raise
            await self._end(
                "timeout",
                f"the sandbox sent nothing for {req.idle:g}s while the host waited on {op!r}; "
                "the host ended it rather than wait for its lifetime",
            )
            raise self._death() from None
        finally:
            self._busy -= 1
            if not finished and self._dead is None and self._channel is not None:
                with contextlib.suppress(Exception):
                    req.cancel()
            req.done()
            if self._dead is None:
                self._touch()

    def register_tool(self, name: str, fn: Callable[..., Any], doc: str | None = None) -> None:
        """Expose host function ``fn`` to sandboxed code as ``name``.

        Code in the REPL calls it like a local function; arguments and results
        cross as JSON values. If it raises, the code sees a ``ToolError`` with
        its message. May be called before or after ``start``.
        """
        tool = self.router.register(name, fn, doc)
        if self.is_alive:
            self._require_channel().request("define_tool", name=tool.name, doc=tool.doc).done()

    # -- the REPL ----------------------------------------------------------------

    async def run_code(
        self,
        code: str,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> CodeResult:
        """Run ``code`` in the sandbox's persistent interpreter, like a notebook cell.

        Errors raised by the code come back in ``result.error``; with
        ``raise_on_error=True`` they raise :class:`CodeError`. When ``timeout``
        runs out the code is interrupted and the interpreter keeps its state; if
        the code ignores the interrupt for ``config.interrupt_grace`` seconds the
        sandbox is killed and :class:`SandboxDied` says so.
        """
        timed_out = False
        async with self._request("run_code", code=code) as req:
            try:
                header, payload = await asyncio.wait_for(req.result(), timeout)
            except TimeoutError:
                timed_out = True
                req.cancel()
                grace = self.config.interrupt_grace
                try:
                    header, payload = await asyncio.wait_for(req.result(), grace)
                except TimeoutError:
                    await self._end(
                        "timeout",
                        (
                            f"the code ran past its {timeout:g}s timeout and ignored the interrupt "
                            f"for {grace:g}s, so the sandbox was killed; its interpreter state and "
                            "running processes are lost"
                        ),
                    )
                    raise self._death() from None
        header = await self._reply(header, "run_code", "run_code")
        out, err_len, val = header["out"], header["err"], header["val"]
        if out + err_len + (val or 0) != len(payload):
            raise await self._violation("run_code's lengths do not add up to its payload")
        limit = self._cell_limit()
        truncated = header["truncated"] or out + err_len > limit + _MARKER_ROOM
        value = None if val is None else _text(payload[out + err_len :], limit + _MARKER_ROOM)
        err = header["error"]
        error = ExecutionError(err["name"], err["value"], err.get("traceback", "")) if err else None
        if timed_out and error is not None and error.name == "KeyboardInterrupt":
            error = ExecutionError(
                "TimeoutError",
                f"interrupted after the {timeout:g}s timeout; the interpreter is alive and "
                "keeps its state",
                error.traceback,
            )
        if error is not None and raise_on_error:
            if timed_out:
                raise CallTimeout(error.value)
            raise CodeError(error.name, error.value, error.traceback)
        return CodeResult(
            stdout=_text(payload[:out], limit + _MARKER_ROOM),
            stderr=_text(payload[out : out + err_len], max(0, limit - out)),
            value=value,
            error=error,
            truncated=truncated,
            timed_out=timed_out,
        )

    # -- serving -----------------------------------------------------------------

    async def serve(
        self,
        path: str | Path,
        expose_as: ExposeAs = "library",
        name: str | None = None,
    ) -> RemoteLibrary | McpServerSpec | str:
        """Import interface file ``path`` here once and serve its ``@expose`` functions.

        Models in ``config.models`` load first, and the interface sees them as
        globals (``model``, ``tokenizer``) and through ``sandlot.models``.
        ``expose_as="library"`` returns a :class:`RemoteLibrary` (callable from
        the host, installable in a workspace); ``"mcp"`` the functions as MCP
        tools with JSON schemas; ``"prompt"`` a text documenting them for an LM.
        """
        return await serve_interface(self, path, expose_as, name)

    # -- files -------------------------------------------------------------------

    async def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory to ``remote`` (relative to the workdir)."""
        await self.files.upload(local, remote)

    async def download(self, remote: str, local: str | Path) -> DownloadResult:
        """Copy a sandbox file or directory to the host path ``local``.

        A shortcut for ``files.download`` with its default caps; pass
        ``max_bytes``/``max_members`` there to change them.
        """
        return await self.files.download(remote, local)

    # -- snapshots ---------------------------------------------------------------

    async def snapshot(
        self, path: str | Path, *, max_bytes: int = snapshots.DEFAULT_MAX_BYTES
    ) -> SnapshotResult:
        """Write the REPL's variables and the workdir's files to the file ``path``.

        Taken between cells, so the REPL is at rest; or, while the running cell
        waits on a host call (a host function snapshotting its caller, or any
        snapshot asked for meanwhile), there, with the cell paused at the call.
        The files are read after it. Functions and classes defined in cells
        travel by value, modules as their names; a variable pickle cannot hold
        (a thread, a socket, an open file) is named in ``result.skipped`` with
        the reason, and warned about.
        Processes, the REPL's open files and its environment changes are not
        kept. The file (mode 0600) holds what the REPL holds, secrets included.
        More than ``max_bytes`` in all raises :class:`DownloadRefused`, and no
        file is written.
        """
        return await snapshots.take(self, Path(path), max_bytes)

    async def load_snapshot(self, path: str | Path | snapshots.Snapshot) -> RestoreResult:
        """Put snapshot ``path``'s files in the workdir and its variables in the REPL.

        The file is checked first (a changed, cut or foreign one raises
        :class:`SnapshotInvalid` and nothing is loaded); what
        cannot come back here is named in ``result.failed``, and warned about.
        Unpickling runs the snapshot's code, in this sandbox. ``path`` may be
        what :func:`sandlot.snapshots.check` returned, to check a file once
        for many sandboxes.
        """
        self._refuse_in_cells_call("load_snapshot")  # before its files change anything
        if isinstance(path, snapshots.Snapshot):
            snap = path
        else:
            snap = await asyncio.to_thread(snapshots.check, path)
        self.restored = await snapshots.load(self, snap)
        return self.restored

    @classmethod
    async def restore(
        cls,
        path: str | Path,
        config: SandboxConfig | None = None,
        *,
        backend: BackendSpec = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> Self:
        """Start a sandbox with ``config`` and load snapshot ``path`` into it.

        Any backend will do (this host, an SSH host, a Ray node), with the
        Python the snapshot was taken with for functions defined in cells.
        What came back is in ``sb.restored``; a snapshot that cannot be used
        ends the new sandbox and raises.
        """
        snap = await asyncio.to_thread(snapshots.check, path)  # before any sandbox starts
        return await cls(config, backend=backend, tools=tools)._start_from(snap)

    async def _start_from(self, snap: snapshots.Snapshot, shown: bool = False) -> Self:
        """Start, then load checked snapshot ``snap``; a load that fails ends the sandbox.
        ``shown``: with the snapshot's directory mounted read-only, the sandbox reads it
        there (:data:`snapshots.FORK_INSIDE`) instead of being sent its bytes."""
        if shown:
            self._shown = [Mount(source=str(snap.path.parent), target=snapshots.FORK_INSIDE)]
        await self.start()
        try:
            if shown:
                inside = f"{snapshots.FORK_INSIDE}/{snap.path.name}"
                self.restored = await snapshots.load(self, snap, inside)
            else:
                await self.load_snapshot(snap)
        except BaseException:
            await self.terminate()
            raise
        return self

    async def fork(self, n: int = 1, *, config: SandboxConfig | None = None) -> list[Self]:
        """``n`` new sandboxes, each starting as a copy of this one's REPL and workdir.

        The copy is by value, through a :meth:`snapshot` in a private temporary
        directory: each child is a fresh sandbox (its own walls, interpreter,
        files, processes and limits, from ``config`` or this sandbox's), so
        what one does no other sees, this one included. The host's tools and
        routes come along, each call answered for the child that made it. What
        the snapshot could not hold is named in the warning and each child's
        ``restored``. No memory is shared (``docs/sandboxes.md`` says why). If
        a child fails to start, the others are ended and the error raised.
        """
        if n < 1:
            raise ValueError(f"fork needs n >= 1, not {n}")

        async def child(snap: snapshots.Snapshot, shown: bool) -> Self:
            sandbox = type(self)(config or self.config, backend=self.backend)
            sandbox.router.tools.update(self.router.tools)
            sandbox.router.routes.update(self.router.routes)
            return await sandbox._start_from(snap, shown)

        reads = getattr(self.backend, "reads_host_dirs", None)
        async with snapshots.private(self, "sandlot-fork-") as (_, snap):
            # Where the children are best given a host directory to read (a local backend,
            # see LocalBackend.reads_host_dirs), each reads the snapshot there: one file in
            # the page cache for all, none of it sent through a channel.
            size = snap.path.stat().st_size
            shown = bool(reads and reads(config or self.config, size))
            made = await asyncio.gather(
                *(child(snap, shown) for _ in range(n)), return_exceptions=True
            )
        children: list[Self] = []
        failed: list[BaseException] = []
        for item in made:
            if isinstance(item, BaseException):
                failed.append(item)
            else:
                children.append(item)
        if failed:
            await asyncio.gather(*(c.terminate() for c in children), return_exceptions=True)
            raise failed[0]
        return children

    # -- processes ---------------------------------------------------------------

    def _exec_fields(
        self,
        argv: Sequence[str],
        timeout: float | None,
        cwd: str | None,
        env: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        if not argv:
            raise ValueError("exec needs a command, such as exec('python', '-c', 'print(1)')")
        return {
            "argv": [str(a) for a in argv],
            "timeout": timeout,
            "cwd": cwd,
            "env": dict(env or {}),
            "limit": self.config.max_output_bytes,
        }

    def exec_stream(
        self,
        *argv: str,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
    ) -> AsyncProcess:
        """Start a command and iterate over its output as it is produced.

        ``async for chunk in sb.exec_stream(...)`` yields :class:`OutputChunk`;
        afterwards ``proc.result`` holds the :class:`ExecResult` (its stdout and
        stderr are empty: the output went to the iteration; when the command
        could not start, its stderr says why, as the last chunk did).
        """
        fields = self._exec_fields(argv, timeout, cwd, env)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return AsyncProcess(self, fields, data or None)

    @same_parameters(exec_stream)
    async def exec(self, *args: Any, **kwargs: Any) -> ExecResult:
        """Run a command in the sandbox and wait for it; its process group dies on timeout."""
        proc = self.exec_stream(*args, **kwargs)
        kept: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async for chunk in proc:
            kept[chunk.stream].append(chunk.data)
        assert proc.result is not None
        return dataclasses.replace(
            proc.result,
            stdout=b"".join(kept["stdout"]).decode("utf-8", "replace"),
            stderr=b"".join(kept["stderr"]).decode("utf-8", "replace"),
        )


class _SandboxLink:
    """The :class:`~sandlot.link.Link` a sandbox hands to the layers above it."""

    __slots__ = ("_sandbox",)

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    def request(
        self, op: str, payload: bytes = b"", **fields: Any
    ) -> contextlib.AbstractAsyncContextManager[Request]:
        return self._sandbox._request(op, payload, **fields)

    async def reply(self, header: protocol.Header, op: str, what: str) -> protocol.Header:
        return await self._sandbox._reply(header, op, what)

    async def value(self, header: protocol.Header, payload: bytes) -> tuple[Any, bytes]:
        return await self._sandbox._value(header, payload)

    async def violation(self, problem: str) -> SandboxDied:
        return await self._sandbox._violation(problem)

    def cell_waits(self) -> bool:
        return self._sandbox._cell_waits()

    def refuse_in_cells_call(self, op: str) -> None:
        self._sandbox._refuse_in_cells_call(op)


class AsyncProcess:
    """A streaming process; iterate it for output, then read ``result``."""

    def __init__(self, sandbox: AsyncSandbox, fields: dict[str, Any], stdin: bytes | None) -> None:
        self.sandbox = sandbox
        self.fields = fields
        self.stdin = stdin
        self.result: ExecResult | None = None
        self._gen: AsyncGenerator[OutputChunk] | None = None

    async def _chunks(self) -> AsyncGenerator[OutputChunk]:
        # The driver keeps to the output limit; the host holds it to the limit as well.
        sandbox = self.sandbox
        room = sandbox.config.max_output_bytes
        dropped = 0
        timeout = self.fields["timeout"]
        loop = asyncio.get_running_loop()
        # The driver kills the command at its timeout; the host does not rely on that.
        deadline = (
            None if timeout is None else loop.time() + timeout + sandbox.config.interrupt_grace
        )
        argv: list[str] = self.fields["argv"]
        # Input of any size crosses as the request's data frames: a long command line
        # (joined by NULs, which no argument can hold) first, then stdin.
        spilled = "\0".join(argv).encode("utf-8", "surrogateescape")
        inline = len(spilled) <= ARGV_INLINE
        fields = {
            **self.fields,
            "argv": argv if inline else [],
            "argv_frames": not inline,
            "stdin_frames": self.stdin is not None,
        }
        async with sandbox._request("exec", **fields) as req:
            if not inline:
                await req.send_all(spilled)
            if self.stdin is not None:
                await req.send_all(self.stdin)
            while True:
                try:
                    left = None if deadline is None else max(0.0, deadline - loop.time()) + 1.0
                    header, payload = await asyncio.wait_for(req.next(), left)
                except TimeoutError:
                    await sandbox._end(
                        "timeout",
                        f"the command ran past its {timeout:g}s timeout and the sandbox did not "
                        "end it, so the host killed the sandbox",
                    )
                    raise sandbox._death() from None
                if header["t"] == "res":
                    break
                stream = header.get("stream", "stdout")
                if stream not in ("stdout", "stderr"):  # the protocol's other stream is a kernel's
                    raise await sandbox._violation(f"a process's output on stream {stream!r}")
                part = payload[: max(room, 0)]
                room -= len(part)
                dropped += len(payload) - len(part)
                if part:
                    yield OutputChunk(stream, part)
            header = await self.sandbox._reply(header, "exec", f"exec {argv[0]!r}")
        if "spawn_error" in header:
            error = protocol.clip(header["spawn_error"], 2000)
            self.result = ExecResult(
                127, "", f"sandlot: cannot start the command: {error}\n", spawn_error=error
            )
            yield OutputChunk("stderr", self.result.stderr.encode())
            return
        self.result = ExecResult(
            returncode=header["returncode"],
            stdout="",
            stderr="",
            timed_out=header.get("killed") == "timeout",
            truncated=dropped > 0 or header.get("dropped", 0) > 0,
        )

    def __aiter__(self) -> AsyncGenerator[OutputChunk]:
        if self._gen is None:
            self._gen = self._chunks()
        return self._gen

    async def wait(self) -> ExecResult:
        """Consume the rest of the output and return the result."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def kill(self) -> None:
        """Stop reading: a command still running is killed with its process group.

        ``result`` stays None if it had not ended. Killing an ended process does nothing.
        """
        if self._gen is not None:
            await self._gen.aclose()

    @property
    def returncode(self) -> int | None:
        """The exit status, once the process has ended."""
        return None if self.result is None else self.result.returncode


_NO_DETAIL = {"name": "Error", "value": "the sandbox gave no detail"}
_MARKER_ROOM = 200  # the driver's truncation note may follow output cut at the limit


def _text(data: bytes, limit: int) -> str:
    """Decode output from a sandbox, held to ``limit`` bytes whatever it claims."""
    return data[:limit].decode("utf-8", "replace")
