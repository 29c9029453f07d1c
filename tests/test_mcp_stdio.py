"""The stdio transport ``sandlot mcp`` serves on: the wire stays clean whatever prints.

``serve_stdio`` reads and writes the protocol on the event loop and moves it off
fds 0 and 1 while it serves, so a handler, a library or a child process that
prints to stdout cannot corrupt a frame, and one that reads stdin gets EOF. The
server here is a real one, run as a real process and called over its pipes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SERVER = """
import os, subprocess, sys
from mcp.server import MCPServer
from sandlot.mcp import serve_stdio

server = MCPServer("noisy")

@server.tool()
def noisy(text: str) -> str:
    print("stray print " * 50)
    sys.stdout.flush()
    os.write(1, b"raw write to fd 1\\n")
    subprocess.run(["echo", "a child's output"], check=True)
    got = sys.stdin.read()
    return f"{text.upper()} (stdin gave {got!r})"

serve_stdio(server)
"""


@pytest.mark.parametrize("size", [10, 3_000_000])
async def test_prints_and_children_do_not_reach_the_wire(tmp_path: Path, size: int) -> None:
    script = tmp_path / "noisy_server.py"
    script.write_text(SERVER)
    params = StdioServerParameters(command=sys.executable, args=[str(script)])
    async with Client(params) as client:
        for _ in range(3):  # the stray output comes before each reply, every time
            result = await client.call_tool("noisy", {"text": "x" * size})
            assert not result.is_error
            block = result.content[0]
            assert isinstance(block, TextContent)
            assert block.text == f"{'X' * size} (stdin gave '')"


def test_every_byte_on_stdout_is_protocol(tmp_path: Path) -> None:
    """Read the server's stdout raw: the stray output must be on stderr, not between frames."""
    script = tmp_path / "noisy_server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    hello = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "noisy", "arguments": {"text": "raw"}},
        },
    ]
    try:
        for message in messages:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
        proc.stdin.flush()
        lines = []
        while not lines or json.loads(lines[-1]).get("id") != 2:
            line = proc.stdout.readline()
            assert line, f"stdout ended early after {lines}"
            lines.append(line)
        proc.stdin.close()
        rest, errors = proc.stdout.read(), proc.stderr.read() if proc.stderr else b""
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert rest == b""
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0", line
    reply = json.loads(lines[-1])["result"]
    assert reply["content"][0]["text"] == "RAW (stdin gave '')"
    assert b"stray print" in errors and b"raw write to fd 1" in errors
    assert b"a child's output" in errors
