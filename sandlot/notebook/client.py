"""Clients of the session server: start, attach to, list and end notebook sessions.

The handle (:class:`AsyncNotebookSession`) and its blocking twin
(:class:`NotebookSession`) live here together: a method added to one is declared
on the other beside it.

Every handle talks to the session server over its Unix socket (one connection
per handle), starting the server first if none runs. A handle that started a
session owns it unless the session was started with ``persist=True``: closing
that handle (or the process ending) ends the session. Any process of the same
user can :func:`aattach` by ``session_id``; two handles on one session see one
kernel, and each gets its own replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..config import SandboxConfig
from ..errors import ConfigError, SandboxError
from ..secrets import named_secrets
from ..serving.library import Library, RemoteLibrary
from ..sink import private_opener
from ..sync import Portal, Twin, blocking, blocking_twin, mirror
from ..tasks import TaskScope
from ..workspace import Workspace
from . import wire
from .execution import Execution, OnOutput
from .wire import (
    MAX_LINE,
    SOCKET_NAME,
    SUSPENDED,
    Mode,
    SessionInfo,
    SessionSpec,
    Variable,
    check_mode,
    sessions_dir,
)

R = TypeVar("R")
SERVER_START_TIMEOUT = 30.0


class SessionServerError(SandboxError):
    """The session server could not be started or reached; the message says why."""


def _spawn_server(folder: Path) -> None:
    """Start the session server in the background (its own session: it outlives us).

    It runs in ``folder``, not in our working directory: it serves every client of
    this user, so no client's directory may give its paths a meaning.
    """
    # The log may quote a sandbox (a kernel's last words): readable by this user only.
    log = open(folder / "server.log", "ab", opener=private_opener)  # noqa: SIM115 - to the child
    with log:
        subprocess.Popen(
            [sys.executable, "-c", "from sandlot.notebook.server import main; main()"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder,
            env={**os.environ, "SANDLOT_SESSIONS_DIR": str(folder)},
        )


async def _open(folder: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(folder / SOCKET_NAME), limit=MAX_LINE)


async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the session server, started first if none runs."""
    folder = sessions_dir()
    try:
        return await _open(folder)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    lock_fd = os.open(folder / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Polled on the loop, not waited for on a thread: a thread still queued when the
        # caller is cancelled would lock the number after the close below, maybe reused.
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.02)
        try:
            return await _open(folder)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        _spawn_server(folder)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            try:
                return await _open(folder)
            except (FileNotFoundError, ConnectionRefusedError):
                continue
        tail = (folder / "server.log").read_text(errors="replace")[-2000:]
        raise SessionServerError(
            f"the session server did not start within {SERVER_START_TIMEOUT:g}s; its log "
            f"({folder / 'server.log'}) ends with:\n{tail}"
        )
    finally:
        os.close(lock_fd)


class _Connection:
    """One connection to the server: requests by id, their events and replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ids = itertools.count(1)
        # Each request waiting: its future, where its outputs go, and what it asked.
        self.pending: dict[
            int, tuple[asyncio.Future[Any], OnOutput | None, type[wire.Request[Any]]]
        ] = {}
        self.tasks = TaskScope("a session server connection")
        self.task = self.tasks.spawn(self._read())

    async def _read(self) -> None:
        reason: BaseException = SessionServerError("the session server closed the connection")
        try:
            while line := await self.reader.readline():
                item = wire.decode_reply(line)
                rid = item.id
                entry = self.pending.get(rid) if rid is not None else None
                if rid is None or entry is None:
                    continue
                future, on_output, operation = entry
                if isinstance(item, wire.Output):
                    if on_output is not None:
                        with contextlib.suppress(Exception):
                            pending = on_output(item.output)
                            if pending is not None:
                                await pending
                    continue
                del self.pending[rid]
                if future.done():
                    continue
                if isinstance(item, wire.Failure):
                    future.set_exception(wire.rebuild(item.error))
                    continue
                try:
                    future.set_result(operation.reply.validate_python(item.result))
                except ValueError as exc:  # pydantic's ValidationError among them
                    future.set_exception(
                        SessionServerError(
                            f"the session server's reply to {operation.op!r} is malformed: {exc}"
                        )
                    )
        except (ValueError, ConnectionError) as exc:
            reason = SessionServerError(f"the session server's connection broke: {exc}")
        finally:
            for future, _, _ in self.pending.values():
                if not future.done():
                    future.set_exception(reason)
            self.pending.clear()

    async def call(self, request: wire.Request[R], on_output: OnOutput | None = None) -> R:
        """Send ``request`` and wait for its reply (``on_output`` gets a cell's outputs)."""
        rid = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = (future, on_output, type(request))
        if self.task.done():
            raise SessionServerError("the connection to the session server is closed")
        self.writer.write(wire.encode_request(rid, request))
        await self.writer.drain()
        result: R = await future
        return result

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        await self.tasks.close()


async def _connection() -> _Connection:
    reader, writer = await connect()
    return _Connection(reader, writer)


class AsyncNotebookSession:
    """A handle on a session held by the session server."""

    def __init__(self, conn: _Connection, info: SessionInfo) -> None:
        self._conn = conn
        self.info = info

    @property
    def session_id(self) -> str:
        """The id any process attaches by."""
        return self.info.session_id

    @property
    def kernel_id(self) -> str | None:
        return self.info.kernel_id

    @property
    def notebook_path(self) -> str | None:
        """The ``.ipynb`` this session writes (notebook mode)."""
        return self.info.notebook_path

    @property
    def mode(self) -> str:
        return self.info.mode

    @property
    def prompt(self) -> str:
        """What is loaded (models, skills, libraries), in words for an agent's prompt."""
        return self.info.prompt

    @property
    def status(self) -> str:
        """The status when last asked (:meth:`refresh` asks again)."""
        return self.info.status

    async def refresh(self) -> SessionInfo:
        """Ask the server for the session's state now."""
        self.info = await self._conn.call(wire.Info(session_id=self.session_id))
        return self.info

    async def execute(
        self,
        code: str,
        timeout: float | None = None,
        wait: float | None = None,
        on_output: OnOutput | None = None,
    ) -> Execution:
        """Run ``code`` as a new cell of the notebook.

        ``timeout`` interrupts the cell (and restarts the kernel if that does
        not stop it). ``wait`` returns after that many seconds with what came so
        far (``done`` False; :meth:`wait` gets the rest). ``on_output`` gets
        each output as it comes.
        """
        request = wire.Execute(
            session_id=self.session_id,
            code=code,
            timeout=timeout,
            wait=wait,
            stream=on_output is not None,
        )
        return await self._conn.call(request, on_output)

    async def wait(self, wait: float | None = None, on_output: OnOutput | None = None) -> Execution:
        """The latest cell: its end, or after ``wait`` seconds what it has so far."""
        request = wire.Wait(session_id=self.session_id, wait=wait, stream=on_output is not None)
        return await self._conn.call(request, on_output)

    async def edit_cell(
        self,
        code: str,
        cell_index: int = -1,
        timeout: float | None = None,
        wait: float | None = None,
        on_output: OnOutput | None = None,
    ) -> Execution:
        """Replace code cell ``cell_index`` (negative counts from the end) and run it again."""
        request = wire.Execute(
            session_id=self.session_id,
            code=code,
            cell_index=cell_index,
            timeout=timeout,
            wait=wait,
            stream=on_output is not None,
        )
        return await self._conn.call(request, on_output)

    async def add_markdown(self, text: str) -> int:
        """Add a markdown cell; return its position in the notebook."""
        return await self._conn.call(wire.AddMarkdown(session_id=self.session_id, text=text))

    async def variables(self) -> list[Variable]:
        """The kernel's variables: name, type and a short repr (no cell is added)."""
        return await self._conn.call(wire.Variables(session_id=self.session_id))

    async def interrupt(self) -> None:
        """Interrupt the running cell."""
        await self._conn.call(wire.Interrupt(session_id=self.session_id))

    async def restart(self) -> None:
        """Restart the kernel and warm it up again (models, skills, init code)."""
        await self._conn.call(wire.Restart(session_id=self.session_id))

    async def shutdown(self) -> None:
        """End the session for every client; the notebook file stays."""
        await self._conn.call(wire.Shutdown(session_id=self.session_id))
        await self.close()

    async def exec(self, command: str, timeout: float | None = None) -> dict[str, Any]:
        """Filesystem mode: run a shell command in the workspace."""
        request = wire.Exec(session_id=self.session_id, command=command, timeout=timeout)
        return await self._conn.call(request)

    async def read_file(self, path: str) -> str:
        """Filesystem and notebook modes: a file's text, from the session's workspace."""
        return await self._conn.call(wire.ReadFile(session_id=self.session_id, path=path))

    async def write_file(self, path: str, content: str) -> int:
        """Filesystem and notebook modes: write a file (its directories are made); its size."""
        request = wire.WriteFile(session_id=self.session_id, path=path, content=content)
        return await self._conn.call(request)

    async def list_files(self, path: str = ".") -> list[dict[str, Any]]:
        """Filesystem and notebook modes: a directory's entries (name, type, size)."""
        return await self._conn.call(wire.ListFiles(session_id=self.session_id, path=path))

    async def call_function(self, name: str, arguments: dict[str, Any]) -> Any:
        """MCP mode: call a served function by its tool name."""
        request = wire.CallFunction(session_id=self.session_id, name=name, arguments=arguments)
        return await self._conn.call(request)

    async def close(self) -> None:
        """Detach this handle (a session it started without ``persist`` ends with it)."""
        await self._conn.close()

    async def __aenter__(self) -> AsyncNotebookSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _local_libraries(workspace: Workspace | None) -> list[str]:
    """The paths of a :class:`Workspace`'s local libraries (served ones cannot cross over)."""
    local: list[str] = []
    for lib in workspace.libraries if workspace else []:
        if isinstance(lib, Library):
            local.append(str(lib.path))
        elif isinstance(lib, RemoteLibrary):
            raise ConfigError(
                f"library {lib.name!r} is served by this process; a session outlives it, so give "
                "its interface file instead: start_session(..., serve=['interface.py'])"
            )
    return local


async def astart_session(
    config: SandboxConfig | None = None,
    workspace: Workspace | None = None,
    notebook: str | Path | None = None,
    name: str | None = None,
    *,
    skills: Sequence[str | Path] = (),
    init_code: str | Sequence[str] = (),
    mode: Mode = "notebook",
    persist: bool = False,
    idle_timeout: float | None = 3600.0,
    backend: str | None = None,
    notebook_dir: str | Path | None = None,
    serve: Sequence[str | Path] = (),
    serve_config: SandboxConfig | None = None,
    on_existing: str = "continue",
    cell_timeout: float | None = None,
) -> AsyncNotebookSession:
    """Start a session and return a handle once it is warm.

    In notebook mode the kernel has, before this returns, the config's models
    (``model``, ``tokenizer``, or the names given), the ``skills`` (Markdown
    files or directories of them), the workspace's libraries and the libraries
    served from ``serve`` (interface files, each in a sandbox of its own)
    importable, and ``init_code`` run. ``notebook`` is the ``.ipynb`` written
    as cells run (an existing one is continued, or re-run with
    ``on_existing="rerun"``); without it one is made in ``notebook_dir``
    (default ``./notebooks``). ``persist=True`` lets the session outlive this
    handle until it idles ``idle_timeout`` seconds or is shut down.
    """
    codes = [init_code] if isinstance(init_code, str) else list(init_code)
    spec = SessionSpec(
        config=config or SandboxConfig(),
        mode=check_mode(mode),
        name=name,
        backend=backend,
        notebook=None if notebook is None else str(notebook),
        notebook_dir=None if notebook_dir is None else str(notebook_dir),
        on_existing=on_existing,
        skills=[str(s) for s in skills],
        init_code=codes,
        libraries=_local_libraries(workspace),
        serve=[str(s) for s in serve],
        serve_config=serve_config,
        persist=persist,
        idle_timeout=idle_timeout,
        cell_timeout=cell_timeout,
    )
    # The session server may have been started from another environment: the named
    # secrets' values are read here, where the caller set them, and go along (over the
    # user-only socket) with the start.
    names = [*spec.config.secrets, *(spec.serve_config.secrets if spec.serve_config else [])]
    secrets = named_secrets(names, os.environ)
    conn = await _connection()
    try:
        info = await conn.call(wire.Start(spec=spec.model_dump(mode="json"), secrets=secrets))
    except BaseException:
        await conn.close()
        raise
    return AsyncNotebookSession(conn, info)


async def aattach(session_id: str) -> AsyncNotebookSession:
    """A handle on session ``session_id``, from any process of this user."""
    conn = await _connection()
    try:
        info = await conn.call(wire.Info(session_id=session_id))
    except BaseException:
        await conn.close()
        raise
    return AsyncNotebookSession(conn, info)


async def alist_sessions() -> list[SessionInfo]:
    """The sessions the session server holds.

    With no server running: none, without starting one, unless an earlier
    server left suspended sessions for the next to take up (then one starts).
    """
    folder = sessions_dir()
    try:
        reader, writer = await _open(folder)
    except (FileNotFoundError, ConnectionRefusedError):
        if not any((folder / SUSPENDED).glob("*.json")):
            return []
        reader, writer = await connect()
    conn = _Connection(reader, writer)
    try:
        return await conn.call(wire.ListSessions())
    finally:
        await conn.close()


async def ashutdown_session(session_id: str) -> None:
    """End session ``session_id`` for every client."""
    conn = await _connection()
    try:
        await conn.call(wire.Shutdown(session_id=session_id))
    finally:
        await conn.close()


class NotebookSession(Twin):
    """Blocking twin of :class:`AsyncNotebookSession`."""

    def __init__(self, inner: AsyncNotebookSession, portal: Portal) -> None:
        self._async = inner
        self._portal = portal

    info = mirror[SessionInfo]("info")
    session_id = mirror(AsyncNotebookSession.session_id)
    kernel_id = mirror(AsyncNotebookSession.kernel_id)
    notebook_path = mirror(AsyncNotebookSession.notebook_path)
    mode = mirror(AsyncNotebookSession.mode)
    prompt = mirror(AsyncNotebookSession.prompt)
    status = mirror(AsyncNotebookSession.status)
    refresh = blocking(AsyncNotebookSession.refresh)
    execute = blocking(AsyncNotebookSession.execute)
    wait = blocking(AsyncNotebookSession.wait)
    edit_cell = blocking(AsyncNotebookSession.edit_cell)
    add_markdown = blocking(AsyncNotebookSession.add_markdown)
    variables = blocking(AsyncNotebookSession.variables)
    interrupt = blocking(AsyncNotebookSession.interrupt)
    restart = blocking(AsyncNotebookSession.restart)
    shutdown = blocking(AsyncNotebookSession.shutdown)
    exec = blocking(AsyncNotebookSession.exec)
    read_file = blocking(AsyncNotebookSession.read_file)
    write_file = blocking(AsyncNotebookSession.write_file)
    list_files = blocking(AsyncNotebookSession.list_files)
    call_function = blocking(AsyncNotebookSession.call_function)
    close = blocking(AsyncNotebookSession.close)

    def __enter__(self) -> NotebookSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


start_session = blocking_twin(astart_session, into=NotebookSession)
attach = blocking_twin(aattach, into=NotebookSession)
list_sessions = blocking_twin(alist_sessions)
shutdown_session = blocking_twin(ashutdown_session)
