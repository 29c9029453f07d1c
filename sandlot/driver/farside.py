"""The far side of a stream backend: starts the driver where a command's stdin and stdout lead.

A backend over a remote process (``sandlot.backends.kit.remote``: ``ssh HOST
...``, ``docker exec -i ...``, a Modal container) runs a small bootstrap with
``python3 -I -c``. The bootstrap reads this package from stdin as a
length-prefixed zip, unpacks it into a fresh private temporary directory
(``sandlot-stream-*``, mode 0700) and calls :func:`main`, which speaks on the same stdin and stdout:

1. it says ``hello`` (one frame): whether a working bubblewrap is here, whether
   it runs as root, its Python, and the workdir it would use without bubblewrap;
2. it reads ``start`` (one frame): whether to use bubblewrap, the network
   setting, the environment (secrets included: they come over stdin, never on
   a command line), and whether to drop to the unprivileged user;
3. it runs the driver (``serve_stdio``) on its own stdin and stdout, under
   bubblewrap when asked, waits for it, removes the temporary directory and
   exits with the driver's status.

Standard library only, as the rest of the driver. A directory that a far side
killed outright left behind is removed by the next start of this user's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from . import protocol
from .places import DRIVER_INSIDE, GC_OFF, SANDBOX_UID, SYSTEM_DIRS, WORKDIR_INSIDE

PREFIX = "sandlot-stream-"
OWNER_FILE = ".owner"


def system_binds() -> list[str]:
    """bubblewrap arguments showing the system's directories read-only, links kept as links."""
    argv: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return argv


BOOT = (
    GC_OFF + "import sys; sys.path.insert(0, {root!r}); "
    "from sandlot_driver.server import serve_stdio; sys.path.pop(0); serve_stdio()"
)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def _sweep(tmp: str) -> None:
    """Remove this user's ``sandlot-stream-*`` directories whose owner process is gone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp):
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                with open(os.path.join(entry.path, OWNER_FILE)) as f:
                    pid, _, started = f.read().partition(" ")
            except OSError:
                continue
            if not pid.isdigit() or _start_time(int(pid)) != started.strip():
                _remove(entry.path)


def _remove(path: str) -> None:
    """Remove a tree, read-only directories the sandbox made included."""

    def retry(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            func(target)

    shutil.rmtree(path, onerror=retry)


def probe_bwrap() -> tuple[str | None, str]:
    """A bubblewrap that works here (its path), or None and why not."""
    path = shutil.which("bwrap")
    if path is None:
        return None, "bubblewrap (bwrap) is not installed on the far side"
    argv = [path, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid"]
    if os.getuid() != 0:
        argv.append("--unshare-user")
    try:
        done = subprocess.run([*argv, "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bubblewrap ({path}) does not run on the far side: {exc}"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip()[:300]
        return None, f"bubblewrap ({path}) does not work on the far side: {why}"
    return path, ""


def _parents(path: str) -> list[str]:
    chain: list[str] = []  # the directories above ``path``, nearest first, "/" left out
    parent = os.path.dirname(os.path.normpath(path))
    while parent not in ("/", ""):
        chain.append(parent)
        parent = os.path.dirname(parent)
    args: list[str] = []
    for directory in reversed(chain):
        args += ["--perms", "0755", "--dir", directory]
    return args


def bwrap_argv(bwrap: str, root: str, network: bool, drop: bool) -> list[str]:
    """bubblewrap's command line for the driver: the local backend's walls, on this machine.

    Read-only system directories and interpreter, a private ``/tmp``, the driver
    read-only at ``/.sandlot``, the workdir at ``/workspace``, its own PID, IPC
    and UTS namespaces, no network unless asked, and death with its parent.
    """
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid"]
    argv += ["--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandlot"]
    if os.getuid() != 0:
        argv.append("--unshare-user")
    if not network:
        argv.append("--unshare-net")
    argv += system_binds()
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for tmp in ("/dev/shm", "/tmp", "/var/tmp"):
        argv += ["--perms", "1777", "--tmpfs", tmp]
    argv += ["--perms", "0755", "--dir", DRIVER_INSIDE]
    argv += ["--ro-bind", os.path.join(root, "sandlot_driver"), f"{DRIVER_INSIDE}/sandlot_driver"]
    argv += ["--bind", os.path.join(root, "work"), WORKDIR_INSIDE, "--chdir", WORKDIR_INSIDE]
    for prefix in sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}):
        if not prefix.startswith(SYSTEM_DIRS):  # a venv or an interpreter outside /usr
            argv += [*_parents(prefix), "--ro-bind", prefix, prefix]
    if drop:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return argv


def _environment(settings: dict[str, Any], home: str) -> dict[str, str]:
    python_dir = os.path.dirname(sys.executable)
    env = {
        "PATH": f"{python_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "SANDLOT_SANDBOX": "1",
    }
    env.update({str(k): str(v) for k, v in dict(settings.get("env") or {}).items()})
    for name in settings.get("pass") or []:  # secrets this machine's environment holds
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def main(root: str) -> None:
    """Say hello, take the start settings, run the driver, clean up, exit with its status."""
    with open(os.path.join(root, OWNER_FILE), "w") as f:
        f.write(f"{os.getpid()} {_start_time(os.getpid())}")
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: Any) -> None:
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        _remove(root)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        _sweep(os.path.dirname(root))
        chan = protocol.PipeStream(0, 1)
        bwrap, problem = probe_bwrap()
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        hello = {
            "t": "hello",
            "v": 1,
            "bwrap": bwrap is not None,
            "problem": problem,
            "root": os.getuid() == 0,
            "python": sys.version.split()[0],
            "workdir": work,
        }
        chan.sendall(protocol.encode(hello))
        frame = protocol.read_frame(chan)
        if frame is None or frame[0].get("t") != "start":
            return  # the host went away, or changed its mind
        settings = frame[0]
        drop = bool(settings.get("drop"))
        use_bwrap = bool(settings.get("bwrap")) and bwrap is not None
        if drop:
            os.chown(work, SANDBOX_UID, SANDBOX_UID)
            if not use_bwrap:
                os.chmod(root, 0o711)  # the dropped driver reaches its workdir, lists nothing
        if use_bwrap:
            assert bwrap is not None
            argv = bwrap_argv(bwrap, root, bool(settings.get("network")), drop)
            env = _environment(settings, "/tmp")
            boot = BOOT.format(root=DRIVER_INSIDE)
        else:
            argv = []
            env = _environment(settings, work)
            boot = BOOT.format(root=root)
        argv += [sys.executable, "-I", "-S", "-c", boot]  # site after the drop (server.py)
        child = subprocess.Popen(argv, env=env, cwd=work, start_new_session=True)
        code = child.wait()
    finally:
        _remove(root)
    sys.exit(code if code >= 0 else 128 - code)
