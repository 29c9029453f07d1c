"""Attacks on the driver's start: files in the workdir must not become the driver's modules.

The workdir holds whatever was uploaded (a repository to test, say), and it is
on ``sys.path`` for the REPL. Once, the driver imported ``subprocess``,
``tempfile``, ``shutil`` and ``tarfile`` lazily with the workdir first on
``sys.path``: a ``subprocess.py`` in an uploaded repository ran inside the driver
at the first ``exec`` and could forge its replies. Now the workdir comes after the
standard library, so what a cold-started driver still loads only when a request
needs it (``subprocess`` at the first command, ``shutil`` at the first recursive
remove, ``tarfile`` at the first tar) comes from the standard library; a template
loads all of it before any fork.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import strict

import sandlot
from sandlot.backends import envs
from sandlot.backends import template as templates

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


@pytest.mark.parametrize("templates_on", ["1", "0"], ids=["template", "cold"])
def test_the_workdir_comes_after_the_standard_library_for_the_repl_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, templates_on: str
) -> None:
    """The driver's requests and the REPL find the standard library's modules, never the
    repository's copies; the repository's own modules import."""
    monkeypatch.setenv(templates.ENV_VAR, templates_on)
    repo = _repo(tmp_path)
    with sandlot.Sandbox(strict()) as sb:
        assert sb.info["started"] == ("template" if templates_on == "1" else "cold")
        sb.upload(repo, ".")
        p = sb.exec("python", "-c", "print('exec ran')")
        assert p.returncode == 0 and p.stdout == "exec ran\n"
        sb.files.write("f.txt", "x")
        assert sb.files.read("f.txt") == b"x"
        sb.files.write("d/g.txt", "y")
        sb.files.remove("d", recursive=True)
        assert not sb.files.exists("d")
        r = sb.run_code(
            "import helper, json, importlib\n"
            "for name in ('subprocess', 'selectors', 'tempfile', 'shutil', 'tarfile'):\n"
            "    importlib.import_module(name)\n"
            "(helper.VALUE, json.dumps([1]))"
        )
        assert r.error is None, r.error
        assert r.value == "(7, '[1]')"
        assert [e.name for e in sb.files.list() if e.name.startswith("SHADOW-")] == []
