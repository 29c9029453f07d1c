"""Attacks on SandlotSandboxClient's workspace snapshots (OpenAI Agents SDK adapter).

Sandboxed code shares the driver's process, so when the SDK persists a workspace
(``stop()`` at the end of every run) the tar stream the sandbox sends may be
forged: names with ``..``, absolute names, links and files beneath them. The
promise: persisting writes nothing on the host outside its own scratch directory
(which is gone afterwards), a forged stream fails the persist with the SDK's
``WorkspaceArchiveReadError``, and what the SDK stores is an archive the host made
of regular files and directories. A snapshot tampered with on disk is refused by
the SDK's own validator before anything is unpacked, and unpacking happens only
inside the sandbox.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from agents.sandbox.errors import WorkspaceArchiveReadError, WorkspaceArchiveWriteError
from conftest import remover_drained, strict

from sandlot.backends.local import _stock
from sandlot.integrations.openai_agents import SandlotSandboxClient
from sandlot.sandbox import live_sandboxes

pytestmark = pytest.mark.timeout(60)

CONFIG = strict(memory_mb=256)

# Replace the driver's get_tar, once, with one that sends the bytes of forged.tar.
FORGE = """
import sandlot_driver.fileops as _f
def _forged(rid, path, send, root=None, _real=_f.get_tar):
    _f.get_tar = _real
    with open('/tmp/forged.tar', 'rb') as fh:
        while chunk := fh.read(1 << 20):
            send({'t': 'chunk', 'id': rid}, chunk)
    return {}
_f.get_tar = _forged
"""


def tar_of(*members: tuple[str, str, bytes | str]) -> bytes:
    """A tar of (name, kind, data-or-link-target) members, names exactly as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(data)
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tree(root: Path) -> dict[str, Any]:
    """Every entry under ``root``, links not followed: its kind and content.

    The directory sandlot's local backend keeps its sandboxes' workdirs in
    (``sandlot-<uid>``, made under the temporary directory on first use) is left out
    itself, not what is in it: it must be empty once the sandboxes have ended, but for
    the frame of a template a test's first sandbox started there (the host's, as long
    as it runs), which must hold nothing of theirs.
    """
    seen: dict[str, Any] = {}
    state = root / "scratch" / f"sandlot-{os.getuid()}"
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(here, name)
            rel = str(path.relative_to(root))
            if path.parent == root / "scratch" and name.startswith("sandlot-"):
                continue
            if path.parent.parent == state and path.parent.name.startswith("template-"):
                continue  # its owner, slots and trash; not what is in them
            if path.parent == state and name.startswith("template-"):
                continue
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_file():
                seen[rel] = ("file", path.read_bytes())
            else:
                seen[rel] = ("dir",)
    return seen


FORGED = {
    "dot-dot name": tar_of(("workspace", "dir", b""), ("workspace/../escape.txt", "file", b"x")),
    "absolute name": tar_of(("workspace", "dir", b""), ("/tmp/escape.txt", "file", b"x")),
    "second root": tar_of(("workspace", "dir", b""), ("escape.txt", "file", b"x")),
    "file under a link": tar_of(
        ("workspace", "dir", b""),
        ("workspace/up", "symlink", ".."),
        ("workspace/up/escape.txt", "file", b"x"),
    ),
    "link as the root": tar_of(("workspace", "symlink", "/")),
    "stream past the cap": tar_of(
        ("workspace", "dir", b""), ("workspace/big", "file", bytes(3 << 20))
    ),
}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host directory all of the adapter's temporary files go to, with a secret beside."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "secret.txt").write_text("host secret\n")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return tmp_path


@pytest.mark.parametrize("attack", list(FORGED))
def test_a_forged_workspace_stream_fails_the_persist_and_writes_nothing(
    host: Path, attack: str
) -> None:
    before = tree(host)

    async def scenario() -> None:
        client = SandlotSandboxClient(CONFIG, max_workspace_bytes=1 << 20)
        session = await client.create()
        await session.start()
        inner = session._inner
        try:
            await session.write(Path("real.txt"), io.BytesIO(b"real\n"))
            await inner.sandbox.files.write("/tmp/forged.tar", FORGED[attack])
            await inner.sandbox.run_code(FORGE, raise_on_error=True)
            with pytest.raises(WorkspaceArchiveReadError):
                await inner.persist_workspace()
            # The forgery was one shot: the same sandbox persists honestly afterwards.
            archive = await inner.persist_workspace()
            with tarfile.open(fileobj=archive) as tar:
                assert tar.getnames() == ["real.txt"]
        finally:
            await session.aclose()
            await client.delete(session)

    asyncio.run(scenario())
    _stock.clear()  # the next sandboxes' cgroups, made ahead: the host's, like its templates
    remover_drained()  # what ended forks left in their template's trash, removed from there
    assert tree(host) == before  # nothing new beside the scratch dir, which is empty again
    assert not live_sandboxes()


def test_links_to_host_paths_in_the_workspace_never_reach_the_snapshot(host: Path) -> None:
    """A workspace full of links (to the host's files, to ``..``) persists as regular files
    and directories only; the links are left out, and warned about."""

    async def scenario() -> bytes:
        client = SandlotSandboxClient(CONFIG)
        session = await client.create()
        await session.start()
        inner = session._inner
        try:
            await session.exec(
                f"mkdir d && echo ok > d/f && ln -s {host / 'secret.txt'} secret "
                "&& ln -s .. up && ln -s / d/root && mkfifo pipe",
                shell=True,
            )
            with pytest.warns(UserWarning, match="skipped 4 member"):
                archive = await inner.persist_workspace()
            return bytes(archive.read())
        finally:
            await session.aclose()
            await client.delete(session)

    data = asyncio.run(scenario())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [(m.name, m.type) for m in tar.getmembers()] == [
            ("d", tarfile.DIRTYPE),
            ("d/f", tarfile.REGTYPE),
        ]
    assert not live_sandboxes()


TAMPERED = {
    "dot-dot name": tar_of(("../escape.txt", "file", b"x")),
    "absolute name": tar_of(("/tmp/escape.txt", "file", b"x")),
    "link out of the root": tar_of(("up", "symlink", "/tmp")),
    "file under a link": tar_of(("up", "symlink", "."), ("up/escape.txt", "file", b"x")),
    "hard link out": tar_of(("escape.txt", "hardlink", "/etc/passwd")),
}


@pytest.mark.parametrize("attack", list(TAMPERED))
def test_a_tampered_snapshot_is_refused_before_anything_is_unpacked(
    host: Path, attack: str
) -> None:
    before = tree(host)

    async def scenario() -> bytes:
        client = SandlotSandboxClient(CONFIG)
        session = await client.create()
        await session.start()
        try:
            await session.write(Path("kept.txt"), io.BytesIO(b"kept\n"))
            with pytest.raises(WorkspaceArchiveWriteError):
                await session._inner.hydrate_workspace(io.BytesIO(TAMPERED[attack]))
            seen = await session.exec("find /workspace /tmp -name escape.txt; ls", shell=True)
            return seen.stdout
        finally:
            await session.aclose()
            await client.delete(session)

    assert asyncio.run(scenario()) == b"kept.txt\n"
    _stock.clear()
    remover_drained()
    assert tree(host) == before
    assert not live_sandboxes()
