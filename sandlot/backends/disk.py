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

A file needs no name to hold disk: one deleted while open, or made with
``O_TMPFILE``, keeps its blocks until the last descriptor or mapping goes. The
watcher also counts those (:func:`held`): the files on the workdir's filesystem
with no link left that the sandbox's processes hold open or mapped, found
through ``/proc/PID/fd`` and ``/proc/PID/map_files``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..config import SandboxConfig

POLL = 0.02  # seconds between looks at the filesystem's free space
PERIOD = 1.0  # seconds between scans when the free space gives no reason for one
CPU_SHARE = 0.02  # scanning takes at most this share of a core over time
BURST = 0.02  # seconds of CPU scans may take at once, within the share over time
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


def held(pids: Iterable[int], device: int, stop: threading.Event | None = None) -> int:
    """Bytes allocated to files on ``device`` with no link left that ``pids`` hold.

    A file unlinked while open, or made with ``O_TMPFILE``, has ``st_nlink == 0``
    and keeps its blocks while a process holds it, but no walk of a directory
    finds it. Each open descriptor (``/proc/PID/fd``) and each mapping of a
    deleted file (``/proc/PID/map_files``, which only a host with
    ``CAP_SYS_ADMIN`` can read) is stat'ed through its magic link, and each file
    counted once. Errors are ignored: processes and descriptors come and go.
    Returns what was counted so far when ``stop`` is set midway.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for pid in pids:
        if stop is not None and stop.is_set():
            break
        for path in _held_paths(pid):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_nlink != 0 or st.st_dev != device or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _held_paths(pid: int) -> list[str]:
    """The magic links to the files ``pid`` holds: its descriptors and its deleted mappings."""
    paths: list[str] = []
    with contextlib.suppress(OSError):
        paths += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    mapped: set[bytes] = set()  # one file mapped many times is stat'ed once
    with contextlib.suppress(OSError, ValueError):
        for line in _read(f"/proc/{pid}/maps").splitlines():
            if line.endswith(b" (deleted)"):
                span, _, _, dev, inode = line.split(maxsplit=5)[:5]
                if dev + b" " + inode not in mapped:
                    mapped.add(dev + b" " + inode)
                    paths.append(f"/proc/{pid}/map_files/{span.decode()}")
    return paths


def _read(path: str) -> bytes:
    """A ``/proc`` file in as few reads as it takes (each read of ``maps`` walks the mappings)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while part := os.read(fd, 1 << 20):
            parts.append(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants now, found through ``/proc/PID/task/TID/children``.

    For a sandbox without a cgroup: a process that leaves the tree (its parent
    exits and it is adopted outside it) is no longer found.
    """
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.add(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with (
                    contextlib.suppress(OSError, ValueError),
                    open(f"/proc/{p}/task/{tid}/children") as f,
                ):
                    todo += [int(c) for c in f.read().split()]
    return found


class DiskWatcher:
    """A host thread that checks a workdir's growth against a limit.

    Usage already in the workdir when the watcher starts (a workdir the user
    gave) is the baseline: the limit bounds what the sandbox adds. A full scan
    of the tree costs a few microseconds a file, so the watcher polls the
    filesystem's free space instead (one ``statvfs`` every ``POLL`` seconds)
    and scans when the filesystem lost more than a quarter of the sandbox's
    remaining headroom since the last scan, and at least every ``PERIOD``
    seconds (space freed by others can hide a sandbox's writes). Scans draw on
    a budget of CPU time that grows by ``CPU_SHARE`` of a second each second
    and holds at most ``BURST``: quick scans may follow each other while a
    sandbox writes fast, and over time scanning never takes more than
    ``CPU_SHARE`` of one core (plus ``BURST``); a slow scan pushes the next
    one out. ``on_exceeded`` is called once, from the watcher's thread, with
    a sentence saying what was seen.

    ``pids``, when given, returns the sandbox's processes now: each scan also
    counts the files on the workdir's filesystem that they hold with no link
    left (see :func:`held`), which no walk of the workdir finds. None are held
    when the sandbox starts, so they are not part of the baseline.
    """

    def __init__(
        self,
        root: Path,
        limit_mb: int,
        on_exceeded: Callable[[str], None],
        pids: Callable[[], Iterable[int]] | None = None,
        what: str = "workdir",
    ) -> None:
        self.root = root
        self.what = what  # what ``root`` is to the sandbox, for the message
        self.limit = limit_mb * MiB
        self.on_exceeded = on_exceeded
        self.pids = pids
        self.baseline = 0
        self.held = 0  # bytes in files with no link left that the last scan found held
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

    def _held(self, device: int) -> int:
        """Bytes in files with no link left on ``device`` that the sandbox's processes hold."""
        if self.pids is None:
            return 0
        try:
            pids = self.pids()
        except OSError:
            return 0
        return held(pids, device, self._stop)

    def _run(self) -> None:
        try:
            self.baseline = usage(self.root, self._stop)
        except (Unmeasurable, OSError):
            self.baseline = 0  # what cannot be measured now is judged by the first scan
        grown = 0
        tree = self.baseline
        unexplained = 0  # free space lost since held files were last counted, not in the tree
        scanned_free = self._free()
        credit = BURST  # CPU seconds the scans may take now: CPU_SHARE a second, at most BURST
        refilled = periodic = time.monotonic()  # when credit was last added; the next routine scan
        while not self._stop.wait(POLL):
            now = time.monotonic()
            credit, refilled = min(BURST, credit + (now - refilled) * CPU_SHARE), now
            if credit <= 0:
                continue
            free = self._free()
            lost = scanned_free - free if min(free, scanned_free) >= 0 else self.limit
            if now < periodic and lost * 4 <= self.limit - grown:
                continue  # the filesystem did not lose enough for this sandbox to pass its limit
            started, cpu = time.monotonic(), time.thread_time()
            try:
                last, tree = tree, usage(self.root, self._stop)
                # Held files cost more to count than a small tree: count them on
                # routine scans, and when the filesystem lost space the tree's
                # growth does not explain (as a file held with no name would).
                unexplained = max(0, unexplained + lost - (tree - last))
                if now >= periodic or unexplained * 4 > self.limit - grown:
                    self.held = self._held(os.stat(self.root).st_dev)
                    unexplained = 0
                grown = tree + self.held - self.baseline
            except FileNotFoundError:
                return  # the workdir is gone: the sandbox is being cleaned up
            except (Unmeasurable, OSError) as exc:
                if not self._stop.is_set():
                    self._exceeded(f"its {self.what}'s disk use cannot be measured: {exc}")
                return
            scanned_free = free
            if grown > self.limit and not self._stop.is_set():
                hidden = (
                    f" ({self.held / MiB:.1f} MiB of it in files it holds with no name left)"
                    if self.held
                    else ""
                )
                self._exceeded(
                    f"its {self.what} grew by {grown / MiB:.1f} MiB{hidden},"
                    f" past disk_mb={self.limit // MiB}"
                )
                return
            credit -= time.thread_time() - cpu  # CPU, not wall: a preempted scan is not slow
            periodic = started + PERIOD

    def _exceeded(self, detail: str) -> None:
        with contextlib.suppress(Exception):  # the owner may already be gone
            self.on_exceeded(detail)
