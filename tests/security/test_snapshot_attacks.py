"""Attacks through snapshots: a hostile file handed to ``restore``, a hostile sandbox snapshotted.

A snapshot is data the host checks, never code it runs: its state is unpickled
and its tar unpacked only inside the restoring sandbox. So a pickle that runs
code runs it in there, under the walls; a tar that names paths outside the
workdir cannot reach the host; a file changed, cut or forged in its frame is
refused before any of it is used. And a sandbox being snapshotted can forge
what the driver sends: a report of the wrong shape ends it, an endless state
stops at ``max_bytes``, and names with terminal escapes reach the user escaped.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import strict

import sandlot
from sandlot import snapshots
from sandlot.driver import snapshot as state_format
from sandlot.errors import DownloadRefused, SandboxDied, SandboxError, SnapshotInvalid

pytestmark = pytest.mark.timeout(120)

REPORT = {
    "captured": ["evil"],
    "skipped": [],
    "modules": [],
    "tools": [],
    "cells": 0,
    "unlisted": 0,
}


def state_blob(records: dict[str, bytes]) -> bytes:
    """A REPL state as the driver frames it, holding the given pickles."""
    out = bytearray(state_format.MAGIC)
    index = []
    for name, data in records.items():
        index.append([name, len(out), len(out) + len(data), True])
        out += data
    trailer = json.dumps(
        {"python": list(state_format._VERSION), "records": index, "modules": {}, "cells": {}}
    ).encode()
    return bytes(out + trailer + struct.pack(">Q", len(trailer)))


def tar_blob(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def write_snapshot(
    path: Path, state: bytes, workdir: bytes, *, manifest: dict[str, Any] | None = None
) -> Path:
    """A snapshot file framed as sandlot frames one, with whatever sections we like."""
    sections = [
        {"name": "state", "size": len(state), "sha256": hashlib.sha256(state).hexdigest()},
        {"name": "workdir", "size": len(workdir), "sha256": hashlib.sha256(workdir).hexdigest()},
    ]
    head = {
        "format": 1,
        "created": "2026-12-06T00:00:00+00:00",
        "python": "3.11.0",
        "sections": sections,
        "report": REPORT,
        **(manifest or {}),
    }
    raw = json.dumps(head).encode()
    path.write_bytes(snapshots.MAGIC + struct.pack(">I", len(raw)) + raw + state + workdir)
    return path


class _RunsCode:
    """Unpickles by calling ``exec`` on its code: what a hostile snapshot would hold."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    (root / "secret.txt").write_text("host secret\n")
    return root


def test_a_hostile_pickle_runs_in_the_sandbox_and_cannot_write_the_host(
    tmp_path: Path, host: Path
) -> None:
    target = host / "pwned.txt"
    code = (
        "import os\n"
        f"try:\n    open({str(target)!r}, 'w').write('pwned'); how = 'wrote'\n"
        "except OSError as e:\n    how = type(e).__name__\n"
        f"try:\n    open({str(host / 'secret.txt')!r}, 'a').write('x')\n"
        "except OSError as e:\n    how += ' ' + type(e).__name__\n"
        "open('/tmp/ran', 'w').write(how + ' ' + str(os.getuid()))\n"
    )
    evil = pickle.dumps(_RunsCode(code), protocol=5)
    path = write_snapshot(tmp_path / "evil.snap", state_blob({"evil": evil}), tar_blob())
    snapshots.check(path)  # a well-framed file: the frame is all the host judges
    with sandlot.Sandbox.restore(path, strict()) as sb:
        assert sb.restored is not None and sb.restored.restored == ("evil",)
        ran = sb.run_code("open('/tmp/ran').read()", raise_on_error=True).value
    assert ran is not None and "wrote" not in ran, ran  # it ran, in there, and failed to write
    assert ran.endswith(" 65534'"), ran  # as the sandbox's user
    assert not target.exists()
    assert (host / "secret.txt").read_text() == "host secret\n"


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


@pytest.mark.parametrize(
    "members",
    [
        [(_member("../../../HOST/pwned.txt"), b"x")],
        [(_member("/HOST/pwned.txt"), b"x")],
        [(_member("up", tarfile.SYMTYPE, "/HOST"), b""), (_member("up/pwned.txt"), b"x")],
        [(_member("rel", tarfile.SYMTYPE, "../../../../.."), b""), (_member("rel/x"), b"x")],
        [(_member("hard", tarfile.LNKTYPE, "/HOST/secret.txt"), b"")],
        [(_member("dev", tarfile.CHRTYPE), b"")],
    ],
    ids=["dotdot", "absolute", "abs-link", "rel-link", "hard-link", "device"],
)
def test_a_hostile_workdir_tar_cannot_reach_the_host(
    tmp_path: Path, host: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    for info, _ in members:
        info.name = info.name.replace("/HOST", str(host))
        info.linkname = info.linkname.replace("/HOST", str(host))
    stream = tar_blob(*members)
    path = write_snapshot(tmp_path / "tar.snap", state_blob({}), stream)
    before = sorted(p.name for p in host.iterdir())
    try:
        with sandlot.Sandbox.restore(path, strict()) as sb:
            listed = [e.name for e in sb.files.list(".")]
    except SandboxError as exc:  # the sandbox's tar filter refuses it: a clear error
        assert "upload" in str(exc) or "restore" in str(exc), exc
    else:  # or it unpacked what it safely could, inside the workdir
        assert "pwned.txt" not in listed
    assert sorted(p.name for p in host.iterdir()) == before
    assert (host / "secret.txt").read_text() == "host secret\n"
    assert not list(tmp_path.glob("**/pwned.txt"))
    assert sandlot.sandbox.live_sandboxes() == []


def _good(tmp_path: Path) -> bytes:
    return write_snapshot(
        tmp_path / "good.snap", state_blob({"evil": pickle.dumps(1)}), tar_blob()
    ).read_bytes()


def _edit_manifest(raw: bytes, **changes: Any) -> bytes:
    start = len(snapshots.MAGIC)
    (length,) = struct.unpack(">I", raw[start : start + 4])
    manifest = json.loads(raw[start + 4 : start + 4 + length])
    manifest.update(changes)
    head = json.dumps(manifest).encode()
    return snapshots.MAGIC + struct.pack(">I", len(head)) + head + raw[start + 4 + length :]


TAMPERED: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "flipped-byte": (lambda raw: raw[:-600] + bytes([raw[-600] ^ 1]) + raw[-599:], "SHA-256"),
    "cut-short": (lambda raw: raw[:-10], "cut short"),
    "appended": (lambda raw: raw + b"more", "appended"),
    "not-a-snapshot": (lambda raw: b"PK\x03\x04" + raw, "first line"),
    "empty": (lambda raw: b"", "first line"),
    "huge-manifest": (
        lambda raw: snapshots.MAGIC + struct.pack(">I", 0xFFFFFFFF) + raw[30:],
        "manifest length",
    ),
    "not-json": (
        lambda raw: snapshots.MAGIC + struct.pack(">I", 5) + b"{{{{{" + raw[-100:],
        "manifest",
    ),
    "size-as-text": (
        lambda raw: _edit_manifest(
            raw, sections=[{"name": "state", "size": "1", "sha256": "0"}] * 2
        ),
        "shape",
    ),
    "negative-size": (
        lambda raw: _edit_manifest(
            raw,
            sections=[
                {"name": "state", "size": -5, "sha256": ""},
                {"name": "workdir", "size": 5, "sha256": ""},
            ],
        ),
        "negative",
    ),
    "swapped-sections": (
        lambda raw: _edit_manifest(
            raw,
            sections=[
                {"name": "workdir", "size": 0, "sha256": ""},
                {"name": "state", "size": 0, "sha256": ""},
            ],
        ),
        "sections",
    ),
    "future-format": (lambda raw: _edit_manifest(raw, format=2), "format 2"),
    "forged-report": (lambda raw: _edit_manifest(raw, report={"captured": 7}), "shape"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_changed_or_forged_file_is_refused_before_anything_starts(
    tmp_path: Path, case: str
) -> None:
    change, says = TAMPERED[case]
    path = tmp_path / "changed.snap"
    path.write_bytes(change(_good(tmp_path)))
    with pytest.raises(SnapshotInvalid, match=says):
        snapshots.check(path)
    with pytest.raises(SnapshotInvalid, match=says):
        sandlot.Sandbox.restore(path, strict())
    assert sandlot.sandbox.live_sandboxes() == []
    # Without the hashes (a fork's own private copy) the frame is still checked whole.
    if case == "flipped-byte":
        assert snapshots.check(path, verify=False).offsets
    else:
        with pytest.raises(SnapshotInvalid, match=says):
            snapshots.check(path, verify=False)


FORGED_REPORT = """
import sandlot_driver.snapshot as _s
def _forged(namespace, out, leave_out=()):
    out.write(b'x' * 100)
    return {'captured': [1, 2], 'skipped': [], 'modules': [], 'tools': [], 'cells': 0,
            'unlisted': 0}
_s.capture = _forged
"""

ENDLESS_STATE = """
import sandlot_driver.snapshot as _s
def _forged(namespace, out, leave_out=()):
    while True:
        out.write(b'x' * (1 << 20))
_s.capture = _forged
"""

ESCAPES_IN_NAMES = """
import sandlot_driver.snapshot as _s
_real = _s.capture
def _forged(namespace, out, leave_out=()):
    report = _real(namespace, out, leave_out)
    report['skipped'] = [{'name': '\\x1b]0;owned\\x07\\x1b[2J', 'type': '\\x1b[31m', 'why': 'x'}]
    return report
_s.capture = _forged
"""


def test_a_forged_report_ends_the_sandbox_and_writes_nothing(tmp_path: Path) -> None:
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code(FORGED_REPORT, raise_on_error=True)
        with pytest.raises(SandboxDied) as info:
            sb.snapshot(tmp_path / "forged.snap")
        assert info.value.cause == "protocol"
    assert list(tmp_path.iterdir()) == []


def test_an_endless_state_stops_at_max_bytes_and_the_sandbox_lives(tmp_path: Path) -> None:
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code(ENDLESS_STATE, raise_on_error=True)
        with pytest.raises(DownloadRefused, match="max_bytes"):
            sb.snapshot(tmp_path / "endless.snap", max_bytes=8 << 20)
        assert list(tmp_path.iterdir()) == []
        assert sb.run_code("21 * 2").value == "42"  # the cancel interrupted the forged loop


def test_names_a_sandbox_sends_reach_the_user_escaped(tmp_path: Path) -> None:
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code(ESCAPES_IN_NAMES, raise_on_error=True)
        with pytest.warns(UserWarning) as caught:
            result = sb.snapshot(tmp_path / "names.snap")
    assert result.skipped[0].name.startswith("\x1b")  # the data, as sent
    text = str(caught[0].message)
    assert "\x1b" not in text and "\x07" not in text and "\\x1b" in text


def test_forks_cannot_reach_each_other_s_files_processes_or_memory() -> None:
    """Forks are fresh sandboxes: a sibling's files, processes and memory are out of sight."""
    with sandlot.Sandbox(strict()) as parent:
        parent.run_code("secret = 'in every fork'", raise_on_error=True)
        first, second = parent.fork(2)
        try:
            first.run_code(
                "import subprocess, os\n"
                "open('/tmp/first-only', 'w').write('x')\n"
                "open('first.txt', 'w').write('x')\n"
                "sleeper = subprocess.Popen(['sleep', '300'])",
                raise_on_error=True,
            )
            looks = second.run_code(
                "import os\n"
                "procs = [p for p in os.listdir('/proc') if p.isdigit()]\n"
                "cmds = [open(f'/proc/{p}/cmdline', 'rb').read() for p in procs]\n"
                "(os.path.exists('/tmp/first-only'), os.path.exists('first.txt'), "
                "any(b'sleep' in c for c in cmds), secret)",
                raise_on_error=True,
            ).value
            assert looks == "(False, False, False, 'in every fork')", looks
            assert first.run_code("sleeper.poll()").value is None  # it runs, out of sight
        finally:
            first.terminate()
            second.terminate()


TAMPER = """
import builtins, os
p = '/.sandlot-fork/parent.snap'
out = [os.path.exists(p)]
for what, act in [
    ('write', lambda: open(p, 'r+b').write(b'x')),
    ('truncate', lambda: os.truncate(p, 0)),
    ('chmod', lambda: os.chmod(p, 0o666)),
    ('rename', lambda: os.rename(p, p + '.x')),
    ('unlink', lambda: os.unlink(p)),
    ('create', lambda: open('/.sandlot-fork/planted', 'w')),
]:
    try:
        act()
        out.append(what + ' worked')
    except OSError as e:
        out.append(e.errno)
builtins.TAMPERED = out
"""


@pytest.mark.skipif(os.getuid() != 0, reason="children read a mounted snapshot on a root host")
def test_a_fork_s_child_cannot_change_the_snapshot_its_siblings_still_read() -> None:
    """A fork's children read their parent's snapshot from one host file, mounted read-only.
    The parent's state runs code in each child as it loads (unpickling): there it tries to
    write, truncate, chmod, rename and remove that file, and to plant one beside it, for a
    sibling that has yet to read it. Each attempt fails, and every child gets the state."""
    with sandlot.Sandbox(strict()) as parent:
        parent.run_code(
            f"TAMPER = {TAMPER!r}\n"
            "class Tamper:\n"
            "    def __reduce__(self):\n"
            "        return (exec, (TAMPER, {}))\n"
            "tamper = Tamper()\nsecret = 'kept'",
            raise_on_error=True,
        )
        children = parent.fork(3)
        try:
            for child in children:
                seen = child.run_code("import builtins; builtins.TAMPERED, secret").value
                (found, *refused), kept = ast.literal_eval(seen or "")
                assert found is True and kept == "kept", seen
                assert len(refused) == 6 and set(refused) <= {errno.EACCES, errno.EROFS}, seen
                assert refused[2:] == [errno.EROFS] * 4, seen  # chmod and more: a read-only mount
        finally:
            for child in children:
                child.terminate()


@pytest.mark.parametrize(
    ("state", "says"),
    [
        (b"garbage", "not a sandlot REPL state"),
        (state_format.MAGIC + b"x" * 8, "index is longer"),
        (state_format.MAGIC + b"[1]" + struct.pack(">Q", 3), "index is not an object"),
    ],
    ids=["garbage", "lying-length", "not-an-object"],
)
def test_a_state_the_driver_cannot_read_is_a_clear_error_and_no_sandbox_is_left(
    tmp_path: Path, state: bytes, says: str
) -> None:
    path = write_snapshot(tmp_path / "bad-state.snap", state, tar_blob())
    with pytest.raises(SandboxError, match=says):
        sandlot.Sandbox.restore(path, strict())
    assert sandlot.sandbox.live_sandboxes() == []


def _rlm_with(code: str, **sandbox: object) -> tuple[Any, list[str]]:
    """Run an RLM whose root LM runs ``code``, then ``print(21 * 2)``; what its LM was told."""
    from sandlot.rlm.engine import RLM
    from sandlot.rlm.niah import ScriptedRootLM, StandInSubLM

    told: list[str] = []

    def policy(messages: Any) -> str:
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if turns:
            told.append(messages[-1]["content"])
        steps = [code, "print(21 * 2)"]
        if turns < len(steps):
            return f"```repl\n{steps[turns]}\n```"
        return "FINAL(done)"

    rlm = RLM(ScriptedRootLM(policy), StandInSubLM(0.0), sandbox=strict(**sandbox), max_depth=1)
    return rlm.completion("context", "q"), told


@pytest.mark.parametrize(
    ("forgery", "says"),
    [(ENDLESS_STATE, "larger than max_bytes"), (FORGED_REPORT, "sandbox died")],
    ids=["endless-state", "forged-report"],
)
def test_a_hostile_rlm_parent_cannot_make_the_host_keep_its_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str, says: str
) -> None:
    """``rlm_query(fork=True)`` snapshots the parent while its code waits: a parent that forges
    the state is bounded by its own limits (memory plus disk) or ended, no child starts, no
    copy stays on the host, and the run goes on in a sandbox of its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the private copy goes
    result, told = _rlm_with(
        forgery + "\ntry:\n    rlm_query('x', fork=True)\nexcept Exception as e:\n    print(e)",
        memory_mb=256,
        disk_mb=32,
    )
    assert result.finished, result.error
    assert says in told[0].lower(), told[0]
    assert "42" in told[1]
    assert [e["depth"] for e in result.trajectory if e["type"] == "run_start"] == [0]
    assert [p.name for p in tmp_path.iterdir() if "fork" in p.name] == []
