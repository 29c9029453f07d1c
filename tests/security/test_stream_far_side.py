"""Attacks from the far side of a stream backend: the host trusts nothing it sends.

The far side of ``ssh HOST ...`` (or ``docker exec``, a Modal container) is
another machine: what comes back may be a login banner, garbage, a forged
length, silence or a flood. Each test puts a hostile far side
(``far_side.py``) where the bootstrap would run and checks that the start
fails at once with ``failed_to_start`` and a message that says what came,
that the host's memory stays bounded, and that the command is ended (its PID
is gone).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from processes import alive, rss_mb

import sandlot
from sandlot.backends.ssh import StreamBackend

pytestmark = pytest.mark.timeout(60)

FAR_SIDE = Path(__file__).with_name("far_side.py")


def _start(mode: str, tmp_path: Path, start_timeout: float = 20) -> tuple[str, float, int]:
    """Start a sandbox against far side ``mode``; the failure, seconds taken, far side's PID."""
    pidfile = tmp_path / "pid"
    backend = StreamBackend(
        [sys.executable, str(FAR_SIDE), mode, str(pidfile)],
        name=f"a {mode} far side",
        start_timeout=start_timeout,
    )
    started = time.monotonic()
    with pytest.raises(sandlot.SandboxDied) as info:
        sandlot.Sandbox(sandlot.SandboxConfig(isolation="none"), backend=backend).start()
    took = time.monotonic() - started
    assert info.value.cause == "failed_to_start", info.value
    return str(info.value), took, int(pidfile.read_text())


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("garbage", "Welco"),  # it shows what came instead of a frame
        ("huge", "at most"),
        ("bad_hello", "hello"),
    ],
)
def test_a_far_side_that_does_not_say_hello_fails_the_start_at_once(
    mode: str, words: str, tmp_path: Path
) -> None:
    before = rss_mb()
    message, took, pid = _start(mode, tmp_path)
    assert words in message and took < 10, message
    assert rss_mb() - before < 64  # the host read a few bytes, not the flood
    assert not alive(pid)


def test_a_far_side_that_never_answers_fails_after_start_timeout(tmp_path: Path) -> None:
    message, took, pid = _start("silent", tmp_path, start_timeout=2)
    assert "did not say hello within 2s" in message
    assert 1.5 < took < 10
    assert not alive(pid)


def test_a_flood_instead_of_the_drivers_ready_ends_the_start_bounded(tmp_path: Path) -> None:
    before = rss_mb()
    message, took, pid = _start("flood", tmp_path)
    assert "protocol" in message and took < 20, message
    assert rss_mb() - before < 128
    assert not alive(pid)
