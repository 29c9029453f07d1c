"""Run a sandlot host as a user that is not root, from tests that run as root.

A host that is not root takes other paths: bubblewrap makes a user namespace
for every sandbox, and a template runs in one of its own. To take them, a test
runs a script in a host process that is not root: the system's interpreter of
this Python version, as uid :data:`OTHER_UID` with no capability
(``setpriv``), in a mount namespace of the test's own (``unshare``) where
``/mnt`` shows, read-only, this checkout's ``sandlot`` package and the test
environment's packages, and a home of that user's (its sandlot cache, kept for
the session) with its temporary directory. Nothing of it is written outside
that home. ``benchmarks/bench.py --as-user`` runs itself so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import sandlot

OTHER_UID = 4242  # a user no file on this machine belongs to
SRC = "/mnt/src"  # where the host sees this checkout
SETUP = """
mount -t tmpfs -o mode=0755 sandlot-test /mnt
mkdir /mnt/src /mnt/site /mnt/home
mount --bind -o ro "$1" /mnt/src && mount --bind -o ro "$2" /mnt/site
mount --bind "$3" /mnt/home
uid=$4 python=$5 more=$6
shift 6
exec setpriv --reuid=$uid --regid=$uid --clear-groups --inh-caps=-all --bounding-set=-all \\
  env -i HOME=/mnt/home TMPDIR=/mnt/home/tmp PATH=/usr/bin:/bin \\
  PYTHONPATH=/mnt/src:/mnt/site PYTHONDONTWRITEBYTECODE=1 $more "$python" "$@"
"""


def other_user_python() -> str:
    """The system's interpreter of this Python version (one every user may run), whose
    ABI the test environment's compiled packages fit."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(name, path="/usr/bin:/usr/local/bin")
    assert found, f"these tests run a host as another user with the system's {name}: install it"
    return found


def other_user_home(root: Path) -> Path:
    """A home for :data:`OTHER_UID` under ``root`` (kept for a session: its sandlot cache)."""
    home = root / "home"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    for path in (home, home / "tmp"):
        os.chown(path, OTHER_UID, OTHER_UID)
    return home


def other_user_command(args: list[str], home: Path, env: dict[str, str] | None = None) -> list[str]:
    """The command that runs the interpreter with ``args`` as :data:`OTHER_UID`, in a mount
    namespace of its own with this checkout at :data:`SRC` and ``home`` as its home
    (``/mnt/home``); ``env``: more variables (no spaces), beside the few it sets."""
    package = Path(sandlot.__file__).parent
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-ec",
        SETUP,
        "sh",
        str(package.parent),
        sysconfig.get_paths()["purelib"],
        str(home),
        str(OTHER_UID),
        other_user_python(),
        " ".join(f"{k}={v}" for k, v in (env or {}).items()),
        *args,
    ]


def run_as_other_user(
    script: str, home: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> Any:
    """Run ``script`` as :data:`OTHER_UID`; the JSON of its last line of output."""
    done = subprocess.run(
        other_user_command(["-c", script], home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"the host as uid {OTHER_UID} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return json.loads(lines[-1])
