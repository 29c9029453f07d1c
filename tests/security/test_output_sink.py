"""What a sandbox prints reaches people and files only through sandlot's sink.

Two attacks on what sandlot shows or keeps of a sandbox's output:

- a cell (or a command) prints a secret the sandbox was given: the notebook
  file on disk, the MCP reply and an experiment's transcript must hold
  ``[redacted NAME]``, never the value, and those files are the user's alone
  (mode 0600);
- a cell or a command prints terminal control sequences (OSC 52 writes the
  clipboard, OSC 0 the window title, OSC 8 makes a link; a bare ESC, a BEL):
  ``sandlot exec`` and ``sandlot sessions attach -c`` at a terminal show them as
  visible escapes, and pass them raw only with ``--raw``; newline and tab pass.

Everything is real: session server, sandboxes, kernels, the CLI under a pty, and
an experiment whose LM is the loopback stand-in of ``tests/openai_server.py``.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import strict
from mcp import Client
from openai_server import ScriptedOpenAIServer, ScriptedReply
from session_servers import own_session_server

from sandlot.experiment import load_config, run_experiment
from sandlot.mcp import build_server
from sandlot.notebook import NotebookSession, start_session

NAME = "SANDLOT_SINK_TEST_TOKEN"
VALUE = "tok-5f3a9c1e7b2d4a60"
REDACTED = f"[redacted {NAME}]"

# Control sequences a sandbox may print, with a newline and a tab that must pass.
PAYLOAD = (
    "A\x1b]52;c;aGVsbG8=\x07"  # OSC 52: write the clipboard
    "B\x1b]0;pwned\x07"  # OSC 0: the window title
    "C\x1b]8;;http://example.invalid/\x1b\\link\x1b]8;;\x1b\\"  # OSC 8: a link
    "D\x1bc"  # a bare ESC (here: reset the terminal)
    "E\x07"  # BEL
    "F\tG\n"
)
SHOWN = PAYLOAD.replace("\x1b", "\\x1b").replace("\x07", "\\x07").encode()

# A cell that shows the secret every way a cell can: stdout (once split across two
# stream messages), stderr, HTML, JSON, and an exception's message.
LEAKY_CELL = f"""
import os, sys
from IPython.display import HTML, JSON, display
s = os.environ[{NAME!r}]
print("plain", s)
sys.stdout.write(s[:7]); sys.stdout.flush(); sys.stdout.write(s[7:] + "\\n")
print("err", s, file=sys.stderr)
display(HTML(f"<b>{{s}}</b>"))
display(JSON({{"key": s}}))
raise ValueError(s)
"""


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("sink-sessions") / "server"
    saved = os.environ.get(NAME)
    os.environ[NAME] = VALUE
    try:
        with own_session_server(folder, 3.0):
            yield folder
    finally:
        if saved is None:
            os.environ.pop(NAME, None)
        else:
            os.environ[NAME] = saved


@pytest.fixture(scope="module")
def session(
    server_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NotebookSession]:
    with start_session(
        strict(secrets=[NAME]), name="leaky", notebook_dir=tmp_path_factory.mktemp("notebooks")
    ) as handle:
        yield handle


def on_a_terminal(*args: str, within: float = 90) -> bytes:
    """What ``sandlot ARGS`` writes to a terminal (a pty in raw mode: bytes as written)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandlot.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "TERM": "dumb"},
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the pty has gone
                    break
                if not data:
                    break
                seen += data
        assert proc.wait(10) == 0, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return seen


# -- secrets ----------------------------------------------------------------------------


def test_a_secret_a_cell_prints_is_redacted_in_the_reply_and_the_private_notebook(
    session: NotebookSession,
) -> None:
    ex = session.execute(LEAKY_CELL)
    assert ex.error is not None and ex.error.name == "ValueError"
    everything = json.dumps(ex.to_dict())
    assert VALUE not in everything
    assert ex.stdout == f"plain {REDACTED}\n{REDACTED}\n"
    assert ex.stderr == f"err {REDACTED}\n"
    assert ex.error.value == REDACTED
    assert ex.results[0].data["text/html"] == f"<b>{REDACTED}</b>"
    assert ex.results[1].data["application/json"] == {"key": REDACTED}

    assert session.notebook_path is not None
    notebook = Path(session.notebook_path)
    text = notebook.read_text()
    assert VALUE not in text and text.count(REDACTED) >= 6
    assert stat.S_IMODE(notebook.stat().st_mode) == 0o600


def test_the_mcp_reply_to_a_cell_that_prints_a_secret_holds_no_secret(
    session: NotebookSession,
) -> None:
    async def ask() -> str:
        async with Client(build_server(session_id=session.session_id)) as client:
            result = await client.call_tool("execute_code", {"code": LEAKY_CELL})
        return json.dumps(result.model_dump(mode="json"))

    reply = anyio.run(ask)
    assert VALUE not in reply
    assert REDACTED in reply


def test_an_experiment_transcript_holds_no_secret_and_is_private(
    server_dir: Path, tmp_path: Path
) -> None:
    def agent(body: dict[str, Any]) -> str | ScriptedReply:
        if body["messages"][-1]["role"] == "user":
            return ScriptedReply.calls(("exec", {"command": f'echo "token=${NAME}"'}))
        return "done"

    with ScriptedOpenAIServer(agent) as server:
        path = tmp_path / "leak.yaml"
        path.write_text(
            "name: leak\ntask: print the token\n"
            f"environment: {{secrets: [{NAME}], sandbox: {{isolation: bubblewrap}}}}\n"
            "execution: {type: filesystem}\n"
            f'harness: {{lm: {{model: m, base_url: "{server.base_url}", max_retries: 0}}}}\n'
            f"outputs: {{dir: {tmp_path / 'out'}}}\n"
        )
        result = run_experiment(load_config(path))
        sent = json.dumps([r.body for r in server.requests])
    [run] = result.runs
    assert run.status == "answered", run
    folder = Path(run.run_dir)
    transcript = (folder / "transcript.jsonl").read_text()
    assert f"token={REDACTED}" in transcript
    assert VALUE not in transcript and VALUE not in sent
    for name in ("transcript.jsonl", "run.log", "summary.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


# -- terminals --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
def test_exec_shows_control_sequences_as_escapes_unless_raw(raw: bool) -> None:
    seen = on_a_terminal(
        "exec",
        *(["--raw"] if raw else []),
        "--",
        "sh",
        "-c",
        'printf %s "$1"; printf %s "$1" >&2',
        "sh",
        PAYLOAD,
    )
    if raw:
        assert seen.count(PAYLOAD.encode()) == 2, seen
    else:
        assert seen.count(SHOWN) == 2, seen
        assert b"\x1b" not in seen and b"\x07" not in seen


@pytest.mark.parametrize("raw", [False, True])
def test_attach_shows_a_cells_control_sequences_as_escapes_unless_raw(
    session: NotebookSession, raw: bool
) -> None:
    cell = f"import sys\nsys.stdout.write({PAYLOAD!r})\nsys.stderr.write({PAYLOAD!r})"
    seen = on_a_terminal(
        "sessions", "attach", session.session_id, *(["--raw"] if raw else []), "-c", cell
    )
    if raw:
        assert seen.count(PAYLOAD.encode()) == 2, seen
    else:
        assert seen.count(SHOWN) == 2, seen
        assert b"\x1b" not in seen and b"\x07" not in seen
