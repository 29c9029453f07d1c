"""The seccomp filter every local sandbox runs under.

bubblewrap installs it (``bwrap --seccomp FD``) after its own mounts and
namespace setup, just before it executes the driver, so the filter binds the
driver, the REPL and every process they start. It is a denylist: anything a
sandbox has no use for and that container escapes or kernel exploits rely on
fails with ``EPERM`` (``clone3`` with ``ENOSYS``, so that libc falls back to
``clone``, whose flags the filter can read); everything else is allowed. A few
calls are judged by argument: ``clone`` by its flags, ``ioctl`` by its request,
``personality`` by its value, ``socket`` and ``socketpair`` by address family.

:func:`program` compiles it to classic BPF with the standard library only.
docs/isolation.md ("System calls") says what is denied and why.
"""

from __future__ import annotations

import errno
import platform
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DENIED", "UnsupportedArchitecture", "program"]


class UnsupportedArchitecture(RuntimeError):
    """There is no syscall table for this machine's architecture."""


# Why each call is denied; the keys are the groups docs/isolation.md lists.
DENIED: Mapping[str, tuple[str, ...]] = {
    "namespaces": ("unshare", "setns"),  # and clone with CLONE_NEW*, clone3
    "mounts": (
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "open_tree",
        "open_tree_attr",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
    ),
    "keyring": ("add_key", "request_key", "keyctl"),
    "kernel attack surface": (
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "modify_ldt",
        "fanotify_init",
        "lookup_dcookie",
    ),
    "other processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "pidfd_getfd",
        "kcmp",
    ),
    "kernel and modules": (
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "_sysctl",
    ),
    "host-wide state": (
        "acct",
        "swapon",
        "swapoff",
        "reboot",
        "syslog",
        "settimeofday",
        "clock_settime",
        "quotactl",
        "quotactl_fd",
        "vhangup",
        "iopl",
        "ioperm",
    ),
    "file handles": ("name_to_handle_at", "open_by_handle_at"),
    "obsolete": ("uselib", "nfsservctl"),
}

# Checked against /usr/include/x86_64-linux-gnu/asm/unistd_64.h (Linux 6.x).
_X86_64: dict[str, int] = {
    "ioctl": 16,
    "socket": 41,
    "socketpair": 53,
    "clone": 56,
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "_sysctl": 156,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
}

# Checked against the kernel's generic table (asm-generic/unistd.h), which
# arm64 uses; it has no iopl, ioperm, modify_ldt, uselib, _sysctl or the
# old module calls.
_AARCH64: dict[str, int] = {
    "lookup_dcookie": 18,
    "ioctl": 29,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "nfsservctl": 42,
    "chroot": 51,
    "vhangup": 58,
    "quotactl": 60,
    "acct": 89,
    "personality": 92,
    "unshare": 97,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "clock_settime": 112,
    "syslog": 116,
    "ptrace": 117,
    "reboot": 142,
    "settimeofday": 170,
    "socket": 198,
    "socketpair": 199,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "clone": 220,
    "swapon": 224,
    "swapoff": 225,
    "perf_event_open": 241,
    "fanotify_init": 262,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "setns": 268,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "finit_module": 273,
    "bpf": 280,
    "userfaultfd": 282,
    "kexec_file_load": 294,
}

# Since Linux 5.0 new calls share one number on every architecture.
_COMMON: dict[str, int] = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "open_tree_attr": 467,
}


@dataclass(frozen=True)
class _Arch:
    audit: int  # AUDIT_ARCH_* as seccomp_data.arch reports it
    numbers: Mapping[str, int]
    x32_bit: int | None  # on x86_64, the bit that marks an x32 call


_ARCHES: dict[str, _Arch] = {
    "x86_64": _Arch(0xC000003E, {**_X86_64, **_COMMON}, 0x40000000),
    "aarch64": _Arch(0xC00000B7, {**_AARCH64, **_COMMON}, None),
}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

# Every CLONE_NEW* flag clone() accepts (CLONE_NEWTIME, 0x80, is only for
# unshare and clone3: in clone's flags that bit belongs to the exit signal).
_CLONE_NEW = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
_TIOCSTI = 0x5412  # push bytes into a terminal's input: typed commands
_TIOCLINUX = 0x541C  # can copy and paste on a virtual console
# personality() values let through: the query, PER_LINUX, PER_LINUX32 and
# UNAME26 (with either). ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the rest
# weaken the process for an exploit.
_PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
# Address families that socket() and socketpair() refuse: network namespaces
# isolate neither. vsock is global, so a sandbox without network would still
# reach vsock services of the VM's host (Linux 7.0's vsock namespaces leave a
# guest's virtio transport global). AF_ALG, the kernel's crypto API, is no
# network at all, and its algif_aead wrote into the page cache of any file the
# caller can read, host files bound into the sandbox included (CVE-2026-31431).
# Docker's default profile refuses the same two. The families never made
# namespace-aware (Bluetooth, NFC, ATM, AX.25, ...) refuse a socket outside the
# initial network namespace themselves. AF_UNIX, AF_INET, AF_INET6 and
# AF_NETLINK stay allowed.
_AF_ALG = 38
_AF_VSOCK = 40
_DENIED_FAMILIES = (_AF_ALG, _AF_VSOCK)

# Classic BPF, as <linux/filter.h> and <linux/seccomp.h> define it.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_OFF_NR = 0
_OFF_ARCH = 4


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of args[index] in struct seccomp_data."""
    return 16 + 8 * index + (4 if sys.byteorder == "big" else 0)


class _Assembler:
    """Straight-line BPF with forward jumps to named labels."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | int, str | int, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, yes: str | int = 0, no: str | int = 0) -> None:
        """Compare and go to label ``yes``/``no`` (an int: skip that many)."""
        self._code.append((op, yes, no, k))

    def ret(self, value: int) -> None:
        self._code.append((_RET_K, 0, 0, value))

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, yes, no, k) in enumerate(self._code):
            out += struct.pack("=HBBI", code, self._offset(pc, yes), self._offset(pc, no), k)
        return bytes(out)

    def _offset(self, pc: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        delta = self._labels[target] - pc - 1
        if not 0 <= delta <= 0xFF:
            raise ValueError(f"BPF jump to {target!r} out of range ({delta})")
        return delta


def _compile(arch: _Arch) -> bytes:
    nr = arch.numbers
    asm = _Assembler()
    asm.load(_OFF_ARCH)
    asm.jump(_JEQ_K, arch.audit, 1, 0)
    asm.ret(_RET_KILL_PROCESS)  # a foreign ABI (i386 through int 0x80): numbers mean other calls
    asm.load(_OFF_NR)
    if arch.x32_bit is not None:
        asm.jump(_JGE_K, arch.x32_bit, "eperm")
    asm.jump(_JEQ_K, nr["clone"], "clone")
    asm.jump(_JEQ_K, nr["ioctl"], "ioctl")
    asm.jump(_JEQ_K, nr["personality"], "personality")
    asm.jump(_JEQ_K, nr["socket"], "socket")
    asm.jump(_JEQ_K, nr["socketpair"], "socket")
    asm.jump(_JEQ_K, nr["clone3"], "enosys")
    denied = sorted({nr[name] for names in DENIED.values() for name in names if name in nr})
    for number in denied:
        asm.jump(_JEQ_K, number, "eperm")
    asm.ret(_RET_ALLOW)

    asm.label("clone")  # threads and fork pass; a new namespace does not
    asm.load(_arg_low(0))
    asm.jump(_JSET_K, _CLONE_NEW, "eperm")
    asm.ret(_RET_ALLOW)

    asm.label("ioctl")  # the kernel reads the request as 32 bits: compare those
    asm.load(_arg_low(1))
    asm.jump(_JEQ_K, _TIOCSTI, "eperm")
    asm.jump(_JEQ_K, _TIOCLINUX, "eperm")
    asm.ret(_RET_ALLOW)

    asm.label("socket")  # the family is an int: the kernel reads its low 32 bits
    asm.load(_arg_low(0))
    for family in _DENIED_FAMILIES:
        asm.jump(_JEQ_K, family, "eperm")
    asm.ret(_RET_ALLOW)

    asm.label("personality")
    asm.load(_arg_low(0))
    for value in _PERSONALITIES:
        asm.jump(_JEQ_K, value, "allow")
    asm.label("eperm")
    asm.ret(_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(_RET_ERRNO | errno.ENOSYS)
    asm.label("allow")
    asm.ret(_RET_ALLOW)
    return asm.assemble()


def program(machine: str | None = None) -> bytes:
    """Return the compiled classic-BPF filter for this machine's architecture.

    The result is an array of ``struct sock_filter`` (u16 code, u8 jt, u8 jf,
    u32 k) in native byte order, as ``bwrap --seccomp FD`` reads it. Raises
    :class:`UnsupportedArchitecture`, naming the architecture, when there is
    no syscall table for it (today: anything but x86_64 and aarch64).
    """
    name = (machine or platform.machine()).lower()
    arch = _ARCHES.get(_ALIASES.get(name, name))
    if arch is None:
        raise UnsupportedArchitecture(
            f"no seccomp filter for architecture {name!r} (sandlot has tables for "
            f"{', '.join(sorted(_ARCHES))})"
        )
    return _compile(arch)
