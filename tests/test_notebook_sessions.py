"""Notebook sessions end to end: a real session server, real sandboxes, real kernels.

Every test here talks to a session server of its own (``SANDLOT_SESSIONS_DIR``
is a temporary directory for this module), never to the user's. One warm
session (a model, a skill and init code loaded before anyone attaches) is
shared by the tests that only run cells; the tests about lifetimes, files and
modes start sessions of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import strict, template_processes
from session_servers import alive, own_session_server, ping, server_pids

import sandlot
from sandlot.backends.cgroups import AHEAD, LEDGER_SUFFIX
from sandlot.backends.disk import process_tree
from sandlot.backends.local import OWNER_FILE, _start_time, _state_root
from sandlot.notebook import (
    NotebookSession,
    SessionError,
    attach,
    list_sessions,
    shutdown_session,
    start_session,
    wire,
)
from sandlot.notebook.client import _connection
from sandlot.notebook.execution import MAX_RICH_OUTPUTS
from sandlot.sync import portal

LINGER = 3.0

TINY_MODEL = """
class Tiny:
    '''A model small enough for a test: an embedding is the text's length and a checksum.'''

    def embed(self, text):
        return [len(text), sum(map(ord, text)) % 97]

model = Tiny()
"""

SKILL = """\
---
name: embedder
description: Embed many texts with the session's model.
preload: true
---
# Embedder

Use the session's `model` on a list of texts.

```python
def embed_all(texts):
    \"\"\"Embed each text with the session's model.\"\"\"
    return [model.embed(t) for t in texts]
```
"""

INTERFACE = '''\
"""Geometry, served to sessions from a sandbox of its own."""

from sandlot import expose


@expose
def area(width: float, height: float = 1.0) -> float:
    """The area of a rectangle."""
    return width * height


@expose
def label(name: str, tags: list[str] | None = None) -> str:
    """A name and its tags."""
    return name + ":" + ",".join(tags or [])


@expose
def raw(n: int) -> dict[str, object]:
    """Bytes, which JSON has no form for."""
    return {"data": bytes(range(n)), "pair": (n, n)}
'''


# -- the module's own session server --------------------------------------------------


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session directory for this module; at the end every server it had must have exited."""
    folder = tmp_path_factory.mktemp("notebook-sessions") / "server"
    with own_session_server(folder, LINGER):
        yield folder
        for info in list_sessions():
            with contextlib.suppress(SessionError):
                shutdown_session(info.session_id)


def _ping() -> int:
    return portal().wait(ping())


@pytest.fixture(scope="module")
def skill_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("skills") / "embedder.md"
    path.write_text(SKILL)
    return path


@pytest.fixture(scope="module")
def notebooks(sessions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where sessions of this module write their notebooks (never ./notebooks)."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def warm(notebooks: Path, skill_file: Path) -> Iterator[NotebookSession]:
    """A persistent session whose kernel holds ``model``, the skill and ``answer``."""
    session = start_session(
        strict(models=[sandlot.ModelConfig(name="tiny", load_code=TINY_MODEL)]),
        name="warm",
        skills=[skill_file],
        init_code="answer = 42",
        persist=True,
        notebook_dir=notebooks,
    )
    yield session
    with contextlib.suppress(Exception):
        session.shutdown()


# -- what a session leaves on the host -------------------------------------------------


@dataclass
class Footprint:
    """A session server's sandbox processes, state directories and cgroups."""

    pids: set[int]
    state: set[str]
    cgroups: set[Path]

    def __sub__(self, other: Footprint) -> Footprint:
        return Footprint(
            self.pids - other.pids, self.state - other.state, self.cgroups - other.cgroups
        )


def _footprint() -> Footprint:
    server = _ping()
    owner = f"{server} {_start_time(server)}"
    state: set[str] = set()
    cgroups: set[Path] = set()
    for path in _state_root().iterdir():
        try:
            lines = (path / OWNER_FILE if path.is_dir() else path).read_text().splitlines()
        except OSError:
            continue
        if lines and lines[0] == owner:
            if path.name.endswith(AHEAD + LEDGER_SUFFIX):  # the server's next sandboxes' cgroups
                continue
            if path.name.startswith("template-"):  # the server's; its forks' workdirs inside
                state |= {f"{path.name}/slots/{box.name}" for box in (path / "slots").iterdir()}
            else:
                state.add(path.name)
            if path.name.endswith(".cgroup"):  # a ledger: the cgroups of one sandbox
                cgroups |= {Path(line) for line in lines[1:] if line}
    return Footprint(process_tree(server) - {server} - template_processes(server), state, cgroups)


def _assert_gone(made: Footprint, within: float = 10.0) -> None:
    """None of ``made`` is left: no process, no state directory or ledger, no cgroup."""
    root = _state_root()
    deadline = time.monotonic() + within
    while True:
        left = Footprint(
            {p for p in made.pids if alive(p)},
            {name for name in made.state if (root / name).exists()},
            {path for path in made.cgroups if path.exists()},
        )
        if not (left.pids or left.state or left.cgroups) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == Footprint(set(), set(), set()), f"left behind: {left}"


def _ids() -> set[str]:
    return {info.session_id for info in list_sessions()}


def _wait_until_gone(session_id: str, within: float) -> float:
    """Seconds until ``session_id`` left the server's list (fails after ``within``)."""
    start = time.monotonic()
    while session_id in _ids():
        assert time.monotonic() - start < within, f"session {session_id} still listed"
        time.sleep(0.1)
    return time.monotonic() - start


# -- a warm kernel, many clients ----------------------------------------------------


def test_the_warm_kernel_has_the_model_and_skills_before_a_second_process_attaches(
    warm: NotebookSession,
) -> None:
    assert "`model`" in warm.prompt and "embed_all(texts)" in warm.prompt
    other = textwrap.dedent(f"""
        import json
        from sandlot.notebook import attach
        with attach({warm.session_id!r}) as session:
            r = session.execute(
                "import inspect\\n"
                "print(embed_all(['ab', 'c']), model.embed('xyz'), answer)\\n"
                "print(inspect.getsource(embed_all))\\n"
                "from_the_other_process = 'B'"
            )
            print(json.dumps(r.to_dict()))
    """)
    done = subprocess.run(
        [sys.executable, "-c", other], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["error"] is None, result["error"]
    first, *source = result["stdout"].splitlines()
    assert first == "[[2, 1], [1, 2]] [3, 72] 42"
    assert "\n".join(source).strip() == (
        'def embed_all(texts):\n    """Embed each text with the session\'s model."""\n'
        "    return [model.embed(t) for t in texts]"
    )
    # The first handle still works, on the same kernel.
    r = warm.execute("from_the_other_process, answer + 1")
    assert r.error is None and r.text == "('B', 43)"
    names = {v.name: v for v in warm.variables()}
    assert names["model"].type == "Tiny" and names["answer"].repr == "42"


def test_two_clients_at_once_get_only_their_own_outputs(warm: NotebookSession) -> None:
    other = attach(warm.session_id)
    results: dict[str, list[sandlot.notebook.Execution]] = {"alpha": [], "beta": []}
    streamed: dict[str, list[dict[str, Any]]] = {"alpha": [], "beta": []}
    refusals: list[str] = []
    failures: list[BaseException] = []

    def client(handle: NotebookSession, token: str) -> None:
        code = (
            f"import time\nfor i in range(30):\n    print('{token}', i, flush=True)\n"
            "    time.sleep(0.003)"
        )
        try:
            for _ in range(4):
                while True:
                    try:
                        results[token].append(
                            handle.execute(code, on_output=streamed[token].append)
                        )
                        break
                    except SessionError as exc:  # the other client's cell is running
                        assert "a cell is still running" in str(exc)
                        refusals.append(token)
                        time.sleep(0.01)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=client, args=(warm, "alpha")),
        threading.Thread(target=client, args=(other, "beta")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.close()
    assert not failures, failures
    assert refusals, "the two clients never overlapped"
    cells = set()
    for token, mine in results.items():
        assert len(mine) == 4
        for r in mine:
            assert r.error is None and r.done
            assert r.stdout == "".join(f"{token} {i}\n" for i in range(30))
            cells.add(r.cell_index)
        texts = "".join(o["text"] for o in streamed[token])
        assert texts == "".join(r.stdout for r in mine)  # its own stream, nothing else
    assert len(cells) == 8  # every cell is a cell of its own in the notebook


def test_a_second_cell_is_refused_while_one_runs_and_waiting_gets_the_first(
    warm: NotebookSession,
) -> None:
    other = attach(warm.session_id)
    try:
        first = warm.execute("import time\ntime.sleep(1)\nprint('first done')", wait=0.2)
        assert not first.done
        with pytest.raises(SessionError, match=r"a cell is still running.*wait.*interrupt"):
            other.execute("print('second')")
        r = other.wait()
        assert r.done and r.stdout == "first done\n" and r.cell_index == first.cell_index
        assert other.execute("print('second')").stdout == "second\n"
    finally:
        other.close()


def test_partial_results_and_outputs_stream_as_they_come(warm: NotebookSession) -> None:
    code = "import time\nfor i in range(4):\n    print('step', i, flush=True)\n    time.sleep(0.5)"
    r = warm.execute(code, wait=1.0)
    assert not r.done and r.stdout.startswith("step 0\n") and "step 3" not in r.stdout
    r = warm.wait()
    assert r.done and r.stdout == "step 0\nstep 1\nstep 2\nstep 3\n"

    seen: list[tuple[float, dict[str, Any]]] = []
    r = warm.execute(code, on_output=lambda out: seen.append((time.monotonic(), out)))
    assert [out["text"] for _, out in seen] == [f"step {i}\n" for i in range(4)]
    assert seen[-1][0] - seen[0][0] > 1.2  # delivered as printed, not all at the end


def test_a_timeout_interrupts_and_a_stubborn_cell_costs_a_restart_then_a_warm_kernel(
    warm: NotebookSession,
) -> None:
    warm.execute("kept = 7")
    start = time.monotonic()
    r = warm.execute("import time; time.sleep(30)", timeout=1)
    assert time.monotonic() - start < 5
    assert r.timed_out and r.interrupted and not r.restarted
    assert r.error is not None and r.error.name == "KeyboardInterrupt"
    assert warm.execute("kept").text == "7"

    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)"
    start = time.monotonic()
    r = warm.execute(stubborn, timeout=1)
    assert time.monotonic() - start < 15
    assert r.timed_out and r.restarted and not r.interrupted
    assert r.error is not None and "restarted" in r.error.value
    r = warm.execute("'kept' in globals(), answer, embed_all(['a'])")
    assert r.error is None and r.text == "(False, 42, [[1, 0]])"  # the warm-up ran again

    start = time.monotonic()
    r = warm.execute("input('name? ')")
    assert time.monotonic() - start < 3
    assert r.error is not None and r.error.name == "StdinNotImplementedError"


def test_interrupt_from_another_handle_stops_a_long_cell(warm: NotebookSession) -> None:
    other = attach(warm.session_id)
    try:
        start = time.monotonic()
        r = warm.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(30)", wait=0.2)
        while "sleeping" not in r.stdout:  # interrupt the sleep, not the start of the cell
            r = warm.wait(0.2)
        other.interrupt()
        r = warm.wait(10)
        assert r.done and time.monotonic() - start < 10
        assert r.error is not None and r.error.name == "KeyboardInterrupt"
    finally:
        other.close()


def test_restart_gives_fresh_variables_and_the_warm_up_again(warm: NotebookSession) -> None:
    warm.execute("scratch = [1, 2, 3]\nanswer = 0")
    # A restart also ends a running cell, even one an interrupt cannot stop.
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)"
    r = warm.execute(stubborn, wait=0.3)
    assert not r.done
    warm.restart()
    r = warm.wait(10)
    assert r.done and r.restarted
    assert r.error is not None and r.error.name == "KernelRestarted"
    r = warm.execute("'scratch' in globals(), answer, type(model).__name__, embed_all(['ab'])")
    assert r.error is None and r.text == "(False, 42, 'Tiny', [[2, 1]])"


def test_the_kernel_reaches_no_network_no_host_file_and_no_session_socket(
    warm: NotebookSession, sessions_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "host-only.txt"
    secret.write_text("not for sandboxes")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        code = textwrap.dedent(f"""
            import os, socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3)
                net = "connected"
            except OSError as exc:
                net = type(exc).__name__
            (net, os.path.exists({str(secret)!r}), os.path.exists({str(tmp_path)!r}),
             os.path.exists({str(sessions_dir / "server.sock")!r}),
             os.path.exists({str(sessions_dir)!r}))
        """)
        r = warm.execute(code)
    finally:
        listener.close()
    assert r.error is None, r.error
    net, *seen = eval(r.text or "")  # a tuple of a str and bools
    assert net != "connected"
    assert seen == [False, False, False, False]


# -- notebook files ---------------------------------------------------------------------


def _png() -> bytes:
    """A valid 1x1 PNG, made by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def test_the_notebook_file_holds_outputs_images_errors_markdown_and_edits(
    sessions_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "work.ipynb"
    with start_session(strict(), notebook=path, name="files") as session:
        assert session.notebook_path == str(path)
        assert session.execute("import time\nprint('stamp', time.time_ns())").error is None
        png = _png()
        r = session.execute(
            f"from IPython.display import Image, display\ndisplay(Image(data={png!r}))"
        )
        assert r.results[0].png == png and not r.results[0].is_main_result
        r = session.execute("def f():\n    raise ValueError('bad value')\nf()")
        assert r.error is not None and r.error.name == "ValueError"
        assert session.add_markdown("# Findings\nThe value was bad.") == 3
        session.execute("x = 1\nx")
        r = session.edit_cell("x = 2\nx * 10", -1)
        assert r.text == "20" and r.cell_index == 3

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["code", "code", "code", "markdown", "code"]
    assert all(c.get("id") for c in nb.cells)
    stamp, image, error, markdown, edited = nb.cells
    assert [c.execution_count for c in (stamp, image, error, edited)] == [1, 2, 3, 5]
    assert stamp.outputs[0].output_type == "stream" and stamp.outputs[0].text.startswith("stamp")
    assert image.outputs[0].output_type == "display_data"
    assert (
        image.outputs[0].data["image/png"].strip()
        == __import__("base64").b64encode(_png()).decode()
    )
    (err,) = error.outputs
    assert err.output_type == "error" and (err.ename, err.evalue) == ("ValueError", "bad value")
    assert isinstance(err.traceback, list) and any("f()" in line for line in err.traceback)
    assert markdown.source == "# Findings\nThe value was bad."
    assert edited.source == "x = 2\nx * 10"
    assert [o.data["text/plain"] for o in edited.outputs] == ["20"]  # the old output is gone
    statuses = [c.metadata.sandlot.status for c in (stamp, image, error, edited)]
    assert statuses == ["ok", "ok", "error", "ok"]

    # Re-run: the same cells, outputs made again by a fresh kernel.
    with start_session(strict(), notebook=path, on_existing="rerun"):
        pass
    rerun = nbformat.read(path, as_version=4)
    nbformat.validate(rerun)
    assert [c.source for c in rerun.cells] == [c.source for c in nb.cells]
    assert rerun.cells[0].outputs[0].text != stamp.outputs[0].text  # a new time stamp
    assert rerun.cells[2].outputs[0].ename == "ValueError"
    assert [o.data["text/plain"] for o in rerun.cells[4].outputs] == ["20"]

    # Continue: the old cells stay as they are and new ones come after them.
    with start_session(strict(), notebook=path) as session:
        r = session.execute("'x' in globals()")
        assert r.text == "False" and r.cell_index == 4
    cont = nbformat.read(path, as_version=4)
    nbformat.validate(cont)
    assert len(cont.cells) == 6 and cont.cells[-1].source == "'x' in globals()"
    assert cont.cells[0].outputs == rerun.cells[0].outputs


def test_clear_output_keeps_one_frame_of_an_animation_in_the_reply_and_the_file(
    sessions_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "frames.ipynb"
    frames = MAX_RICH_OUTPUTS + 50  # more frames than a cell may hold at once
    code = (
        "from IPython.display import clear_output, display\n"
        "print('start')\n"
        f"for i in range({frames}):\n"
        "    clear_output(wait=True)\n"
        "    display(f'frame {i}')\n"
    )
    with start_session(strict(), notebook=path, name="frames") as session:
        r = session.execute(code)
        assert r.error is None and not r.truncated
        assert [x.text for x in r.results] == [f"'frame {frames - 1}'"]
        assert r.stdout == "start\n"  # what the cell printed stays in the reply's log
        # Without wait the outputs go at once; a pending clear with no output after it stays.
        r = session.execute("display('a')\nclear_output()\ndisplay('b')\nclear_output(wait=True)")
        assert [x.text for x in r.results] == ["'b'"]
    cells = nbformat.read(path, as_version=4).cells
    assert [o.get("data", {}).get("text/plain") for o in cells[0].outputs] == [
        f"'frame {frames - 1}'"
    ]
    assert [o.data["text/plain"] for o in cells[1].outputs] == ["'b'"]


# -- lifetimes ---------------------------------------------------------------------------


def test_shutdown_leaves_no_process_cgroup_or_state_directory(notebooks: Path) -> None:
    # Another session keeps the server up, and must be untouched.
    with start_session(strict(), persist=True, init_code="x = 1", notebook_dir=notebooks) as keep:
        before = _footprint()
        session = start_session(strict(), persist=True, notebook_dir=notebooks)
        made = _footprint() - before
        assert made.pids and made.state  # the sandbox's bwrap, driver and kernel; its directory
        assert (
            session.execute("import subprocess\nsubprocess.Popen(['sleep', '600'])").error is None
        )
        session.shutdown()
        assert session.session_id not in _ids()
        _assert_gone(made)
        assert keep.execute("x").text == "1"  # the other session is untouched
        keep.shutdown()


def _wait_for_status(session_id: str, status: str, within: float) -> float:
    """Seconds until ``session_id`` is listed with ``status`` (fails after ``within``)."""
    start = time.monotonic()
    while {i.session_id: i.status for i in list_sessions()}.get(session_id) != status:
        assert time.monotonic() - start < within, f"session {session_id} not {status}"
        time.sleep(0.1)
    return time.monotonic() - start


def test_idle_sessions_suspend_and_owner_less_ones_end_leaving_nothing(
    notebooks: Path, sessions_dir: Path
) -> None:
    with start_session(strict(), persist=True, notebook_dir=notebooks) as keep:  # the server stays
        before = _footprint()
        idle = start_session(strict(), persist=True, idle_timeout=2, notebook_dir=notebooks)
        made = _footprint() - before
        idle.close()
        assert idle.session_id in _ids()  # persistent: it outlives its handle...
        suspended_after = _wait_for_status(idle.session_id, "suspended", within=8)
        assert suspended_after < 5  # ...and idles 2 s into a snapshot (the sweep runs every 0.5 s)
        _assert_gone(made)  # no process, directory or cgroup: only the snapshot on disk
        snapshot = sessions_dir / "suspended" / f"{idle.session_id}.snap"
        assert snapshot.is_file() and stat.S_IMODE(snapshot.stat().st_mode) == 0o600
        shutdown_session(idle.session_id)
        assert idle.session_id not in _ids() and not snapshot.exists()

        owned = start_session(strict(), notebook_dir=notebooks)
        made = _footprint() - before
        owned.close()
        _wait_until_gone(owned.session_id, within=5)
        _assert_gone(made)

        # A process that starts a session and dies takes the session with it.
        script = textwrap.dedent("""
            import os
            from sandlot import SandboxConfig
            from sandlot.notebook import start_session
            session = start_session(SandboxConfig(isolation="bubblewrap"), mode="filesystem")
            print(session.session_id, flush=True)
            os._exit(0)
        """)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        _wait_until_gone(done.stdout.split()[-1], within=5)
        _assert_gone(_footprint() - before)
        keep.shutdown()


def test_an_idle_session_comes_back_as_it_was_on_its_next_use(
    notebooks: Path, sessions_dir: Path
) -> None:
    before = _footprint()
    session = start_session(
        strict(models=[sandlot.ModelConfig(name="tiny", load_code=TINY_MODEL)]),
        init_code="answer = 42",
        persist=True,
        idle_timeout=1.5,
        notebook_dir=notebooks,
    )
    try:
        cell = (
            "import collections\n"
            "counter = answer + 1\n"
            "def bump(n):\n    return n + counter\n"
            "class Box:\n    def __init__(self, v):\n        self.v = v\n"
            "box = Box([1, 2])\n"
            "open('ran.txt', 'a').write('x')\n"
            "open('notes.txt', 'w').write('kept')"
        )
        assert session.execute(cell).error is None
        made = _footprint() - before
        _wait_for_status(session.session_id, "suspended", within=8)
        snapshot = sessions_dir / "suspended" / f"{session.session_id}.snap"
        assert snapshot.is_file()
        _assert_gone(made)  # suspended: its sandbox and kernel are gone, the snapshot holds it
        back = session.execute(
            "bump(1), box.v, collections.__name__, model.embed('ab'), "
            "open('notes.txt').read(), open('ran.txt').read()"
        )
        assert back.error is None, back.error
        assert back.text == "(44, [1, 2], 'collections', [2, 1], 'kept', 'x')"  # no cell re-ran
        assert not snapshot.exists()
        assert {i.session_id: i.status for i in list_sessions()}[session.session_id] == "idle"
        path = session.notebook_path
        assert path is not None
        cells = [c.source for c in nbformat.read(path, as_version=4).cells]
        assert cells[0] == cell and len(cells) == 2  # the notebook goes on where it was
    finally:
        session.shutdown()


def _stop_server(folder: Path) -> None:
    """Stop the one session server of ``folder`` by its PID, and wait until it is gone."""
    (pid,) = server_pids(folder)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while alive(pid):
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.1)


def test_a_suspended_session_outlives_its_server_and_the_next_one_takes_it_up(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "server"
    folder.mkdir(mode=0o700)
    nb = tmp_path / "nb"
    with own_session_server(folder, LINGER):
        session = start_session(strict(), persist=True, idle_timeout=1, notebook_dir=nb)
        first = "kept = {'a': [1, 2]}\ndef total():\n    return sum(kept['a'])"
        session.execute(first)
        notebook = session.notebook_path
        assert notebook is not None
        # Owned by its connection, not persistent: recorded nowhere for a later server.
        owned = start_session(strict(), idle_timeout=1, notebook_dir=nb)
        owned.execute("mine = 1")
        _wait_for_status(session.session_id, "suspended", within=8)
        _wait_for_status(owned.session_id, "suspended", within=8)
        session.close()
        _stop_server(folder)
        owned.close()
    snapshot = folder / "suspended" / f"{session.session_id}.snap"
    record = snapshot.with_suffix(".json")
    assert snapshot.is_file() and stat.S_IMODE(record.stat().st_mode) == 0o600
    log = (folder / "server.log").read_text()
    assert f"stays suspended in {snapshot}: the next session server takes it up" in log
    assert not (folder / "suspended" / f"{owned.session_id}.json").exists()
    with sandlot.Sandbox.restore(snapshot, strict()) as sb:  # by hand, as the log says
        assert sb.run_code("total(), kept").value == "(3, {'a': [1, 2]})"
    bad = folder / "suspended" / ("f" * 32 + ".json")
    bad.write_text('{"format": 1, "session_id": "nope"}')

    with own_session_server(folder, LINGER):
        listed = {i.session_id: i for i in list_sessions()}  # starts the next server
        assert set(listed) == {session.session_id}  # the owned one and the bad record: not
        assert listed[session.session_id].status == "suspended"
        assert listed[session.session_id].notebook_path == notebook
        again = attach(session.session_id)
        try:
            back = again.execute("total(), kept")
            assert back.error is None and back.text == "(3, {'a': [1, 2]})", back.error
            assert not snapshot.exists() and not record.exists()
            cells = [c.source for c in nbformat.read(notebook, as_version=4).cells]
            assert cells == [first, "total(), kept"]  # the same notebook goes on
        finally:
            again.shutdown()
    log = (folder / "server.log").read_text()
    assert f"session {session.session_id} taken up, suspended" in log
    assert f"{bad}: cannot take this session up" in log and bad.exists()


# -- whose directory ----------------------------------------------------------------------


def test_paths_are_the_client_s_and_the_server_refuses_relative_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started from one directory, a client in another: ./notebooks is the client's."""
    owner_cwd, client_cwd, folder = tmp_path / "owner", tmp_path / "client", tmp_path / "server"
    owner_cwd.mkdir()
    client_cwd.mkdir()
    folder.mkdir(mode=0o700)
    with own_session_server(folder, LINGER):
        with open(folder / "server.log", "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "sandlot.notebook.server"],
                cwd=owner_cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while not (folder / "server.sock").exists():
                assert time.monotonic() < deadline, "the session server did not start"
                time.sleep(0.05)
            monkeypatch.chdir(client_cwd)
            with start_session(strict(), name="here") as session:
                assert session.notebook_path is not None
                assert Path(session.notebook_path).parent == client_cwd / "notebooks"
            assert not (owner_cwd / "notebooks").exists()

            async def raw_start(spec: dict[str, Any]) -> Any:
                conn = await _connection()
                try:
                    return await conn.call(wire.Start(spec=spec))
                finally:
                    await conn.close()

            (owner_cwd / "skill.md").write_text(SKILL)
            relative = {
                "config": {"isolation": "bubblewrap", "env_file": ".env", "mounts": {"data": "/d"}},
                "notebook_dir": "notebooks",
                "skills": ["skill.md"],
            }
            with pytest.raises(sandlot.ConfigError) as refused:
                portal().wait(raw_start(relative))
            for field, path in [
                ("SessionSpec.notebook_dir", "notebooks"),
                ("SessionSpec.skills", "skill.md"),
                ("SessionSpec.config.env_file", ".env"),
                ("SessionSpec.config.mounts.0.source", "data"),
            ]:
                assert f"{field}: {path!r} is a relative path" in str(refused.value)
            with pytest.raises(sandlot.ConfigError, match="give notebook_dir or notebook"):
                portal().wait(raw_start({"config": {"isolation": "bubblewrap"}}))
            assert not (owner_cwd / "notebooks").exists()
        finally:
            server.wait(timeout=LINGER + 10)


# -- other modes -----------------------------------------------------------------------


def test_filesystem_mode_has_files_and_commands_but_no_kernel(sessions_dir: Path) -> None:
    with start_session(strict(), mode="filesystem") as fs:
        assert fs.mode == "filesystem" and fs.kernel_id is None and fs.notebook_path is None
        assert fs.write_file("notes/a.txt", "hello") == 5
        assert fs.read_file("notes/a.txt") == "hello"
        assert fs.list_files("notes") == [{"name": "a.txt", "type": "file", "size": 5}]
        done = fs.exec("cat notes/a.txt && echo ' world' && pwd")
        assert done["returncode"] == 0 and done["stdout"].startswith("hello world\n")
        with pytest.raises(SessionError, match="filesystem mode; this needs notebook mode"):
            fs.execute("1 + 1")


def test_a_dead_sandbox_reaches_the_client_as_sandbox_died_with_its_cause(
    sessions_dir: Path,
) -> None:
    """The error crosses the session socket as type, message and cause, not as text."""
    with start_session(strict(timeout=3), mode="filesystem") as fs:
        deadline = time.monotonic() + 20
        with pytest.raises(sandlot.SandboxDied) as died:
            while time.monotonic() < deadline:  # until the sandbox's lifetime runs out
                fs.exec("true")
                time.sleep(0.2)
        assert died.value.cause == "lifetime"
        assert "SandboxConfig.timeout" in died.value.detail
        assert str(died.value) == f"sandbox died (lifetime): {died.value.detail}"


def test_served_functions_are_tools_in_mcp_mode_and_a_library_in_the_kernel(
    sessions_dir: Path, tmp_path: Path
) -> None:
    interface = tmp_path / "shapes.py"
    interface.write_text(INTERFACE)
    with start_session(strict(), mode="mcp", serve=[interface]) as mcp:
        tools = {t["name"]: t for t in mcp.info.functions}
        assert set(tools) == {"shapes_area", "shapes_label", "shapes_raw"}
        area = tools["shapes_area"]
        assert area["description"] == "The area of a rectangle."
        assert area["inputSchema"]["properties"] == {
            "width": {"type": "number"},
            "height": {"type": "number", "default": 1.0},
        }
        assert area["inputSchema"]["required"] == ["width"]
        label = tools["shapes_label"]["inputSchema"]["properties"]["tags"]
        assert {"type": "array", "items": {"type": "string"}} in label["anyOf"]
        assert mcp.call_function("shapes_area", {"width": 2, "height": 3}) == 6
        assert mcp.call_function("shapes_raw", {"n": 4}) == {
            "data": {"type": "bytes", "size": 4, "base64": "AAECAw=="},
            "pair": [4, 4],
        }
        with pytest.raises(SessionError, match="no served function 'nope'"):
            mcp.call_function("nope", {})
        with pytest.raises(SessionError, match="mcp mode"):
            mcp.execute("1")

    with start_session(strict(), serve=[interface], notebook_dir=tmp_path) as nb:
        # kernel -> the driver's call gate -> the host -> the serving sandbox, and back;
        # a 2 MB argument travels outside the frame's header.
        r = nb.execute(
            "import shapes\n"
            "big = shapes.label('t', ['x' * 1000] * 2000)\n"
            "shapes.area(2.5, 2), shapes.label('a', ['x', 'y']), len(big)"
        )
        assert r.error is None, r.error
        assert r.text == "(5.0, 'a:x,y', 2002001)"
        assert "shapes" in nb.prompt


# -- errors ------------------------------------------------------------------------------


def test_secrets_come_from_the_client_that_starts_the_session(
    sessions_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session server was started before the secret was set: the client's value is used."""
    server = _ping()  # the server runs now, with this environment as it was
    name = "SANDLOT_TEST_TOKEN"
    assert name not in Path(f"/proc/{server}/environ").read_bytes().decode(errors="replace")
    with pytest.raises(sandlot.ConfigError, match=f"secrets: {name} not set"):
        start_session(strict(secrets=[name]), notebook_dir=tmp_path)
    monkeypatch.setenv(name, "tok-from-the-client")
    with start_session(strict(secrets=[name]), notebook_dir=tmp_path) as session:
        r = session.execute(
            f"import os\nos.environ[{name!r}] == 'tok-from-the-client', os.environ[{name!r}]"
        )
        assert r.text == f"(True, '[redacted {name}]')"  # the value arrived, and is never shown


def test_bad_ids_bad_skills_and_failing_init_code_are_clear_and_leave_nothing(
    warm: NotebookSession, tmp_path: Path
) -> None:
    with pytest.raises(SessionError, match=f"no session 'no-such-id'.*{warm.session_id}"):
        attach("no-such-id")

    listed = _ids()
    before = _footprint()
    bad = tmp_path / "bad.md"
    bad.write_text(
        "---\nname: bad\ndescription: broken\npreload: true\n---\n```python\ndef f(:\n```\n"
    )
    with pytest.raises(sandlot.ConfigError, match=rf"{bad}:7: python syntax error"):
        start_session(strict(), skills=[bad], notebook_dir=tmp_path)

    init = "def load():\n    raise ValueError('no weights here')\nload()"
    with pytest.raises(SessionError) as info:
        start_session(strict(), init_code=init, notebook_dir=tmp_path)
    message = str(info.value)
    assert "init code #1: ValueError: no weights here" in message
    assert "raise ValueError('no weights here')" in message  # the traceback came too
    assert _ids() == listed
    _assert_gone(_footprint() - before, within=5)


def test_the_footprint_sees_a_live_session(warm: NotebookSession) -> None:
    """The leak checks bite: a live session's kernel, directory and cgroups are found."""
    found = _footprint()
    assert any("ipykernel" in _cmdline(p) for p in found.pids)
    assert any("box-" in name for name in found.state)  # its directory, cold or forked
    assert any(name.endswith(LEDGER_SUFFIX) for name in found.state)  # its cgroups' ledger
    assert found.cgroups and all(path.exists() for path in found.cgroups)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
