"""Attacks on the driver's start: files in the workdir must not become the driver's modules.

The workdir holds whatever was uploaded (a repository to test, say), and it is
on ``sys.path`` for the REPL. Once, the driver imported ``subprocess``,
``tempfile``, ``shutil`` and ``tarfile`` lazily with the workdir first on
``sys.path``: a ``subprocess.py`` in an uploaded repository ran inside the driver
at the first ``exec`` and could forge its replies. Now the driver imports what it
uses before any sandboxed code runs, and the workdir comes after the standard
library.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import strict

import sandlot
from sandlot.backends import envs

SHADOWED = ["subprocess", "selectors", "tempfile", "shutil", "tarfile", "json", "inspect", "ctypes"]
MARK = "import os\nopen('/workspace/SHADOW-' + __name__, 'w').close()\n"


def _repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for name in SHADOWED:
        (repo / f"{name}.py").write_text(MARK + "raise SystemExit('shadowed')\n")
    (repo / "helper.py").write_text("VALUE = 7\n")
    return repo


def test_an_uploaded_repository_cannot_replace_the_drivers_modules(tmp_path: Path) -> None:
    """``sandlot exec --upload REPO --download ...``: the command and the download are real."""
    repo = _repo(tmp_path)
    work = tmp_path / "out"
    work.mkdir()
    code = "open('report.xml', 'w').write('<ok/>')"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandlot.cli",
            "exec",
            "--upload",
            str(repo),
            "--download",
            "report.xml",
            "--",
            envs.base_python(),
            "-c",
            code,
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(sandlot.__file__).parent.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert (work / "report.xml").read_text() == "<ok/>"
    assert sorted(p.name for p in work.iterdir()) == ["report.xml"]


def test_the_workdir_comes_after_the_standard_library_for_the_repl_too(tmp_path: Path) -> None:
    """In the REPL, the repository's own modules import; its copies of stdlib modules do not."""
    repo = _repo(tmp_path)
    with sandlot.Sandbox(strict()) as sb:
        sb.upload(repo, ".")
        p = sb.exec("python", "-c", "print('exec ran')")
        assert p.returncode == 0 and p.stdout == "exec ran\n"
        sb.files.write("f.txt", "x")
        assert sb.files.read("f.txt") == b"x"
        r = sb.run_code(
            "import helper, json, importlib\n"
            "for name in ('subprocess', 'selectors', 'tempfile', 'shutil', 'tarfile'):\n"
            "    importlib.import_module(name)\n"
            "(helper.VALUE, json.dumps([1]))"
        )
        assert r.error is None, r.error
        assert r.value == "(7, '[1]')"
        assert [e.name for e in sb.files.list() if e.name.startswith("SHADOW-")] == []
