"""The disk limit of a sandbox (``SandboxConfig.disk_mb``), enforced from the host.

The workdir is a plain host directory (a tmpfs would be charged to the
sandbox's memory cgroup, so writing files would end in the OOM killer instead
of a disk limit). Two layers hold it:

- every process of the sandbox gets ``RLIMIT_FSIZE`` no larger than the limit,
  so no single file can pass it (a write past it fails with ``EFBIG``);
- a :class:`DiskWatcher` on the host (one thread looks for all of them) sums
  what the workdir holds and, when the growth since the start passes the
  limit, reports it so the sandbox is killed with ``cause="disk"``.

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
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from ..config import SandboxConfig

POLL = 0.02  # seconds between looks at the filesystem's free space
PERIOD = 1.0  # seconds between scans when the free space gives no reason for one
LINGER = 10.0  # seconds the looking thread waits for a new watcher once none is left
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
        maps = _read(f"/proc/{pid}/maps")
        for line in maps.splitlines() if b" (deleted)" in maps else ():
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
    """Checks a workdir's growth against a limit from the host.

    Usage already in the workdir when the watcher starts (a workdir the user
    gave) is the baseline: the limit bounds what the sandbox adds. A full scan
    of the tree costs a few microseconds a file, so the watcher polls the
    filesystem's free space instead (one ``statvfs`` every ``POLL`` seconds)
    and scans when the filesystem lost more than a quarter of the sandbox's
    remaining headroom since the last scan, and at least every ``PERIOD``
    seconds (space freed by others can hide a sandbox's writes). Scans draw on
    a budget of CPU time that grows by ``CPU_SHARE`` of a second each second
    and holds at most ``BURST``: quick scans may follow each other while a
    sandbox writes fast, and over time one watcher's scans never take more
    than ``CPU_SHARE`` of one core (plus ``BURST``); a slow scan pushes the
    next one out. ``on_exceeded`` is called once, from a host thread, with a
    sentence saying what was seen.

    ``empty`` says the root is a directory sandlot made empty for this sandbox
    (in its own state directory): its baseline is 0, without a scan, and one
    host thread polls every such watcher of the process, one ``statvfs`` per
    filesystem a round, while their scans run on threads beside it (an idle
    one, or a new one: no sandbox's scan waits for another's). Any other root
    (a workdir the user gave, a volume) may be large or on a slow filesystem:
    its watcher takes its baseline and polls on a thread of its own.

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
        empty: bool = False,
    ) -> None:
        self.root = root
        self.what = what  # what ``root`` is to the sandbox, for the message
        self.limit = limit_mb * MiB
        self.on_exceeded = on_exceeded
        self.pids = pids
        self.empty = empty
        self.baseline = 0
        self.held = 0  # bytes in files with no link left that the last scan found held
        self._stop = threading.Event()
        self._busy = threading.RLock()  # held through each scan, so stop() can wait one out
        self._thread: threading.Thread | None = None  # its own, for a root it did not make
        self._device = -1
        self._grown = 0
        self._tree = 0
        self._unexplained = 0  # free space lost since held files were counted, not in the tree
        self._scanned_free = -1
        self._credit = BURST  # CPU seconds scans may take now: CPU_SHARE a second, BURST at most
        self._refilled = self._periodic = 0.0  # when credit was last added; the next routine scan
        self._scanning = False  # a scan is under way on a scanning thread
        self._done = False  # limit passed, tree unmeasurable or gone: nothing more to watch

    def start(self) -> None:
        """Take the baseline and begin watching."""
        if self.empty:
            self._begin()
            if not self._stop.is_set():
                _HUB.add(self)
        else:
            self._thread = threading.Thread(
                target=self._run, name=f"sandlot-disk {self.root}", daemon=True
            )
            self._thread.start()

    def stop(self, wait: bool = True) -> bool:
        """Stop watching and wait for a scan under way (it is abandoned): no report after.

        With ``wait=False`` (on an event loop) it returns False instead of waiting,
        when a thread of its own or a scan is still under way: ``stop()`` then waits
        (off the loop). True once no report can come any more.
        """
        self._stop.set()
        _HUB.remove(self)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            if not wait and thread.is_alive():
                return False
            thread.join()
        if not self._busy.acquire(blocking=wait):
            return False
        self._busy.release()
        return True

    def _begin(self) -> None:
        self._refilled = self._periodic = time.monotonic()
        try:
            self._device = os.stat(self.root).st_dev
            if not self.empty:
                self.baseline = usage(self.root, self._stop)
        except (Unmeasurable, OSError):
            self.baseline = 0  # what cannot be measured now is judged by the first look's scan
        else:
            # Measured (or made empty): until the first routine scan, only a loss of free
            # space the size of a quarter of the limit calls for one, as after any scan.
            self._periodic += PERIOD
        self._tree = self.baseline
        self._scanned_free = self._free()

    def _run(self) -> None:
        """A root it did not make: baseline, looks and scans all on this watcher's thread."""
        self._begin()
        while not self._stop.wait(POLL):
            due = self._due({})
            if due is False:
                return
            if due is not None:
                self._scan(*due)

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

    def look(self, free_by_device: dict[int, int]) -> bool:
        """One look from the shared thread; False once this watcher is done.

        ``free_by_device`` holds the free space of each filesystem already read
        in this round of looks. A scan, when one is due, runs on a scanning
        thread: a large tree delays no other sandbox's looks.
        """
        if self._scanning:
            return True
        due = self._due(free_by_device)
        if due is False:
            return False
        if due is not None:
            self._scanning = True  # the shared thread skips this watcher until its scan is done
            _SCANNERS.run(lambda: self._scan(*due))
        return True

    def _due(
        self, free_by_device: dict[int, int]
    ) -> tuple[float, int, int] | Literal[False] | None:
        """False when done, None when no scan is due, else the scan's (start, free, lost)."""
        if self._stop.is_set() or self._done:
            return False
        now = time.monotonic()
        self._credit = min(BURST, self._credit + (now - self._refilled) * CPU_SHARE)
        self._refilled = now
        if self._credit <= 0:
            return None
        free = free_by_device.get(self._device)
        if free is None:
            free = self._free()
            if self._device >= 0:
                free_by_device[self._device] = free
        scanned_free = self._scanned_free
        lost = scanned_free - free if min(free, scanned_free) >= 0 else self.limit
        if now < self._periodic and lost * 4 <= self.limit - self._grown:
            return None  # the filesystem did not lose enough for this sandbox to pass its limit
        return now, free, lost

    def _scan(self, started: float, free: int, lost: int) -> None:
        with self._busy:
            try:
                self._done = not self._stop.is_set() and not self._scan_once(started, free, lost)
            finally:
                self._scanning = False

    def _scan_once(self, started: float, free: int, lost: int) -> bool:
        """Scan the tree (and the held files when due); False once the watcher is done."""
        cpu = time.thread_time()
        try:
            last, self._tree = self._tree, usage(self.root, self._stop)
            # Held files cost more to count than a small tree: count them on
            # routine scans, and when the filesystem lost space the tree's
            # growth does not explain (as a file held with no name would).
            self._unexplained = max(0, self._unexplained + lost - (self._tree - last))
            if started >= self._periodic or self._unexplained * 4 > self.limit - self._grown:
                self.held = self._held(os.stat(self.root).st_dev)
                self._unexplained = 0
            self._grown = self._tree + self.held - self.baseline
        except FileNotFoundError:
            return False  # the workdir is gone: the sandbox is being cleaned up
        except Exception as exc:  # Unmeasurable, OSError, or anything else: the limit fails closed
            if not self._stop.is_set():
                self._exceeded(f"its {self.what}'s disk use cannot be measured: {exc}")
            return False
        self._scanned_free = free
        if self._grown > self.limit and not self._stop.is_set():
            hidden = (
                f" ({self.held / MiB:.1f} MiB of it in files it holds with no name left)"
                if self.held
                else ""
            )
            self._exceeded(
                f"its {self.what} grew by {self._grown / MiB:.1f} MiB{hidden},"
                f" past disk_mb={self.limit // MiB}"
            )
            return False
        self._credit -= time.thread_time() - cpu  # CPU, not wall: a preempted scan is not slow
        self._periodic = started + PERIOD
        return True

    def _exceeded(self, detail: str) -> None:
        with contextlib.suppress(Exception):  # the owner may already be gone
            self.on_exceeded(detail)


class _Hub:
    """The one thread that looks for every watcher of a root sandlot made, every ``POLL``
    seconds. It starts with the first watcher; with none left it waits ``LINGER`` seconds
    for the next (sandboxes that start and end one after another would otherwise each start
    it anew, a thread's start on each sandbox's path) and then ends."""

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """Watch nothing and run no thread (in a forked child: the parent's are not its own)."""
        self._lock = threading.Lock()
        self._added = threading.Condition(self._lock)
        self._watchers: dict[int, DiskWatcher] = {}
        self._running = False

    def add(self, watcher: DiskWatcher) -> None:
        with self._lock:
            self._watchers[id(watcher)] = watcher
            if self._running:
                self._added.notify()
            else:
                self._running = True
                threading.Thread(target=self._run, name="sandlot-disk", daemon=True).start()

    def remove(self, watcher: DiskWatcher) -> None:
        with self._lock:
            self._watchers.pop(id(watcher), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._watchers:
                    self._added.wait(LINGER)
                if not self._watchers:
                    self._running = False
                    return
                watchers = list(self._watchers.values())
            free_by_device: dict[int, int] = {}
            for watcher in watchers:
                if not watcher.look(free_by_device):
                    self.remove(watcher)
            time.sleep(POLL)


class _Scanners:
    """Daemon threads that run scans: an idle one takes the next, and when none is idle a new
    one starts, so no scan waits for another (idle threads are kept for the next ones). Daemon
    threads: a scan under way never holds up the interpreter's exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        if start:
            try:
                threading.Thread(target=self._work, name="sandlot-disk scan", daemon=True).start()
            except RuntimeError:  # no thread to be had (a process limit): scan here instead
                job()
                return
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # not from a scan, which fails its own watcher: this thread goes on
                logging.getLogger("sandlot").exception("a disk scan failed")
            with self._lock:
                self._idle += 1


_HUB = _Hub()
_SCANNERS = _Scanners()
