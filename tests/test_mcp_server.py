"""``sandlot mcp`` driven by the ``mcp`` SDK's own client: in-process, over stdio and over HTTP.

The session server and the sandboxes are real. One notebook session (serving
``tests/interfaces/calc.py``, so it has a prompt) is shared by the tests that
only run cells; the stdio test starts its own through ``start_new_session`` in
one server process and attaches to it from a second. Everything runs against a
session server of this module's own (``SANDLOT_SESSIONS_DIR``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import nbformat
import pytest
from conftest import strict
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent
from PIL import Image

from sandlot.errors import ConfigError
from sandlot.mcp import build_server
from sandlot.notebook import alist_sessions, list_sessions, shutdown_session, start_session

pytestmark = pytest.mark.anyio
CALC = Path(__file__).parent / "interfaces" / "calc.py"
NOTEBOOK_TOOLS = {
    "start_new_session",
    "attach_to_session",
    "list_sessions",
    "shutdown_session",
    "execute_code",
    "wait_for_cell",
    "add_markdown",
    "edit_cell",
    "interrupt",
    "restart",
    "list_variables",
}
FILESYSTEM_TOOLS = {
    "start_new_session",
    "attach_to_session",
    "list_sessions",
    "shutdown_session",
    "exec",
    "read_file",
    "write_file",
    "list_files",
}
# A 3 x 2 red PNG built by hand in the kernel (the sandbox has no Pillow).
PNG_CELL = """
import struct, zlib
from IPython.display import Image, display
def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
rows = b"".join(b"\\0" + b"\\xff\\0\\0" * 3 for _ in range(2))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
       + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
display(Image(data=png))
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def sessions_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session server of this module's own, ended (with its sessions) afterwards."""
    folder = tmp_path_factory.mktemp("mcp-sessions")
    folder.chmod(0o700)
    saved = {k: os.environ.get(k) for k in ("SANDLOT_SESSIONS_DIR", "SANDLOT_SESSIONS_LINGER")}
    os.environ["SANDLOT_SESSIONS_DIR"] = str(folder)
    os.environ["SANDLOT_SESSIONS_LINGER"] = "2"
    try:
        yield folder
    finally:
        for info in list_sessions():
            shutdown_session(info.session_id)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def shared(sessions_dir: Path, notebooks: Path) -> Iterator[str]:
    """The id of a warm notebook session that serves calc.py (so its prompt names ``calc``)."""
    with start_session(
        strict(), serve=[CALC], persist=True, notebook_dir=notebooks, name="shared"
    ) as session:
        sid = session.session_id
    yield sid
    shutdown_session(sid)


def text(result: CallToolResult) -> str:
    first = result.content[0]
    assert first.type == "text"
    return first.text


def ok(result: CallToolResult) -> str:
    assert not result.is_error, text(result)
    return text(result)


def failed(result: CallToolResult) -> str:
    assert result.is_error, text(result)
    return text(result)


def stdio(*args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "sandlot.cli", "mcp", *args], env=dict(os.environ)
    )


class Progress:
    """A progress callback that keeps what it got."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.values: list[float] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.values.append(progress)
        self.messages.append(message or "")


# -- tools and their schemas ----------------------------------------------------------


async def test_each_mode_has_its_tools_and_schemas() -> None:
    async with Client(build_server("notebook")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == NOTEBOOK_TOOLS
    execute = tools["execute_code"].input_schema
    assert execute["required"] == ["code"]
    assert set(execute["properties"]) == {"session_id", "code", "timeout"}
    assert tools["edit_cell"].input_schema["properties"]["cell_index"]["default"] == -1
    assert tools["attach_to_session"].input_schema["required"] == ["session_id"]
    assert "wait_for_cell" in (tools["execute_code"].description or "")

    async with Client(build_server("filesystem")) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == FILESYSTEM_TOOLS

    with pytest.raises(ConfigError, match="serve"):
        build_server("mcp")  # neither a session nor interface files to serve


# -- cells ------------------------------------------------------------------------------


async def test_cells_give_text_values_errors_and_images(shared: str) -> None:
    async with Client(build_server(session_id=shared)) as client:
        attached = ok(await client.call_tool("attach_to_session", {"session_id": shared}))
        assert f"session {shared}" in attached
        assert "calc.add(" in attached  # the session's prompt

        reply = ok(
            await client.call_tool(
                "execute_code",
                {"code": "import calc\nprint('hello')\nanswer = calc.add(40)\nanswer"},
            )
        )
        assert "stdout:\nhello" in reply
        assert "value:\n42" in reply
        assert re.search(r"code cell \d+ \[\d+\] finished", reply)

        reply = ok(await client.call_tool("execute_code", {"code": "1/0"}))
        assert "raised an error" in reply
        assert "error: ZeroDivisionError: division by zero" in reply

        result = await client.call_tool("execute_code", {"code": PNG_CELL})
        ok(result)
        images = [c for c in result.content if isinstance(c, ImageContent)]
        assert len(images) == 1
        assert images[0].mime_type == "image/png"
        picture = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
        assert picture.size == (3, 2)
        assert picture.convert("RGB").getpixel((1, 1)) == (255, 0, 0)

        reply = ok(await client.call_tool("add_markdown", {"content": "# Findings\nIt works."}))
        assert "position" in reply

        reply = ok(
            await client.call_tool(
                "edit_cell", {"cell_index": 0, "code": "print('edited')\nanswer = 43"}
            )
        )
        assert "code cell 0" in reply
        assert "stdout:\nedited" in reply

        listing = ok(await client.call_tool("list_variables", {}))
        assert "answer: int = 43" in listing

    path = Path(next(i.notebook_path for i in list_sessions() if i.session_id == shared) or "")
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source == "print('edited')\nanswer = 43"
    assert any(c.cell_type == "markdown" and "Findings" in c.source for c in cells)


async def status(session_id: str) -> str:
    return next(i.status for i in await alist_sessions() if i.session_id == session_id)


async def test_cancelling_a_call_interrupts_its_cell(shared: str) -> None:
    """A client that cancels execute_code (Esc in Claude Code) stops the cell, not only the wait."""
    server = build_server(tool_wait=30)
    code = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)"
    async with Client(server) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client.call_tool, "execute_code", {"session_id": shared, "code": code})
            while await status(shared) != "busy":
                await anyio.sleep(0.1)
            await anyio.sleep(0.5)
            group.cancel_scope.cancel()
        # Cancelling is a notification without a reply: the interrupt lands soon after.
        with anyio.fail_after(15):  # the cell would sleep 60 s if nothing stopped it
            while await status(shared) == "busy":
                await anyio.sleep(0.1)
        reply = ok(await client.call_tool("execute_code", {"session_id": shared, "code": "6 * 7"}))
        assert "value:\n42" in reply
    [info] = [i for i in await alist_sessions() if i.session_id == shared]
    cells = nbformat.read(info.notebook_path, as_version=4).cells
    stopped = [c for c in cells if c.cell_type == "code" and "time.sleep(60)" in c.source][-1]
    assert stopped.metadata.sandlot.status == "interrupted"


async def test_long_cell_returns_early_with_progress_then_waits(shared: str) -> None:
    server = build_server(tool_wait=1.5, progress_interval=0.4)
    progress = Progress()
    code = "import time\nfor i in range(5):\n    print('step', i, flush=True)\n    time.sleep(0.7)"
    async with Client(server) as client:
        started = time.monotonic()
        result = await client.call_tool(
            "execute_code", {"session_id": shared, "code": code}, progress_callback=progress
        )
        early = ok(result)
        assert time.monotonic() - started < 3.0  # the cell takes 3.5 s
        assert "still running" in early
        assert f"wait_for_cell(session_id='{shared}')" in early
        assert "step 0" in early and "step 4" not in early
        assert len(progress.messages) >= 2
        assert all("running for" in m for m in progress.messages)
        assert any("step" in m for m in progress.messages)
        assert progress.values == sorted(set(progress.values))  # strictly increasing

        polls = []  # each wait is capped at tool_wait, as a client's poll loop would see
        while len(polls) < 5 and "finished" not in (polls or [""])[-1]:
            polls.append(ok(await client.call_tool("wait_for_cell", {"session_id": shared})))
        done = polls[-1]
        assert "finished" in done, polls
        assert "step 4" in done
        assert "still running" not in done


async def test_interrupt_and_cell_timeout_stop_a_cell(shared: str) -> None:
    async with Client(build_server(tool_wait=1.0)) as client:
        early = ok(
            await client.call_tool(
                "execute_code", {"session_id": shared, "code": "import time\ntime.sleep(60)"}
            )
        )
        assert "still running" in early
        busy = failed(await client.call_tool("list_variables", {"session_id": shared}))
        assert "running" in busy
        ok(await client.call_tool("interrupt", {"session_id": shared}))
        ended = ok(await client.call_tool("wait_for_cell", {"session_id": shared, "timeout": 10}))
        assert "KeyboardInterrupt" in ended or "interrupted" in ended

    async with Client(build_server()) as client:
        started = time.monotonic()
        reply = ok(
            await client.call_tool(
                "execute_code",
                {"session_id": shared, "code": "import time\ntime.sleep(60)", "timeout": 1},
            )
        )
        assert time.monotonic() - started < 15
        assert "ran out of time" in reply
        assert "value:\n2" in ok(
            await client.call_tool("execute_code", {"session_id": shared, "code": "1 + 1"})
        )
        ok(await client.call_tool("execute_code", {"session_id": shared, "code": "kept = 1"}))
        assert "fresh kernel" in ok(await client.call_tool("restart", {"session_id": shared}))
        after = ok(await client.call_tool("execute_code", {"session_id": shared, "code": "kept"}))
        assert "NameError" in after


async def test_tool_errors_are_results_and_the_server_goes_on(shared: str) -> None:
    async with Client(build_server()) as client:
        missing = failed(await client.call_tool("execute_code", {"code": "1"}))
        assert "start_new_session()" in missing
        unknown = failed(
            await client.call_tool("execute_code", {"session_id": "nosuchsession", "code": "1"})
        )
        assert "nosuchsession" in unknown
        assert "list_sessions()" in unknown
        assert shared in unknown  # the API lists the sessions there are
        bad_cell = failed(
            await client.call_tool(
                "edit_cell", {"session_id": shared, "cell_index": 999, "code": "1"}
            )
        )
        assert "999" in bad_cell
        listing = ok(await client.call_tool("list_sessions", {}))
        assert shared in listing


async def test_a_dead_sandbox_is_named_by_its_cause_with_what_to_do() -> None:
    async with Client(build_server("filesystem", config=strict(timeout=3))) as client:
        started = await client.call_tool("start_new_session", {"name": "short-lived"})
        ok(started)
        assert started.structured_content is not None
        sid = started.structured_content["session_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the sandbox's lifetime runs out
            result = await client.call_tool("exec", {"session_id": sid, "command": "true"})
            if result.is_error:
                break
            await anyio.sleep(0.2)
        died = failed(result)
        assert died.startswith("sandbox died (lifetime): ")
        assert "(cause: lifetime)" in died and "start_new_session()" in died
        ok(await client.call_tool("shutdown_session", {"session_id": sid}))


# -- across processes ---------------------------------------------------------------


async def test_session_started_over_stdio_is_attached_from_a_second_process(
    notebooks: Path,
) -> None:
    first_server = stdio("--notebook-dir", str(notebooks))
    async with Client(first_server) as first:
        started = await first.call_tool("start_new_session", {"name": "stdio"})
        ok(started)
        assert started.structured_content is not None
        sid = started.structured_content["session_id"]
        ok(await first.call_tool("execute_code", {"session_id": sid, "code": "x = 41 + 1"}))

        async with Client(stdio("--session", sid)) as second:
            attached = ok(await second.call_tool("attach_to_session", {"session_id": sid}))
            assert "Attached to session" in attached
            progress = Progress()
            code = "import time\nprint('a', flush=True)\ntime.sleep(1.2)\nprint('b')\nx"
            reply = ok(await second.call_tool("execute_code", {"code": code}, None, progress))
            assert "value:\n42" in reply  # the variable the first process set
            assert progress.messages, "no progress notification came over stdio"
            ok(await second.call_tool("shutdown_session", {}))

        listing = ok(await first.call_tool("list_sessions", {}))
        assert sid not in listing
        gone = failed(await first.call_tool("execute_code", {"session_id": sid, "code": "x"}))
        assert "list_sessions()" in gone


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[str, str]]:
    """``sandlot mcp --http --port 0`` in a subprocess: its URL and the token it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandlot.cli", "mcp", "--http", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(
            r"MCP server at (\S+); send the header 'Authorization: Bearer (\S+)'", line
        )
        assert found, line
        yield found.group(1), found.group(2)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_http_needs_the_token(http_server: tuple[str, str], shared: str) -> None:
    url, token = http_server
    assert url.startswith("http://127.0.0.1:")
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient() as raw:
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            response = await raw.post(url, json=hello, headers={**accept, **auth})
            assert response.status_code == 401, auth
            assert response.headers["www-authenticate"].startswith("Bearer")

    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == NOTEBOOK_TOOLS
        progress = Progress()
        reply = ok(
            await client.call_tool(
                "execute_code",
                {"session_id": shared, "code": "print('over http')"},
                progress_callback=progress,
            )
        )
        assert "stdout:\nover http" in reply
        assert not progress.messages  # a quick cell: one reply, no progress
        code = "import time\nprint('slow', flush=True)\ntime.sleep(1)"
        reply = ok(
            await client.call_tool(
                "execute_code", {"session_id": shared, "code": code}, progress_callback=progress
            )
        )
        assert "stdout:\nslow" in reply
        assert any("stdout: slow" in m for m in progress.messages), progress.messages


# -- filesystem and mcp modes ----------------------------------------------------------


async def test_filesystem_mode_tools() -> None:
    async with Client(build_server("filesystem", config=strict())) as client:
        started = await client.call_tool("start_new_session", {})
        assert started.structured_content is not None
        sid = started.structured_content["session_id"]
        assert "filesystem mode" in ok(started)
        args = {"session_id": sid}
        written = ok(
            await client.call_tool("write_file", {**args, "path": "a/b.txt", "content": "hi"})
        )
        assert "2 bytes" in written
        assert ok(await client.call_tool("read_file", {**args, "path": "a/b.txt"})) == "hi"
        assert "b.txt (file, 2 bytes)" in ok(
            await client.call_tool("list_files", {**args, "path": "a"})
        )
        ran = ok(
            await client.call_tool(
                "exec", {**args, "command": "cat a/b.txt; echo oops >&2; exit 3"}
            )
        )
        assert ran.startswith("exit status 3")
        assert "stdout:\nhi" in ran and "stderr:\noops" in ran
        wrong = failed(await client.call_tool("read_file", {**args, "path": "missing.txt"}))
        assert "missing.txt" in wrong
        ok(await client.call_tool("shutdown_session", args))


async def test_mcp_mode_serves_interface_functions_as_tools() -> None:
    before = {i.session_id for i in list_sessions()}
    async with Client(build_server("mcp", serve=[CALC], config=strict())) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"calc_add", "calc_fail", "calc_echo"} <= set(tools)
        assert not any("hidden" in name for name in tools)
        add = tools["calc_add"]
        assert add.description == "Add two numbers."
        assert add.input_schema["properties"]["a"]["type"] == "integer"
        assert add.input_schema["required"] == ["a"]

        assert ok(await client.call_tool("calc_add", {"a": 2, "b": 3})) == "5"
        echoed = json.loads(ok(await client.call_tool("calc_echo", {"value": {"k": [1, 2]}})))
        assert echoed == {"k": [1, 2]}
        error = failed(await client.call_tool("calc_fail", {"message": "boom"}))
        assert "failed on purpose: boom" in error
        unknown = failed(await client.call_tool("calc_nope", {}))
        assert "calc_add" in unknown
    # The server's own mcp-mode session ended with it.
    assert {i.session_id for i in list_sessions()} <= before


# -- client configuration ----------------------------------------------------------------


def _json_blocks(output: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    blocks, pos = [], 0
    while (start := output.find("\n{", pos)) != -1:
        block, pos = decoder.raw_decode(output, start + 1)
        blocks.append(block)
    return blocks


def _sandlot(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_print_config_for_a_session(shared: str, sessions_dir: Path) -> None:
    output = _sandlot("mcp", "--print-config", "--session", shared)
    claude, cursor = _json_blocks(output)
    entry = claude["mcpServers"]["sandlot"]
    assert entry["type"] == "stdio"
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
    assert entry["args"][-3:] == ["mcp", "--session", shared]
    assert entry["env"] == {"SANDLOT_SESSIONS_DIR": str(sessions_dir)}
    assert cursor["mcpServers"]["sandlot"] == {k: v for k, v in entry.items() if k != "type"}
    assert f"attach_to_session(session_id='{shared}')" in output
    assert "calc.add(" in output  # the session's prompt


def test_print_config_for_http_and_a_missing_session() -> None:
    output = _sandlot(
        "mcp",
        "--print-config",
        "--http",
        "--port",
        "9123",
        "--token",
        "s3cret",
        "--session",
        "gone",
    )
    claude, cursor = _json_blocks(output)
    assert "attach_to_session(session_id='gone')" in output
    assert "not found" in output
    assert claude["mcpServers"]["sandlot"] == {
        "type": "http",
        "url": "http://127.0.0.1:9123/mcp",
        "headers": {"Authorization": "Bearer s3cret"},
    }
    assert cursor["mcpServers"]["sandlot"]["url"] == "http://127.0.0.1:9123/mcp"
    refused = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", "mcp", "--http", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "loopback" in refused.stderr
