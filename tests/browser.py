"""Headless Chromium for tests of sandlot's HTML pages: load one, run its scripts, read the DOM.

``.ci/run`` installs Chromium; a machine without it fails these tests with how to
install it, since a skipped page test would prove nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

CHROMIUM_TIMEOUT = 60.0
INSTALL_HINT = "install it with 'apt-get install chromium' (Debian, Ubuntu)"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    pytest.fail(f"chromium is not installed; {INSTALL_HINT}")


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after headless Chromium loaded it and ran its scripts."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # the suite may run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    # Its own process group, so that the browser and every helper it started can be ended.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not dump the page within {CHROMIUM_TIMEOUT:g} s")
    finally:
        with contextlib.suppress(ProcessLookupError):  # none of them is left
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {err[-2000:]}"
    assert "<body" in out, f"chromium printed no DOM: {err[-2000:]}"
    return out
