"""The template: a fork server inside bubblewrap that hands out fresh sandboxes in milliseconds.

The host starts one template per set of walls (interpreter, environment,
network setting) under bubblewrap, with the driver already imported. The
template never runs sandboxed code and never reads from a sandbox: it reads
only the host's requests on its control socket. It makes new mount, PID, IPC,
UTS and (unless the network is on) network namespaces, forks a first process
into them and returns to its own, ahead of the request that will use it. That
process, PID 1 of its namespaces, forks the driver-to-be, drops its
capabilities and from then on only reaps the namespace's orphans. The
driver-to-be builds the walls that name no sandbox (its namespaces' own
``/proc``, fresh ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/dev/pts``,
loopback up) and waits for one. A driver-to-be that waits a while
rehearses its start (the same calls, with no effect), so the copy-on-write
faults they take come before its sandbox does; the template rehearsed them
too, once, so that fewer of them come at all. Given a
sandbox, the driver mounts its workdir at ``/workspace`` (a detached mount
the host cloned of it: the template sees no sandbox's workdir; a template in
a user namespace, whose host is not root, sees the slots instead, and each
driver binds its own and unmounts them: :func:`finish_walls`), joins the
sandbox's cgroups (through a descriptor of each joining file, opened by the
host: the template sees no cgroup directory either), installs the seccomp
filter, serves the protocol and drops to the sandbox user when the host's
init frame says so, before any of the sandbox's code runs.

The template sends the host a pidfd of the sandbox's first process, waits on
it beside the control socket and, once it has ended, sends its exit status
(the kernel's, from ``waitpid``: nothing the sandbox says). Control messages
are ``SOCK_SEQPACKET`` datagrams of ASCII words: ``fork SLOT NET`` from the
host, with the channel's, the log's and the workdir's descriptors, a detached
mount for each of the template's mount paths (in their order) and those of
the cgroups' joining files; ``ready`` once, then ``pid SLOT`` (with the
pidfd), ``exit SLOT STATUS`` and ``failed SLOT WHY`` back.
Standard library only, as the rest of the driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import os
import resource
import select
import selectors
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Iterator

from . import server
from .places import FRESH_DIRS, SLOTS_INSIDE
from .places import WORKDIR_INSIDE as WORKDIR

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 1, 32, 0x1000, 0x2000, 0x4000, 0x40000
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME = 1, 4, 15
PR_CAPBSET_READ, PR_CAPBSET_DROP, CAP_LAST = 23, 24, 63
NAMESPACES = {  # what the template returns to after each fork
    CLONE_NEWNS: "mnt",
    CLONE_NEWPID: "pid",
    CLONE_NEWIPC: "ipc",
    CLONE_NEWUTS: "uts",
    CLONE_NEWNET: "net",
}
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 39, 22, 2
SIOCSIFFLAGS, IFF_UP = 0x8914, 0x1
SYS_MOVE_MOUNT, AT_FDCWD, MOVE_MOUNT_F_EMPTY = 429, -100, 0x4  # x86-64, arm64: the shared table
MAX_CGROUPS = 8  # join files one start may bring (memory, pids, cpu: at most 3 today)
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, LINUX_CAPABILITY_VERSION_3 = 47, 4, 0x20080522
FAILED_SETUP = 121  # the sandbox's process could not build its walls
SPARE = "spare"  # the selector's mark on the socket of the spare first process
REHEARSE_AFTER = 0.005  # seconds a driver-to-be waits for a sandbox before it rehearses
TRIAL_WAIT, TRIAL_SAYS = 20.0, 4000  # the first spare's answer: seconds, bytes at most
WARM_UP_ROUNDS = 8  # the template's rehearsals (see _settling): fewer save less, more no more
_DONE = object()  # what next() gives once _settling has no step left

_libc = ctypes.CDLL(None, use_errno=True)
# libc's fork with the GIL held, without CPython's fixups around it (see _fork_first).
_raw_fork = ctypes.PyDLL(None, use_errno=True).fork


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            None if source is None else source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _tmpfs(target: str) -> None:
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def install_seccomp(program: bytes) -> None:
    """Install the compiled filter ``program`` on this process (and all it starts), for good."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _Fprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


# Made before any fork: PID 1 builds no ctypes type or structure (each costs it page copies).
_CAP_HEADER = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
_NO_CAPS = (_CapData * 2)()


def _drop_capabilities() -> None:
    """Hold no capability from here on (PID 1 only reaps once the driver is forked)."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    _check(_libc.capset(ctypes.byref(_CAP_HEADER), _NO_CAPS), "capset")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", IFF_UP))


def prepare_walls(network: bool) -> None:
    """In a driver-to-be, before it is given a sandbox: the part of the walls that names none
    (its namespaces' own ``/proc``, fresh tmpfs, ``devpts``, loopback)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches another namespace
    # The new /proc is mounted (on /tmp, covered below) before the template's goes: in a
    # user namespace the kernel mounts a proc only where another is already in full view.
    _mount("proc", "/tmp", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _check(_libc.umount2(b"/proc", MNT_DETACH), "umount /proc")
    _mount("/tmp", "/proc", None, MS_MOVE)
    for name in PROC_READ_ONLY:  # as bubblewrap covers them
        path = f"/proc/{name}"
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            _mount(None, path, None, flags)
    for path in FRESH_DIRS:
        _tmpfs(path)
    _mount(
        "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"
    )
    if not network:
        _loopback_up()


def _move_mount(fd: int, target: str) -> None:
    """Attach the detached mount ``fd`` at ``target``."""
    _check(
        _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY),
        f"mount {target}",
    )


def finish_walls(
    workdir: int,
    program: bytes | None,
    join: Callable[[], None],
    slot: str = "",
    mounts: tuple[tuple[int, str], ...] = (),
) -> None:
    """In the driver-to-be, given its sandbox: its workdir at ``/workspace``, its mounts,
    then ``join`` (its cgroups), then the filter.

    ``workdir`` is a detached mount the host cloned of it; or, given ``slot`` (a
    template in a user namespace, which no mount of the host's can enter), the host's
    descriptor of the directory that :data:`SLOTS_INSIDE`/``slot`` has to be. Such a
    driver holds capabilities of that namespace, and drops them all before the filter.
    ``mounts``: (a detached mount the host made with its flags set, the empty directory
    of the template's read-only root it goes on) for each mount and volume of the config.
    """
    if slot:
        _bind_slot(slot, workdir)
    else:
        _move_mount(workdir, WORKDIR)
    os.close(workdir)
    for fd, target in mounts:
        _move_mount(fd, target)
        os.close(fd)
    # A clone is the host mount's peer and has its flags: make it this namespace's alone,
    # no device files and no set-user-ID (as bubblewrap's binds, a cold start's); read-only
    # and no-exec stay as the host's mount has them.
    _mount(None, WORKDIR, None, MS_PRIVATE)
    kept = os.statvfs(WORKDIR).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
    flags |= (MS_RDONLY if kept & os.ST_RDONLY else 0) | (MS_NOEXEC if kept & os.ST_NOEXEC else 0)
    _mount(None, WORKDIR, None, flags)
    join()
    if slot:  # as bubblewrap leaves a cold start: no capability, none to gain by exec
        for cap in range(CAP_LAST + 1):
            if _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1:
                _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop the bounding set")
        _drop_capabilities()
    os.chdir(WORKDIR)
    if program is not None:
        install_seccomp(program)


def _bind_slot(slot: str, given: int) -> None:
    """Bind the slot ``slot`` at the workdir, then unmount every slot from this namespace.

    The slot has to be the very directory the host opened (``given``: same device and
    inode), reached without a link, so nothing but the host's own choice is bound.
    """
    if not slot or "/" in slot or slot in (".", ".."):
        raise OSError(errno.EINVAL, f"not a slot: {slot!r}")
    path = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    slots = os.open(SLOTS_INSIDE, path)
    try:
        fd = os.open(slot, path, dir_fd=slots)
    finally:
        os.close(slots)
    try:
        found, meant = os.fstat(fd), os.fstat(given)
        if (found.st_dev, found.st_ino) != (meant.st_dev, meant.st_ino):
            raise OSError(errno.EXDEV, f"slot {slot} is not the workdir the host opened")
        _mount(f"/proc/self/fd/{fd}", WORKDIR, None, MS_BIND)
    finally:
        os.close(fd)
    _check(_libc.umount2(SLOTS_INSIDE.encode(), MNT_DETACH | UMOUNT_NOFOLLOW), "unmount the slots")
    if os.lstat(SLOTS_INSIDE).st_dev != os.lstat("/").st_dev:  # only the root's empty directory
        raise OSError(errno.EBUSY, f"{SLOTS_INSIDE} is still mounted")


def _join(files: list[int]) -> None:
    """Move this process (of one thread) into the sandbox's cgroups, which it then sees as its
    root: ``0`` into each of ``files``, the joining files the host opened
    (``cgroups.SandboxCgroup.join_files``).

    The driver joins, before any of the sandbox's code runs, not the template: the host
    kills every process of those cgroups when the sandbox ends, and the template has to
    outlive the sandbox to report how it ended. No cgroup directory is in the template's
    sight: only the host names them.
    """
    for fd in files:
        os.write(fd, b"0")
        os.close(fd)
    if files:
        _check(_libc.unshare(CLONE_NEWCGROUP), "unshare the cgroup namespace")


def _send(control: socket.socket, words: str, fds: tuple[int, ...] = ()) -> None:
    if fds:
        socket.send_fds(control, [words.encode()], list(fds))
    else:
        control.send(words.encode())


def _reap_until(driver: int) -> None:
    """PID 1's work once it has forked the driver: drop every capability, then reap every
    orphan of the namespace; end with the driver, as it ended.

    It takes no seccomp filter: it runs none of the sandbox's code and reads nothing from
    it (only ``wait``), the sandbox user can neither signal nor trace it, and a second
    filter (its own; the driver installs one once it has its workdir and cgroups) cost
    each sandbox about 1% of its machine CPU here.
    """
    try:
        # Where the sandbox's user is PID 1's (a template in a user namespace), a dumpable
        # PID 1 would be its to write through /proc/1/mem: PID 1 has no seccomp filter.
        _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable")
        # A handled signal reaches PID 1 from its own namespace (an ignored one does not):
        # the template's SIGINT handler would let a sandbox of its user end its own PID 1.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _drop_capabilities()
    except BaseException:
        traceback.print_exc()  # the template's stderr: the sandbox's log is the driver's
        os._exit(FAILED_SETUP)  # the driver ends with this namespace
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == driver:  # a signal's end as a shell reports it: 128 + its number
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else min(code, 255))


def _first_process(
    link: socket.socket,
    network: bool,
    program: bytes | None,
    bound: bool,
    trial: bool,
    targets: tuple[str, ...],
) -> None:
    """A first process, PID 1 of new namespaces, forked ahead of the request that will use it:
    holds nothing of the template's but ``link``, forks the driver-to-be (which takes
    ``link`` and makes the walls that name no sandbox), then only reaps. It does as little
    as it can: each page of the template's it writes is a page copied.

    PID 1 joins none of the sandbox's cgroups: everything the sandbox runs is the driver's
    or below it, and the driver joins (a second join would cost each start CPU). Seen from
    the sandbox (its own cgroup namespace) PID 1's cgroups are ancestors, ``/..``, names
    of none.
    """
    _libc.prctl(PR_SET_NAME, b"sandlot-init", 0, 0, 0)
    fd = link.fileno()
    os.closerange(3, fd)  # the control socket, the namespaces, other sandboxes' pidfds
    os.closerange(fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    os.setsid()
    try:
        driver = os.fork()
    except OSError:
        os._exit(FAILED_SETUP)  # the template sees ``link`` close: the next start forks anew
    if driver != 0:
        link.close()
        _reap_until(driver)
    problem = ""  # told in the log of the sandbox it is given: nobody reads this one's stderr
    try:
        prepare_walls(network)
    except BaseException:
        problem = traceback.format_exc()
    if trial:  # the template's first spare: it hears at once whether the walls stood
        link.send(f"failed {problem}".encode()[:TRIAL_SAYS] if problem else b"ok")
        if problem:
            os._exit(FAILED_SETUP)
    _await_sandbox(link, program, problem, bound, targets)


def _rehearse_walls(program: bytes | None) -> None:
    """The calls of :func:`finish_walls`, each made to fail or to change nothing (see
    ``server.rehearse``): a move of descriptor -1, a mount on no path, an unshare of
    nothing, the filter's buffer built but not installed."""
    _libc.syscall(SYS_MOVE_MOUNT, -1, b"", AT_FDCWD, WORKDIR.encode(), MOVE_MOUNT_F_EMPTY)
    _libc.mount(None, b"", None, ctypes.c_ulong(MS_PRIVATE), None)
    _check(_libc.unshare(0), "unshare nothing")
    if program is not None:
        buf = ctypes.create_string_buffer(program, len(program))
        _Fprog(len(program) // 8, ctypes.addressof(buf))
        _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)


def _settling(program: bytes | None) -> Iterator[None]:
    """In the template, once, after its first request, a step at a time (the template
    serves requests and reports ends between them): import what a cold driver loads on
    demand, warm up, run ``site`` where it runs no code of the environment's (see
    :func:`site_runs_nothing`), then freeze what it holds and turn the collector on.

    Not before: the first sandbox is the first spare's, forked before ``ready``, and
    loads what it needs as a cold driver does. A template's start is that sandbox's
    (``docs/architecture.md``, *Templates*). Nor in one go: the first sandbox's end
    is the template's report of it, and a short one would wait for all of it (about
    10 ms here).

    The warm-up rehearses each fork's start, a few times, with no effect. Code that
    has never run writes to itself when it first does: CPython 3.11 counts a
    function's first calls and then rewrites its bytecode in place, each instruction
    keeps counters while it specializes, and the first use of a type or a name fills
    caches. In a fork each of those writes copies a page of the template's. Run here
    first, the start's code (the spare's rehearsal, and a session's: a server built, a
    cell run) is already warm in every fork: a driver-to-be's rehearsal took 228 page
    faults instead of 345 (standalone, 8 rounds; 2 rounds gave 246, 64 no fewer than
    8), a driver's first cell 380 us instead of 630. ``random.seed`` is the at-fork
    hook every driver runs.

    Frozen (``gc.freeze``), the template's objects are in no generation a collection in a
    fork walks: each collection would write to every one of them, and copy their pages
    (a full one in a fork took 4.4 ms, 0.08 frozen: ``benchmarks/RESULTS.md``). The
    first spare was forked frozen with the collector off, as the template imported; a
    driver turns it on before any of the sandbox's code runs. Unfrozen, that first
    sandbox's first collection walked all the template's young objects, counted since
    its start: 6 ms of its start became 13.
    """
    try:
        yield from server.loading()
        import random

        for _ in range(WARM_UP_ROUNDS):
            random.seed()  # the template's own generator: each fork reseeds its own anyway
            _rehearse_walls(program)
            server.rehearse()
            server.rehearse_session()
            yield
        if site_runs_nothing():  # as each driver would, once for all (else each does, dropped)
            import site

            # Last, and only once all the rest is loaded: the environment's packages
            # follow the standard library on the path from here, where a name the
            # standard library lacks (an optional import, as subprocess's of msvcrt)
            # would find a package's module and run it, as root with no filter. The
            # template and each PID 1 import nothing more; the forks before this ran a
            # site.main() of their own, as do all where something above failed.
            site.main()
            server.SITE_DONE = True
    except Exception:  # colder forks, not a failed template (whose end would end them all)
        pass
    # No collection first: the warm-up's cycles (about 1,100 objects) stay, frozen, but
    # the holes freeing them would leave in the template's pages each fork's first
    # allocations would fill, copying those pages (a rehearsal in a fork: 252 page
    # faults with a collection here, 237 without).
    gc.freeze()
    gc.enable()


def _a_cpu_is_free() -> bool:
    """Whether no more tasks are runnable (this one among them, ``/proc/loadavg``'s count)
    than there are CPUs to run this process on.

    A rehearsal moves a start's page copies ahead of it, into a wait: it costs more CPU
    than it saves the start (about 460 us against 230 here), worth it only where that
    CPU would idle. Where sandboxes start faster than they are handed out, it would slow
    the starts it races."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].partition("/")[0])
        return running <= len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError):
        return True


def _await_sandbox(
    link: socket.socket, program: bytes | None, problem: str, bound: bool, targets: tuple[str, ...]
) -> None:
    """The driver-to-be: waits on ``link`` for its sandbox (its slot's name; channel, log,
    workdir, a mount for each of ``targets`` and cgroups' join files), finishes the walls
    and serves. The template gone (``link`` closed), it ends, and PID 1 with it.
    ``bound``: the template sees the slots (see :func:`finish_walls`)."""
    _libc.prctl(PR_SET_NAME, b"sandlot-spare", 0, 0, 0)
    # Rehearsed once the sandbox it was forked beside has had its start and first cell
    # (on two cores it would take their time), not at all if a sandbox comes first, nor
    # while the machine has no CPU to spare.
    if not select.select([link], [], [], REHEARSE_AFTER)[0] and _a_cpu_is_free():
        with contextlib.suppress(Exception):  # a slower start, not a failed one
            _rehearse_walls(program)
            server.rehearse()
    try:
        data, fds, flags, _ = socket.recv_fds(link, 64, 3 + len(targets) + MAX_CGROUPS)
    except OSError:
        data, fds, flags = b"", [], 0
    link.close()
    given = 3 + len(targets)
    if not data or len(fds) < given or flags & socket.MSG_CTRUNC:  # a join file dropped: none
        os._exit(0)
    channel, log, workdir = fds[:3]
    mounts, joins = tuple((fds[3 + i], t) for i, t in enumerate(targets)), fds[given:]
    slot = data.decode("ascii", "replace").partition(" ")[2] if bound else ""
    _libc.prctl(PR_SET_NAME, b"sandlot-driver", 0, 0, 0)
    os.dup2(log, 2)
    if problem:
        os.write(2, problem.encode())
        os._exit(FAILED_SETUP)
    try:
        finish_walls(workdir, program, lambda: _join(joins), slot, mounts)
    except BaseException:
        traceback.print_exc()
        os._exit(FAILED_SETUP)
    os.dup2(channel, 3)
    # The channel's and the log's descriptors as they came (now 3 and 2), and any other.
    os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    try:
        server.serve(3)
    finally:
        os._exit(0)


def _fork_first() -> int:
    """Fork a first process: with libc's ``fork`` while this process runs one thread, else
    with ``os.fork``.

    The child, PID 1, runs no code of the sandbox's and only a few lines of this module's,
    so alone it needs none of CPython's fixups after a fork (the locks and thread states
    of other threads, the ``os.register_at_fork`` hooks), and those wrote about 200 of its
    pages, each a copy. With another thread (none is started here; a library might), a
    lock that thread held would stay held in the child: then ``os.fork``. The driver,
    forked from PID 1 with ``os.fork``, gets the fixups and hooks either way.
    """
    try:
        alone = len(os.listdir("/proc/self/task")) == 1
    except OSError:
        alone = False
    if not alone:
        return os.fork()
    pid = int(_raw_fork())
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fork: {os.strerror(err)}")
    return pid


class _Spare:
    """A first process forked ahead of any request, its driver-to-be waiting for a sandbox."""

    def __init__(self, pid: int, link: socket.socket, network: bool) -> None:
        self.pid = pid
        self.link = link
        self.network = network

    def discard(self) -> None:
        """End and reap it (the template's child, not yet any sandbox)."""
        self.link.close()
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class _Forker:
    """Forks each sandbox's first process straight into new namespaces, and reports its end.

    The template unshares the namespaces itself, forks (the child is PID 1 of
    the new PID namespace and holds the new mount, IPC, UTS and network
    namespaces), then returns to its own with ``setns``. The child forks the
    driver-to-be, which waits on a socket of its own for the sandbox it is to
    be: after each request the template forks the next one ahead (a spare, with
    that request's network setting), so the unshare and both forks are off the
    next start's path. The
    first processes are the template's children: it waits on their pidfds
    beside the control socket and reports each one's exit status.
    """

    def __init__(
        self,
        control: socket.socket,
        program: bytes | None,
        bound: bool,
        targets: tuple[str, ...],
    ) -> None:
        self.control = control
        self.program = program
        self.bound = bound  # the slots are in sight: each driver binds its own (finish_walls)
        self.targets = targets  # where each sandbox's mounts go, in the order they come
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ)
        self.own = {
            flag: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for flag, name in NAMESPACES.items()
        }
        self.spare: _Spare | None = None
        self.settled = False  # once _settling has begun: after the first start's answer
        self.network = True  # the last request's network setting: the next spare's
        self.settling: Iterator[None] | None = None  # its steps left, while it runs

    def serve(self) -> None:
        """Take requests and report ends until the host closes the control socket; settle
        (:func:`_settling`) a step at a time between them: each request or end waits one
        step at most, and a stream of them does not keep the template from settling."""
        while True:
            if self.settling is not None:
                self.settle_step()
            events = self.selector.select(0 if self.settling is not None else None)
            for key, _ in events:
                if key.data is None:
                    if not self.take():
                        return
                elif key.data == SPARE:
                    self.spare_ended()
                else:
                    self.reap(key.fileobj, key.data)  # type: ignore[arg-type]

    def take(self) -> bool:
        """Serve one request from the host; False once it has gone."""
        try:
            data, fds, flags, _ = socket.recv_fds(
                self.control, 256, 3 + len(self.targets) + MAX_CGROUPS
            )
        except OSError:
            return False
        if not data:
            return False
        word, *words = data.decode().split(" ")
        whole = not flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)  # no descriptor dropped
        if word != "fork" or len(words) != 2 or len(fds) < 3 + len(self.targets) or not whole:
            for fd in fds:
                os.close(fd)
            if word == "fork" and words:
                _send(self.control, f"failed {words[0]} a request not read whole")
            return True
        slot, network = words[0], words[1] == "1"
        try:
            self.assign(slot, network, fds)
        finally:
            for fd in fds:
                os.close(fd)
        self.network = network
        if not self.settled:  # off the first start's path; it forks the next spare at its end
            self.settled = True
            self.settling = _settling(self.program)
        elif self.spare is None and self.settling is None:
            self.fork_spare()  # the next start's first process, once the host has its answer
        return True

    def fork_spare(self) -> None:
        """Fork a spare with the last request's network setting (none if that fails: the
        next request forks its own)."""
        with contextlib.suppress(OSError):
            self.spare = self.fork(self.network, trial=False)
            # It never writes: its socket turns readable only when it has ended.
            self.selector.register(self.spare.link, selectors.EVENT_READ, SPARE)

    def settle_step(self) -> None:
        """Take the next step of :func:`_settling`; after its last, fork the next spare."""
        assert self.settling is not None
        if next(self.settling, _DONE) is _DONE:
            self.settling = None
            if self.spare is None:
                self.fork_spare()

    def spare_ended(self) -> None:
        """Reap a spare that ended while it waited; the next request forks its own."""
        spare, self.spare = self.spare, None
        if spare is not None:
            self.selector.unregister(spare.link)
            spare.discard()

    def assign(self, slot: str, network: bool, fds: list[int]) -> None:
        """Hand the sandbox (``fds``: its channel, log, workdir and cgroups' join files) to a
        first process (the spare, or one forked now); tell the host."""
        spare, self.spare = self.spare, None
        if spare is not None:
            self.selector.unregister(spare.link)
        for attempt in range(2):  # a spare that died meanwhile: once more, with a new one
            if spare is None or spare.network != network:
                if spare is not None:
                    spare.discard()
                try:
                    spare = self.fork(network, trial=False)
                except OSError as exc:
                    _send(self.control, f"failed {slot} {exc}")
                    return
            try:
                socket.send_fds(spare.link, [f"sandbox {slot}".encode()], fds)
                pidfd = os.pidfd_open(spare.pid)
            except OSError as exc:
                spare.discard()
                spare = None
                if attempt == 0 and isinstance(exc, ConnectionError):  # it had ended
                    continue
                _send(self.control, f"failed {slot} {exc}")  # out of descriptors: this one
                return
            spare.link.close()
            self.selector.register(pidfd, selectors.EVENT_READ, (slot, spare.pid))
            _send(self.control, f"pid {slot}", (pidfd,))
            return

    def first_spare(self, network: bool) -> str:
        """Fork the first spare before the host hears ``ready``, and hear from it whether it
        built the walls that name no sandbox; what went wrong, or "" once it has.

        Where a kernel or a policy refuses one of its namespaces or mounts (a user
        namespace's rules, a security module), the template ends with why, and the host
        starts its sandboxes cold, as before any template, rather than failing them. This
        spare serves the first request, which would otherwise fork its own.
        """
        try:
            spare = self.fork(network, trial=True)
        except OSError as exc:
            return str(exc)
        said = b""
        if select.select([spare.link], [], [], TRIAL_WAIT)[0]:
            with contextlib.suppress(OSError):
                said = spare.link.recv(TRIAL_SAYS)
        if said != b"ok":
            spare.discard()
            return said.decode("utf-8", "replace").removeprefix("failed ") or "no word from it"
        self.spare = spare
        self.selector.register(spare.link, selectors.EVENT_READ, SPARE)
        return ""

    def fork(self, network: bool, trial: bool) -> _Spare:
        """Fork a first process into new namespaces, waiting for its sandbox (``trial``: saying
        first whether it built its walls); this process stays in its own."""
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        if not network:
            flags |= CLONE_NEWNET
        here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            _check(_libc.unshare(flags), "unshare")
            try:
                pid = _fork_first()
            except OSError:
                self.restore(flags)
                raise
        except OSError:
            here.close()
            there.close()
            raise
        if pid == 0:
            try:
                _first_process(there, network, self.program, self.bound, trial, self.targets)
            finally:
                os._exit(FAILED_SETUP)
        there.close()
        self.restore(flags)
        return _Spare(pid, here, network)

    def restore(self, flags: int) -> None:
        """Back into this process's own namespaces; a template that cannot, ends (the host
        then starts another, or starts cold)."""
        for flag, fd in self.own.items():
            if flags & flag and _libc.setns(fd, flag) != 0:
                err = ctypes.get_errno()
                os.write(
                    2, f"sandlot template: setns {NAMESPACES[flag]}: {os.strerror(err)}\n".encode()
                )
                os._exit(FAILED_SETUP)

    def reap(self, pidfd: int, sandbox: tuple[str, int]) -> None:
        """Report the end of a sandbox's first process."""
        slot, pid = sandbox
        self.selector.unregister(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by someone else: its status is lost
            code = -signal.SIGKILL
        _send(self.control, f"exit {slot} {code}")


def site_runs_nothing() -> bool:
    """Whether ``site.main()`` would run no code of the environment's here: the
    interpreter is isolated (``-I``: no user site), no directory ``site`` could read
    holds a ``.pth`` file, and no directory of the path a ``sitecustomize`` or
    ``usercustomize`` module. Looks only: lists directories, finds no module.

    The directories are over-counted, never predicted: every prefix (the
    environment's, its base's), both what ``site.getsitepackages`` gives for them
    now and every ``lib*/python3*/*-packages`` and ``local/lib*/...`` below them,
    since a distribution's ``site`` may name others (Debian's lists an environment's
    ``site-packages`` only once ``site`` has switched to it). A yes must never be
    wrong; a no only costs each driver its own ``site.main()``.
    """
    import glob
    import importlib.machinery
    import site

    if not sys.flags.isolated:
        return False
    env = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    prefixes = list(
        dict.fromkeys([env, sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix])
    )
    dirs = set(site.getsitepackages(prefixes))
    for prefix in prefixes:
        for pattern in ("lib*/python3*/*-packages", "local/lib*/python3*/*-packages"):
            dirs.update(glob.glob(os.path.join(glob.escape(prefix), pattern)))
    found = [d for d in dirs if os.path.isdir(d)]
    try:
        if any(name.endswith(".pth") for d in found for name in os.listdir(d)):
            return False
    except OSError:
        return False
    path = [*sys.path, *found]
    finder = importlib.machinery.PathFinder
    return all(finder.find_spec(name, path) is None for name in ("sitecustomize", "usercustomize"))


def main(
    control_fd: int, seccomp_fd: int, bound: bool, network: bool, targets: tuple[str, ...] = ()
) -> None:
    """Serve fork requests on ``control_fd`` until the host closes it.

    ``bound``: the template runs in a user namespace of its own (the host is not root)
    with the host's directory of slots bound at :data:`SLOTS_INSIDE`. ``network``: the
    setting its sandboxes will ask for (its first spare's). ``targets``: the empty
    directories of its root where each sandbox's mounts go, the host's detached mounts
    coming in this order with each request.
    """
    program = None
    if seccomp_fd >= 0:
        with os.fdopen(seccomp_fd, "rb") as f:
            program = f.read()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # gone with bubblewrap's monitor
    _libc.prctl(PR_SET_NAME, b"sandlot-tmpl", 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the first processes are reaped here
    # A pidfd per live sandbox; each driver sets its own limit (max_open_files) before any
    # of the sandbox's code runs.
    most = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))
    forker = _Forker(socket.socket(fileno=control_fd), program, bound, targets)
    gc.freeze()  # see _settling; the collector stays off here until then
    problem = forker.first_spare(network)
    if problem:
        os.write(2, f"its first sandbox's walls failed: {problem}".encode())
        os._exit(FAILED_SETUP)
    _send(forker.control, "ready")
    forker.serve()
