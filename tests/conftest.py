"""Shared fixtures: real sandboxes under bubblewrap (the suite requires it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from other_user import other_user_home
from rlms_echo import echo, handler  # noqa: F401  (fixtures of the rlms tests)
from selector_check import unwatched

import sandlot
import sandlot.sync
from sandlot.backends import local as local_backend
from sandlot.backends import template as templates
from sandlot.backends.cgroups import SandboxCgroup


def pids_with(mark: str) -> list[int]:
    """The processes on this machine whose command line holds ``mark``, now."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def wait_gone(mark: str, seconds: float = 10) -> list[int]:
    """Wait up to ``seconds`` for :func:`pids_with` ``mark`` to be empty; what is left."""
    deadline = time.monotonic() + seconds
    while (left := pids_with(mark)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, now."""
    kids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                kids.append(int(entry))
    return kids


def template_processes(host: int) -> set[int]:
    """The processes of ``host``'s templates, less what they forked (sandboxes' processes).

    A template is bubblewrap, its init and the fork server, each the only child of
    the one before, and the spare the fork server keeps for the next sandbox: a
    first process and its driver-to-be (``sandlot-spare`` until it is given one);
    it outlives the sandboxes it forks, as the host's cache.
    """
    found: set[int] = set()
    for pid in children(host):
        with contextlib.suppress(OSError, ValueError):
            if b"template.main(" in Path(f"/proc/{pid}/cmdline").read_bytes():
                (init,) = children(pid)
                (fork_server,) = children(init)
                found |= {pid, init, fork_server}
                for first, waiting in spares(fork_server):
                    found |= {first, waiting}
    return found


def spares(fork_server: int) -> list[tuple[int, int]]:
    """The fork server's spares (none, or the one): each first process with its
    driver-to-be, which waits for a sandbox."""
    found = []
    for first in children(fork_server):
        for pid in children(first):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sandlot-spare":
                    found.append((first, pid))
    return found


def wait_settled(template: templates.Template, seconds: float = 30) -> None:
    """Wait until ``template`` has settled after its first request (loaded what its forks
    use, warmed up): it forks its next spare only then."""
    (init,) = children(template.proc.pid)
    (fork_server,) = children(init)
    deadline = time.monotonic() + seconds
    while not spares(fork_server):
        assert time.monotonic() < deadline, "the template did not settle"
        time.sleep(0.01)


def stocked_cgroups(within: float = 30.0) -> list[SandboxCgroup]:
    """The cgroups the host has made ahead for its next sandboxes (``cgroups.Stock``), once
    it has made all it wants: like its templates, the host's own, not a sandbox's."""
    from sandlot.backends.local import _stock

    deadline = time.monotonic() + within
    while True:
        with _stock._lock:
            if _stock._wanted() is None or time.monotonic() > deadline:
                return [cgroup for made in _stock._made.values() for cgroup in made]
        time.sleep(0.01)


def host_process(code: str, tmpdir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a separate host process whose state root lies under ``tmpdir``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def remover_drained() -> None:
    """Wait until the host's removers have done all they were given before now (each works
    in order: one removes files and cgroups, one closes mount namespaces)."""
    for lane in ("files", "mounts"):
        done = threading.Event()
        local_backend._later(done.set, lane=lane)
        assert done.wait(30), f"the {lane} remover did not get to it"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home for ``other_user.OTHER_UID``, the user a host that is not root runs as (its
    sandlot cache kept for the module)."""
    return other_user_home(tmp_path_factory.mktemp("other-user"))


def forked(box: sandlot.Sandbox) -> templates.ForkedProcess:
    """``box``'s first process, asserting that it came from a template (so a test of forks
    fails, not passes, where sandboxes silently start cold)."""
    proc = box.async_sandbox._launch.proc  # type: ignore[union-attr]
    assert isinstance(proc, templates.ForkedProcess), "the sandbox did not come from a template"
    return proc


def strict(**fields: object) -> sandlot.SandboxConfig:
    """A config that refuses to run without bubblewrap, so no test passes unisolated."""
    return sandlot.SandboxConfig(isolation="bubblewrap", **fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="module")
def _templates_with_mounts_end_with_their_module() -> Iterator[None]:
    """After each module, end the templates it made for sandboxes with mounts (each set of
    mount paths has its own): the host keeps 8 templates at most, and a later module's
    sandboxes would start cold once a suite had used them up."""
    yield
    local_backend.end_templates(lambda key: bool(key[3]))


@pytest.fixture(autouse=True, scope="module")
def _portal_loop_watches_what_it_registered() -> Iterator[None]:
    """After each module, every descriptor the portal's loop has registered is one its epoll
    watches (tests/selector_check.py): a stale entry would hang a later sandbox's start."""
    yield
    shared = sandlot.sync._portal
    if shared is None:
        return

    async def look() -> list[str]:
        return unwatched(asyncio.get_running_loop())

    problems = shared.call(look())
    assert not problems, "the portal's event loop after this module:\n" + "\n".join(problems)


@pytest.fixture
def sb() -> Iterator[sandlot.Sandbox]:
    """A started sandbox, terminated after the test."""
    with sandlot.Sandbox(strict(memory_mb=1024)) as box:
        yield box


def make_wheel(directory: Path, name: str, files: dict[str, str]) -> Path:
    """A wheel of ``name`` 1.0 holding ``files``, with its METADATA, WHEEL and RECORD:
    built by hand (no network, no build backend), installable by uv and pip."""
    info = f"{name}-1.0.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{member},sha256={digest.decode()},{len(data)}")
            whl.writestr(member, data)
        record.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path
