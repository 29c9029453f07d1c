"""Attacks on notebook sessions from inside the kernel, and on the session's files.

A notebook's kernel runs in the sandbox, so every Jupyter message it sends may
be forged: a cell can publish on the kernel's iopub socket with the kernel's
own session (and key) whatever it likes, with any parent header. The session
server must keep each forged output well-typed and bounded, keep the notebook
file valid and small, keep answering, and never write through a link someone
planted where the notebook goes. Each test asserts what the host did, not only
that it survived.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import strict
from session_servers import own_session_server

import sandlot
from sandlot.notebook import (
    NotebookSession,
    SessionError,
    attach,
    list_sessions,
    start_session,
)
from sandlot.notebook.execution import MAX_RICH_OUTPUTS
from sandlot.notebook.kernel import MAX_KERNEL_MESSAGE
from sandlot.notebook.wire import MAX_LINE, sessions_dir

LINGER = 3.0

# Sends a Jupyter message as the kernel itself would: signed with its key, on its sockets.
FORGE = """
_kernel = get_ipython().kernel

def forge(msg_type, content, parent=None):
    _kernel.session.send(
        _kernel.iopub_socket, msg_type, content, parent=parent or _kernel.get_parent("shell")
    )
"""


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session server of this module's own; it must be gone at the end."""
    folder = tmp_path_factory.mktemp("attack-sessions") / "server"
    with own_session_server(folder, LINGER):
        yield folder


@pytest.fixture(scope="module")
def session(
    server_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NotebookSession]:
    with start_session(
        strict(), name="attacked", notebook_dir=tmp_path_factory.mktemp("notebooks")
    ) as handle:
        assert handle.execute(FORGE).error is None
        yield handle


def _valid_notebook(handle: NotebookSession) -> nbformat.NotebookNode:
    assert handle.notebook_path is not None
    nb = nbformat.read(handle.notebook_path, as_version=4)
    nbformat.validate(nb)
    return nb


def _last_outputs(handle: NotebookSession) -> list[nbformat.NotebookNode]:
    return list(_valid_notebook(handle).cells[-1].outputs)


FORGED = {
    "data is not a dict": ('forge("display_data", {"data": "text", "metadata": {}})', []),
    "mime values of the wrong type": (
        'forge("display_data", {"data": {"text/plain": 5, "image/png": ["a", 1], '
        '"text/html": {"x": 1}, "text/json": {"a": 1}, "nomime": "x"}, "metadata": []})',
        [],
    ),
    "a thousand mime types": (
        'forge("display_data", {"data": {f"x/y{i}": "v" for i in range(1000)}, "metadata": {}})',
        ["display_data"],
    ),
    "traceback that is not a list": (
        'forge("error", {"ename": "Forged", "evalue": "v", "traceback": "not a list"})',
        ["error"],
    ),
    "stream named neither stdout nor stderr": (
        'forge("stream", {"name": "stdin", "text": "x"})\n'
        'forge("stream", {"name": "stdout", "text": 5})',
        [],
    ),
    "content that is not an object": (
        '_kernel.session.send(_kernel.iopub_socket, "stream", b"[1, 2]", '
        'parent=_kernel.get_parent("shell"))',
        [],
    ),
    "execution count that is not a number": (
        'forge("execute_result", {"data": {"text/plain": "r"}, "metadata": {}, '
        '"execution_count": "many"})',
        ["execute_result"],
    ),
}


@pytest.mark.parametrize("case", FORGED)
def test_forged_outputs_are_dropped_or_made_well_typed(session: NotebookSession, case: str) -> None:
    code, kept = FORGED[case]
    r = session.execute(code + "\nprint('still running')")
    assert r.done and r.stdout == "still running\n"
    outputs = _last_outputs(session)  # the notebook file stays valid
    assert [o.output_type for o in outputs] == [*kept, "stream"]
    for result in r.results:
        assert len(result.data) <= 16
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.data.items())
    if case == "traceback that is not a list":
        assert r.error is not None and (r.error.name, r.error.traceback) == ("Forged", "")
        assert outputs[0].traceback == []
    if case == "execution count that is not a number":
        assert r.text == "r" and outputs[0].execution_count == r.execution_count
    assert session.execute("6 * 7").text == "42"


def test_a_message_over_the_kernel_limit_is_dropped_and_the_session_goes_on(
    session: NotebookSession,
) -> None:
    """One message of 70 MiB, past MAX_KERNEL_MESSAGE (64 MiB).

    The limit is a constant of the session server, another process, so it cannot
    be lowered from here: the message is really sent, once (about a second).
    """
    size = 70 << 20
    assert size > MAX_KERNEL_MESSAGE
    r = session.execute(
        f"forge('display_data', {{'data': {{'text/plain': 'x' * {size}}}, 'metadata': {{}}}})\n"
        "print('after')"
    )
    assert r.done and r.error is None and r.stdout == "after\n" and r.results == []
    assert [o.output_type for o in _last_outputs(session)] == ["stream"]
    assert os.path.getsize(session.notebook_path or "") < 1 << 20
    assert session.execute("1 + 1").text == "2"


def test_output_past_the_limits_is_cut_and_the_notebook_stays_small(
    session: NotebookSession,
) -> None:
    limit = sandlot.SandboxConfig().max_output_bytes
    r = session.execute("import sys\nfor _ in range(40):\n    sys.stdout.write('y' * 100_000)")
    assert r.truncated and len(r.stdout) <= limit and r.stdout == "y" * len(r.stdout)
    assert os.path.getsize(session.notebook_path or "") < 3 * limit

    # Empty outputs cost no bytes; their number is bounded on its own.
    r = session.execute(
        "import time\n"
        f"for i in range({MAX_RICH_OUTPUTS + 300}):\n"
        "    forge('display_data', {'data': {'text/plain': ''}, 'metadata': {}})\n"
        "    forge('error', {'ename': 'E', 'evalue': '', 'traceback': []})\n"
        "    if i % 100 == 0: time.sleep(0.02)  # below the kernel's own send queue limit\n"
    )
    assert r.truncated and len(r.results) < MAX_RICH_OUTPUTS
    assert len(_last_outputs(session)) <= MAX_RICH_OUTPUTS
    assert session.execute("1 + 1").text == "2"


def test_a_reply_too_long_for_the_session_socket_is_an_error_not_a_broken_client(
    server_dir: Path, tmp_path: Path
) -> None:
    """Each control character is 6 bytes as JSON: 12 MiB of them is a 72 MiB reply.

    (A session of its own: its notebook holds those 12 MiB.)
    """
    with start_session(strict(), notebook=tmp_path / "long.ipynb") as handle:
        with pytest.raises(SessionError, match=f"over the session socket's {MAX_LINE}-byte limit"):
            handle.execute(
                "from IPython.display import display\n"
                "for _ in range(2):\n"
                "    display({'text/plain': '\\x01' * (6 << 20)}, raw=True)"
            )
        assert handle.execute("1 + 1").text == "2"  # the same handle, the same connection


def test_forged_outputs_for_a_finished_cell_reach_no_other_cell(
    session: NotebookSession,
) -> None:
    """A cell keeps its parent header and publishes as that cell once it has ended,
    while another client runs cells: its forgeries go nowhere."""
    r = session.execute(
        "import threading, time\n"
        "_old = _kernel.get_parent('shell')\n"
        "_sent = 0\n"
        "def _spam():\n"
        "    global _sent\n"
        "    time.sleep(0.3)  # this cell has ended by now\n"
        "    for _ in range(200):\n"
        "        forge('stream', {'name': 'stdout', 'text': 'FORGED\\n'}, parent=_old)\n"
        "        forge('display_data', {'data': {'text/plain': 'FORGED'}, 'metadata': {}}, "
        "parent=_old)\n"
        "        _sent += 2\n"
        "        time.sleep(0.005)\n"
        "_spammer = threading.Thread(target=_spam)\n"
        "_spammer.start()"
    )
    assert r.error is None and r.stdout == ""
    spammed = r.cell_index
    with attach(session.session_id) as other:  # another client's cells, meanwhile
        later = [
            other.execute(f"import time\ntime.sleep(0.1)\nprint('mine {i}')") for i in range(10)
        ]
        assert other.execute("_spammer.join()\n_sent").text == "400"
    for i, r in enumerate(later):
        assert r.stdout == f"mine {i}\n" and r.results == []
    nb = _valid_notebook(session)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all("FORGED" not in str(c.outputs) for c in code_cells)
    assert code_cells[spammed].outputs == []


def test_a_link_planted_at_the_notebook_path_is_replaced_not_followed(
    server_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    path = tmp_path / "agent.ipynb"
    with start_session(strict(), notebook=path) as handle:
        assert handle.execute("print('one')").error is None
        path.unlink()
        path.symlink_to(target)  # someone with the workspace swaps in a link
        assert handle.execute("print('two')").error is None
    assert target.read_text() == "precious"
    assert not path.is_symlink()
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells] == ["print('one')", "print('two')"]

    # A link there before the session starts is refused, whether it leads to a file or
    # nowhere yet (no file is made through it), and no session is left running.
    before = {s.session_id for s in list_sessions()}
    linked = tmp_path / "linked.ipynb"
    linked.symlink_to(path)
    with pytest.raises(sandlot.ConfigError, match="symbolic link"):
        start_session(strict(), notebook=linked)
    dangling = tmp_path / "dangling.ipynb"
    dangling.symlink_to(tmp_path / "made-through-the-link.ipynb")
    with pytest.raises(SessionError, match="already exists"):
        start_session(strict(), notebook=dangling)
    assert not (tmp_path / "made-through-the-link.ipynb").exists()
    assert {s.session_id for s in list_sessions()} == before
    assert nbformat.read(path, as_version=4).cells[-1].source == "print('two')"


def test_the_session_directory_and_socket_are_closed_to_others(
    session: NotebookSession, server_dir: Path, tmp_path: Path
) -> None:
    assert stat.S_IMODE(server_dir.stat().st_mode) == 0o700
    sock = server_dir / "server.sock"
    assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600

    # A directory others can enter is refused, by the library and by the server.
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    env = {**os.environ, "SANDLOT_SESSIONS_DIR": str(open_dir)}
    saved = os.environ["SANDLOT_SESSIONS_DIR"]
    os.environ["SANDLOT_SESSIONS_DIR"] = str(open_dir)
    try:
        with pytest.raises(sandlot.ConfigError, match="mode 0700"):
            sessions_dir()
        # Nor a file of the user's, nor a link to a closed directory (it may be swapped).
        closed = tmp_path / "closed"
        closed.mkdir(mode=0o700)
        (tmp_path / "file").write_text("")
        (tmp_path / "file").chmod(0o600)
        (tmp_path / "link").symlink_to(closed)
        for planted in ("file", "link"):
            os.environ["SANDLOT_SESSIONS_DIR"] = str(tmp_path / planted)
            with pytest.raises(sandlot.ConfigError, match="must be a directory of yours"):
                sessions_dir()
    finally:
        os.environ["SANDLOT_SESSIONS_DIR"] = saved
    done = subprocess.run(
        [sys.executable, "-c", "from sandlot.notebook.server import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "mode 0700" in done.stderr
    assert not (open_dir / "server.sock").exists()


FORGED_SNAPSHOT_REPORTS = {
    "wrong-shape": "open(report, 'w').write('{\"captured\": 7}')",
    "not-json": "open(report, 'w').write('\\x1b[2J not json')",
    "huge": "open(report, 'w').write('[' + '0,' * (2 << 20) + '0]')",
    "no-report": "import os; os.remove(report) if os.path.exists(report) else None",
}


@pytest.mark.parametrize("case", sorted(FORGED_SNAPSHOT_REPORTS))
def test_a_kernel_that_forges_its_snapshot_report_runs_on_and_loses_nothing(
    server_dir: Path, tmp_path: Path, case: str
) -> None:
    """The kernel's report on its own state is the sandbox's word: checked, and on a bad
    one the idle session is not suspended (nor ended) but runs on with all it holds."""
    forged = FORGED_SNAPSHOT_REPORTS[case]
    handle = start_session(strict(), persist=True, idle_timeout=1, notebook_dir=tmp_path / "nb")
    try:
        code = (
            "kept = [1, 2, 3]\n"
            "import sandlot_driver.snapshot as _s\n"
            "def _forged(shell, state, report):\n"
            "    open(state, 'wb').write(b'junk')\n"
            f"    {forged}\n"
            "_s.capture_shell = _forged\n"
        )
        assert handle.execute(code).error is None
        log = server_dir / "server.log"
        refused = f"session {handle.session_id} idle for 1s; could not suspend it"
        deadline = time.monotonic() + 20
        while refused not in log.read_text():
            assert time.monotonic() < deadline, "the sweep never tried to suspend it"
            time.sleep(0.2)
        said = [ln for ln in log.read_text().splitlines() if ln.startswith(refused)]
        assert "\x1b" not in said[-1], said
        statuses = {i.session_id: i.status for i in list_sessions()}
        assert statuses[handle.session_id] == "idle"
        assert handle.execute("sum(kept)").text == "6"
        assert not (server_dir / "suspended" / f"{handle.session_id}.snap").exists()
    finally:
        handle.shutdown()
