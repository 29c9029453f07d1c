"""Files: write, read, list, remove, upload and download, large payloads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import sandlot


def test_fifty_megabytes_round_trip_byte_for_byte(sb: sandlot.Sandbox) -> None:
    data = os.urandom(50 << 20)
    assert sb.files.write("big/blob.bin", data) == len(data)
    digest = sb.run_code(
        "import hashlib\nhashlib.sha256(open('big/blob.bin','rb').read()).hexdigest()"
    )
    assert digest.value == repr(hashlib.sha256(data).hexdigest())
    assert sb.files.read("big/blob.bin") == data


def test_file_operations_are_relative_to_the_workdir(sb: sandlot.Sandbox) -> None:
    sb.files.write("data/in.txt", b"hello")
    sb.files.write("data/notes.md", "text")
    assert sb.run_code("open('data/in.txt').read()").value == "'hello'"
    assert sb.exec("cat", "data/notes.md").stdout == "text"
    names = [(f.name, f.type, f.size) for f in sb.files.list("data")]
    assert names == [("in.txt", "file", 5), ("notes.md", "file", 4)]
    assert sb.files.exists("data/in.txt") and not sb.files.exists("data/nope")
    sb.files.remove("data/in.txt")
    assert not sb.files.exists("data/in.txt")
    with pytest.raises(FileNotFoundError):
        sb.files.read("data/in.txt")
    with pytest.raises(sandlot.FileOperationError):
        sb.files.remove("data")  # not empty
    sb.files.remove("data", recursive=True)
    assert sb.files.list(".") == []
    assert sb.workdir == "/workspace"


def test_upload_and_download_trees_and_files(sb: sandlot.Sandbox, tmp_path: Path) -> None:
    repo = tmp_path / "my_repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("VALUE = 7\n")
    (repo / "README").write_text("readme")
    sb.upload(repo, "repo")
    assert sb.run_code("import sys\nsys.path.insert(0, 'repo')\nimport pkg\npkg.VALUE").value == "7"
    sb.exec("bash", "-c", "mkdir -p repo/out && echo '<xml/>' > repo/out/report.xml")
    sb.download("repo/out/report.xml", tmp_path / "report.xml")
    assert (tmp_path / "report.xml").read_text() == "<xml/>\n"
    sb.download("repo", tmp_path / "back")
    assert (tmp_path / "back" / "pkg" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (tmp_path / "back" / "out" / "report.xml").exists()
    with pytest.raises(FileNotFoundError):
        sb.download("missing", tmp_path / "x")


def test_a_file_round_trips_with_its_mode(sb: sandlot.Sandbox, tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    sb.upload(script, "bin/run.sh")
    sb.download("bin/run.sh", tmp_path / "back" / "run.sh")
    back = tmp_path / "back" / "run.sh"
    assert back.read_bytes() == script.read_bytes()
    assert back.stat().st_mode & 0o777 == 0o755


def test_a_tree_round_trips(sb: sandlot.Sandbox, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b" / "c").mkdir(parents=True)
    (tree / "empty").mkdir()
    blob = os.urandom(3 << 20)
    (tree / "a" / "b" / "c" / "blob.bin").write_bytes(blob)
    (tree / "a" / "tool").write_bytes(b"#!/bin/sh\n")
    (tree / "a" / "tool").chmod(0o755)
    (tree / "a" / "ro.txt").write_bytes(b"read only")
    (tree / "a" / "ro.txt").chmod(0o444)
    sb.upload(tree, "tree")
    assert sb.exec("test", "-x", "tree/a/tool").returncode == 0
    local = tmp_path / "back"
    local.mkdir()
    (local / "stale.txt").write_text("replaced by the download")
    sb.download("tree", local)
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*")) == [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/blob.bin",
        "a/ro.txt",
        "a/tool",
        "empty",
    ]
    assert (local / "a/b/c/blob.bin").read_bytes() == blob
    assert (local / "a/tool").stat().st_mode & 0o777 == 0o755
    assert (local / "a/ro.txt").stat().st_mode & 0o777 == 0o644  # owner may write: 0o600 added
    assert sorted(os.listdir(tmp_path)) == ["back", "tree"]  # no spool or temp dir left


def test_a_symlink_inside_a_downloaded_tree_is_skipped_and_reported(
    sb: sandlot.Sandbox, tmp_path: Path
) -> None:
    sb.exec("bash", "-c", "mkdir -p d && echo hi > d/real.txt && ln -s /etc/passwd d/link")
    with pytest.warns(UserWarning, match=r"skipped 1 member.*'d/link' \(symbolic link\)"):
        sb.download("d", tmp_path / "d")
    assert os.listdir(tmp_path / "d") == ["real.txt"]


def test_a_symlink_as_the_remote_itself_is_refused(sb: sandlot.Sandbox, tmp_path: Path) -> None:
    sb.exec("ln", "-s", "/etc/passwd", "link")
    with pytest.raises(sandlot.FileOperationError, match="symbolic link"):
        sb.download("link", tmp_path / "link")
    assert os.listdir(tmp_path) == []


def test_a_missing_remote_names_the_path(sb: sandlot.Sandbox, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'missing/file\.txt'"):
        sb.download("missing/file.txt", tmp_path / "x")
