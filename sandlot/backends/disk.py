"""The disk limit of a sandbox (``SandboxConfig.disk_mb``), enforced from the host.

The workdir is a plain host directory (a tmpfs would be charged to the
sandbox's memory cgroup, so writing files would end in the OOM killer instead
of a disk limit). Two layers hold it:

- every process of the sandbox gets ``RLIMIT_FSIZE`` no larger than the limit,
  so no single file can pass it (a write past it fails with ``EFBIG``);
- a :class:`DiskWatcher` thread on the host sums what the workdir holds and,
  when the growth since the start passes the limit, reports it so the sandbox
  is killed with ``cause="disk"``.

The watcher walks with directory file descriptors and ``O_NOFOLLOW``: a link or
a directory swapped for a link mid-walk never takes it outside the workdir, and
it never crosses into another filesystem. It counts allocated blocks, not file
sizes, so sparse files cost what they really cost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..config import SandboxConfig

POLL = 0.02  # seconds between looks at the filesystem's free space
PERIOD = 1.0  # seconds between scans when the free space gives no reason for one
CPU_SHARE = 0.02  # a slow scan pushes the next one out so scanning takes at most this share
MAX_DEPTH = 64  # directory levels the watcher follows (one open descriptor each)
MiB = 1 << 20


def disk_limits(config: SandboxConfig) -> dict[str, int]:
    """The rlimits the disk limit adds: the largest file any process may write."""
    sizes = [config.max_file_bytes, None if config.disk_mb is None else config.disk_mb * MiB]
    known = [s for s in sizes if s is not None]
    return {"fsize": min(known)} if known else {}


class Unmeasurable(Exception):
    """The tree holds something the host cannot measure (too deep, unreadable)."""


def usage(root: Path, stop: threading.Event | None = None) -> int:
    """Bytes allocated under ``root`` (``root`` itself not counted), links never followed.

    Raises ``OSError`` when ``root`` cannot be opened, and :class:`Unmeasurable`
    for anything below it that cannot be read or nests deeper than
    ``MAX_DEPTH``. Returns what was counted so far when ``stop`` is set midway.
    """
    top = os.open(root, _DIR_FLAGS)
    stack: list[tuple[int, list[str]]] = [(top, [])]  # open directories, names left in each
    seen: set[tuple[int, int]] = set()  # inodes with several hard links, counted once
    try:
        device = os.fstat(top).st_dev
        total = _scan(top, device, seen, stack[-1][1])
        while stack and not (stop is not None and stop.is_set()):
            fd, pending = stack[-1]
            if not pending:
                os.close(stack.pop()[0])
                continue
            child = _open_subdir(fd, pending.pop())
            if child is None:
                continue
            stack.append((child, []))
            if len(stack) > MAX_DEPTH:
                raise Unmeasurable(f"its directories nest deeper than {MAX_DEPTH} levels")
            total += _scan(child, device, seen, stack[-1][1])
    finally:
        for fd, _ in stack:
            os.close(fd)
    return total


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_subdir(parent: int, name: str) -> int | None:
    """``name`` in ``parent`` opened as a directory, never through a link; None if it went."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None  # removed since it was listed
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return None  # replaced by a link or a file since it was listed: not followed
        raise Unmeasurable(f"the host cannot open one of its directories ({exc})") from None


def _scan(fd: int, device: int, seen: set[tuple[int, int]], dirs: list[str]) -> int:
    """Bytes allocated to the entries of directory ``fd``; its subdirectories go in ``dirs``."""
    total = 0
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                    dirs.append(entry.name)
    except OSError as exc:
        raise Unmeasurable(f"the host cannot read one of its directories ({exc})") from None
    return total


class DiskWatcher:
    """A host thread that checks a workdir's growth against a limit.

    Usage already in the workdir when the watcher starts (a workdir the user
    gave) is the baseline: the limit bounds what the sandbox adds. A full scan
    of the tree costs a few microseconds a file, so the watcher polls the
    filesystem's free space instead (one ``statvfs`` every ``POLL`` seconds)
    and scans when the filesystem lost more than a quarter of the sandbox's
    remaining headroom since the last scan, and at least every ``PERIOD``
    seconds (space freed by others can hide a sandbox's writes). Scans never
    take more than ``CPU_SHARE`` of one core: a slow scan pushes the next one
    out. ``on_exceeded`` is called once, from the watcher's thread, with a
    sentence saying what was seen.
    """

    def __init__(self, root: Path, limit_mb: int, on_exceeded: Callable[[str], None]) -> None:
        self.root = root
        self.limit = limit_mb * MiB
        self.on_exceeded = on_exceeded
        self.baseline = 0
        self.peak = 0  # the most growth seen, in bytes
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sandlot-disk {root}", daemon=True)

    def start(self) -> None:
        """Take the baseline and begin watching (on the watcher's own thread)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for the thread; a scan under way is abandoned."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _free(self) -> int:
        """Bytes free on the workdir's filesystem; -1 when that cannot be read."""
        try:
            fs = os.statvfs(self.root)
        except OSError:
            return -1
        return fs.f_bfree * fs.f_frsize

    def _run(self) -> None:
        try:
            self.baseline = usage(self.root, self._stop)
        except (Unmeasurable, OSError):
            self.baseline = 0  # what cannot be measured now is judged by the first scan
        grown = 0
        scanned_free = self._free()
        earliest = periodic = time.monotonic()  # the CPU budget's next slot; the next routine scan
        while not self._stop.wait(POLL):
            now = time.monotonic()
            if now < earliest:
                continue
            free = self._free()
            lost = scanned_free - free if min(free, scanned_free) >= 0 else self.limit
            if now < periodic and lost * 4 <= self.limit - grown:
                continue  # the filesystem did not lose enough for this sandbox to pass its limit
            started = time.monotonic()
            try:
                grown = usage(self.root, self._stop) - self.baseline
            except FileNotFoundError:
                return  # the workdir is gone: the sandbox is being cleaned up
            except (Unmeasurable, OSError) as exc:
                if not self._stop.is_set():
                    self._exceeded(f"its disk use cannot be measured: {exc}")
                return
            self.scans += 1
            scanned_free = free
            self.peak = max(self.peak, grown)
            if grown > self.limit and not self._stop.is_set():
                self._exceeded(
                    f"its workdir grew by {grown / MiB:.1f} MiB, past disk_mb={self.limit // MiB}"
                )
                return
            gap = (time.monotonic() - started) / CPU_SHARE
            earliest = started + gap
            periodic = started + max(PERIOD, gap)

    def _exceeded(self, detail: str) -> None:
        with contextlib.suppress(Exception):  # the owner may already be gone
            self.on_exceeded(detail)
