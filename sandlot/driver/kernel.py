"""A Jupyter kernel inside the sandbox, relayed over the driver's own channel.

The kernel (ipykernel) listens on IPC sockets in a private directory of the
sandbox's ``/tmp``; the relay, a thread of the driver, is its only client. Each
message the kernel sends goes to the host as JSON in ``chunk`` frames of the
``kernel`` request (split at the frame size, the last piece marked); each
``data`` frame the host sends is a message for the kernel's shell, control or
stdin socket, which the relay signs with a key that never leaves the sandbox.
No TCP port is opened, so notebook sessions work on every backend that carries
the channel.

Control words from the host (``{"relay": ...}``): ``interrupt`` (SIGINT to the
kernel's process group, from inside the PID namespace), ``restart`` (a fresh
kernel, state gone) and ``shutdown``.

The kernel's own processes reach host functions (tools, served libraries)
through a Unix socket the driver listens on (:class:`CallGate`); its path is in
``$SANDLOT_CALLS`` inside the kernel.

pyzmq and jupyter_client come from the sandbox's environment (ipykernel brings
both); they are imported with the workdir off ``sys.path``, so an uploaded
``zmq.py`` cannot take their place.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time

from . import protocol
from .protocol import TYPE_CHECKING

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any

    from .protocol import Send

    _Inbox = queue.Queue[tuple[dict[str, Any], bytes]]
else:
    _Inbox = queue.Queue

# How the kernel process starts: the workdir first on its path (workspace
# libraries import), the driver's package last (generated library modules call
# the host through it), and IPython without colours or history.
BOOT = (
    "import sys; sys.path[:0] = [{workdir!r}]; sys.path.append({driver_root!r}); "
    "from ipykernel.kernelapp import launch_new_instance; launch_new_instance()"
)
KERNEL_ARGS = (
    "--InteractiveShell.colors=nocolor",
    "--HistoryManager.enabled=False",
    "--IPKernelApp.quiet=False",
)
CHANNELS = ("shell", "control", "stdin")
START_TIMEOUT = 60.0


class KernelStartError(RuntimeError):
    """The kernel did not start; the message holds what it printed."""


class WakingQueue(_Inbox):
    """An inbox whose ``put`` also wakes a poller through a pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"x")

    def drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self.read_fd, 4096)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _import_jupyter(workdir: str) -> tuple[Any, Any]:
    """``zmq`` and ``jupyter_client.session``, imported with the workdir off ``sys.path``."""
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in ("", workdir)]
    try:
        import zmq
        from jupyter_client import session
    except ImportError as exc:
        raise KernelStartError(
            f"the sandbox's environment has no Jupyter kernel ({exc}); add 'ipykernel' to "
            "SandboxConfig.python_packages (notebook sessions do this themselves)"
        ) from None
    finally:
        sys.path[:] = saved
    return zmq, session


class Kernel:
    """One ipykernel process and the relay's sockets to it."""

    def __init__(self, zmq: Any, session_mod: Any, workdir: str, env: dict[str, str]) -> None:
        # Lazily: only an ipykernel needs them (a cold driver's start-up time).
        import secrets
        import subprocess
        import tempfile

        self.zmq = zmq
        self.dir = tempfile.mkdtemp(prefix="kernel-", dir="/tmp")
        os.chmod(self.dir, 0o700)

        key = secrets.token_hex(32)
        self.session = session_mod.Session(key=key.encode(), signature_scheme="hmac-sha256")
        ports = dict(zip(("shell", "iopub", "stdin", "control", "hb"), range(1, 6), strict=True))
        prefix = os.path.join(self.dir, "k")
        info = {
            **{f"{name}_port": port for name, port in ports.items()},
            "ip": prefix,
            "transport": "ipc",
            "key": key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
        }
        connection = os.path.join(self.dir, "connection.json")
        with open(connection, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        self.log_path = os.path.join(self.dir, "kernel.log")
        kernel_env = {
            **env,
            "IPYTHONDIR": os.path.join(self.dir, "ipython"),
            "JUPYTER_RUNTIME_DIR": os.path.join(self.dir, "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        kernel_env.pop("JPY_PARENT_PID", None)
        driver_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        boot = BOOT.format(workdir=workdir, driver_root=driver_root)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", boot, "-f", connection, *KERNEL_ARGS],
                cwd=workdir,
                env=kernel_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.context = zmq.Context()
        self.sockets: dict[str, Any] = {}
        for name in CHANNELS:
            sock = self.context.socket(zmq.DEALER)
            sock.linger = 0
            sock.setsockopt(zmq.IDENTITY, self.session.bsession)
            sock.connect(f"ipc://{prefix}-{ports[name]}")
            self.sockets[name] = sock
        iopub = self.context.socket(zmq.SUB)
        iopub.linger = 0
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        iopub.connect(f"ipc://{prefix}-{ports['iopub']}")
        self.sockets["iopub"] = iopub

    def log_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - limit))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def close(self) -> None:
        """Kill the kernel's process group and remove its directory."""
        import shutil
        import subprocess

        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.context.term()
        shutil.rmtree(self.dir, ignore_errors=True)


class KernelRelay:
    """Runs a kernel for one ``kernel`` request and relays until the host ends it."""

    def __init__(
        self, rid: int, workdir: str, env: dict[str, str], send: Send, inbox: WakingQueue
    ) -> None:
        self.rid = rid
        self.workdir = workdir
        self.env = env
        self.send_frame = send
        self.inbox = inbox
        self.zmq, self.session_mod = _import_jupyter(workdir)
        self.kernel: Kernel | None = None

    # -- to the host -------------------------------------------------------------

    def emit(self, item: dict[str, Any]) -> None:
        """Send one JSON item to the host, split into frames of at most one chunk."""
        data = json.dumps(item, default=str, ensure_ascii=False).encode("utf-8", "replace")
        step = protocol.CHUNK
        for start in range(0, max(len(data), 1), step):
            piece = data[start : start + step]
            last = start + step >= len(data)
            self.send_frame({"t": "chunk", "id": self.rid, "stream": "kernel", "last": last}, piece)

    # -- the loop ------------------------------------------------------------------

    def start_kernel(self) -> None:
        self.kernel = Kernel(self.zmq, self.session_mod, self.workdir, self.env)
        self.emit({"relay": "started", "pid": self.kernel.proc.pid})

    def run(self) -> dict[str, Any]:
        """Relay until shutdown, abort or the kernel's death; return the reply's fields."""
        zmq = self.zmq
        self.start_kernel()
        try:
            while True:
                kernel = self.kernel
                assert kernel is not None
                poller = zmq.Poller()
                for sock in kernel.sockets.values():
                    poller.register(sock, zmq.POLLIN)
                poller.register(self.inbox.read_fd, zmq.POLLIN)
                outcome = self._pump(kernel, poller)
                if outcome is None:  # a restart
                    kernel.close()
                    self.start_kernel()
                    continue
                return outcome
        finally:
            if self.kernel is not None:
                self.kernel.close()
            self.inbox.close()

    def _pump(self, kernel: Kernel, poller: Any) -> dict[str, Any] | None:
        """Relay until the kernel must restart (None) or the relay ends (the reply's fields)."""
        zmq = self.zmq
        by_socket = {id(sock): name for name, sock in kernel.sockets.items()}
        while True:
            events = dict(poller.poll(500))
            for sock_or_fd in events:
                if sock_or_fd == self.inbox.read_fd:
                    continue
                name = by_socket[id(sock_or_fd)]
                while True:
                    try:
                        _, msg = kernel.session.recv(sock_or_fd, mode=zmq.NOBLOCK)
                    except (ValueError, KeyError, TypeError) as exc:  # a bad message
                        os.write(2, f"sandlot kernel relay: dropped a message: {exc}\n".encode())
                        continue
                    if msg is None:
                        break
                    msg.pop("buffers", None)
                    self.emit({"channel": name, "msg": msg})
            self.inbox.drain_wakeups()
            while True:
                try:
                    header, payload = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if header.get("abort"):
                    return {"ended": "cancelled"}
                outcome = self._from_host(kernel, payload)
                if isinstance(outcome, str):  # "restart"
                    return None
                if outcome is not None:
                    return outcome
            if kernel.proc.poll() is not None:
                time.sleep(0.05)  # let its last words reach the log
                self.emit(
                    {
                        "relay": "died",
                        "returncode": kernel.proc.returncode,
                        "log": kernel.log_tail(),
                    }
                )
                return {"ended": "died", "returncode": kernel.proc.returncode}

    def _from_host(self, kernel: Kernel, payload: bytes) -> dict[str, Any] | str | None:
        try:
            item = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(item, dict):
            return None
        word = item.get("relay")
        if word == "interrupt":
            kernel.signal(signal.SIGINT)
            return None
        if word == "restart":
            return "restart"
        if word == "shutdown":
            return {"ended": "shutdown"}
        channel, msg = item.get("channel"), item.get("msg")
        if channel in CHANNELS and isinstance(msg, dict):
            with contextlib.suppress(Exception):
                kernel.session.send(kernel.sockets[channel], msg)
        return None


class CallGate:
    """A Unix socket through which the kernel's processes call host functions.

    Each connection carries frames ``{"t": "call", "name": ..., "value": ...}`` + payload (a
    host call's arguments, encoded by the caller) and gets back the host's
    answer frame as it came.
    """

    def __init__(self, call_raw: Callable[[str, Any, bytes], tuple[dict[str, Any], bytes]]) -> None:
        import socket  # lazily: only a kernel's processes need the gate (start-up time)
        import tempfile

        self.call_raw = call_raw
        self.dir = tempfile.mkdtemp(prefix="calls-", dir="/tmp")
        os.chmod(self.dir, 0o700)
        self.path = os.path.join(self.dir, "calls.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        threading.Thread(target=self._accept, name="sandlot-calls", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while (frame := protocol.read_frame(conn)) is not None:
                    header, payload = frame
                    structure, data = protocol.take_value(header, payload)
                    answer, data = self.call_raw(str(header.get("name")), structure, data)
                    # A frame needs its kind; encode counts the parts again.
                    answer = {k: v for k, v in answer.items() if k != "parts"} | {"t": "ret"}
                    conn.sendall(protocol.encode(answer, data))
            except (OSError, protocol.ProtocolError):
                return

    def close(self) -> None:
        import shutil

        with contextlib.suppress(OSError):
            self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_local = threading.local()


def call_through_gate(
    path: str, name: str, structure: Any, data: bytes
) -> tuple[dict[str, Any], bytes]:
    """From a process that is not the driver: send a host call through the gate at ``path``."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        import socket  # lazily: only a kernel's processes call through the gate

        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        _local.conn = conn
    try:
        conn.sendall(protocol.encode({"t": "call", "name": name, "value": structure}, data))
        frame = protocol.read_frame(conn)
    except OSError:
        _local.conn = None
        raise
    if frame is None:
        _local.conn = None
        raise ConnectionError("the sandbox's driver closed the host-call socket")
    header, payload = frame
    return dict(header), payload
