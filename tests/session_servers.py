"""A session server of a test module's own, which must end by itself when the module is done."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from sandlot.notebook import wire
from sandlot.notebook.client import _connection


def server_pids(folder: Path) -> set[int]:
    """Every session server ``folder`` has had (from their log lines)."""
    try:
        log = (folder / "server.log").read_text()
    except FileNotFoundError:
        return set()
    return {int(line.split()[3]) for line in log.splitlines() if " listening on " in line}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a server that exited stays a zombie until its spawner reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def ping() -> int:
    """The process id of the session server this process reaches (started if none runs)."""
    conn = await _connection()
    try:
        return await conn.call(wire.Ping())
    finally:
        await conn.close()


@contextlib.contextmanager
def own_session_server(folder: Path, linger: float) -> Iterator[Path]:
    """Point ``SANDLOT_SESSIONS_DIR`` at ``folder`` with a short linger; restore both after.

    At the end every server that ran there must exit on its own within the
    linger and a margin; one that does not is killed by PID and the test fails.
    """
    saved = {k: os.environ.get(k) for k in ("SANDLOT_SESSIONS_DIR", "SANDLOT_SESSIONS_LINGER")}
    os.environ["SANDLOT_SESSIONS_DIR"] = str(folder)
    os.environ["SANDLOT_SESSIONS_LINGER"] = str(linger)
    lingering: list[int] = []
    try:
        yield folder
    finally:
        deadline = time.monotonic() + linger + 8
        while time.monotonic() < deadline and any(map(alive, server_pids(folder))):
            time.sleep(0.2)
        lingering = [pid for pid in server_pids(folder) if alive(pid)]
        for pid in lingering:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert not lingering, f"session servers {lingering} did not exit on their own"
