"""Seed 001's workflow: a repository's test suite, with its dependencies, run in a sandbox.

The environments are built with uv on the host from a project's uv.lock,
pyproject.toml or requirements files, keyed by what they say.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import strict
from test_cli import sandlot

import sandlot as sl
from sandlot.backends import envs

BUILDING = "building the sandbox's environment"


def _project(root: Path, *, src_layout: bool = True, lock: bool = False) -> Path:
    """A small project: a package, a dependency, pytest in its dev group, two tests (one fails)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        "[project]\n"
        'name = "tinyproj"\n'
        'version = "0.1.0"\n'
        'requires-python = ">=3.11"\n'
        'dependencies = ["iniconfig>=2"]\n'
        "[dependency-groups]\n"
        'dev = ["pytest>=8"]\n'
        "[build-system]\n"
        'requires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n'
    )
    package = (root / "src" / "tinyproj") if src_layout else (root / "tinyproj")
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import iniconfig\n\ndef double(x):\n    return 2 * x\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_tiny.py").write_text(
        "import iniconfig, tinyproj\n\n"
        "def test_double():\n    assert tinyproj.double(21) == 42\n\n"
        "def test_deliberately_failing():\n    assert tinyproj.double(1) == 3\n"
    )
    if lock:
        subprocess.run(
            [envs.find_uv(), "lock", "--quiet", "--project", str(root)], check=True, timeout=300
        )
    return root


def _junit(path: Path) -> tuple[int, int]:
    """(tests, failures) of a JUnit XML report."""
    suite = ET.parse(path).getroot()
    if suite.tag == "testsuites":
        suite = suite[0]
    return int(suite.get("tests", "-1")), int(suite.get("failures", "-1"))


@pytest.mark.parametrize("lock", [False, True], ids=["pyproject", "uv.lock"])
def test_a_projects_suite_runs_through_the_cli_and_its_report_comes_back(
    tmp_path: Path, lock: bool
) -> None:
    project = _project(tmp_path / "proj", lock=lock)
    cache = {"SANDLOT_CACHE": str(tmp_path / "cache")}
    argv = [
        "exec",
        "--upload",
        str(project),
        "--project",
        "--download",
        "report.xml",
        "--",
        "python",
        "-m",
        "pytest",
        "-q",
        "--junitxml=report.xml",
    ]
    first = sandlot(*argv, cwd=tmp_path, env=cache, timeout=300)
    assert first.returncode == 1, first.stderr  # pytest's status: one test failed
    assert BUILDING in first.stderr
    assert "1 failed, 1 passed" in first.stdout
    assert _junit(tmp_path / "report.xml") == (2, 1)

    (tmp_path / "report.xml").unlink()
    second = sandlot(*argv, cwd=tmp_path, env=cache, timeout=120)
    assert second.returncode == 1, second.stderr
    assert BUILDING not in second.stderr  # the environment was reused
    assert _junit(tmp_path / "report.xml") == (2, 1)


def test_project_defaults_to_the_current_directory_and_a_flat_layout_imports(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path / "flat", src_layout=False)
    done = sandlot(
        "exec",
        "--project",
        "--",
        "python",
        "-c",
        "import tinyproj, pytest; print(tinyproj.double(4))",
        cwd=project,
        env={"SANDLOT_CACHE": str(tmp_path / "cache")},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "8\n"


def test_with_and_requirements_install_packages_and_a_changed_file_rebuilds(
    tmp_path: Path,
) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("iniconfig\n")
    cache = {"SANDLOT_CACHE": str(tmp_path / "cache")}
    code = "import iniconfig, six; print('both')"
    argv = ["exec", "--with", "six", "-r", str(reqs), "--", "python", "-c", code]
    first = sandlot(*argv, env=cache, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "both\n"
    assert BUILDING in first.stderr and "six" in first.stderr
    again = sandlot(*argv, env=cache, timeout=120)
    assert again.returncode == 0 and BUILDING not in again.stderr
    reqs.write_text("iniconfig\npackaging\n")  # same file name, new content: a new environment
    uv_spelling = ["exec", "--with", "six", "--with-requirements", str(reqs), "--"]
    changed = sandlot(*uv_spelling, "python", "-c", code, env=cache, timeout=300)
    assert changed.returncode == 0, changed.stderr
    assert BUILDING in changed.stderr


def test_run_and_repl_take_the_same_environment_options(tmp_path: Path) -> None:
    cache = {"SANDLOT_CACHE": str(tmp_path / "cache")}
    script = tmp_path / "s.py"
    script.write_text("import six; print(six.__name__)\n")
    ran = sandlot("run", "--with", "six", str(script), env=cache, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "six\n"
    repl = sandlot("repl", "--with", "six", stdin="import six\nsix.PY3\n", env=cache, timeout=120)
    assert repl.returncode == 0, repl.stderr
    assert repl.stdout.strip() == "True"


def test_the_python_api_takes_requirements_files_and_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))
    project = _project(tmp_path / "proj")
    with sl.Sandbox(strict(project=str(project))) as sb:
        sb.upload(project, ".")
        result = sb.run_code("import tinyproj, iniconfig, pytest\ntinyproj.double(5)")
        assert result.value == "10", result.error
    reqs = tmp_path / "r.txt"
    reqs.write_text("six\n")
    with sl.Sandbox(strict(requirements=[str(reqs)])) as sb:
        assert sb.run_code("import six").error is None


def test_bad_projects_and_requirements_get_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = sandlot("exec", "--upload", str(empty), "--project", "--", "true", timeout=60)
    assert done.returncode == 2
    assert "has no pyproject.toml, uv.lock or requirements.txt" in done.stderr
    assert "Traceback" not in done.stderr

    bad = tmp_path / "bad.txt"
    bad.write_text("this-package-does-not-exist-sandlot-test==0.0.1\n")
    failed = sandlot(
        "exec",
        "-r",
        str(bad),
        "--",
        "true",
        env={"SANDLOT_CACHE": str(tmp_path / "cache")},
        timeout=300,
    )
    assert failed.returncode == 2
    assert "could not be installed" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not list((tmp_path / "cache" / "envs").glob("*/.sandlot-ready"))  # nothing half-built
