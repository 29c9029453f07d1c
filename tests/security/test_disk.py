"""The disk limit (``disk_mb``): attacks on the host's disk through the public API.

The attack from issue 9: 16 files of 16 MiB under a 128 MiB memory limit
landed 256 MiB on the host's disk. With ``disk_mb=64`` the host's watcher
kills the sandbox with ``cause="disk"`` soon after the workdir passes 64 MiB.
How far past depends on how fast the code writes and how soon the watcher
sees it (every 20 ms at most, see ``sandlot.backends.disk``): over 40 runs on
a 2-core machine, with Python and ``dd`` writers at 1 to 2 GB/s, the most
ever left on disk was 114 MiB (50 MiB past the limit). The bound asserted
here, 64 MiB of slack past the limit, is that figure with some margin for a
loaded machine; it still stops the attack well short of its 256 MiB.

A file needs no name to hold disk: 12 files of 16 MiB, each unlinked while
kept open (or made with ``O_TMPFILE``, or mapped and then unlinked), held
192 MiB under ``disk_mb=32`` while the workdir looked empty. The watcher now
also counts the files with no link left that the sandbox's processes hold.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import remover_drained, strict

import sandlot
from sandlot.backends import disk
from sandlot.backends.disk import DiskWatcher, usage
from sandlot.backends.local import LocalBackend

MiB = 1 << 20
ATTACK = (
    "chunk = b'x' * (16 << 20)\n"
    "for i in range(16):\n"
    "    with open(f'f{i}', 'wb') as f:\n"
    "        f.write(chunk)\n"
)


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # reachable by the sandbox's user when the host runs as root
    tmp_path.chmod(0o755)
    return work


def test_sixteen_files_of_16_mib_end_in_a_disk_death_with_the_usage_bounded(
    tmp_path: Path,
) -> None:
    work = _workdir(tmp_path)
    config = strict(disk_mb=64, memory_mb=128)
    with (
        sandlot.Sandbox(config, backend=LocalBackend(workdir=work)) as sb,
        pytest.raises(sandlot.SandboxDied) as died,
    ):
        sb.run_code(ATTACK)
    assert died.value.cause == "disk"
    assert "disk_mb=64" in died.value.detail
    left = usage(work)
    assert 64 * MiB < left <= 128 * MiB, f"{left / MiB:.0f} MiB on the host's disk"


# Each way of holding a file with no name: write 16 MiB, drop the name, keep the
# file, then leave an empty marker (no blocks) saying the file is held.
_HOLD = {
    "unlinked": (
        "    f = open(f'f{i}', 'wb')\n"
        "    f.write(chunk)\n"
        "    os.unlink(f'f{i}')\n"
        "    held.append(f)\n"
    ),
    "o_tmpfile": (
        "    fd = os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o600)\n"
        "    os.write(fd, chunk)\n"
        "    held.append(fd)\n"
    ),
    "mapped": (
        "    with open(f'f{i}', 'wb+') as f:\n"
        "        f.write(chunk)\n"
        "        f.flush()\n"
        "        held.append(mmap.mmap(f.fileno(), 4096))\n"  # one page maps all 16 MiB's inode
        "    os.unlink(f'f{i}')\n"
    ),
}


@pytest.mark.parametrize("how", sorted(_HOLD))
def test_files_held_with_no_name_end_in_a_disk_death_with_the_usage_bounded(
    tmp_path: Path, how: str
) -> None:
    work = _workdir(tmp_path)
    code = (
        "import mmap, os, time\n"
        "chunk = b'x' * (16 << 20)\n"
        "held = []\n"
        "for i in range(12):\n"
        f"{_HOLD[how]}"
        "    open(f'held{i}', 'wb').close()\n"
        "time.sleep(5)\n"  # keep holding them: the watcher has time to see them all
    )
    config = strict(disk_mb=32, memory_mb=128)
    with (
        sandlot.Sandbox(config, backend=LocalBackend(workdir=work)) as sb,
        pytest.raises(sandlot.SandboxDied) as died,
    ):
        sb.run_code(code)  # before the fix: 192 MiB held, the workdir empty, the sandbox alive
    assert died.value.cause == "disk"
    assert "disk_mb=32" in died.value.detail
    assert "no name left" in died.value.detail
    # At the kill the sandbox held the files it had marked, plus at most the one
    # it was writing: 16 MiB each. Over 120 runs (40 of each way) on a 2-core
    # machine, with Python writing at 2 to 4 GB/s, the kill landed with 2 to 5
    # marked (at most 96 MiB on the host); 7 allows 128 MiB, 96 past the limit,
    # for a loaded machine, still short of the 192 MiB the code tried.
    marked = sorted(n for n in os.listdir(work) if n.startswith("held"))
    assert 1 <= len(marked) <= 7, marked
    assert usage(work) <= 16 * MiB  # once killed, only the file in progress can be left


def test_the_attack_leaves_nothing_behind_after_terminate() -> None:
    from sandlot.backends.local import _state_root

    sb = sandlot.Sandbox(strict(disk_mb=64, memory_mb=128))
    sb.start()
    sb.files.write("marker-of-the-disk-test", b"")
    root, mark = _state_root(), "marker-of-the-disk-test"  # a cold start's workdir, or a fork's
    (work,) = [p.parent for p in [*root.glob(f"*/work/{mark}"), *root.glob(f"*/slots/*/{mark}")]]
    with pytest.raises(sandlot.SandboxDied) as died:
        sb.run_code(ATTACK)
    assert died.value.cause == "disk"
    sb.terminate()
    assert not work.exists()
    remover_drained()  # a fork's directory went to its template's trash, removed from there
    assert [*root.glob(f"*/work/{mark}"), *root.glob(f"*/*/*/{mark}")] == []


def test_one_file_past_the_limit_fails_with_efbig_and_the_sandbox_lives(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    code = (
        "import errno, os\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        f.write(b'x' * (80 << 20))\n"
        "except OSError as e:\n"
        "    failed = errno.errorcode[e.errno]\n"
        "size = os.path.getsize('big')\n"
        "os.remove('big')\n"
        "failed, size\n"
    )
    with sandlot.Sandbox(
        strict(disk_mb=64, max_file_bytes=None), backend=LocalBackend(workdir=work)
    ) as sb:
        r = sb.run_code(code)
        assert r.error is None, r.error
        assert r.value == f"('EFBIG', {64 * MiB})"  # the file size rlimit is disk_mb
        assert sb.run_code("1 + 1").value == "2"
    assert os.listdir(work) == []


def test_work_under_the_limit_is_unaffected(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    code = (
        "import os\n"
        "for d in range(20):\n"
        "    os.makedirs(f'd{d}', exist_ok=True)\n"
        "    for i in range(50):\n"
        "        with open(f'd{d}/f{i}', 'wb') as f:\n"
        "            f.write(b'y' * 40000)\n"
        "for d in range(0, 20, 2):\n"  # rewrite, delete and write again: growth, not traffic
        "    for i in range(50):\n"
        "        os.remove(f'd{d}/f{i}')\n"
        "        with open(f'd{d}/f{i}', 'wb') as f:\n"
        "            f.write(b'z' * 40000)\n"
        "sum(os.path.getsize(f'd{d}/f{i}') for d in range(20) for i in range(50))\n"
    )
    with sandlot.Sandbox(strict(disk_mb=64), backend=LocalBackend(workdir=work)) as sb:
        assert sb.run_code(code).value == str(1000 * 40000)  # 38 MiB written, 15 MiB freed
        p = sb.exec("dd", "if=/dev/zero", "of=blob", "bs=1M", "count=20", "status=none")
        assert p.returncode == 0, p.stderr
        assert sb.run_code("1 + 1").value == "2"


def test_files_already_in_a_given_workdir_do_not_count(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    with open(work / "dataset", "wb") as f:
        f.write(os.urandom(MiB) * 48)
    with sandlot.Sandbox(strict(disk_mb=32), backend=LocalBackend(workdir=work)) as sb:
        p = sb.exec("dd", "if=/dev/zero", "of=more", "bs=1M", "count=24", "status=none")
        assert p.returncode == 0, p.stderr
        assert sb.run_code("import os; os.path.getsize('dataset') >> 20").value == "48"


def test_data_hidden_deeper_than_the_watcher_looks_ends_in_a_disk_death() -> None:
    code = "import os, time\nos.makedirs('/'.join(['d'] * 70))\ntime.sleep(10)\n"
    with sandlot.Sandbox(strict(disk_mb=64)) as sb, pytest.raises(sandlot.SandboxDied) as died:
        sb.run_code(code)
    assert died.value.cause == "disk"
    assert "deeper than" in died.value.detail


def _disk_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sandlot-disk")]


def test_many_watched_sandboxes_share_one_watching_thread_and_each_still_dies_alone() -> None:
    """Twenty sandboxes under a disk limit: one thread looks for all of them (plus those
    scanning at the moment, each scan of an idle sandbox a fraction of a millisecond), not
    one each; the one that writes past its limit dies, none other."""
    boxes = [sandlot.Sandbox(strict(disk_mb=64)).start() for _ in range(20)]
    try:
        threads = _disk_threads()
        assert 1 <= len(threads) <= 10, threads
        attacker, *others = boxes
        with pytest.raises(sandlot.SandboxDied) as died:
            attacker.run_code(ATTACK)
        assert died.value.cause == "disk"
        assert all(box.run_code("1 + 1").value == "2" for box in others)
    finally:
        for box in boxes:
            box.terminate()


def _hub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sandlot-disk"]


def test_sandboxes_one_after_another_share_the_looking_thread_which_ends_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The looking thread outlives the last watcher by ``LINGER`` seconds: sandboxes that
    start and end one after another keep one thread (no thread's start on each one's path);
    once none is watched for that long, it ends."""
    monkeypatch.setattr(disk, "LINGER", 1.0)
    with sandlot.Sandbox(strict(disk_mb=64)) as first:
        first.run_code("1 + 1")
        (hub,) = _hub_threads()
    for _ in range(3):
        with sandlot.Sandbox(strict(disk_mb=64)) as box:
            assert box.run_code("1 + 1").value == "2"
            assert _hub_threads() == [hub]
    hub.join(10)
    assert not hub.is_alive() and _hub_threads() == []
    with sandlot.Sandbox(strict(disk_mb=64)) as later:  # a new one starts with the next
        later.run_code("1 + 1")
        (again,) = _hub_threads()
        assert again is not hub


def test_a_watcher_stopped_without_waiting_says_so_while_a_scan_is_under_way(
    tmp_path: Path,
) -> None:
    """``stop(wait=False)`` (what a launch's cleanup calls on the event loop) returns True
    only when no scan can report any more; while one holds the watcher it returns False and
    ``stop()`` waits it out. A scan that was under way reports nothing after."""
    reports: list[str] = []
    watcher = DiskWatcher(tmp_path, 1, reports.append, empty=True)
    watcher.start()
    scanning, finish = threading.Event(), threading.Event()

    def scan() -> None:  # stands in for a scanning thread: holds the watcher as a scan does
        with watcher._busy:
            scanning.set()
            finish.wait(10)
            (tmp_path / "big").write_bytes(b"x" * (2 * MiB))
            watcher._scan_once(0.0, 0, 0)

    scanner = threading.Thread(target=scan)
    scanner.start()
    assert scanning.wait(10)
    assert watcher.stop(wait=False) is False
    finish.set()
    assert watcher.stop() is True
    scanner.join()
    assert watcher.stop(wait=False) is True
    assert reports == []
