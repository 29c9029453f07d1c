"""Attacks on the kernel through system calls, and what the seccomp filter keeps working.

Every local sandbox runs under the filter of ``sandlot.backends.seccomp``
(docs/isolation.md, "System calls"). Each test below is an attack made from
inside a real sandbox through the public API, with the promise it checks in its
docstring, or a workload the filter must leave alone. The probes pass harmless
arguments: without the filter each call would fail differently (EFAULT, EBADF,
ENOSYS) or succeed, so the errno the test expects is the filter's own.
"""

from __future__ import annotations

import errno
import json
import platform
import socket
import struct
import sys
import textwrap
from collections.abc import Iterator

import pytest
from conftest import strict

import sandlot
from sandlot.backends import seccomp

MACHINE = platform.machine()
X86_64 = MACHINE == "x86_64"
pytestmark = pytest.mark.skipif(
    MACHINE not in ("x86_64", "aarch64"), reason=f"no seccomp table for {MACHINE}"
)

# The numbers the probes need (x86_64, aarch64).
NR = {
    "clone": (56, 220),
    "clone3": (435, 435),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "mount": (165, 40),
    "ptrace": (101, 117),
    "io_uring_setup": (425, 425),
    "personality": (135, 92),
    "getpid": (39, 172),
    "kexec_load": (246, 104),
    "init_module": (175, 105),
    "process_vm_readv": (310, 270),
    "pidfd_getfd": (438, 438),
    "open_by_handle_at": (304, 265),
    "setns": (308, 268),
    "socket": (41, 198),
    "socketpair": (53, 199),
}
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_ALG, AF_VSOCK = 1, 2, 10, 16, 38, 40
SOCK_STREAM, SOCK_SEQPACKET = 1, 5


def nr(name: str) -> int:
    return NR[name][0 if X86_64 else 1]


# A ctypes ``syscall()`` for the REPL: returns the result, or -errno.
SYSCALL = textwrap.dedent(
    """
    import ctypes, os
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syscall.restype = ctypes.c_long
    def sys_call(number, *args):
        ctypes.set_errno(0)
        r = _libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
        return -ctypes.get_errno() if r == -1 else r
    """
)


@pytest.fixture(scope="module")
def box() -> Iterator[sandlot.Sandbox]:
    """One sandbox for the probes that leave nothing behind."""
    with sandlot.Sandbox(strict(memory_mb=1024)) as sb:
        r = sb.run_code(SYSCALL, timeout=30)
        assert r.error is None, r.error
        yield sb


def call(sb: sandlot.Sandbox, name: str, *args: int) -> int:
    r = sb.run_code(f"sys_call({nr(name)}, {', '.join(map(str, args))})", timeout=30)
    assert r.error is None, r.error
    assert r.value is not None
    return int(r.value)


def test_every_sandbox_process_runs_under_the_filter(box: sandlot.Sandbox) -> None:
    """The REPL and a process it execs both report a seccomp filter (mode 2)."""
    r = box.run_code("open('/proc/self/status').read()", timeout=30)
    assert r.error is None, r.error
    assert "Seccomp:\\t2" in (r.value or "")
    e = box.exec("grep", "^Seccomp:", "/proc/self/status", timeout=30)
    assert e.stdout.split() == ["Seccomp:", "2"], e


@pytest.mark.parametrize(
    "argv",
    [
        ["unshare", "-Ur", "id", "-u"],
        ["unshare", "--user", "id", "-u"],
        ["unshare", "-m", "id", "-u"],
    ],
    ids=["-Ur", "--user", "-m"],
)
def test_unshare_command_gets_no_new_namespace(box: sandlot.Sandbox, argv: list[str]) -> None:
    """`unshare` fails with EPERM and never prints uid 0 (root in a nested user namespace)."""
    r = box.exec(*argv, timeout=30)
    assert r.returncode != 0, r
    assert "Operation not permitted" in r.stderr, r
    assert r.stdout.strip() != "0", r


def test_python_unshare_newuser_is_denied(box: sandlot.Sandbox) -> None:
    """unshare(CLONE_NEWUSER) from Python raises PermissionError; the uid stays the sandbox's.

    os.unshare exists from Python 3.12; on older interpreters the test calls libc's.
    """
    r = box.run_code(
        textwrap.dedent(
            """
            def new_user_namespace():
                if hasattr(os, "unshare"):
                    os.unshare(os.CLONE_NEWUSER)
                elif _libc.unshare(0x10000000) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, os.strerror(e))
            try:
                new_user_namespace()
                out = "unshared"
            except PermissionError:
                out = "denied"
            (out, os.getuid())
            """
        ),
        timeout=30,
    )
    assert r.error is None, r.error
    assert r.value is not None and r.value.startswith("('denied', ")
    assert r.value != "('denied', 0)"


def test_clone_with_a_new_namespace_flag_is_denied_plain_clone_is_not(box: sandlot.Sandbox) -> None:
    """Raw clone() with CLONE_NEWUSER or CLONE_NEWNS fails with EPERM; plain, it forks."""
    script = textwrap.dedent(
        f"""
        import ctypes, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        out = {{}}
        for name, flags in (("newuser", 0x10000000), ("newns", 0x00020000), ("plain", 0)):
            pid = libc.syscall(ctypes.c_long({nr("clone")}), ctypes.c_long(flags | 17),
                               *[ctypes.c_long(0)] * 4)
            if pid == 0:
                os._exit(7)
            if pid > 0:
                out[name] = os.waitpid(pid, 0)[1] >> 8
            else:
                out[name] = -ctypes.get_errno()
        print(json.dumps(out))
        """
    )
    r = box.exec("python3", "-c", script, timeout=30)
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"newuser": -errno.EPERM, "newns": -errno.EPERM, "plain": 7}


def test_clone3_answers_enosys_so_libc_falls_back(box: sandlot.Sandbox) -> None:
    """clone3 (flags in memory the filter cannot read) says ENOSYS, so glibc falls back to clone."""
    assert call(box, "clone3", 0, 0) == -errno.ENOSYS


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("keyctl", (0, -4, 0)),  # KEYCTL_GET_KEYRING_ID of the user keyring
        ("add_key", (0, 0, 0, 0, -4)),
        ("request_key", (0, 0, 0, -4)),
        ("bpf", (5, 0, 0)),  # BPF_PROG_LOAD, no attributes: EFAULT where unprivileged bpf is on
        ("perf_event_open", (0, 0, -1, -1, 0)),
        ("userfaultfd", (1,)),  # UFFD_USER_MODE_ONLY: allowed unprivileged unfiltered
        ("mount", (0, 0, 0, 0, 0)),
        ("io_uring_setup", (1, 0)),
        ("kexec_load", (0, 0, 0, 0)),
        ("init_module", (0, 0, 0)),
        ("process_vm_readv", (1, 0, 0, 0, 0, 0)),
        ("pidfd_getfd", (-1, 0, 0)),
        ("open_by_handle_at", (-1, 0, 0)),
        ("setns", (-1, 0)),
        ("personality", (0x0040000,)),  # ADDR_NO_RANDOMIZE: turns off ASLR for an exploit
    ],
)
def test_denied_call_fails_with_eperm(
    box: sandlot.Sandbox, name: str, args: tuple[int, ...]
) -> None:
    """Each call sandboxed code has no use for, and escapes rely on, fails with EPERM."""
    assert call(box, name, *args) == -errno.EPERM


def test_personality_query_still_answers(box: sandlot.Sandbox) -> None:
    """personality(0xffffffff), the query that libc and setarch use, is allowed."""
    assert call(box, "personality", 0xFFFFFFFF) >= 0


@pytest.mark.skipif(not X86_64, reason="x32 is an x86_64 ABI")
def test_x32_syscall_is_denied(box: sandlot.Sandbox) -> None:
    """getpid through the x32 ABI (nr | 0x40000000), around the x86_64 table, fails with EPERM."""
    assert call(box, "getpid") > 0
    r = box.run_code(f"sys_call({nr('getpid') | 0x40000000})", timeout=30)
    assert r.error is None, r.error
    assert r.value == str(-errno.EPERM)


@pytest.mark.skipif(not X86_64, reason="int 0x80 is the i386 ABI on x86_64")
def test_i386_syscall_through_int80_kills_the_process(box: sandlot.Sandbox) -> None:
    """A call through the i386 ABI (its numbers mean other calls) kills its process with SIGSYS."""
    source = (
        'int main(void){long r; __asm__ volatile("int $0x80":"=a"(r):"a"(20L));'
        "return r > 0 ? 0 : 3;}"
    )
    r = box.exec(
        "sh",
        "-c",
        "cd /tmp && cat > i386.c && gcc -O0 -o i386 i386.c && ./i386",
        stdin=source,
        timeout=60,
    )
    assert r.returncode in (-31, 128 + 31), r  # SIGSYS (sh reports 159)


def test_ptrace_attach_to_a_sibling_is_denied(box: sandlot.Sandbox) -> None:
    """PTRACE_ATTACH to a process of the same user in the same sandbox fails with EPERM."""
    r = box.run_code(
        "import subprocess\n"
        "victim = subprocess.Popen(['sleep', '30'])\n"
        f"try:\n    out = sys_call({nr('ptrace')}, 16, victim.pid, 0, 0)\n"
        "finally:\n    victim.kill(); victim.wait()\nout",
        timeout=30,
    )
    assert r.error is None, r.error
    assert r.value == str(-errno.EPERM)


def test_terminal_injection_with_tiocsti_is_denied(box: sandlot.Sandbox) -> None:
    """TIOCSTI on the process's own controlling terminal fails with EPERM (also with high bits set),
    and no byte reaches the terminal's input; TIOCGWINSZ still works."""
    script = textwrap.dedent(
        """
        import ctypes, fcntl, json, os, select, struct, termios
        libc = ctypes.CDLL(None, use_errno=True)
        master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)
        if os.fork():  # a session leader cannot start a session: a child does it
            _, status = os.wait()
            raise SystemExit(status >> 8)
        os.setsid()
        tty = os.open(name, os.O_RDWR)  # the new session's controlling terminal
        out = {}
        for label, request in (("sti", 0x5412), ("sti_high", 0x1_0000_5412), ("linux", 0x541C)):
            ctypes.set_errno(0)
            rc = libc.ioctl(tty, ctypes.c_ulong(request), ctypes.c_char_p(b"x"))
            out[label] = -ctypes.get_errno() if rc == -1 else rc
        out["winsz"] = len(fcntl.ioctl(tty, termios.TIOCGWINSZ, bytes(8)))
        out["injected"] = bool(select.select([tty], [], [], 0.2)[0])
        print(json.dumps(out))
        """
    )
    r = box.exec("python3", "-c", script, timeout=30)
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {
        "sti": -errno.EPERM,
        "sti_high": -errno.EPERM,
        "linux": -errno.EPERM,
        "winsz": 8,
        "injected": False,
    }


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("socket", (AF_VSOCK, SOCK_STREAM, 0)),  # unfiltered: it can connect to the VM host, CID 2
        ("socket", (AF_VSOCK, SOCK_SEQPACKET, 0)),
        ("socket", (0x1_0000_0000 | AF_VSOCK, SOCK_STREAM, 0)),  # the kernel reads an int
        ("socket", (AF_ALG, SOCK_SEQPACKET, 0)),  # unfiltered: the kernel crypto API
        ("socketpair", (AF_VSOCK, SOCK_STREAM, 0)),  # unfiltered: vsock_create, then EOPNOTSUPP
    ],
    ids=["vsock-stream", "vsock-seqpacket", "vsock-high-bits", "alg", "vsock-pair"],
)
def test_socket_family_outside_network_namespaces_is_denied(
    box: sandlot.Sandbox, name: str, args: tuple[int, ...]
) -> None:
    """socket() and socketpair() with AF_VSOCK or AF_ALG, which network namespaces do not isolate,
    fail with EPERM before the family's code runs: a sandbox without network reaches no vsock
    service of the VM's host."""
    fds = "ctypes.addressof(ctypes.create_string_buffer(8))" if name == "socketpair" else "0"
    r = box.run_code(f"sys_call({nr(name)}, {', '.join(map(str, args))}, {fds})", timeout=30)
    assert r.error is None, r.error
    assert r.value == str(-errno.EPERM)


def test_python_vsock_socket_raises_permission_error(box: sandlot.Sandbox) -> None:
    """socket.socket(AF_VSOCK, SOCK_STREAM) raises PermissionError (EPERM), as a missing privilege
    would; the same code on the host gets a socket."""
    r = box.run_code(
        textwrap.dedent(
            """
            import socket
            try:
                socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
                out = "created"
            except OSError as e:
                out = (type(e).__name__, e.errno)
            out
            """
        ),
        timeout=30,
    )
    assert r.error is None, r.error
    assert r.value == f"('PermissionError', {errno.EPERM})"


def test_keyring_carries_nothing_from_one_sandbox_to_the_next() -> None:
    """A secret one sandbox puts in the user keyring cannot reach the next: both fail, EPERM."""
    put = SYSCALL + textwrap.dedent(
        f"""
        secret = ctypes.create_string_buffer(b"hunter2")
        sys_call({nr("add_key")}, ctypes.addressof(ctypes.create_string_buffer(b"user")),
                 ctypes.addressof(ctypes.create_string_buffer(b"sandlot-secret")),
                 ctypes.addressof(secret), 7, -4)
        """
    )
    get = SYSCALL + textwrap.dedent(
        f"""
        kind = ctypes.create_string_buffer(b"user")
        name = ctypes.create_string_buffer(b"sandlot-secret")
        found = sys_call({nr("request_key")}, ctypes.addressof(kind), ctypes.addressof(name), 0, 0)
        buf = ctypes.create_string_buffer(64)
        read = found  # KEYCTL_READ when the key was found
        if found > 0:
            read = sys_call({nr("keyctl")}, 11, found, ctypes.addressof(buf), 64)
        (found, read, buf.value)
        """
    )
    with sandlot.Sandbox(strict()) as first:
        r = first.run_code(put, timeout=30)
        assert r.error is None, r.error
        assert r.value == str(-errno.EPERM)
    with sandlot.Sandbox(strict()) as second:
        r = second.run_code(get, timeout=30)
        assert r.error is None, r.error
        assert r.value == f"({-errno.EPERM}, {-errno.EPERM}, b'')"


# What must keep working.


def test_threads_and_os_fork_work(box: sandlot.Sandbox) -> None:
    """Threads (clone3 refused, clone without namespace flags) and os.fork run as usual."""
    r = box.run_code(
        textwrap.dedent(
            """
            import threading
            seen = []
            threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
            for t in threads: t.start()
            for t in threads: t.join()
            pid = os.fork()
            if pid == 0:
                os._exit(5)
            (sorted(seen), os.waitpid(pid, 0)[1] >> 8)
            """
        ),
        timeout=30,
    )
    assert r.error is None, r.error
    assert r.value == "([0, 1, 2, 3, 4, 5, 6, 7], 5)"


def test_unix_inet_and_netlink_sockets_work(box: sandlot.Sandbox) -> None:
    """AF_UNIX (socketpair, a bound listener), AF_INET, AF_INET6 and AF_NETLINK sockets are created
    and used as usual under the family check."""
    r = box.run_code(
        textwrap.dedent(
            """
            import socket
            a, b = socket.socketpair()
            a.sendall(b"ping")
            paired = b.recv(4)
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind("/tmp/u.sock"); srv.listen(1)
            cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            cli.connect("/tmp/u.sock")
            conn, _ = srv.accept()
            cli.sendall(b"pong")
            bound = conn.recv(4)
            kinds = []
            for family, kind in ((socket.AF_INET, socket.SOCK_STREAM),
                                 (socket.AF_INET, socket.SOCK_DGRAM),
                                 (socket.AF_INET6, socket.SOCK_STREAM),
                                 (socket.AF_NETLINK, socket.SOCK_RAW)):
                with socket.socket(family, kind) as s:
                    kinds.append(s.family.name)
            for s in (a, b, srv, cli, conn):
                s.close()
            (paired, bound, kinds)
            """
        ),
        timeout=30,
    )
    assert r.error is None, r.error
    assert r.value == "(b'ping', b'pong', ['AF_INET', 'AF_INET', 'AF_INET6', 'AF_NETLINK'])"


def test_network_true_still_connects_and_still_denies_vsock() -> None:
    """With network=True the sandbox connects over TCP to a listener on the host's 127.0.0.1,
    and AF_VSOCK stays denied there too."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with sandlot.Sandbox(strict(network=True)) as sb:
            r = sb.run_code(
                textwrap.dedent(
                    f"""
                    import socket
                    with socket.create_connection(("127.0.0.1", {port}), timeout=10) as c:
                        c.sendall(b"hi")
                    try:
                        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
                        vsock = "created"
                    except OSError as e:
                        vsock = e.errno
                    vsock
                    """
                ),
                timeout=30,
            )
        assert r.error is None, r.error
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            assert conn.recv(2) == b"hi"
    assert r.value == str(errno.EPERM)


def test_subprocess_works(box: sandlot.Sandbox) -> None:
    """subprocess.run starts a child (posix_spawn/vfork, clone without namespace flags)."""
    r = box.run_code(
        "import subprocess\nsubprocess.run(['echo', 'ok'], capture_output=True, text=True).stdout",
        timeout=30,
    )
    assert r.error is None, r.error
    assert r.value == repr("ok\n")


def test_multiprocessing_fork_and_spawn_work(box: sandlot.Sandbox) -> None:
    """multiprocessing pools started with fork and with spawn compute results."""
    script = textwrap.dedent(
        """
        import multiprocessing as mp
        def square(x):
            return x * x
        if __name__ == "__main__":
            out = []
            for method in ("fork", "spawn"):
                with mp.get_context(method).Pool(2) as pool:
                    out.append(sum(pool.map(square, range(10))))
            print(out)
        """
    )
    r = box.exec("sh", "-c", "cat > /tmp/mp.py && python3 /tmp/mp.py", stdin=script, timeout=90)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "[285, 285]"


def test_venv_creation_works(box: sandlot.Sandbox) -> None:
    """python -m venv (without pip) creates a working environment."""
    r = box.exec(
        "sh",
        "-c",
        "python3 -m venv --without-pip /tmp/v&&/tmp/v/bin/python -c 'import sys;print(sys.prefix)'",
        timeout=60,
    )
    assert r.returncode == 0, r
    assert r.stdout.strip() == "/tmp/v"


def test_c_compile_and_run_works(box: sandlot.Sandbox) -> None:
    """gcc compiles and links a C program with threads, and it runs."""
    source = textwrap.dedent(
        """
        #include <pthread.h>
        #include <stdio.h>
        static void *work(void *arg) { return arg; }
        int main(void) {
            pthread_t t; void *r;
            pthread_create(&t, 0, work, (void *)42);
            pthread_join(t, &r);
            printf("%ld\\n", (long)r);
            return 0;
        }
        """
    )
    r = box.exec(
        "sh",
        "-c",
        "cd /tmp && cat > t.c && gcc -O1 -pthread -o t t.c && ./t",
        stdin=source,
        timeout=90,
    )
    assert r.returncode == 0, r
    assert r.stdout.strip() == "42"


def test_program_is_well_formed_for_both_tables() -> None:
    """program() emits whole sock_filter records for both tables and names an unknown arch."""
    for machine in ("x86_64", "aarch64"):
        code = seccomp.program(machine)
        assert code and len(code) % 8 == 0 and len(code) // 8 < 4096
    with pytest.raises(seccomp.UnsupportedArchitecture, match="riscv64"):
        seccomp.program("riscv64")


def run_bpf(code: bytes, arch: int, number: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate a filter on one system call, as the kernel would (the opcodes program() uses)."""
    data = struct.pack("=iIQ6Q", number, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns: list[tuple[int, int, int, int]] = [
        struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)
    ]
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = insns[pc]
        if op == 0x06:
            return k
        if op == 0x20:
            acc = int.from_bytes(data[k : k + 4], sys.byteorder)
            pc += 1
            continue
        taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
        pc += 1 + (jt if taken else jf)


@pytest.mark.parametrize(
    ("machine", "audit", "calls"),
    [
        (
            "x86_64",
            0xC000003E,
            {"getpid": 39, "keyctl": 250, "clone": 56, "clone3": 435, "ioctl": 16, "mount": 165}
            | {"socket": 41, "socketpair": 53},
        ),
        (
            "aarch64",
            0xC00000B7,
            {"getpid": 172, "keyctl": 219, "clone": 220, "clone3": 435, "ioctl": 29, "mount": 40}
            | {"socket": 198, "socketpair": 199},
        ),
    ],
)
def test_program_verdicts_for_each_table(machine: str, audit: int, calls: dict[str, int]) -> None:
    """Both tables, aarch64 too where it cannot run, give each call the intended verdict."""
    code = seccomp.program(machine)
    allow, eperm, enosys, kill = (
        0x7FFF0000,
        0x50000 | errno.EPERM,
        0x50000 | errno.ENOSYS,
        0x80000000,
    )
    assert run_bpf(code, audit, calls["getpid"]) == allow
    assert run_bpf(code, audit, calls["keyctl"]) == eperm
    assert run_bpf(code, audit, calls["mount"]) == eperm
    assert run_bpf(code, audit, calls["clone3"]) == enosys
    assert run_bpf(code, audit, calls["clone"], (0x11,)) == allow  # fork: SIGCHLD
    assert run_bpf(code, audit, calls["clone"], (0x3D0F00,)) == allow  # a pthread
    assert run_bpf(code, audit, calls["clone"], (0x10000011,)) == eperm  # CLONE_NEWUSER
    assert run_bpf(code, audit, calls["ioctl"], (0, 0x5413)) == allow  # TIOCGWINSZ
    assert run_bpf(code, audit, calls["ioctl"], (0, 0xFFFF_FFFF_0000_5412)) == eperm
    for family in (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, 39, 41):
        assert run_bpf(code, audit, calls["socket"], (family, SOCK_STREAM)) == allow, family
    assert run_bpf(code, audit, calls["socketpair"], (AF_UNIX, SOCK_STREAM)) == allow
    for family in (AF_VSOCK, AF_ALG, 0xFFFF_FFFF_0000_0000 | AF_VSOCK):
        assert run_bpf(code, audit, calls["socket"], (family, SOCK_STREAM)) == eperm, family
        assert run_bpf(code, audit, calls["socketpair"], (family, SOCK_STREAM)) == eperm, family
    assert run_bpf(code, audit, calls["getpid"] | 0x40000000) == (
        eperm if machine == "x86_64" else allow
    )
    assert run_bpf(code, 0x40000003, 20) == kill  # i386
