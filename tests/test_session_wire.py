"""The session wire: one table of typed operations, checked lines both ways, errors rebuilt.

No sandbox runs here: the server is the real one, in this process, with no
session; the client side is checked against a scripted server.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sandlot.errors import CallTimeout, ConfigError, SandboxDied
from sandlot.notebook import wire
from sandlot.notebook.client import SessionServerError, _Connection
from sandlot.notebook.server import Server
from sandlot.notebook.session import OwnedSession
from sandlot.notebook.wire import BadRequest, KernelDied, SessionError

SERVER_SIDE = (
    "sandlot.notebook.server",
    "sandlot.notebook.session",
    "sandlot.notebook.kernel",
    "sandlot.notebook.document",
)


def test_every_operation_in_the_table_is_answered(tmp_path: Path) -> None:
    """By a handler of the server, or by the session's method of the operation's name."""
    handlers = Server(tmp_path, linger=1).handlers
    for op, operation in wire.OPERATIONS.items():
        assert operation.op == op
        if operation in handlers:
            continue
        assert issubclass(operation, wire.SessionMethod), f"nothing answers {op!r}"
        method = getattr(OwnedSession, op)
        params = list(inspect.signature(method).parameters)[1:]
        assert params == [f for f in operation.model_fields if f != "session_id"], op


def test_the_client_imports_no_server_code_and_no_nbformat() -> None:
    code = (
        "import sys, sandlot.notebook.client\n"
        f"print([m for m in sys.modules if m.split('.')[0] == 'nbformat' or m in {SERVER_SIDE}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def _across(exc: BaseException) -> BaseException:
    """``exc`` sent as the server sends it and rebuilt as the client does."""
    line = json.dumps(wire.failure(7, exc)).encode()
    reply = wire.decode_reply(line)
    assert isinstance(reply, wire.Failure) and reply.id == 7
    return wire.rebuild(reply.error)


def test_a_dead_sandbox_keeps_its_class_cause_and_detail() -> None:
    sent = SandboxDied("out_of_memory", "the kernel's OOM killer ended it at 512 MiB")
    got = _across(sent)
    assert type(got) is SandboxDied
    assert got.cause == "out_of_memory" and got.detail == sent.detail
    assert str(got) == str(sent)


@pytest.mark.parametrize(
    "sent",
    [
        SessionError("no session 'x' here"),
        KernelDied("the kernel is not running"),
        ConfigError("SessionSpec.skills: 'a.md' is a relative path"),
        CallTimeout("the call took over 5s"),
        BadRequest("bad 'ping' request: extra: Extra inputs are not permitted"),
    ],
)
def test_sandlot_errors_come_back_as_their_own_class(sent: Exception) -> None:
    got = _across(sent)
    assert type(got) is type(sent) and str(got) == str(sent)


@pytest.mark.parametrize(
    "name", ["SystemExit", "KeyboardInterrupt", "os.system", "subprocess.Popen", "__import__"]
)
def test_a_forged_error_type_is_a_generic_error_never_an_import(name: str) -> None:
    before = set(sys.modules)
    got = wire.rebuild(wire.ErrorInfo(type=name, message="forged"))
    assert type(got) is SessionError and str(got) == f"{name}: forged"
    assert set(sys.modules) == before


def test_a_dead_sandbox_with_a_forged_cause_is_a_generic_error() -> None:
    error = wire.ErrorInfo(type="SandboxDied", message="sandbox died (x)", cause="x")
    got = wire.rebuild(error)
    assert type(got) is SessionError and str(got) == "SandboxDied: sandbox died (x)"


# -- the server, facing a hostile client --------------------------------------------------


@asynccontextmanager
async def _server(folder: Path) -> AsyncIterator[Server]:
    folder.mkdir(mode=0o700)
    server = Server(folder, linger=60)
    running = asyncio.create_task(server.run())
    while not (folder / wire.SOCKET_NAME).exists():
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.stopping.set()
        await running


HOSTILE: list[tuple[bytes, int | None, str]] = [
    (b"not json", None, "not a line of JSON"),
    (b"[1, 2]", None, "integer 'id'"),
    (b'{"op": "ping"}', None, "integer 'id'"),
    (b'{"id": true, "op": "ping"}', None, "integer 'id'"),
    (b'{"id": -1, "op": "ping"}', None, "integer 'id'"),
    (b'{"id": 1, "op": "__init__"}', 1, "unknown operation '__init__'"),
    (b'{"id": 2, "op": "ping", "extra": 1}', 2, "extra: Extra inputs are not permitted"),
    (b'{"id": 3, "op": "read_file", "session_id": "s", "path": 5}', 3, "path:"),
    (b'{"id": 4, "op": "start", "spec": {}, "secrets": {"A": 1}}', 4, "secrets.A:"),
    (b'{"id": 5, "op": "execute", "session_id": "s", "code": "1", "cell_index": true}', 5, ""),
    (b'{"id": 6, "op": "read_file", "session_id": "nope", "path": "a"}', 6, "no session 'nope'"),
    (b'{"id": 8, "op": "call_function", "arguments": ' + b"[" * 100_000, None, "JSON"),
]


def test_a_malformed_request_gets_an_error_reply_and_the_server_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        async with _server(tmp_path / "server"):
            reader, writer = await asyncio.open_unix_connection(
                str(tmp_path / "server" / wire.SOCKET_NAME), limit=wire.MAX_LINE
            )
            for line, rid, says in HOSTILE:
                writer.write(line + b"\n")
                reply = wire.decode_reply(await reader.readline())
                assert isinstance(reply, wire.Failure), line
                assert reply.id == rid and says in reply.error.message, (line, reply)
            writer.write(wire.encode_request(9, wire.Ping()))
            reply = wire.decode_reply(await reader.readline())
            assert isinstance(reply, wire.Done) and reply.id == 9 and reply.result == os.getpid()
            writer.close()

    asyncio.run(main())


# -- the client, facing a server that breaks the wire -------------------------------------


async def _client_against(
    answer: Callable[[dict[str, Any]], bytes], folder: Path
) -> Callable[[wire.Request[Any]], Awaitable[Any]]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(answer(json.loads(line)))

    await asyncio.start_unix_server(serve, path=str(folder / "fake.sock"))
    reader, writer = await asyncio.open_unix_connection(str(folder / "fake.sock"))
    return _Connection(reader, writer).call


def test_a_reply_of_the_wrong_shape_fails_its_request_not_the_client(tmp_path: Path) -> None:
    async def main() -> None:
        def answer(request: dict[str, Any]) -> bytes:
            result = "not a pid" if request["id"] == 1 else 41
            return json.dumps({"id": request["id"], "ok": True, "result": result}).encode() + b"\n"

        call = await _client_against(answer, tmp_path)
        with pytest.raises(SessionServerError, match="reply to 'ping' is malformed"):
            await call(wire.Ping())
        assert await call(wire.Ping()) == 41

    asyncio.run(main())


def test_a_line_that_is_no_reply_breaks_the_connection_with_a_clear_error(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        call = await _client_against(lambda request: b'{"id": 1, "ok": "yes"}\n', tmp_path)
        with pytest.raises(SessionServerError, match="connection broke: a line that is no reply"):
            await call(wire.Ping())

    asyncio.run(main())


def test_clients_that_find_no_server_start_one_between_them(tmp_path: Path) -> None:
    """Six clients at once, no server yet: one starts it (the others wait on its lock)."""
    from session_servers import own_session_server, ping, server_pids

    async def main() -> list[int]:
        return list(await asyncio.gather(*(ping() for _ in range(6))))

    with own_session_server(tmp_path / "sessions", linger=0.5) as folder:
        pids = asyncio.run(main())
        assert len(set(pids)) == 1 and server_pids(folder) == set(pids)
