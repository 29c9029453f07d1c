"""Attacks through a volume: sandboxed code writes what it likes there, and the host reads it later.

A volume outlives the sandbox that wrote it, and the host's own commands
(``sandlot volume ls|get|put|rm``, ``Volume.size``, ``Volume.delete``) touch it
afterwards. Each test plants something hostile in a volume from inside a
sandbox, then runs the host's operation and checks that nothing outside the
volume was read, written, counted or removed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict

import sandlot as sl
from sandlot.volumes import Volume

HOST_SECRET = "host-only-secret-contents"


@pytest.fixture(autouse=True)
def volumes_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "volumes"
    monkeypatch.setenv("SANDLOT_VOLUMES", str(root))
    yield root


@pytest.fixture
def host_files(tmp_path: Path) -> Path:
    """A host directory with a file the sandbox must never get at through the volume."""
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.txt").write_text(HOST_SECRET)
    (private / "big.bin").write_bytes(b"\0" * (4 << 20))
    return private


def _plant(code: str, name: str = "vol") -> Volume:
    volume = Volume.from_name(name, create_if_missing=True)
    with sl.Sandbox(strict(volumes={"/data": name})) as sb:
        sb.run_code(code, raise_on_error=True)
    return volume


def test_links_to_host_paths_are_not_followed_by_get(host_files: Path, tmp_path: Path) -> None:
    volume = _plant(
        "import os\n"
        f"os.symlink({str(host_files / 'secret.txt')!r}, '/data/file-link')\n"
        f"os.symlink({str(host_files)!r}, '/data/dir-link')\n"
        "open('/data/plain.txt', 'w').write('ok')\n"
    )
    with pytest.warns(UserWarning, match="skipped 2 member"):
        result = volume.get("/", tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["plain.txt"]
    assert {s.name.rsplit("/", 1)[-1] for s in result.skipped} == {"file-link", "dir-link"}
    for path in (tmp_path / "out").rglob("*"):
        assert HOST_SECRET not in path.read_text()
    # Asking for the link itself gets the link's target inside the helper sandbox, never the host's.
    with pytest.raises(sl.FileOperationError):
        volume.get("/file-link", tmp_path / "direct")
    assert not (tmp_path / "direct").exists()


def test_put_through_a_planted_link_never_writes_the_host(host_files: Path, tmp_path: Path) -> None:
    volume = _plant(
        "import os\n"
        f"os.symlink({str(host_files / 'secret.txt')!r}, '/data/target.txt')\n"
        f"os.symlink({str(host_files)!r}, '/data/into')\n"
    )
    payload = tmp_path / "payload.txt"
    payload.write_text("overwritten")
    for remote in ("/target.txt", "/into/secret.txt", "/into"):
        with contextlib.suppress(sl.SandboxError):  # refused inside the helper sandbox: fine
            volume.put(payload, remote)
    assert (host_files / "secret.txt").read_text() == HOST_SECRET
    assert sorted(os.listdir(host_files)) == ["big.bin", "secret.txt"]


def test_size_and_delete_never_follow_a_link_out_of_the_volume(host_files: Path) -> None:
    volume = _plant(f"import os\nos.symlink({str(host_files)!r}, '/data/escape')\n")
    assert volume.size() < (1 << 20)  # the 4 MiB host file is not counted
    volume.remove("/escape")
    assert (host_files / "secret.txt").read_text() == HOST_SECRET
    volume = _plant(f"import os\nos.symlink({str(host_files)!r}, '/data/escape2')\n")
    volume.delete()
    assert not volume.exists()
    assert sorted(os.listdir(host_files)) == ["big.bin", "secret.txt"]


def test_a_fifo_in_a_volume_does_not_hang_get(tmp_path: Path) -> None:
    volume = _plant("import os\nos.mkfifo('/data/pipe')\nopen('/data/real.txt', 'w').write('r')\n")
    with pytest.warns(UserWarning, match="skipped 1 member"):
        result = volume.get("/", tmp_path / "out")
    assert result.files == 1
    assert os.listdir(tmp_path / "out") == ["real.txt"]


def test_setuid_bits_planted_in_a_volume_do_not_reach_the_host(tmp_path: Path) -> None:
    volume = _plant(
        "import os\nopen('/data/tool', 'w').write('#!/bin/sh\\n')\nos.chmod('/data/tool', 0o6755)\n"
    )
    volume.get("/tool", tmp_path / "tool")
    mode = os.stat(tmp_path / "tool").st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID)


def test_names_with_terminal_escapes_are_shown_escaped(volumes_root: Path) -> None:
    from test_cli import sandlot

    _plant("open('/data/\\x1b]0;pwned\\x07\\x1b[2Jname\\n', 'w').write('x')\n", name="esc")
    listed = sandlot("volume", "ls", "esc", env={"SANDLOT_VOLUMES": str(volumes_root)})
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "\\x1b]0;pwned" in listed.stdout
    assert listed.stdout.count("\n") == 1  # the newline in the name did not make a line


def test_a_volume_name_cannot_leave_the_volumes_root(volumes_root: Path, tmp_path: Path) -> None:
    for name in ("..", "../x", "a/b", "/abs", ".hidden", ""):
        with pytest.raises(sl.ConfigError, match="not a volume name"):
            Volume.create(name)
    assert not (tmp_path / "x").exists()
    # A stray entry in the root that is not a valid name (or is a link) is not listed.
    volumes_root.mkdir(exist_ok=True)
    (volumes_root / "link").symlink_to(tmp_path)
    assert [v.name for v in Volume.list()] == []


def test_a_volume_without_bubblewrap_is_refused_not_a_host_path(tmp_path: Path) -> None:
    """Without a mount namespace, /data would be the host's own /data: refuse, never write it."""
    Volume.create("vol")
    config = sl.SandboxConfig(isolation="none", volumes={"/sandlot-test-data": "vol"})
    with pytest.raises(sl.ConfigError, match="volumes need bubblewrap"):
        sl.Sandbox(config).start()
    assert not os.path.exists("/sandlot-test-data")


def test_a_tree_too_deep_to_walk_can_still_be_sized_listed_and_deleted() -> None:
    """A sandbox nests 1,100 directories and locks the top one: the host's walk (64 levels)
    and Python's recursive rmtree (about 1,000) would both give up."""
    volume = _plant(
        "import os\n"
        "os.chdir('/data')\n"
        "for _ in range(1100):\n"
        "    os.mkdir('d'); os.chdir('d')\n"
        "open('f', 'w').write('x')\n"
        "os.chmod('/data/d', 0)\n",
        name="deep",
    )
    assert volume.size() == -1  # unmeasurable, said as such, not a crash
    assert [(v.name, v.size) for v in Volume.list()] == [("deep", -1)]
    volume.remove("/d", recursive=True)  # the repair the docs give
    assert volume.size() >= 0 and volume.ls() == []
    # A writable mount watches the volume: nesting it too deep ends the sandbox that does it.
    with pytest.raises(sl.SandboxDied, match="cannot be measured"):
        _plant(
            "import os, time\nos.chdir('/data')\nfor _ in range(100):\n"
            "    os.mkdir('e'); os.chdir('e')\ntime.sleep(5)\n",
            name="deep",
        )
    volume.delete()
    assert not volume.exists()


def test_removing_the_volume_root_through_remove_is_refused() -> None:
    volume = _plant("open('/data/keep.txt', 'w').write('k')\n", name="keep")
    for root in ("/", "", ".", "//", "/./"):
        with pytest.raises(sl.ConfigError, match="delete it"):
            volume.remove(root, recursive=True)
    assert [e.name for e in volume.ls()] == ["keep.txt"]
