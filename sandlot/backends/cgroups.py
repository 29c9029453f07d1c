"""One cgroup per sandbox, created under the cgroup the host already runs in.

Works with cgroup v2 (memory, pids, cpu controllers) and with the v1
``memory``/``pids``/``cpu`` hierarchies, whichever the machine mounts. Nothing
is moved out of the host's own cgroup; the sandbox's processes join theirs
before they exec (see :meth:`SandboxCgroup.join_fds`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "sandlot-"


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

    @classmethod
    def create(
        cls,
        layout: Layout,
        name: str,
        memory_mb: int | None,
        max_processes: int,
        cpus: float | None,
    ) -> SandboxCgroup:
        """Make the directories and write the limits."""
        cg = cls(layout, name)
        for base in dict.fromkeys(layout.dirs.values()):
            path = base / name
            path.mkdir()
            cg.paths.append(path)
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
        return cg

    def limits_in_force(self) -> list[str]:
        """Which of memory, pids, cpu this cgroup enforces."""
        return sorted(self.layout.dirs)

    def join_fds(self) -> list[int]:
        """Open ``cgroup.procs`` of each directory; a child writes ``0`` to each to join."""
        return [os.open(p / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for p in self.paths]

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
        found: set[int] = set()
        for path in self.paths:
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (path / "cgroup.procs").read_text().split())
        return found

    def kill_all(self, wait: float = 2.0) -> None:
        """SIGKILL every process in the cgroup until none is left (or ``wait`` ends)."""
        deadline = time.monotonic() + wait
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    def remove(self) -> None:
        """Remove the directories (their processes must be gone)."""
        for path in self.paths:
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def sweep(layout: Layout) -> None:
    """Remove empty sandbox cgroups left by host processes that no longer exist."""
    for base in dict.fromkeys(layout.dirs.values()):
        with contextlib.suppress(OSError):
            for path in base.glob(f"{PREFIX}*"):
                owner = path.name[len(PREFIX) :].split("-", 1)[0]
                if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                    with contextlib.suppress(OSError):
                        path.rmdir()
