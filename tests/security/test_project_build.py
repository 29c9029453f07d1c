"""Attacks from a repository under test: ``--project`` must not run its code on the host.

``sandlot exec --upload REPO --project`` builds the repository's environment on
the host, with uv. A hostile repository can name a path requirement whose build
backend runs code, ship a wheel whose start-up hooks (a ``.pth`` file, a
``sitecustomize`` or ``usercustomize`` module) or console script run when an
interpreter of the environment starts, point uv at an index or a directory of its
choosing, ship a ``uv.toml`` that points uv elsewhere, or make its requirements
files include host files, devices or themselves. Each test plants one of these
and checks that nothing ran or leaked on the host.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import make_wheel
from test_cli import sandlot

import sandlot as sl
from sandlot.backends import envs

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
    return _exec(tmp_path / "cache", "--upload", str(repo), "--project", "--", *command)


def _exec(cache: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``sandlot exec ARGS`` (``true`` when no command follows ``--``) with cache ``cache``."""
    if args[-1] == "--":
        args = (*args, "true")
    return sandlot("exec", *args, cwd=cwd, env={"SANDLOT_CACHE": str(cache)}, timeout=300)


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
        "outside, spelled --requirement=": f"--requirement={secret}\n",
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


# -- wheels whose code runs when an interpreter of the environment starts -------------

# Each payload writes a marker on the host if it runs there. Inside a sandbox the
# marker's directory is not there; the console script says on stdout that it ran.
# (usercustomize runs only where user site-packages are on, never in a venv: it is
# here so that no interpreter with them on starts either.)
PAYLOAD = """
import pathlib as _p
_m = _p.Path({marker!r})
if _m.parent.is_dir():
    _m.write_text("ran on the host")
elif {loud!r}:
    print({loud!r})
"""


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """(the directory the markers would appear in, one wheel per kind of hook)."""
    markers = tmp_path_factory.mktemp("markers")
    wheels = tmp_path_factory.mktemp("wheels")

    def payload(kind: str, loud: str = "") -> str:
        return PAYLOAD.format(marker=str(markers / kind), loud=loud)

    made = [
        make_wheel(
            wheels,
            "hook_pth",
            {
                "hook_pth/__init__.py": "",
                "hook_pth_payload.py": payload("pth"),
                "zz_hook.pth": "import hook_pth_payload\n",
            },
        ),
        make_wheel(
            wheels,
            "hook_site",
            {"hook_site/__init__.py": "", "sitecustomize.py": payload("sitecustomize")},
        ),
        make_wheel(
            wheels,
            "hook_user",
            {"hook_user/__init__.py": "", "usercustomize.py": payload("usercustomize")},
        ),
        make_wheel(
            wheels,
            "hook_script",
            {
                "hook_script/__init__.py": "def main():\n"
                + "".join(
                    "    " + line + "\n" for line in payload("script", "script ran").splitlines()
                ),
                "hook_script-1.0.dist-info/entry_points.txt": "[console_scripts]\n"
                "hookcmd = hook_script:main\n",
            },
        ),
    ]
    return markers, made


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One environment cache for the module's attacks."""
    return tmp_path_factory.mktemp("cache")


# Inside the sandbox the packages are there: each imports, from bytecode compiled on the
# host (-v says which .pyc "matches" its source), and the console script runs.
USE_THEM = (
    "python",
    "-v",
    "-c",
    "import subprocess, hook_pth, hook_site, hook_user, hook_script; "
    "print('imported'); subprocess.run(['hookcmd'], check=True)",
)


def _fired(markers: Path) -> list[str]:
    """The hooks that wrote their marker on the host since the last look (the markers go)."""
    found = sorted(p.name for p in markers.iterdir())
    for name in found:
        (markers / name).unlink()
    return found


def _repo_with_wheels(root: Path, wheels: list[Path]) -> list[str]:
    """Copy ``wheels`` into ``root/wheels``; their paths relative to ``root``."""
    (root / "wheels").mkdir(parents=True)
    for wheel in wheels:
        (root / "wheels" / wheel.name).write_bytes(wheel.read_bytes())
    return [f"./wheels/{wheel.name}" for wheel in wheels]


@pytest.mark.parametrize("route", ["--project", "-r", "--with"])
def test_a_wheels_start_up_hooks_never_run_on_the_host(
    route: str, hooks: tuple[Path, list[Path]], cache: Path, tmp_path: Path
) -> None:
    markers, wheels = hooks
    repo = tmp_path / "repo"
    names = _repo_with_wheels(repo, wheels)
    (repo / "requirements.txt").write_text("\n".join(names) + "\n")
    if route == "--project":
        args = ["--project"]
    elif route == "-r":
        args = ["-r", "requirements.txt"]
    else:
        args = [a for wheel in wheels for a in ("--with", str(wheel))]
    done = _exec(cache, "--upload", str(repo), *args, "--", *USE_THEM, cwd=repo)
    assert _fired(markers) == []
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["imported", "script ran"]
    loaded = [line for line in done.stderr.splitlines() if "hook_script/__init__.py" in line]
    assert any(" matches " in line for line in loaded), loaded


def _locked_project(root: Path, source: Path) -> None:
    """A project whose uv.lock takes ``hook_pth`` from the wheel at ``source`` (a path source)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "victim"\nversion = "0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["hook_pth"]\n'
        f"[tool.uv.sources]\nhook_pth = {{ path = {str(source)!r} }}\n"
    )
    subprocess.run(
        [envs.find_uv(), "lock", "--quiet", "--offline", "--no-config", "--project", str(root)],
        check=True,
        timeout=120,
    )


def test_a_lock_files_path_source_installs_inside_the_project_only(
    hooks: tuple[Path, list[Path]], cache: Path, tmp_path: Path
) -> None:
    markers, wheels = hooks
    inside = tmp_path / "inside"
    (name,) = _repo_with_wheels(inside, wheels[:1])
    _locked_project(inside, Path(name))
    done = _exec(
        cache, "--upload", str(inside), "--project", "--", "python", "-c", "import hook_pth"
    )
    assert _fired(markers) == []
    assert done.returncode == 0, done.stderr

    outside = tmp_path / "outside"
    _locked_project(outside, wheels[0])
    done = _exec(cache, "--upload", str(outside), "--project", "--")
    assert _fired(markers) == []
    assert done.returncode == 2
    assert "leads outside" in done.stderr, done.stderr


REFUSED = {
    "-i http://127.0.0.1:9/simple\n": "option -i",
    "--extra-index-url=http://127.0.0.1:9/simple\n": "option --extra-index-url",
    "--find-links ./wheels\n": "option --find-links",
    "-e ./wheels\n": "option -e",
    "hook-pth @ http://127.0.0.1:9/hook_pth-1.0-py3-none-any.whl\n": "direct URL",
    "git+http://127.0.0.1:9/hook.git\n": "direct URL",
    "../elsewhere/hook_pth-1.0-py3-none-any.whl\n": "leads outside",
    "hook-pth @ file:///etc/passwd\n": "leads outside",
    "${HOME}/hook_pth-1.0-py3-none-any.whl\n": "environment variables",
    "iniconfig --config-settings=x=y\n": "option --config-settings",
}


def test_requirements_files_cannot_choose_where_packages_come_from(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for number, (text, said) in enumerate(REFUSED.items()):
        repo = tmp_path / str(number)
        repo.mkdir()
        # On line 3 of a file the project's requirements.txt includes; and given with -r.
        (repo / "requirements.txt").write_text("# ours\n-r more.txt\n")
        (repo / "more.txt").write_text(f"iniconfig\n\n{text}")
        for config in (
            sl.SandboxConfig(project=str(repo)),
            sl.SandboxConfig(requirements=[str(repo / "more.txt")]),
        ):
            with pytest.raises(sl.ConfigError) as refused:
                envs.spec_for(config, "/workspace")
            assert "more.txt, line 3: " in str(refused.value), text
            assert said in str(refused.value), (text, str(refused.value))
    # What the command line says of it.
    done = _exec(cache, "--upload", str(tmp_path / "0"), "--project", "--")
    assert done.returncode == 2
    assert "more.txt, line 3: option -i is not accepted" in done.stderr, done.stderr
    assert "--index-url" in done.stderr and "Traceback" not in done.stderr


def test_the_command_line_chooses_where_packages_come_from(
    hooks: tuple[Path, list[Path]], cache: Path, tmp_path: Path
) -> None:
    markers, (pth, site, *_) = hooks
    index = tmp_path / "simple" / "hook-pth"
    index.mkdir(parents=True)
    (index / pth.name).write_bytes(pth.read_bytes())
    (index / "index.html").write_text(f'<a href="{pth.name}">{pth.name}</a>\n')
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "requirements.txt").write_text("hook-pth\nhook-site\n")
    done = _exec(
        cache,
        "--upload",
        str(repo),
        "--project",
        "--index-url",
        (tmp_path / "simple").as_uri(),
        "--find-links",
        str(site.parent),
        "--",
        "python",
        "-c",
        "import hook_pth, hook_site",
    )
    assert done.returncode == 0, done.stderr
    assert _fired(markers) == []
