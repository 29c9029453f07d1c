"""The virtual environments sandboxes run in, built once per package set.

An environment lives in the cache under the hash of the interpreter and the
sorted requirements, so the second sandbox with the same packages starts as fast
as any other. Builds take a file lock, so concurrent starts build once.

A sandbox without ``python_packages`` runs in an empty environment too: it sees
the standard library and nothing the host happens to have installed, and its
interpreter skips the host's ``.pth`` start-up hooks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError

READY = ".sandlot-ready"


def cache_dir() -> Path:
    """``$SANDLOT_CACHE``, else ``$XDG_CACHE_HOME/sandlot``, else ``~/.cache/sandlot``."""
    if env := os.environ.get("SANDLOT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sandlot"


def find_uv() -> str:
    """The uv executable: on PATH, or the one the ``uv`` package ships."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConfigError(
            "python_packages needs uv to build the sandbox's environment; "
            "install it with 'pip install uv'"
        ) from None
    return str(find_uv_bin())


def env_key(python: str, packages: list[str]) -> str:
    """The cache key of an environment: interpreter and requirements, order-free."""
    text = "\n".join([os.path.realpath(python), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def ready_env(python: str, packages: list[str]) -> Path | None:
    """The environment for ``packages`` if it is already built (a stat, no thread needed)."""
    target = cache_dir() / "envs" / env_key(python, packages)
    return target if (target / READY).exists() else None


def ensure_env(python: str, packages: list[str]) -> Path:
    """Return the directory of a ready environment with ``packages``, building it if needed."""
    root = cache_dir() / "envs"
    root.mkdir(parents=True, exist_ok=True)
    target = root / env_key(python, packages)
    if (target / READY).exists():
        return target
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        if not packages:
            _build_empty(python, target)
            return target
        uv = find_uv()
        steps = [
            [uv, "venv", "--quiet", "--python", python, str(target)],
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(target / "bin" / "python"),
                *_find_links(),
                *packages,
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise ConfigError(
                    f"python_packages {packages!r} could not be installed "
                    f"(uv exited {done.returncode}):\n{done.stderr.strip()[-4000:]}"
                )
        (target / READY).write_text(" ".join(packages) + "\n")
    return target


def _pip_find_links() -> list[str]:
    """The find-links locations pip is configured with: ``PIP_FIND_LINKS`` or its config files."""
    if env := os.environ.get("PIP_FIND_LINKS"):
        return env.split()
    import configparser

    home = Path.home()
    files = [
        os.environ.get("PIP_CONFIG_FILE", ""),
        "/etc/xdg/pip/pip.conf",
        "/etc/pip.conf",
        str(home / ".pip" / "pip.conf"),
        str(home / ".config" / "pip" / "pip.conf"),
    ]
    found: list[str] = []
    for name in files:
        parser = configparser.ConfigParser()
        if name and parser.read(name) and parser.has_option("global", "find-links"):
            found = parser.get("global", "find-links").split()  # later files override
    return found


def _find_links() -> list[str]:
    """``--find-links`` for each location pip is configured with.

    uv does not read pip's configuration; honouring this one lets a machine that
    keeps wheels locally (a CPU build of torch, say) serve them to sandboxes too.
    """
    return [arg for loc in _pip_find_links() for arg in ("--find-links", loc)]


def _build_empty(python: str, target: Path) -> None:
    """An environment without packages (no uv needed: the interpreter's own venv)."""
    done = subprocess.run(
        [python, "-I", "-m", "venv", "--without-pip", str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise ConfigError(
            f"cannot create a virtual environment with {python}: {done.stderr.strip()[-2000:]}"
        )
    (target / READY).write_text("\n")


def base_python() -> str:
    """The host's base interpreter (not a virtual environment's, whose packages are the host's)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)
