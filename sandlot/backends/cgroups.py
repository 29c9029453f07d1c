"""One cgroup per sandbox, created under the cgroup the host already runs in.

Works with cgroup v2 (memory, pids, cpu controllers) and with the v1
``memory``/``pids``/``cpu`` hierarchies, whichever the machine mounts. Nothing
is moved out of the host's own cgroup; the sandbox's first process joins its
cgroups before it executes bubblewrap (see :meth:`SandboxCgroup.join_files`).

Each sandbox's directories are written to a ledger file before they are
made, and the ledger goes only when they are gone. A host that was killed
leaves its ledgers behind, and the next host removes what they list
(:func:`sweep_ledgers`), wherever in the hierarchy that is. Nothing sandlot did
not record is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "sandlot-"
LEDGER_SUFFIX = ".cgroup"
AHEAD = ".ahead"  # before LEDGER_SUFFIX: the ledger of cgroups made ahead, no sandbox's yet


@dataclass(frozen=True)
class Layout:
    """Where this host process's cgroups are, per controller."""

    version: int
    dirs: dict[str, Path]  # controller -> the host's own cgroup directory


def _own_cgroups() -> dict[str, str]:
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _writable(directory: Path) -> bool:
    probe = directory / f"{PREFIX}probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def discover() -> Layout | None:
    """Find writable cgroup directories for memory, pids and cpu, or None."""
    own = _own_cgroups()
    if (ROOT / "cgroup.controllers").exists():  # unified hierarchy at the root
        base = ROOT / own.get("", "/").lstrip("/")
        enabled = set((base / "cgroup.controllers").read_text().split())
        wanted = {"memory", "pids", "cpu"} & enabled
        if not wanted or not _writable(base):
            return None
        # Children only get controllers the parent enables for its subtree. This
        # fails where the host's cgroup holds processes and is not the root.
        with contextlib.suppress(OSError):
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        active = set((base / "cgroup.subtree_control").read_text().split())
        if not active:
            return None
        return Layout(2, {c: base for c in active})
    dirs: dict[str, Path] = {}
    for controller in ("memory", "pids", "cpu"):
        if controller in own and (ROOT / controller).is_dir():
            base = ROOT / controller / own[controller].lstrip("/")
            if _writable(base):
                dirs[controller] = base
    return Layout(1, dirs) if dirs else None


@dataclass
class SandboxCgroup:
    """The cgroup directories of one sandbox and what was asked of them."""

    layout: Layout
    name: str
    paths: list[Path] = field(default_factory=list)
    ledger: Path | None = None  # the record of ``paths``, removed with them

    @classmethod
    def create(
        cls,
        layout: Layout,
        name: str,
        memory_mb: int | None,
        max_processes: int,
        cpus: float | None,
        ledger: Path,
        owner: str,
    ) -> SandboxCgroup:
        """Record the directories in ``ledger`` (first line ``owner``), make them, write the limits.

        A controller's directory is made only where the sandbox has a limit in it
        (``pids`` always has one): on cgroup v1 each costs a ``mkdir``, a join and
        an ``rmdir`` per sandbox. Where none of those controllers is available, all
        that are get one, so the sandbox's processes can still be found and killed.
        On any failure what was made is removed again before the error propagates.
        """
        cg = cls(layout, name, ledger=ledger)
        planned = cls.plan(layout, name, memory_mb, cpus)
        ledger.write_text("\n".join([owner, *map(str, planned)]) + "\n")
        try:
            for path in planned:
                path.mkdir()
                cg.paths.append(path)
            cg._limit(memory_mb, max_processes, cpus)
        except BaseException:
            cg.remove()
            raise
        return cg

    @staticmethod
    def plan(layout: Layout, name: str, memory_mb: int | None, cpus: float | None) -> list[Path]:
        """The directories :meth:`create` makes for a sandbox of these limits."""
        limited = {"pids", *(["memory"] if memory_mb is not None else [])}
        limited |= {"cpu"} if cpus is not None else set()
        bases = [base for c, base in layout.dirs.items() if c in limited]
        return [base / name for base in dict.fromkeys(bases or layout.dirs.values())]

    def _limit(self, memory_mb: int | None, max_processes: int, cpus: float | None) -> None:
        layout, name = self.layout, self.name
        mem = layout.dirs.get("memory")
        if mem is not None and memory_mb is not None:
            limit = str(memory_mb << 20)
            if layout.version == 2:
                (mem / name / "memory.max").write_text(limit)
                with contextlib.suppress(OSError):
                    (mem / name / "memory.swap.max").write_text("0")
            else:
                (mem / name / "memory.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):
                    (mem / name / "memory.memsw.limit_in_bytes").write_text(limit)
        pids = layout.dirs.get("pids")
        if pids is not None:
            (pids / name / "pids.max").write_text(str(max_processes))
        cpu = layout.dirs.get("cpu")
        if cpu is not None and cpus is not None:
            quota = int(cpus * 100_000)
            if layout.version == 2:
                (cpu / name / "cpu.max").write_text(f"{quota} 100000")
            else:
                (cpu / name / "cpu.cfs_period_us").write_text("100000")
                (cpu / name / "cpu.cfs_quota_us").write_text(str(quota))

    def join_files(self) -> list[str]:
        """The file of each directory that a single-threaded process writes ``0`` to, to join.

        On cgroup v1 that is ``tasks``, which moves the writing thread alone: the
        kernel then skips its lock over every thread group, whose taking waits for
        an RCU grace period once the lock has been idle a while (5-7 ms here,
        against 0.3 ms through ``tasks``). A process of one thread moves whole, and
        all it starts afterwards begins in the same cgroups. On v2 a thread cannot
        leave its process's domain, so it is ``cgroup.procs``.
        """
        return [str(p / join_file(self.layout)) for p in self.paths]

    def oom_kills(self) -> int:
        """How many processes the OOM killer ended in this cgroup."""
        mem = self.layout.dirs.get("memory")
        if mem is None:
            return 0
        events = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        try:
            text = (mem / self.name / events).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> set[int]:
        """Processes now in the sandbox's cgroups."""
        return _pids(self.paths)

    def kill_all(self, wait: float = 2.0) -> None:
        """SIGKILL every process in the cgroup until none is left (or ``wait`` ends)."""
        _kill_all(self.paths, wait)

    def claim(self) -> None:
        """Mark cgroups made ahead as a sandbox's: their ledger's name loses ``AHEAD``."""
        ledger = self.ledger
        if ledger is not None and ledger.name.endswith(AHEAD + LEDGER_SUFFIX):
            name = ledger.name[: -len(AHEAD + LEDGER_SUFFIX)] + LEDGER_SUFFIX
            self._rename_ledger(ledger.with_name(name))

    def move_ledger(self, directory: Path) -> None:
        """Move the ledger into ``directory`` (where a sweep also looks), if it can be moved."""
        if self.ledger is not None:
            self._rename_ledger(directory / self.ledger.name)

    def _rename_ledger(self, to: Path) -> None:
        """The ledger renamed to ``to``; left as it is if that fails."""
        assert self.ledger is not None
        with contextlib.suppress(OSError):  # its state root went: the ledger with it
            self.ledger = self.ledger.rename(to)

    def remove(self) -> None:
        """Remove the directories (their processes must be gone), then the ledger if all went."""
        if _remove(self.paths) and self.ledger is not None:
            with contextlib.suppress(FileNotFoundError):
                self.ledger.unlink()


class Stock:
    """Sandboxes' cgroups made ahead on a thread of its own, ``DEPTH`` for each set of limits
    last asked for (``KINDS`` sets at most), so a start takes one instead of waiting on the
    kernel, whose cgroup lock is contended while other sandboxes end.

    Each is made as a start would make it (a ledger first, so a killed host's are swept;
    its name ends in ``AHEAD`` until a start takes it, :meth:`SandboxCgroup.claim`).
    What none took for ``LINGER`` seconds is removed, and :meth:`close` removes what is
    left (at exit). A child forked from this process starts with an empty stock of its
    own: two processes never take the same cgroups.
    """

    DEPTH = 2
    KINDS = 4
    LINGER = 10.0  # seconds without a take after which what was made goes

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._made: dict[Hashable, list[SandboxCgroup]] = {}  # oldest asked-for kind first
        self._makers: dict[Hashable, Callable[[], SandboxCgroup]] = {}
        self._running = False
        self._thread: threading.Thread | None = None
        self._asked = 0.0  # when take() was last called
        self._closed = False
        os.register_at_fork(after_in_child=self._forget)

    def take(self, kind: Hashable, make: Callable[[], SandboxCgroup]) -> SandboxCgroup | None:
        """One made ahead for ``kind`` (None if there is none yet); keep ``DEPTH`` of that kind
        coming, each from ``make`` (which records and makes one: :meth:`SandboxCgroup.create`)."""
        return self._ask(kind, make, take=True)

    def want(self, kind: Hashable, make: Callable[[], SandboxCgroup]) -> None:
        """Keep ``DEPTH`` of ``kind`` coming, as :meth:`take` does, taking none now: for a start
        that will take one once something slower is done (a new template's start)."""
        self._ask(kind, make, take=False)

    def _ask(
        self, kind: Hashable, make: Callable[[], SandboxCgroup], take: bool
    ) -> SandboxCgroup | None:
        evicted: list[SandboxCgroup] = []
        with self._lock:
            if self._closed:
                return None
            ready = self._made.pop(kind, [])
            got = ready.pop() if ready and take else None
            self._made[kind] = ready  # now the latest asked for
            self._makers[kind] = make
            while len(self._made) > self.KINDS:
                oldest = next(iter(self._made))
                evicted += self._made.pop(oldest)
                self._makers.pop(oldest, None)
            self._asked = time.monotonic()
            if self._running:
                self._wake.notify()
            else:
                thread = threading.Thread(target=self._run, name="sandlot-cgroups", daemon=True)
                thread.start()  # a thread that cannot start leaves the stock to the next take
                self._running, self._thread = True, thread
        for cgroup in evicted:
            cgroup.remove()
        if got is not None:
            got.claim()
        return got

    def clear(self) -> None:
        """Remove what was made and not taken (the next take starts anew)."""
        with self._lock:
            left = [cgroup for made in self._made.values() for cgroup in made]
            self._made.clear()
            self._makers.clear()
        for cgroup in left:
            cgroup.remove()

    def close(self) -> None:
        """Make no more; remove what was made and not taken (waiting a moment for one being
        made: at exit, a daemon thread is stopped where it stands)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self.clear()

    def _wanted(self) -> tuple[Hashable, Callable[[], SandboxCgroup]] | None:
        for kind, made in self._made.items():
            if len(made) < self.DEPTH and kind in self._makers:
                return kind, self._makers[kind]
        return None

    def _run(self) -> None:
        while True:
            with self._lock:
                wanted = None if self._closed else self._wanted()
                if wanted is None and not self._closed:
                    self._wake.wait(self.LINGER)
                    if time.monotonic() - self._asked < self.LINGER:
                        continue  # taken from meanwhile (a notify may race the timeout)
                if wanted is None:  # none taken for LINGER seconds: an idle host keeps none
                    self._running = False
                    left = [cgroup for made in self._made.values() for cgroup in made]
                    self._made.clear()
                    self._makers.clear()
                    break
            kind, make = wanted
            try:
                cgroup = make()
            except Exception:  # tried again at the next take; the starts say what fails
                with self._lock:
                    if self._makers.get(kind) is make:
                        del self._makers[kind]
                continue
            with self._lock:
                keep = not self._closed and kind in self._made
                if keep:
                    self._made[kind].append(cgroup)
            if not keep:
                cgroup.remove()
        for cgroup in left:
            cgroup.remove()

    def _forget(self) -> None:
        """In a forked child: none of the parent's, no thread (it did not come along)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._made = {}
        self._makers = {}
        self._running = False
        self._thread = None


def join_file(layout: Layout) -> str:
    """The file of a directory that joins it (see :meth:`SandboxCgroup.join_files`)."""
    return "tasks" if layout.version == 1 else "cgroup.procs"


def _pids(paths: Iterable[Path]) -> set[int]:
    found: set[int] = set()
    for path in paths:
        with contextlib.suppress(OSError):
            found.update(int(x) for x in (path / "cgroup.procs").read_text().split())
    return found


def _kill_all(paths: list[Path], wait: float) -> None:
    deadline = time.monotonic() + wait
    while pids := _pids(paths):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.005)


def _remove(paths: list[Path]) -> bool:
    """rmdir each path, retrying for a second while it is busy; whether all are gone."""
    gone = True
    for path in paths:
        for _ in range(100):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
        else:
            gone = False
    return gone


def _recorded(line: str) -> Path | None:
    """A ledger line as a path, only if it names a sandbox cgroup (a ledger is not trusted)."""
    path = Path(line)
    if (
        path.is_absolute()
        and ROOT in path.parents
        and ".." not in path.parts
        and path.name.startswith(PREFIX)
        and not path.is_symlink()
    ):
        return path
    return None


def sweep_ledgers(directory: Path, alive: Callable[[str], bool]) -> None:
    """Remove the cgroups of ledgers in ``directory`` whose owner is no longer ``alive``.

    Their processes are killed first: a sandbox whose host died must not run on.
    """
    for ledger in directory.glob(f"*{LEDGER_SUFFIX}"):
        try:
            owner, *lines = ledger.read_text().splitlines()
        except (OSError, ValueError):
            continue
        if alive(owner):
            continue
        paths = [p for p in map(_recorded, lines) if p is not None]
        _kill_all(paths, wait=1.0)
        if _remove(paths):
            with contextlib.suppress(FileNotFoundError):
                ledger.unlink()


def sweep(layout: Layout) -> None:
    """Remove empty cgroups that sandlot before the ledger left, named ``sandlot-PID-...``.

    Only those under this host's own cgroups whose PID is gone; a running older
    version's cgroups keep their live PID and stay.
    """
    for base in dict.fromkeys(layout.dirs.values()):
        with contextlib.suppress(OSError):
            for path in base.glob(f"{PREFIX}*"):
                owner, dash, _ = path.name[len(PREFIX) :].partition("-")
                if dash and owner.isdigit() and not Path(f"/proc/{owner}").exists():
                    with contextlib.suppress(OSError):
                        path.rmdir()
