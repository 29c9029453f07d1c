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
