"""The session server: the one owner of this user's notebook sessions.

It listens on a Unix socket in a directory only its user can enter
(``$SANDLOT_SESSIONS_DIR``, default ``$TMPDIR/sandlot-UID/sessions``) and is
started on demand by the first client (:func:`sandlot.notebook.client.connect`).
Clients speak the session wire (:mod:`sandlot.notebook.wire`): JSON lines, each
request checked against its operation's model and answered by the handler
:attr:`Server.handlers` names for it, or by the session's method of the
operation's name (:class:`~sandlot.notebook.wire.SessionMethod`).

Lifetimes nest: a session belongs to the connection that started it unless it
was started with ``persist``; a persistent one ends on ``shutdown``. A session
idle past its timeout is suspended: its kernel's variables and its workdir go
to a snapshot in ``suspended/`` here, its sandboxes end, and its next use
starts them again from the snapshot (an mcp-mode session, which holds no
state, just ends). When the server stops, a suspended session's snapshot stays
on disk, named in the log; a persistent one (whose sandboxes get no named
secrets) is also recorded beside it, and the next server takes it up again,
under its id, still suspended. The server ends its sessions when it stops (SIGTERM, SIGINT), and
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..secrets import carry_secrets
from ..sink import escape_controls
from ..tasks import TaskScope
from . import wire
from .execution import Execution
from .session import OwnedSession
from .wire import MAX_LINE, SOCKET_NAME, SUSPENDED, SessionError, SessionSpec, sessions_dir

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[int, Any, Emit], Awaitable[Any]]


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
        # The operations this server answers itself; every other one is a SessionMethod.
        self.handlers: dict[type[wire.Request[Any]], Handler] = {
            wire.Ping: self.ping,
            wire.Start: self.start,
            wire.ListSessions: self.list_sessions,
            wire.Info: self.info,
            wire.Shutdown: self.shutdown,
            wire.Execute: self.execute,
            wire.Wait: self.wait,
        }

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
                    rid, request = wire.decode_request(line)
                except wire.BadRequest as bad:
                    await send(wire.failure(bad.request_id, bad))
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

    async def answer(self, conn: int, rid: int, request: wire.Request[Any], send: Emit) -> None:
        try:
            result = await self.dispatch(conn, request, lambda out: send(wire.output(rid, out)))
            reply = wire.done(rid, request, result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reply = wire.failure(rid, exc)
            sid = getattr(request, "session_id", None)
            session = self.sessions.get(sid) if isinstance(sid, str) else None
            if session is not None:  # an error may quote the sandbox: through its sink
                reply["error"] = session.sink.data(reply["error"])
        await send(reply)

    # -- operations ----------------------------------------------------------------

    async def live(self, sid: str) -> OwnedSession:
        """Session ``sid``, resumed first if it is suspended."""
        session = self.session(sid)
        if session.suspended is not None:
            print(f"session {sid} resuming", flush=True)
            await session.resume()
        return session

    def session(self, sid: str) -> OwnedSession:
        found = self.sessions.get(sid)
        if found is None:
            known = ", ".join(self.sessions) or "none"
            raise SessionError(
                f"no session {sid!r} here; the sessions now: {known} ('sandlot sessions list')"
            )
        return found

    async def dispatch(self, conn: int, request: wire.Request[Any], emit: Emit) -> Any:
        """Answer ``request`` (checked already) for connection ``conn``."""
        handler = self.handlers.get(type(request))
        if handler is not None:
            return await handler(conn, request, emit)
        if not isinstance(request, wire.SessionMethod):
            raise SessionError(f"this server has no handler for {request.op!r}")
        session = await self.live(request.session_id)
        fields = {name: getattr(request, name) for name in type(request).model_fields}
        del fields["session_id"]
        return await getattr(session, request.op)(**fields)

    async def ping(self, conn: int, request: wire.Ping, emit: Emit) -> int:
        return os.getpid()

    async def start(self, conn: int, request: wire.Start, emit: Emit) -> wire.SessionInfo:
        spec = SessionSpec.from_elsewhere(request.spec)
        for config in (spec.config, spec.serve_config):
            if config is not None:
                carry_secrets(config, request.secrets)
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
        return session.info()

    async def list_sessions(
        self, conn: int, request: wire.ListSessions, emit: Emit
    ) -> list[wire.SessionInfo]:
        return [s.info() for s in self.sessions.values()]

    async def info(self, conn: int, request: wire.Info, emit: Emit) -> wire.SessionInfo:
        session = self.session(request.session_id)
        session.touch()
        return session.info()

    async def shutdown(self, conn: int, request: wire.Shutdown, emit: Emit) -> None:
        await self.end_session(self.session(request.session_id).session_id)

    async def execute(self, conn: int, request: wire.Execute, emit: Emit) -> Execution:
        session = await self.live(request.session_id)
        await session.start_cell(request.code, request.timeout, request.cell_index)
        return await self.follow(session, request.wait, request.stream, emit)

    async def wait(self, conn: int, request: wire.Wait, emit: Emit) -> Execution:
        session = self.session(request.session_id)
        return await self.follow(session, request.wait, request.stream, emit)

    async def follow(
        self, session: OwnedSession, wait: float | None, stream: bool, emit: Emit
    ) -> Execution:
        """The session's latest cell (see :class:`~sandlot.notebook.wire.Execute`)."""
        queue: asyncio.Queue[dict[str, Any]] | None = None
        if stream and session.current is not None:
            queue = asyncio.Queue()
            session.listeners[queue] = session.current
        scope = TaskScope("a streamed wait")
        try:
            waiter = scope.spawn(session.wait(wait), awaited=True)
            while queue is not None and not waiter.done():
                getter = scope.spawn(queue.get(), awaited=True)
                done, _ = await asyncio.wait({waiter, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await emit(getter.result())
                else:
                    getter.cancel()
            while queue is not None and not queue.empty():
                await emit(queue.get_nowait())
            return await waiter
        finally:
            await scope.close()
            if queue is not None:
                session.listeners.pop(queue, None)

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
                if session.status != "idle" or idle is None or session.busy():
                    continue
                if now - session.last_activity > idle:
                    await self.suspend(sid, session, idle)
            quiet = not self.sessions and self.connections == 0
            if quiet and time.monotonic() - self.quiet_since > self.linger:
                self.stopping.set()
            elif not quiet:
                self.quiet_since = time.monotonic()

    async def suspend(self, sid: str, session: OwnedSession, idle: float) -> None:
        """Write an idle session to disk and end its sandboxes; one of no state just ends."""
        if session.spec.mode == "mcp":
            print(f"session {sid} idle for {idle:g}s: shutting it down", flush=True)
            await self.end_session(sid)
            return
        folder = self.folder / SUSPENDED
        folder.mkdir(mode=0o700, exist_ok=True)
        try:
            await session.suspend(folder / f"{sid}.snap")
        except Exception as exc:  # it runs on as it was: nothing is lost
            session.touch()
            why = escape_controls(session.sink.text(str(exc)))  # it may quote the sandbox
            print(f"session {sid} idle for {idle:g}s; could not suspend it: {why}", flush=True)
        else:
            print(f"session {sid} idle for {idle:g}s: suspended to disk", flush=True)

    def adopt(self) -> None:
        """Take up the suspended sessions an earlier server recorded; say why for any it cannot."""
        folder = self.folder / SUSPENDED
        for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                session = OwnedSession.adopt(record)
            except SessionError as exc:
                print(escape_controls(str(exc)), flush=True)
                continue
            self.sessions[session.session_id] = session
            print(f"session {session.session_id} taken up, suspended", flush=True)

    async def run(self) -> None:
        self.adopt()
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
            for sid, session in list(self.sessions.items()):
                if session.suspended is not None:  # its snapshot outlives the server
                    after = (
                        "the next session server takes it up"
                        if session.adoptable()
                        else "sandlot.Sandbox.restore(path) brings its variables and files back"
                    )
                    where = session.suspended
                    print(f"session {sid} stays suspended in {where}: {after}", flush=True)
                    session.suspended = None
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
    return json.dumps(wire.failure(item.get("id"), error)).encode() + b"\n"


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
