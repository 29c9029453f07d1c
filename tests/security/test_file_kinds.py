"""Files are what they say: a fifo, a socket, a device or a link the sandbox made.

Sandboxed code can put anything in its workdir. A listing says what each entry
is; a read refuses at once, naming the path and its kind, whatever is not a
regular file (a fifo would block the read until the idle guard ended the
sandbox, and a link's target is the link's choice); a write or an upload over
one replaces it, without blocking or following it; a download skips and reports
what is not a regular file or directory. Each time the sandbox lives on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import strict
from mcp import Client
from mcp.types import CallToolResult, TextContent
from session_servers import own_session_server

import sandlot
from sandlot.mcp import build_server

pytestmark = pytest.mark.timeout(30)  # before the fix, a read of the fifo waited 120 s

# Made by sandboxed code: a fifo with no writer, a listening socket, a link to a
# file and one to the fifo, a device node's stand-in (/dev/null is bound in).
PLANT = """
import os, socket
os.makedirs('tree/sub', exist_ok=True)
open('tree/sub/ok.txt', 'w').write('fine')
open('target.txt', 'w').write('kept')
for name in ('pipe', 'tree/pipe'):
    os.mkfifo(name)
held = []
for name in ('sock', 'tree/sock'):
    s = socket.socket(socket.AF_UNIX)
    s.bind(name)
    s.listen()
    held.append(s)
os.symlink('target.txt', 'link')
os.symlink('pipe', 'tree/to-pipe')
os.symlink('/dev/null', 'null')
"""


@pytest.fixture(scope="module")
def box() -> Iterator[sandlot.Sandbox]:
    with sandlot.Sandbox(strict(memory_mb=512)) as sb:
        planted = sb.run_code(PLANT)
        assert planted.error is None, planted.error
        yield sb


def test_a_listing_says_what_each_entry_is(box: sandlot.Sandbox) -> None:
    planted = {
        "link": "link",
        "null": "link",
        "pipe": "fifo",
        "sock": "socket",
        "target.txt": "file",
        "tree": "dir",
    }
    kinds = {e.name: e.type for e in box.files.list(".")}
    assert {name: kinds.get(name) for name in planted} == planted
    assert {e.name: e.type for e in box.files.list("tree")} == {
        "pipe": "fifo",
        "sock": "socket",
        "sub": "dir",
        "to-pipe": "link",
    }
    assert [e.type for e in box.files.list("/dev") if e.name == "null"] == ["device"]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("pipe", "fifo"),
        ("sock", "socket"),
        ("link", "link"),
        ("tree/to-pipe", "link"),
        ("/dev/null", "device"),
        ("tree", "directory"),
    ],
)
def test_a_read_refuses_what_is_not_a_regular_file_at_once(
    box: sandlot.Sandbox, path: str, kind: str
) -> None:
    started = time.monotonic()
    with pytest.raises(sandlot.FileOperationError) as caught:
        box.files.read(path)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert repr(path) in message and f"is a {kind}, not a regular file" in message, message
    assert box.run_code("1+1").value == "2"  # the sandbox lives on
    assert box.files.read("target.txt") == b"kept"


def test_a_write_replaces_a_fifo_or_a_link_without_blocking_or_following(
    box: sandlot.Sandbox,
) -> None:
    box.run_code("import os; os.mkfifo('w-pipe'); os.symlink('target.txt', 'w-link')")
    assert box.files.write("w-pipe", b"data") == 4
    assert box.files.write("w-link", b"data") == 4
    kinds = {e.name: e.type for e in box.files.list(".")}
    assert kinds["w-pipe"] == kinds["w-link"] == "file"
    assert box.files.read("target.txt") == b"kept"


def test_an_upload_replaces_a_fifo_or_a_link_without_blocking_or_following(
    box: sandlot.Sandbox, tmp_path: Path
) -> None:
    made = box.run_code(
        "import os; os.makedirs('up'); open('up/inner.txt', 'w').write('kept'); "
        "os.mkfifo('up/pipe'); os.symlink('inner.txt', 'up/link')"
    )
    assert made.error is None, made.error
    (tmp_path / "pipe").write_text("one")
    (tmp_path / "link").write_text("two")
    started = time.monotonic()
    box.upload(tmp_path, "up")
    assert time.monotonic() - started < 5
    kinds = {e.name: e.type for e in box.files.list("up")}
    assert kinds == {"inner.txt": "file", "link": "file", "pipe": "file"}
    assert box.files.read("up/pipe") == b"one" and box.files.read("up/link") == b"two"
    assert box.files.read("up/inner.txt") == b"kept"


def test_a_download_skips_and_reports_what_is_not_a_file_or_directory(
    box: sandlot.Sandbox, tmp_path: Path
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = box.download("tree", tmp_path / "tree")
    assert sorted((s.name, s.kind) for s in result.skipped) == [
        ("tree/pipe", "fifo"),
        ("tree/sock", "socket"),
        ("tree/to-pipe", "symbolic link"),
    ]
    assert "tree/sock" in str(caught[0].message)
    found = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "tree").rglob("*"))
    assert found == ["tree/sub", "tree/sub/ok.txt"]
    assert box.run_code("1+1").value == "2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_mcp_file_tools_say_fifo_and_the_session_lives_on(tmp_path: Path) -> None:
    with own_session_server(tmp_path / "sessions", 1.0):
        async with Client(build_server("filesystem", config=strict())) as client:
            started = await client.call_tool("start_new_session", {})
            assert started.structured_content is not None
            args = {"session_id": started.structured_content["session_id"]}
            made = await client.call_tool("exec", {**args, "command": "mkfifo pipe"})
            assert not made.is_error
            listed = await client.call_tool("list_files", args)
            assert "- pipe (fifo, 0 bytes)" in _text(listed)
            with anyio.fail_after(10):
                read = await client.call_tool("read_file", {**args, "path": "pipe"})
            assert read.is_error and "'pipe'" in _text(read) and "is a fifo" in _text(read)
            after = await client.call_tool("exec", {**args, "command": "echo $((1+1))"})
            assert not after.is_error and "2" in _text(after)
            await client.call_tool("shutdown_session", args)


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text
