"""The session server: the one owner of this user's notebook sessions.

It listens on a Unix socket in a directory only its user can enter
(``$SANDLOT_SESSIONS_DIR``, default ``$TMPDIR/sandlot-UID/sessions``) and is
started on demand by the first client (:func:`sandlot.notebook.client.connect`).
Clients speak JSON lines: ``{"id", "op", ...}`` in; ``{"id", "ok", "result"}``
or ``{"id", "ok": false, "error"}`` back, and ``{"id", "event": "output"}``
while a cell the client waits on prints.

Lifetimes nest: a session belongs to the connection that started it unless it
was started with ``persist``; a persistent one ends at its idle timeout or on
``shutdown``. The server ends its sessions when it stops (SIGTERM, SIGINT), and
its sandboxes die with it if it is killed. With no session and no client for
``$SANDLOT_SESSIONS_LINGER`` seconds (default 60) it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..secrets import carry_secrets
from ..tasks import TaskScope
from .execution import Execution
from .session import OwnedSession, SessionError, SessionSpec

MAX_LINE = 64 << 20
SOCKET_NAME = "server.sock"


def sessions_dir() -> Path:
    """This user's session directory: the socket, the lock and the server's log."""
    configured = os.environ.get("SANDLOT_SESSIONS_DIR")
    if configured:
        folder = Path(configured).expanduser().absolute()
    else:
        from ..backends.local import _state_root

        folder = _state_root() / "sessions"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"{folder} must be a directory of yours closed to others (mode 0700): it holds the "
            "socket that controls your sessions"
        )
    return folder


class Server:
    """Sessions by id, and the clients connected now."""

    def __init__(self, folder: Path, linger: float) -> None:
        self.folder = folder
        self.linger = linger
        self.sessions: dict[str, OwnedSession] = {}
        self.owned_by: dict[str, int] = {}  # session id -> the connection that owns it
        self.connections = 0
        self.quiet_since = time.monotonic()
        self.stopping = asyncio.Event()

    # -- connections ---------------------------------------------------------------

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        conn = id(writer)
        lock = asyncio.Lock()
        tasks = TaskScope("a session server connection")  # its requests' answers

        async def send(item: dict[str, Any]) -> None:
            line = _line(item)
            if line is None:
                return
            async with lock:
                writer.write(line)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # a line past the limit, or a reset
                    break
                if not line:
                    break
                try:
                    request = json.loads(line)
                    rid = request["id"]
                except (ValueError, KeyError, TypeError):
                    await send(
                        {"id": None, "ok": False, "error": _error(ValueError("bad request"))}
                    )
                    continue
                tasks.spawn(self.answer(conn, rid, request, send))
        finally:
            self.connections -= 1
            tasks.cancel()
            writer.close()
            for sid, owner in list(self.owned_by.items()):
                if owner == conn:
                    await self.end_session(sid)
            self.quiet_since = time.monotonic()

    async def answer(self, conn: int, rid: Any, request: dict[str, Any], send: Any) -> None:
        try:
            result = await self.dispatch(
                conn, request, lambda out: send({"id": rid, "event": "output", "output": out})
            )
            await send({"id": rid, "ok": True, "result": result})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _error(exc)
            sid = request.get("session_id")
            session = self.sessions.get(sid) if isinstance(sid, str) else None
            if session is not None:  # an error may quote the sandbox: through its sink
                error = session.sink.data(error)
            await send({"id": rid, "ok": False, "error": error})

    # -- operations ----------------------------------------------------------------

    def session(self, sid: Any) -> OwnedSession:
        found = self.sessions.get(sid) if isinstance(sid, str) else None
        if found is None:
            known = ", ".join(self.sessions) or "none"
            raise SessionError(
                f"no session {sid!r} here; the sessions now: {known} ('sandlot sessions list')"
            )
        return found

    async def dispatch(self, conn: int, req: dict[str, Any], emit: Any) -> Any:
        op = req.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "start":
            spec = SessionSpec.from_elsewhere(req["spec"])
            given = req.get("secrets") or {}
            if not isinstance(given, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in given.items()
            ):
                raise SessionError("'secrets' must map names to string values")
            for config in (spec.config, spec.serve_config):
                if config is not None:
                    carry_secrets(config, given)
            session = OwnedSession(spec)
            self.sessions[session.session_id] = session
            if not spec.persist:
                self.owned_by[session.session_id] = conn
            try:
                await session.start()
            except BaseException:
                self.sessions.pop(session.session_id, None)
                self.owned_by.pop(session.session_id, None)
                raise
            return session.info().to_dict()
        if op == "list":
            return [s.info().to_dict() for s in self.sessions.values()]
        session = self.session(req.get("session_id"))
        if op == "attach" or op == "info":
            session.touch()
            return session.info().to_dict()
        if op == "shutdown":
            await self.end_session(session.session_id)
            return None
        if op in ("execute", "edit", "wait"):
            if op != "wait":
                edit = req.get("cell_index") if op == "edit" else None
                await session.start_cell(str(req["code"]), req.get("timeout"), edit)
            queue: asyncio.Queue[dict[str, Any]] | None = None
            if req.get("stream") and session.current is not None:
                queue = asyncio.Queue()
                session.listeners[queue] = session.current
            scope = TaskScope("a streamed wait")
            try:
                waiter = scope.spawn(session.wait(req.get("wait")), awaited=True)
                while queue is not None and not waiter.done():
                    getter = scope.spawn(queue.get(), awaited=True)
                    done, _ = await asyncio.wait(
                        {waiter, getter}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter in done:
                        await emit(getter.result())
                    else:
                        getter.cancel()
                while queue is not None and not queue.empty():
                    await emit(queue.get_nowait())
                ex: Execution = await waiter
            finally:
                await scope.close()
                if queue is not None:
                    session.listeners.pop(queue, None)
            return ex.to_dict()
        if op == "markdown":
            return await session.add_markdown(str(req["text"]))
        if op == "variables":
            return [v.__dict__ for v in await session.variables()]
        if op == "interrupt":
            await session.interrupt()
            return None
        if op == "restart":
            await session.restart()
            return None
        if op == "exec":
            return await session.exec(str(req["command"]), req.get("timeout"))
        if op == "read_file":
            return await session.read_file(str(req["path"]))
        if op == "write_file":
            return await session.write_file(str(req["path"]), str(req["content"]))
        if op == "list_files":
            return await session.list_files(str(req.get("path") or "."))
        if op == "call":
            return await session.call_function(str(req["name"]), dict(req.get("arguments") or {}))
        raise SessionError(f"unknown operation {op!r}")

    async def end_session(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        self.owned_by.pop(sid, None)
        if session is not None:
            await session.shutdown()
        self.quiet_since = time.monotonic()

    # -- housekeeping ----------------------------------------------------------------

    async def sweep(self) -> None:
        """End idle sessions; stop the server when it has had nothing to do for a while."""
        while not self.stopping.is_set():
            await asyncio.sleep(0.5)
            now = time.time()
            for sid, session in list(self.sessions.items()):
                idle = session.spec.idle_timeout
                if idle is not None and not session.busy() and now - session.last_activity > idle:
                    print(f"session {sid} idle for {idle:g}s: shutting it down", flush=True)
                    await self.end_session(sid)
            quiet = not self.sessions and self.connections == 0
            if quiet and time.monotonic() - self.quiet_since > self.linger:
                self.stopping.set()
            elif not quiet:
                self.quiet_since = time.monotonic()

    async def run(self) -> None:
        path = self.folder / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self.serve_client, path=str(path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stopping.set)
        print(f"sandlot session server {os.getpid()} listening on {path}", flush=True)
        sweeper = TaskScope("the session server")
        sweeper.spawn(self.sweep())
        try:
            await self.stopping.wait()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            sweeper.cancel()
            for sid in list(self.sessions):
                await self.end_session(sid)
            print("sandlot session server stopped", flush=True)


def _line(item: dict[str, Any]) -> bytes | None:
    """``item`` as one line for a client, within the client's line limit.

    A reply too long becomes an error that says so (the cell's outputs are in
    the notebook); a streamed output too long is left out (the reply carries it).
    """
    line = json.dumps(item, ensure_ascii=False).encode("utf-8", "replace") + b"\n"
    if len(line) < MAX_LINE:
        return line
    if "event" in item:
        return None
    error = SessionError(
        f"the reply is {len(line)} bytes, over the session socket's {MAX_LINE}-byte limit; "
        "print less, or read the cell's outputs from the notebook file"
    )
    return json.dumps({"id": item.get("id"), "ok": False, "error": _error(error)}).encode() + b"\n"


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


def main(argv: list[str] | None = None) -> None:
    """``python -m sandlot.notebook.server``: run the session server in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--linger", type=float, default=float(os.environ.get("SANDLOT_SESSIONS_LINGER", "60"))
    )
    args = parser.parse_args(argv)
    folder = sessions_dir()
    asyncio.run(Server(folder, args.linger).run())
    sys.exit(0)


if __name__ == "__main__":
    main()
