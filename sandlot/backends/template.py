"""Templates: fresh sandboxes forked from a warm driver instead of started from nothing.

A cold start pays for bubblewrap, an interpreter and the driver's imports
every time (tens of milliseconds of CPU). A template pays them once: it is a
bubblewrap sandbox whose process has imported the driver and waits, with the
privileges to make namespaces, for the host to ask for a sandbox. It forks
one, which builds its own walls (see :mod:`sandlot.driver.template`) and
serves the driver's protocol as a cold-started driver would. The host hands
it a detached mount of its workdir and the files that join the sandbox's
cgroups (made ahead, see :class:`.cgroups.Stock`); the driver joins them
before it reads its channel, so no code of the sandbox's runs outside them.
The template itself sees no workdir and no cgroup directory.

Where the host is not root, the template runs in a user namespace of its own
(bubblewrap's ``--unshare-user``, with the capabilities of that namespace to
make the others), and no mount of the host's can enter it: bubblewrap binds
the template's directory of slots (the sandboxes' workdirs) at
``SLOTS_INSIDE``. Each fork binds its own slot at ``/workspace`` (checked
against the host's descriptor of it: same device and inode, reached without a
link), unmounts the slots and drops every capability, the bounding set too,
before any of the sandbox's code runs; the sandbox runs as the host's user, as
a cold start there does. Its PID 1 makes itself not dumpable: it runs as that
user too, without the seccomp filter.

One template serves every sandbox with the same walls: the same interpreter
and environment, the same network setting and the same locale variables; the
rest of a sandbox's variables, its secrets among them, reach its driver in
the init frame, so the template holds none. The template's interpreter starts
with ``-I -S``: no start-up code of the environment's (``.pth`` files,
``sitecustomize``) ever runs in it; each driver runs ``site`` once it has
dropped to the sandbox's user. Where ``site`` would run no such code (no
``.pth`` file in any directory it could read, no ``sitecustomize`` or
``usercustomize`` module: the default environment), the template runs it
once, after everything else it imports, and the drivers forked after skip it.
A template also serves sandboxes with mounts and volumes: where the host is
root, its root holds an empty directory at each one's path, and the host hands
each fork a detached copy of its sources (:func:`bind_mount`); where it is not,
the template binds one set of sources itself, as a cold start does, and its
forks inherit them.
Sandboxes with local models, GPUs or a workdir of the user's still start
cold, as do those whose environment or interpreter lies under ``/tmp``,
``/var/tmp`` or ``/dev/shm`` (each sandbox gets a fresh one, which would
hide it). ``SANDLOT_TEMPLATES=0`` turns templates off.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

ENV_VAR: Final = "SANDLOT_TEMPLATES"
SYS_OPEN_TREE, SYS_MOUNT_SETATTR, AT_FDCWD = 428, 442, -100  # x86-64, arm64: the shared table
OPEN_TREE_CLONE_CLOEXEC = 0x1 | os.O_CLOEXEC
AT_EMPTY_PATH, AT_RECURSIVE = 0x1000, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MS_PRIVATE = 0x1, 0x2, 0x4, 0x40000
_libc = ctypes.CDLL(None, use_errno=True)
READY_TIMEOUT = 30.0  # seconds a template has to start
TRASH = "trash"  # beside a template's slots: what its ended sandboxes left, to be removed
STATUS_WAIT = 2.0  # seconds to wait for the template's report of an exit the pidfd showed


def enabled() -> bool:
    """Whether templates may be used (``SANDLOT_TEMPLATES`` is not ``0``)."""
    return os.environ.get(ENV_VAR, "1").strip() not in ("0", "false", "no", "off")


class TemplateError(RuntimeError):
    """A template did not start, or ended; the message says why."""


def workdir_mount(path: Path) -> int:
    """A descriptor of a detached copy of the mount at ``path`` (``open_tree`` with
    ``OPEN_TREE_CLONE``), which a forked sandbox's driver moves to its ``/workspace``.

    So the template needs no view of the host's directories, and a start no unmount
    (each waited for an RCU grace period, up to a millisecond here). Closing an unused
    one dissolves it. An ``OSError`` where the kernel has no ``open_tree`` (before 5.2).
    """
    fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(path), OPEN_TREE_CLONE_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}")
    return int(fd)


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def bind_mount(source: int, read_only: bool) -> int:
    """A descriptor of a detached recursive copy of the directory ``source`` (a descriptor)
    as a forked sandbox's driver mounts it for a mount or volume of its config: every mount
    of the copy private, without device files or set-user-ID, read-only if ``read_only``
    (as bubblewrap binds them for a cold start), set here, before the sandbox sees it.

    An ``OSError`` where the kernel has no ``mount_setattr`` (before 5.12).
    """
    flags = OPEN_TREE_CLONE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE
    fd = _libc.syscall(SYS_OPEN_TREE, source, b"", flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree: {os.strerror(err)}")
    flags = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if read_only else 0)
    attr = _MountAttr(flags, 0, MS_PRIVATE)
    where = AT_EMPTY_PATH | AT_RECURSIVE
    if _libc.syscall(SYS_MOUNT_SETATTR, fd, b"", where, ctypes.byref(attr), ctypes.sizeof(attr)):
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount_setattr: {os.strerror(err)}")
    return int(fd)


def host_pid(pidfd: int) -> int:
    """The PID, in this process's namespace, of the process ``pidfd`` refers to; 0 once it
    has been reaped (its end, and why, then come as any sandbox's do)."""
    for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Pid":
            return max(int(value), 0)
    return 0


def _unreaped(pidfd: int) -> bool:
    """Whether the process ``pidfd`` refers to is not yet reaped (so its PID is still its own):
    a null signal reaches it (a zombie too), and one reaped answers ``ESRCH``."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    return True


class ForkedProcess:
    """A sandbox's first process, forked by a template: the part of ``Popen`` a launch uses.

    Not this host's child but the template's: its end shows on ``pidfd`` and
    its exit status comes from the template, which reaps it. It is PID 1 of its
    own namespace, so killing it kills every process of the sandbox.

    The host holds a descriptor of its mount namespace (``mounts``) from the start: the
    last process to leave a mount namespace unmounts all of it, and that waits for an RCU
    grace period (0.2-0.3 ms here). Held, that happens when the host closes it, off the
    sandbox's end (:meth:`close`), not in PID 1's exit.
    """

    def __init__(self, pidfd: int, status: concurrent.futures.Future[int], log: BinaryIO) -> None:
        self.pidfd = pidfd
        self.pid = host_pid(pidfd)
        self.mounts = -1
        if self.pid > 0:
            with contextlib.suppress(OSError):
                self.mounts = os.open(f"/proc/{self.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            if self.mounts >= 0 and not _unreaped(pidfd):  # reaped, its PID perhaps reused
                os.close(self.mounts)
                self.mounts = -1
            if self.mounts >= 0:
                _held_mounts.add(self.mounts)
        self._status = status
        self.stderr: BinaryIO | None = log
        self.returncode: int | None = None

    def _report(self) -> int:
        try:
            return self._status.result(0)
        except TemplateError:
            return -signal.SIGKILL  # the template ended before it could report

    def poll(self) -> int | None:
        """The exit status once the template has reported it, else None."""
        if self.returncode is None and self._status.done():
            self.returncode = self._report()
        return self.returncode

    def on_report(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from any thread) once the exit status is known."""
        self._status.add_done_callback(lambda _: callback())

    def wait(self) -> int:
        """Block until the process has ended; its exit status."""
        if self.poll() is None:
            select.select([self.pidfd], [], [])
            with contextlib.suppress(TimeoutError, TemplateError):
                self._status.result(STATUS_WAIT)
            self.returncode = self._report() if self._status.done() else -signal.SIGKILL
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the process, and with it its PID namespace."""
        with contextlib.suppress(OSError):  # gone already
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self, closer: Callable[[int], object]) -> None:
        """Release the pidfd (once the process is gone), and hand the descriptor of its mount
        namespace to ``closer`` (closing it tears the namespace down, which waits)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.mounts in _held_mounts:  # not if a fork of this process let it go
            _held_mounts.discard(self.mounts)
            closer(self.mounts)
        self.mounts = -1


_held_mounts: set[int] = set()  # descriptors of forked sandboxes' mount namespaces, held


def _let_go_of_mounts() -> None:
    """In a child forked from the host (``multiprocessing``): its parent's sandboxes'
    mount namespaces (their ``/tmp`` among them) must not live as long as it does."""
    for fd in _held_mounts:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_mounts.clear()


os.register_at_fork(after_in_child=_let_go_of_mounts)


def drop_pidfd(future: concurrent.futures.Future[int]) -> None:
    """Kill and release the process whose pidfd ``future`` holds, if it holds one."""
    if future.done() and not future.cancelled() and future.exception() is None:
        pidfd = future.result()
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)


@dataclass
class _Waiting:
    pidfd: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)
    status: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)


def _settle(
    future: concurrent.futures.Future[Any],
    *,
    result: object = None,
    exception: BaseException | None = None,
) -> bool:
    """Give ``future`` its outcome unless it has one (a start given up cancels it)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        return False
    return True


class Template:
    """One running template: its bubblewrap process, its control socket, the forks in flight."""

    def __init__(self, proc: subprocess.Popen[bytes], control: socket.socket, slots: Path) -> None:
        self.proc = proc
        self.control = control
        self.slots = slots  # host directory of its sandboxes' directories (it sees none)
        self.trash = slots.with_name(TRASH)  # where ended sandboxes' directories go to be removed
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._dead = ""

    @classmethod
    def start(
        cls, argv: list[str], pass_fds: list[int], control: socket.socket, slots: Path
    ) -> Template:
        """Run ``argv`` (bubblewrap and the template's command), wait for its ``ready``.

        Takes ``pass_fds`` (closed here once the template has them) and ``control``.

        bubblewrap is started from a thread of the template's own that lives as
        long as the template: ``--die-with-parent`` follows the thread that
        started it, and a worker thread of a pool may end sooner.
        """
        started: concurrent.futures.Future[Template] = concurrent.futures.Future()
        threading.Thread(
            target=cls._run,
            args=(argv, pass_fds, control, slots, started),
            name="sandlot-template",
            daemon=True,
        ).start()
        return started.result()

    @classmethod
    def _run(
        cls,
        argv: list[str],
        pass_fds: list[int],
        control: socket.socket,
        slots: Path,
        started: concurrent.futures.Future[Template],
    ) -> None:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
                env={},
                start_new_session=True,
            )
        except OSError as exc:
            control.close()
            started.set_exception(TemplateError(f"the template did not start: {exc}"))
            return
        finally:
            for fd in pass_fds:
                os.close(fd)
        template = cls(proc, control, slots)
        control.settimeout(READY_TIMEOUT)
        try:
            said = control.recv(64)
        except OSError:
            said = b""
        control.settimeout(None)
        assert proc.stderr is not None
        if said != b"ready":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            why = proc.stderr.read(4000).decode("utf-8", "replace").strip()
            proc.stderr.close()
            control.close()
            started.set_exception(
                TemplateError(f"the template did not start: {why or 'no message'}")
            )
            return
        proc.stderr.close()  # the template's own complaints after start-up are not read
        started.set_result(template)
        template._read()

    @property
    def alive(self) -> bool:
        """Whether the template still takes requests."""
        return not self._dead and self.proc.poll() is None

    @property
    def idle(self) -> bool:
        """Whether no sandbox it forked (or is forking) is alive."""
        with self._lock:
            return not self._waiting

    def fork(self, slot: str, network: bool, channel: int, log: int, given: list[int]) -> _Waiting:
        """Ask for a sandbox in ``slot``; its pidfd and exit status arrive on the futures.

        ``given`` holds a detached mount of its workdir (:func:`workdir_mount`), then
        the files that join its cgroups, opened for writing: the driver joins them
        before it reads the channel.
        """
        waiting = _Waiting()
        with self._lock:
            if self._dead:
                raise TemplateError(self._dead)
            self._waiting[slot] = waiting
        try:
            request = f"fork {slot} {int(network)}".encode()
            socket.send_fds(self.control, [request], [channel, log, *given])
        except OSError as exc:
            with self._lock:
                self._waiting.pop(slot, None)
            raise TemplateError(f"the template did not take the request: {exc}") from None
        return waiting

    def forget(self, slot: str) -> None:
        """Drop what is known of ``slot`` (its sandbox is gone)."""
        with self._lock:
            self._waiting.pop(slot, None)

    def _read(self) -> None:
        try:
            while self._take(*socket.recv_fds(self.control, 512, 1)[:2]):
                pass
        except OSError:
            pass
        finally:  # this thread is bubblewrap's parent: it ends only with the template
            self.control.close()
            with self._lock:
                self._dead = "the template ended"
                left, self._waiting = self._waiting, {}
            for waiting in left.values():
                for future in (waiting.pidfd, waiting.status):
                    _settle(future, exception=TemplateError(self._dead))

    def _take(self, data: bytes, fds: list[int]) -> bool:
        """Deliver one message from the template; False at its end."""
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        word, _, rest = data.decode("ascii", "replace").partition(" ")
        slot, _, detail = rest.partition(" ")
        with self._lock:  # once forget() returns, no pidfd reaches a given-up start
            waiting = self._waiting.get(slot)
            if word == "pid" and fds:
                pidfd = fds.pop(0)
                if waiting is None or not _settle(waiting.pidfd, result=pidfd):
                    with contextlib.suppress(OSError):  # the start was given up meanwhile
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    os.close(pidfd)
        if word == "exit" and waiting is not None:
            with contextlib.suppress(ValueError):
                _settle(waiting.status, result=int(detail))
            self.forget(slot)
        elif word == "failed" and waiting is not None:
            error = TemplateError(f"the template could not fork: {detail}")
            for future in (waiting.pidfd, waiting.status):
                _settle(future, exception=error)
            self.forget(slot)
        for fd in fds:  # not delivered: for a slot given up, or more than a message carries
            os.close(fd)
        return True

    def close(self) -> None:
        """End the template and every sandbox forked from it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        with contextlib.suppress(OSError):
            self.control.shutdown(socket.SHUT_RDWR)


__all__ = [
    "ForkedProcess",
    "Template",
    "TemplateError",
    "drop_pidfd",
    "enabled",
    "host_pid",
]
