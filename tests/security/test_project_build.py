"""Attacks from a repository under test: ``--project`` must not run its code on the host.

``sandlot exec --upload REPO --project`` builds the repository's environment on
the host, with uv. A hostile repository can name a path requirement whose build
backend runs code, ship a ``uv.toml`` that points uv elsewhere, or make its
requirements files include host files, devices or themselves. Each test plants
one of these and checks that nothing ran or leaked on the host.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from test_cli import sandlot

BACKEND = """
import pathlib
pathlib.Path({marker!r}).write_text("ran on the host")
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(directory, config_settings=None):
    raise SystemExit(1)
def build_wheel(directory, config_settings=None, metadata_directory=None):
    raise SystemExit(1)
"""


def _exec_project(repo: Path, tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """``sandlot exec --upload REPO --project -- COMMAND`` with a cache of the test's own."""
    return sandlot(
        "exec",
        "--upload",
        str(repo),
        "--project",
        "--",
        *(command or ("true",)),
        env={"SANDLOT_CACHE": str(tmp_path / "cache")},
        timeout=300,
    )


def _evil_package(root: Path, marker: Path) -> None:
    (root / "evil").mkdir(parents=True)
    (root / "evil" / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "evil"\nversion = "0"\n'
    )
    (root / "evil" / "backend.py").write_text(BACKEND.format(marker=str(marker)))


def test_a_path_requirement_is_never_built_on_the_host(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    marker = tmp_path / "PWNED"
    _evil_package(repo, marker)
    (repo / "requirements.txt").write_text("./evil\n")
    done = _exec_project(repo, tmp_path)
    assert done.returncode == 2
    assert "installed from wheels only" in done.stderr
    assert not marker.exists()


def test_a_pyproject_path_dependency_is_never_built_on_the_host(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    marker = tmp_path / "PWNED"
    _evil_package(repo, marker)
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "victim"\nversion = "0"\n'
        f'dependencies = ["evil @ file://{repo / "evil"}"]\n'
    )
    done = _exec_project(repo, tmp_path)
    assert done.returncode == 2
    assert not marker.exists()


def test_the_projects_uv_configuration_does_not_steer_the_hosts_uv(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    elsewhere = tmp_path / "planted-cache"
    (repo / "uv.toml").write_text(
        f'cache-dir = "{elsewhere}"\nindex-url = "http://127.0.0.1:9/simple"\n'
    )
    (repo / "requirements.txt").write_text("iniconfig\n")
    done = _exec_project(repo, tmp_path, "python", "-c", "import iniconfig")
    assert done.returncode == 0, done.stderr
    assert not elsewhere.exists()


def test_requirements_includes_cannot_read_host_files_devices_or_loop(tmp_path: Path) -> None:
    secret = tmp_path / "host.env"
    secret.write_text("API_KEY=sk-host-secret-value\n")
    cases = {
        "outside": f"-r {secret}\n",
        "device": "-r /dev/zero\n",
        "loop": "-r requirements.txt\n" * 10 + "iniconfig\n",
    }
    for name, text in cases.items():
        repo = tmp_path / name
        repo.mkdir()
        (repo / "requirements.txt").write_text(text)
        started = time.monotonic()
        done = _exec_project(repo, tmp_path)
        took = time.monotonic() - started
        assert "sk-host-secret-value" not in done.stdout + done.stderr, name
        assert took < 60, name  # no hang reading a device or following a loop
        if name == "loop":
            assert done.returncode == 0, done.stderr  # each file is read once
        else:
            assert done.returncode == 2, (name, done.stderr)
            assert "Traceback" not in done.stderr
