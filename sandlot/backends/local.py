"""The local backend: drivers as child processes, walled in by bubblewrap and a cgroup.

Under bubblewrap a sandbox sees the host's system directories read-only (``/usr``,
``/etc``, the interpreter), its own writable workdir at ``/workspace``, declared
mounts, a private ``/tmp``, no network (not even the host's loopback) and only
its own processes. A cgroup per sandbox bounds memory, processes and CPU. When
the host runs as root, the code runs as ``nobody``.

Without bubblewrap the driver still runs in its own session, cgroup and user id
where possible, and sandlot says at the first start which protections are
missing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..config import SandboxConfig
from ..errors import ConfigError, DeathCause
from . import cgroups, envs, gpus

DRIVER_SRC = Path(__file__).resolve().parent.parent / "driver"
DRIVER_ROOT_INSIDE = "/.sandlot"
WORKDIR_INSIDE = "/workspace"
SANDBOX_UID = 65534  # nobody
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_ids = itertools.count(1)


class IsolationWarning(UserWarning):
    """Sandboxes on this machine run with fewer protections than asked for."""


@dataclass(frozen=True)
class Isolation:
    """What the local backend can enforce on this machine."""

    bwrap: str | None  # path of a working bubblewrap, or None
    bwrap_problem: str  # why bubblewrap is not used, when it is not
    cgroup: cgroups.Layout | None
    root: bool

    def missing(self) -> list[str]:
        """Protections a sandbox started now would lack, in words."""
        gaps = []
        if self.bwrap is None:
            gaps += [
                "filesystem isolation (the code can read every file this user can)",
                "network isolation (the code can open connections)",
                "PID isolation (the code can see and signal the host's processes)",
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
        bw = f"bubblewrap ({self.bwrap})" if self.bwrap else f"none: {self.bwrap_problem}"
        cg = (
            f"cgroup v{self.cgroup.version}: {', '.join(sorted(self.cgroup.dirs))}"
            if self.cgroup
            else "none: no writable cgroup; rlimits only"
        )
        user = f"uid {SANDBOX_UID} (nobody)" if self.root else f"uid {os.getuid()} (yours)"
        return {"filesystem, network, PIDs": bw, "limits": cg, "user": user}


@cache
def probe() -> Isolation:
    """Find out once per process what isolation works here."""
    _sweep_state(_state_root())
    layout = cgroups.discover()
    if layout is not None:
        cgroups.sweep(layout)
    path = shutil.which("bwrap")
    problem = ""
    if path is None:
        problem = "bubblewrap is not installed (apt-get install bubblewrap)"
    else:
        args = [path, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "true"]
        if os.getuid() != 0:
            args.insert(1, "--unshare-user")
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            done = None
            problem = f"bubblewrap failed to run: {exc}"
        if done is not None and done.returncode != 0:
            problem = f"bubblewrap cannot create namespaces here: {done.stderr.strip()}"
        if problem:
            path = None
    return Isolation(path, problem, layout, os.getuid() == 0)


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
    root = Path(tempfile.gettempdir()) / f"sandlot-{os.getuid()}"
    root.mkdir(mode=0o711, exist_ok=True)
    return root


def _sweep_state(root: Path) -> None:
    """Remove directories left by host processes that were killed."""
    for path in root.iterdir():
        owner = path.name.split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(path, ignore_errors=True)


@cache
def _driver_root_outside() -> str:
    """A directory holding ``sandlot_driver`` (a link to the driver), for unwrapped runs."""
    link_dir = _state_root() / f"{os.getpid()}-driver"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "sandlot_driver"
    if not link.exists():
        link.symlink_to(DRIVER_SRC)
    return str(link_dir)


def _boot(driver_root: str, fd: int) -> str:
    return (
        f"import sys; sys.path.insert(0, {driver_root!r}); "
        f"from sandlot_driver.server import serve; sys.path.pop(0); serve({fd})"
    )


def _prefix_of(python: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.realpath(python)))


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


@dataclass
class LocalLaunch:
    """A driver running as a local child process."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    workdir: str
    limits: dict[str, int]
    drop_to: tuple[int, int] | None
    proc: subprocess.Popen[bytes]
    cgroup: cgroups.SandboxCgroup | None
    host_dir: Path
    own_workdir: bool
    log: collections.deque[bytes] = field(default_factory=lambda: collections.deque(maxlen=64))
    exited: asyncio.Future[int] | None = None
    _pidfd: int = -1

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        self._pidfd = os.pidfd_open(self.proc.pid)
        loop.add_reader(self._pidfd, self._reap)
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
        asyncio.get_running_loop().remove_reader(self._pidfd)
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(code)

    async def wait(self) -> int:
        """Wait for the driver's process to end; return its exit status."""
        assert self.exited is not None
        return await asyncio.shield(self.exited)

    def kill(self) -> None:
        """End the driver and every process of the sandbox, at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all(wait=0)  # one pass now; cleanup() waits for the stragglers

    def death_cause(self) -> tuple[DeathCause, str]:
        """Why the sandbox ended, when nobody on the host ended it."""
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
        if self.exited is not None and not self.exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 5)
            if not self.exited.done():  # unkillable (D state): reap it off the loop
                await asyncio.to_thread(self.proc.wait)
                self._reap()
        loop = asyncio.get_running_loop()
        if self.proc.stderr is not None:
            loop.remove_reader(self.proc.stderr.fileno())
            self.proc.stderr.close()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(shutil.rmtree, self.host_dir, True)


class LocalBackend:
    """Runs each sandbox as a child process of this host process."""

    async def launch(self, config: SandboxConfig) -> LocalLaunch:
        """Start a driver for ``config`` and return it connected."""
        iso = probe()
        if config.isolation == "bubblewrap" and iso.bwrap is None:
            raise ConfigError(f"isolation='bubblewrap' was asked for, but {iso.bwrap_problem}")
        use_bwrap = iso.bwrap is not None and config.isolation != "none"
        if config.isolation == "auto":
            _warn_missing(iso)
        for m in config.mounts:
            if not os.path.exists(m.source):
                raise ConfigError(f"mounts: host path {m.source!r} does not exist")
        if not use_bwrap and (config.mounts or not config.network):
            warnings.warn(
                "sandlot: without bubblewrap, mounts are not applied and the network is reachable",
                IsolationWarning,
                stacklevel=3,
            )
        base = config.python or envs.base_python()
        venv = envs.ready_env(base, config.python_packages)
        if venv is None:
            venv = await asyncio.to_thread(envs.ensure_env, base, config.python_packages)
        python = str(venv / "bin" / "python")
        env_vars = self._environment(config, python, venv)

        state = _state_root()
        host_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{next(_ids)}-", dir=state))
        own_workdir = config.workdir is None
        workdir_host = host_dir / "work" if own_workdir else Path(str(config.workdir))
        workdir_host.mkdir(parents=True, exist_ok=True)

        drop_to: tuple[int, int] | None = None
        if iso.root and (use_bwrap or _reachable_by_others(python)):
            drop_to = (SANDBOX_UID, SANDBOX_UID)
            for path in (workdir_host, *workdir_host.rglob("*")):
                os.lchown(path, SANDBOX_UID, SANDBOX_UID)

        cgroup = None
        if iso.cgroup is not None:
            cgroup = cgroups.SandboxCgroup.create(
                iso.cgroup,
                f"{cgroups.PREFIX}{host_dir.name}",
                config.memory_mb,
                config.max_processes,
                config.cpus,
            )
        limits = {"nofile": config.max_open_files}
        if config.max_file_bytes is not None:
            limits["fsize"] = config.max_file_bytes
        if config.max_cpu_seconds is not None:
            limits["cpu"] = config.max_cpu_seconds
        if config.memory_mb is not None and (cgroup is None or "memory" not in cgroup.layout.dirs):
            limits["as"] = config.memory_mb << 20  # the per-process fallback

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if use_bwrap:
            assert iso.bwrap is not None
            workdir = WORKDIR_INSIDE
            argv = self._bwrap_argv(
                iso, config, python, venv, workdir_host, env_vars, drop_to is not None
            )
            argv += [python, "-I", "-c", _boot(DRIVER_ROOT_INSIDE, child.fileno())]
            env: dict[str, str] | None = None
        else:
            workdir = str(workdir_host)
            argv = [python, "-I", "-c", _boot(_driver_root_outside(), child.fileno())]
            env = env_vars

        join = cgroup.join_fds() if cgroup is not None else []
        fallback_drop = drop_to if not use_bwrap else None

        def enter_sandbox() -> None:  # runs in the child between fork and exec
            for fd in join:
                os.write(fd, b"0")
            if fallback_drop is not None:
                os.setgroups([])
                os.setgid(fallback_drop[1])
                os.setuid(fallback_drop[0])

        # Forking a large host takes milliseconds: keep it off the event loop.
        spawn = asyncio.ensure_future(
            asyncio.to_thread(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(child.fileno(),),
                env=env,
                cwd=str(workdir_host),
                start_new_session=True,
                preexec_fn=enter_sandbox,
            )
        )
        try:
            proc = await asyncio.shield(spawn)
        except BaseException:
            # A cancel does not stop the fork on its thread: let it finish, then undo it.
            with contextlib.suppress(BaseException):
                orphan = await spawn
                os.killpg(orphan.pid, signal.SIGKILL)
                await asyncio.to_thread(orphan.wait)
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(host_dir, ignore_errors=True)
            parent.close()
            raise
        finally:
            child.close()
            for fd in join:
                os.close(fd)
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=1 << 20)
        launch = LocalLaunch(
            reader,
            writer,
            workdir,
            limits,
            drop_to if use_bwrap else None,
            proc,
            cgroup,
            host_dir,
            own_workdir,
        )
        launch._watch()
        return launch

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
        missing = [name for name in config.secrets if name not in os.environ]
        if missing:
            raise ConfigError(
                f"secrets: {', '.join(missing)} not set in the host environment; "
                "set them or remove them from SandboxConfig.secrets"
            )
        env.update({name: os.environ[name] for name in config.secrets})
        return env

    @staticmethod
    def _bwrap_argv(
        iso: Isolation,
        config: SandboxConfig,
        python: str,
        venv: Path,
        workdir_host: Path,
        env: dict[str, str],
        drop: bool,
    ) -> list[str]:
        assert iso.bwrap is not None
        argv = [
            iso.bwrap,
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
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            "--perms",
            "0755",
            "--dir",
            DRIVER_ROOT_INSIDE,
            "--ro-bind",
            str(DRIVER_SRC),
            f"{DRIVER_ROOT_INSIDE}/sandlot_driver",
            "--bind",
            str(workdir_host),
            WORKDIR_INSIDE,
            "--chdir",
            WORKDIR_INSIDE,
        ]
        for path in (str(venv), _prefix_of(python)):  # the environment and its base interpreter
            if not path.startswith(SYSTEM_DIRS):
                argv += [*_parents(path), "--ro-bind", path, path]
        for model in config.models:  # local model and adapter paths, read-only, where they are
            for local in (model.name, model.adapter):
                if local and os.path.isabs(local) and os.path.exists(local):
                    argv += [*_parents(local), "--ro-bind", local, local]
        for m in config.mounts:
            argv += _parents(m.target)
            argv += ["--bind" if m.writable else "--ro-bind", m.source, m.target]
        argv += gpus.bwrap_args(config.gpu)
        if drop:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        argv.append("--clearenv")
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return argv
