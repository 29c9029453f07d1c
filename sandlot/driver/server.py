"""The driver's message loop: one reader thread, the REPL on the main thread.

What serving a cell needs is imported here, before any code of the sandbox's
runs. What only some requests need loads when the first of them comes, in a
cold-started driver (about a third of its imports' time): ``subprocess`` for a
command, ``shutil`` for a recursive remove, ``tarfile`` for a tar, ``typing`` and
``inspect`` for a served library, ``asyncio`` for top-level ``await``; a template
loads them all once it has forked its first sandbox, before the others. The
workdir goes on ``sys.path`` only after the standard library, so a
``subprocess.py`` in an uploaded repository cannot take the driver's place.

The REPL runs on the main thread so that a cancel can interrupt it with SIGINT
(which also breaks blocking calls such as ``time.sleep``). Every other request
(processes, files) runs on a thread of its own, so a process can stream while a
cell runs. Calls from sandboxed code to host functions may come from any thread;
each waits for its own answer. While the REPL's thread waits on one, a
``save_state`` runs there: the host function may snapshot (or fork) the sandbox
that called it, and gets the REPL as it was at the call.
"""

from __future__ import annotations

import functools
import gc
import importlib
import itertools
import linecache
import os
import queue
import resource
import signal
import sys
import threading
import time
import traceback
import types

from . import codec, fileops, kernel, protocol
from .protocol import TYPE_CHECKING, no_thread
from .repl import Repl, user_traceback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

SKIPPED = {"stdout": b"", "stderr": b"", "value": None, "error": None, "truncated": False}
DIAG_FD = 2  # where the driver's own complaints go: the host's log of this sandbox
SITE_DONE = False  # site.main() already ran in the template this driver was forked from
SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
CURRENT: Server | None = None  # the one server of this process, for call_host()


def call_host(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call host function ``name`` (generated library modules use this).

    In the driver's own process the call goes out on the channel; in another
    process of the sandbox (a notebook's kernel) it goes through the driver's
    host-call socket named by ``$SANDLOT_CALLS``.
    """
    if CURRENT is not None:
        return CURRENT.call(name, args, kwargs)
    gate = os.environ.get("SANDLOT_CALLS")
    if not gate:
        raise ToolError(f"{name}: not inside a sandlot sandbox's interpreter")
    structure, data = codec.encode([list(args), kwargs], where=f"{name}() argument")
    try:
        answer, payload = kernel.call_through_gate(gate, name, structure, data)
    except OSError as exc:
        raise ToolError(f"{name}: the sandbox's driver cannot be reached ({exc})") from None
    return _answer_value(name, answer, payload)


def _answer_value(name: str, answer: dict[str, Any], payload: bytes) -> Any:
    """The value of a host call's answer, or the ToolError it reports."""
    if answer.get("ok"):
        return codec.decode(*protocol.take_value(answer, payload))
    err = answer.get("error") or {}
    message = f"{name}: {err.get('name', 'Error')}: {err.get('value', '')}"
    if err.get("traceback"):
        message += f"\n\nTraceback where it was raised:\n{err['traceback']}"
    raise ToolError(message)


class ToolError(RuntimeError):
    """A host function raised, or could not be reached; the message says which.

    A ``RuntimeError``, as DSPy's interpreters raise for a failed tool, so code
    written for them (``except RuntimeError:``) catches it.
    """


class _Pending:
    """A host call's inbox: its answer, and (on the REPL's thread) requests to run meanwhile.

    An answer is a frame whose header is not a request's (``"t"`` is not ``"req"``).
    """

    def __init__(self) -> None:
        self.box: queue.Queue[tuple[dict[str, Any], bytes]] = queue.Queue()
        self.requests: dict[int, dict[str, Any]] = {}  # routed here and not yet answered


def _off_thread(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn`` on a thread of its own (here, if no thread can be had)."""
    try:
        threading.Thread(target=fn, args=args, daemon=True).start()
    except RuntimeError:  # the process limit is reached
        fn(*args)


def _replying(
    handler: Callable[[Server, int, dict[str, Any], bytes], dict[str, Any]],
) -> Callable[[Server, int, dict[str, Any], bytes], None]:
    """A request handler that returns its reply's fields, made one that sends the reply.

    What ``handler`` returns goes back as the reply to request ``rid``, what it
    raises as the failed reply; either way the request's inbox is dropped then.
    """

    @functools.wraps(handler)
    def run(self: Server, rid: int, header: dict[str, Any], payload: bytes) -> None:
        try:
            fields = handler(self, rid, header, payload)
        except Exception as exc:
            self.reply_error(rid, exc)
        else:
            self.reply(rid, fields)
        finally:
            self.inboxes.pop(rid, None)

    return run


Writer = fileops.ChunkWriter  # what a request of the REPL's streams its bytes to


class _Sender:
    """Sends the frames it is called with from a thread of its own, a few frames behind."""

    def __init__(self, send: protocol.Send) -> None:
        self.send = send
        self.frames: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue(4)
        self.thread: threading.Thread | None = None
        self.dropping = False

    def __call__(self, header: dict[str, Any], payload: bytes = b"") -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="sandlot-sender", daemon=True)
            self.thread.start()
        self.frames.put((header, payload))

    def _run(self) -> None:
        while (frame := self.frames.get()) is not None:
            if not self.dropping:
                self.send(*frame)

    def close(self, abort: bool = False) -> None:
        """Wait until every frame is out; or, with ``abort``, drop those not yet sent."""
        self.dropping = abort
        if self.thread is not None:
            self.frames.put(None)
            self.thread.join()


class Server:
    """Serves one host connection until it closes."""

    def __init__(
        self, sock: protocol.ByteStream, init: dict[str, Any], capture: bool = True
    ) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.workdir: str = init["workdir"]
        self.max_output_bytes: int = init["max_output_bytes"]
        self.env = dict(os.environ)
        self.repl = Repl(min(self.max_output_bytes, protocol.MAX_CELL_OUTPUT))
        if capture:
            self.repl.capture()
        self.repl.namespace["ToolError"] = ToolError
        self.repl_queue: queue.Queue[tuple[int, dict[str, Any]] | None] = queue.Queue()
        self.running_cell: int | None = None
        self.cell_lock = threading.Lock()
        self.cancelled_cells: set[int] = set()
        self.processes: dict[int, Any] = {}  # request id -> procs.Process
        self.inboxes: dict[int, queue.Queue[tuple[dict[str, Any], bytes]]] = {}
        self.calls: dict[int, _Pending] = {}
        self.repl_waiting: _Pending | None = None  # the host call the REPL's thread waits on
        self.nested: dict[int, threading.Event] = {}  # requests run in a call's wait: stops
        self.waiting_lock = threading.Lock()
        self.call_ids = itertools.count(1)
        self.closed = False
        self.last_heard = time.monotonic()  # when the host last sent a frame (a ping counts)
        self.libraries: dict[str, dict[str, tuple[Callable[..., Any], threading.Lock | None]]] = {}
        self.exit_with_host = bool(init.get("exit_with_host"))
        self.model_globals: dict[str, dict[str, Any]] = {}
        self.gate: kernel.CallGate | None = None
        self.tools: set[str] = set()  # the names of the host's tools in the REPL
        for tool in init.get("tools", []):
            self.define_tool(tool["name"], tool.get("doc") or "")

    # -- sending -------------------------------------------------------------

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """Send one frame; frames from different threads never interleave."""
        frame = protocol.encode(header, payload)
        with self.send_lock:
            self.sock.sendall(frame)

    def reply(self, rid: int, fields: dict[str, Any]) -> None:
        """Reply that request ``rid`` succeeded, with ``fields``."""
        self.send({"t": "res", "id": rid, "ok": True, **fields})

    def reply_cell(self, rid: int, result: dict[str, Any]) -> None:
        """Reply to ``run_code``: output and value as payload bytes, their lengths in the header."""
        out, err, value = result["stdout"], result["stderr"], result["value"]
        val = value or b""
        fields = {
            "out": len(out),
            "err": len(err),
            "val": None if value is None else len(val),
            "error": result["error"],
            "truncated": result["truncated"],
        }
        self.send({"t": "res", "id": rid, "ok": True, **fields}, out + err + val)

    def reply_error(self, rid: int, exc: BaseException) -> None:
        """Reply that request ``rid`` failed, with the traceback of the user's code in it."""
        error = protocol.error_info(exc, user_traceback(exc))
        self.send({"t": "res", "id": rid, "ok": False, "error": error})

    # -- host calls ----------------------------------------------------------

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call host function ``name`` and wait for its answer."""
        if self.closed:
            raise ToolError(f"{name}: the host connection is closed")
        structure, data = codec.encode([list(args), kwargs], where=f"{name}() argument")
        return _answer_value(name, *self.call_raw(name, structure, data))

    def call_raw(self, name: str, structure: Any, data: bytes) -> tuple[dict[str, Any], bytes]:
        """Send a host call whose arguments are encoded; return the answer's header and payload.

        On the REPL's thread, a ``save_state`` that comes while it waits runs here,
        the cell paused at the call (the host function may be snapshotting its caller).
        """
        if self.closed:
            return {"ok": False, "error": {"name": "ConnectionError", "value": "host gone"}}, b""
        cid = next(self.call_ids)
        pending = _Pending()
        self.calls[cid] = pending
        on_repl = threading.current_thread() is threading.main_thread()
        outer = None
        if on_repl:
            with self.waiting_lock:
                outer, self.repl_waiting = self.repl_waiting, pending
        answered = False
        try:
            head = {"t": "call", "id": cid, "name": name, "value": structure}
            if on_repl:
                head["cell"] = True  # the cell waits on it: the host refuses to queue a cell
            frame = protocol.encode(head, data)
            with self.send_lock:
                self.sock.sendall(frame)
            while True:
                header, payload = pending.box.get()
                if header.get("t") != "req":
                    break
                self.run_nested(pending, header["id"])
            answered = True
        finally:
            self.calls.pop(cid, None)
            if on_repl:
                with self.waiting_lock:
                    self.repl_waiting = outer
                self.hand_on(pending, answered)
        return header, payload

    def hand_on(self, pending: _Pending, answered: bool) -> None:
        """Answer every request still routed to a finished call, none left waiting.

        Answered, the cell is still paused at the call, so they run here; any
        not run (the call or one of them ended in the cell's interrupt) fail.
        """
        try:
            for rid in list(pending.requests) if answered else ():
                self.run_nested(pending, rid)
        finally:
            for rid in list(pending.requests):
                pending.requests.pop(rid, None)
                interrupted = InterruptedError("the cell it was taken in was interrupted")
                _off_thread(self.reply_error, rid, interrupted)

    def run_nested(self, pending: _Pending, rid: int) -> None:
        """Run a REPL request while the cell waits on a host call, and answer it.

        A cancel of this request stops its next write (an interrupt would strike
        the cell); a cancel of the cell interrupts it, and :meth:`hand_on` answers
        it as failed. The answer goes from a thread of its own: the cell's
        interrupt may still strike this one, and must not cut a frame.
        """
        header = pending.requests.get(rid)
        if header is None:  # answered already
            return
        stop = threading.Event()
        with self.cell_lock:
            if rid in self.cancelled_cells:  # the host gave up on it
                self.cancelled_cells.discard(rid)
                pending.requests.pop(rid, None)
                return
            self.nested[rid] = stop
        try:
            answer = self.repl_op(rid, header, stop)
        finally:
            with self.cell_lock:
                self.nested.pop(rid, None)
        pending.requests.pop(rid, None)
        _off_thread(answer)

    def define_tool(self, name: str, doc: str) -> None:
        """Put a stub named ``name`` in the REPL that calls the host function."""

        def stub(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, args, kwargs)

        stub.__name__ = stub.__qualname__ = name
        stub.__doc__ = doc
        self.repl.namespace[name] = stub
        self.tools.add(name)

    # -- requests ------------------------------------------------------------

    def handle_request(self, header: dict[str, Any], payload: bytes) -> None:
        rid = header["id"]
        op = header.get("op")
        if op in protocol.REPL_OPS:  # on the main thread, between cells: a cancel interrupts
            if op == "load_state":
                self.inboxes[rid] = queue.Queue()
            with self.waiting_lock:
                waiting = self.repl_waiting if op in protocol.IN_CALL_OPS else None
                if waiting is not None:  # the cell waits on the host: take it there
                    waiting.requests[rid] = header
                    waiting.box.put((header, b""))
                    return
            self.repl_queue.put((rid, header))
            return
        if op == "define_tool":
            self.define_tool(header["name"], header.get("doc") or "")
            self.reply(rid, {})
            return
        if op in ("write", "put_tar") or header.get("argv_frames") or header.get("stdin_frames"):
            self.inboxes[rid] = queue.Queue()
        elif op == "kernel":
            self.inboxes[rid] = kernel.WakingQueue()
        handlers: dict[str, Callable[..., None]] = {
            "exec": self.run_process,
            "invoke": self.invoke,
            "kernel": self.run_kernel,
        }
        target = handlers.get(str(op), self.run_file_op)
        try:
            threading.Thread(target=target, args=(rid, header, payload), daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: the process limit is reached
            self.inboxes.pop(rid, None)
            self.reply_error(rid, no_thread(repr(op), exc))

    def run_process(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        env = {**self.env, **header.get("env", {})}
        cwd = fileops.resolve(self.workdir, header.get("cwd") or ".")
        inbox = self.inboxes.get(rid)
        argv = header["argv"]
        if header.get("argv_frames") and inbox is not None:  # a long command line, NUL-joined
            try:
                joined = b"".join(fileops.incoming(inbox))
            except ConnectionAbortedError as exc:
                self.reply_error(rid, exc)
                return
            argv = [a.decode("utf-8", "surrogateescape") for a in joined.split(b"\0")]
        stdin = fileops.incoming(inbox) if header.get("stdin_frames") and inbox else None
        try:
            from .procs import Process  # lazily, with subprocess: a cold driver's start-up time
        except Exception as exc:  # out of descriptors or memory
            self.reply_error(rid, exc)
            return
        try:
            proc = Process(argv, cwd, env, stdin)
        except OSError as exc:
            self.reply(rid, {"returncode": 127, "spawn_error": f"{type(exc).__name__}: {exc}"})
            return
        self.processes[rid] = proc
        try:
            fields = proc.pump(
                rid, header.get("limit", self.max_output_bytes), self.send, header.get("timeout")
            )
        except Exception as exc:
            proc.kill("driver error")
            self.reply_error(rid, exc)
            return
        finally:
            self.processes.pop(rid, None)
        self.reply(rid, fields)

    @_replying
    def run_kernel(self, rid: int, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Run a Jupyter kernel and relay its messages until the host ends the request."""
        inbox = self.inboxes[rid]
        assert isinstance(inbox, kernel.WakingQueue)
        if self.gate is None:
            self.gate = kernel.CallGate(self.call_raw)
        env = {**self.env, **header.get("env", {}), "SANDLOT_CALLS": self.gate.path}
        return kernel.KernelRelay(rid, self.workdir, env, self.send, inbox).run()

    @_replying
    def run_file_op(self, rid: int, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        op = header.get("op")
        path = fileops.resolve(self.workdir, header.get("path", "."))
        if op == "write":
            return fileops.write_file(path, header.get("mode"), fileops.incoming(self.inboxes[rid]))
        if op == "put_tar":
            return fileops.put_tar(path, fileops.payload(self.inboxes[rid], header))
        if op == "read":
            return fileops.read_file(rid, path, self.send)
        if op == "get_tar":
            return fileops.get_tar(rid, path, self.send, header.get("root"))
        if op == "list":
            return fileops.list_dir(path)
        if op == "exists":
            return {"exists": os.path.lexists(path), "is_dir": os.path.isdir(path)}
        if op == "remove":
            return fileops.remove(path, bool(header.get("recursive")))
        if op == "mkdir":
            os.makedirs(path, exist_ok=True)
            return {}
        raise ValueError(f"unknown operation {op!r}")

    def save_state(
        self, rid: int, header: dict[str, Any], out: fileops.ChunkWriter
    ) -> dict[str, Any]:
        """Write the REPL's variables to ``out`` (see :mod:`.snapshot`); return what went."""
        from . import snapshot  # lazily: not needed before the first snapshot (start-up time)

        return snapshot.capture(self.repl.namespace, out, self.tools)

    def load_state(
        self, rid: int, header: dict[str, Any], out: fileops.ChunkWriter
    ) -> dict[str, Any]:
        """Load the variables sent as chunks into the REPL; return what came back."""
        from . import snapshot

        try:
            # One block from a file (a lone item is joined without a copy).
            blob = b"".join(fileops.payload(self.inboxes[rid], header, at_once=True))
        finally:
            self.inboxes.pop(rid, None)
        report = snapshot.restore(self.repl.namespace, blob)
        self.repl.count = max(self.repl.count, report["last_cell"])
        return report

    def serve(self, rid: int, header: dict[str, Any], out: Writer) -> dict[str, Any]:
        """Load the models, import an interface file once, and list its exposed functions."""
        from .exposed import describe, exposed_functions, load_model  # lazily: start-up time

        inject: dict[str, Any] = {}
        for cfg in header.get("models", []):
            if cfg["var_name"] not in self.model_globals:
                self.model_globals[cfg["var_name"]] = load_model(cfg)
            inject.update(self.model_globals[cfg["var_name"]])
        path = fileops.resolve(self.workdir, header["path"])
        name = header["name"]
        module = types.ModuleType(name)
        module.__file__ = path
        module.__dict__.update(inject)
        with open(path, encoding="utf-8") as fh:
            code = compile(fh.read(), path, "exec", dont_inherit=True)
        sys.modules[name] = module
        exec(code, module.__dict__)
        functions = exposed_functions(module)
        if not functions:
            raise LookupError(
                f"{header['path']} defines no @expose function; mark the "
                "functions to serve with 'from sandlot import expose'"
            )
        self.libraries[name] = {
            served: (fn, None if describe(fn)["concurrent"] else threading.Lock())
            for served, fn in functions.items()
        }
        specs = [describe(fn) for fn in functions.values()]
        return {"functions": specs, "models": sorted(inject)}

    def invoke(self, rid: int, header: dict[str, Any], payload: bytes) -> None:
        """Call a served function with decoded arguments; reply with its encoded result."""
        where = f"{header['library']}.{header['function']}"
        try:
            fn, lock = self.libraries[header["library"]][header["function"]]
        except KeyError:
            served = {lib: sorted(fns) for lib, fns in self.libraries.items()}
            self.reply_error(rid, LookupError(f"{where} is not served here; served: {served}"))
            return
        try:
            args, kwargs = codec.decode(*protocol.take_value(header, payload))
            args, kwargs = _fill_defaults(fn, args, kwargs)
            if lock is None:
                result = fn(*args, **kwargs)
            else:
                with lock:
                    result = fn(*args, **kwargs)
            structure, data = codec.encode(result, where=f"{where}() return value")
            self.send({"t": "res", "id": rid, "ok": True, "value": structure}, data)
        except Exception as exc:
            self.reply_error(rid, exc)

    def cancel(self, rid: int) -> None:
        """Interrupt cell ``rid`` or kill process ``rid``; a no-op if it is done."""
        with self.cell_lock:
            if self.running_cell == rid:
                os.kill(os.getpid(), signal.SIGINT)
                return
            if rid in self.nested:
                self.nested[rid].set()
                return
            self.cancelled_cells.add(rid)
        proc = self.processes.get(rid)
        if proc is not None:
            proc.kill("cancelled")
        inbox = self.inboxes.get(rid)
        if inbox is not None:
            inbox.put(({"abort": True}, b""))

    # -- loops ---------------------------------------------------------------

    def read_loop(self) -> None:
        """Route incoming frames until the host goes away."""
        try:
            while (frame := protocol.read_frame(self.sock)) is not None:
                self.last_heard = time.monotonic()
                header, payload = frame
                kind = header.get("t")
                if kind == "req":
                    self.handle_request(header, payload)
                elif kind == "data":
                    inbox = self.inboxes.get(header["id"])
                    if inbox is not None:
                        inbox.put((header, payload))
                elif kind == "ret":
                    pending = self.calls.get(header["id"])
                    if pending is not None:
                        pending.box.put((header, payload))
                elif kind == "cancel":
                    self.cancel(header["id"])
        except (OSError, protocol.ProtocolError) as exc:
            os.write(DIAG_FD, f"sandlot driver: connection lost: {exc}\n".encode())
        self.closed = True
        for pending in list(self.calls.values()):
            closed = {"name": "ConnectionError", "value": "the host connection is closed"}
            pending.box.put(({"ok": False, "error": closed}, b""))
        for proc in list(self.processes.values()):
            proc.kill("host gone")
        if self.exit_with_host:
            # Nobody is left to read a reply: a cell that runs on must not keep the driver
            # (and its far side's temporary directory) alive.
            os._exit(0)
        self.repl_queue.put(None)

    def watch_owner(self, timeout: float) -> None:
        """End the driver when the host has sent nothing, not even a ping, for ``timeout`` s.

        For a driver whose machine does not end it with its owner (a Modal container
        lives on after the client is gone): the host pings while it lives.
        """
        while not self.closed:
            time.sleep(min(1.0, timeout / 4))
            if time.monotonic() - self.last_heard > timeout:
                os.write(DIAG_FD, b"sandlot driver: no word from the host; ending\n")
                for proc in list(self.processes.values()):
                    proc.kill("host gone")
                os._exit(3)

    def repl_op(
        self, rid: int, header: dict[str, Any], stop: threading.Event | None = None
    ) -> Callable[[], None]:
        """Run a request of the REPL's (in a cell's turn, interruptible); return its answer.

        What it streams goes out from a thread of its own in whole frames, so the
        cancel's interrupt, which may strike this thread anywhere, never cuts one.
        Once ``stop`` is set, its next write raises instead.
        """
        if header["op"] == "run_code":
            result = self.repl.run(header["code"])
            return lambda: self.reply_cell(rid, result)
        sender = _Sender(self.send)
        out = fileops.ChunkWriter(rid, sender, stop)
        try:
            fields = getattr(self, header["op"])(rid, header, out)
            out.flush()
            sender.close()
        except KeyboardInterrupt:
            sender.close(abort=True)
            raise
        except BaseException as exc:  # an interface file or a pickle may raise anything
            sender.close(abort=True)
            failure = exc
            return lambda: self.reply_error(rid, failure)
        return lambda: self.reply(rid, fields)

    def repl_loop(self) -> None:
        """Run cells one after another on the main thread."""
        while True:
            try:
                item = self.repl_queue.get()
                if item is None:
                    return
                rid, header = item
                with self.cell_lock:
                    if rid in self.cancelled_cells:
                        self.cancelled_cells.discard(rid)
                        self.reply_cell(rid, SKIPPED)
                        continue
                    self.running_cell = rid
                try:
                    answer = self.repl_op(rid, header)
                finally:
                    with self.cell_lock:
                        self.running_cell = None
                answer()  # once the cancel can no longer interrupt it: no frame goes out cut
            except KeyboardInterrupt:
                continue  # a cancel that arrived just after its cell ended


def _fill_defaults(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Replace arguments a stub marked as not given with the function's own defaults."""
    given = [*args, *kwargs.values()]
    if all(v is not codec.MISSING for v in given):
        return args, kwargs
    import inspect  # lazily: not needed before the first served function (start-up time)

    params = list(inspect.signature(fn).parameters.values())
    args = [params[i].default if a is codec.MISSING else a for i, a in enumerate(args)]
    return args, {k: v for k, v in kwargs.items() if v is not codec.MISSING}


RLIMITS = {  # the init frame's names of the rlimits a driver sets
    "fsize": resource.RLIMIT_FSIZE,
    "cpu": resource.RLIMIT_CPU,
    "nofile": resource.RLIMIT_NOFILE,
    "as": resource.RLIMIT_AS,
}


def apply_limits(limits: dict[str, int]) -> None:
    """Set per-process rlimits (inherited by every process the code starts)."""
    for key, value in limits.items():
        resource.setrlimit(RLIMITS[key], (value, value))


# What a driver loads only when the first request that needs it comes (see the module's
# docstring): what a template loads for its forks, and what even its forks load late.
ON_DEMAND = ("ctypes", "shutil", "socket", "tempfile", ".exposed", ".procs")
RARELY = ("inspect", "secrets", "tarfile", ".snapshot")


LOADED = False  # loading() ran to its end here, or in the template this driver was forked from


def loading(rarely: bool = False) -> Iterator[None]:
    """Import :data:`ON_DEMAND` (in a template, for every fork), and :data:`RARELY` too (in
    a driver about to drop to a user who could not read the standard library): a module
    a step."""
    global LOADED
    for name in ON_DEMAND + RARELY if rarely else ON_DEMAND:
        importlib.import_module(name, __package__)
        yield
    LOADED = True


def load_on_demand(rarely: bool = False) -> None:
    """All of :func:`loading`'s steps, now."""
    for _ in loading(rarely):
        pass


def readable_by(directory: str, uid: int, gid: int) -> bool:
    """Whether user ``uid`` (group ``gid``) may search every directory down to ``directory``
    and read that one, by their mode bits."""
    parts = os.path.abspath(directory).split(os.sep)
    for depth in range(1, len(parts) + 1):
        try:
            st = os.stat(os.sep.join(parts[:depth]) or os.sep)
        except OSError:
            return False
        shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0  # owner, group, other
        bits = st.st_mode >> shift
        need = 0o5 if depth == len(parts) else 0o1  # read and search, or search
        if bits & need != need:
            return False
    return True


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL the driver when its parent dies (lost on uid change).

    Not where the parent is PID 1 of the driver's own PID namespace (bubblewrap's, or a
    template's first process): the kernel kills every process of the namespace when
    that one ends. There no ``ctypes`` is loaded for it (about 2.5 ms of a cold driver's
    start here; in a fork, the C library's lookups cost 110-170 us and 46 copied pages).
    """
    parent = os.getppid()
    if parent == 1:
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except AttributeError:  # a C library without it
        return
    if os.getppid() != parent:
        os._exit(1)


def rehearse() -> None:
    """In a driver-to-be forked from a template, before it is given a sandbox: go through
    what :func:`serve_on` will, with no effect, so its copy-on-write faults come now.

    After the fork, each page of the template's that a start writes (a reference
    count is a write) is copied on first touch, 2-3 us a page on a VM; a start took
    some 440 such faults between its request and its ``ready``. This reads a sample
    init frame over a socket pair of its own, sets and unsets a variable, sets the
    ids and limits to what they are and encodes a ``ready``: the same code on the
    same objects, off the start's path. Nothing of it is left: the pair is closed,
    the variable gone, no id or limit changed.
    """
    import socket  # held by the template this runs in a fork of

    here, there = socket.socketpair()
    with here, there:
        sample = {"t": "init", "environ": dict(os.environ), "workdir": "/", "limits": {}}
        here.sendall(protocol.encode({**sample, "max_output_bytes": 1, "tools": []}))
        protocol.read_frame(protocol.PipeStream(there.fileno(), there.fileno()))
    os.environ["SANDLOT_REHEARSAL"] = "1"
    del os.environ["SANDLOT_REHEARSAL"]
    os.setgroups(os.getgroups())
    os.setgid(os.getgid())
    os.setuid(os.getuid())
    for limit in RLIMITS.values():
        resource.setrlimit(limit, resource.getrlimit(limit))
    queue.Queue[None]().put(None)
    protocol.encode({"t": "ready", "ok": True, "pid": os.getpid(), "python": sys.version})


REHEARSED_CELL = "x = [1, 'a']\nlen(x) + 1"  # a statement, then an expression with a value


def rehearse_session() -> None:
    """In a template, before it forks its spare: a session through a socket pair of its own,
    with no effect: its init frame read, a :class:`Server` built (one that captures no
    output), a cell run with its reply read back, a host call's arguments encoded. What is
    left goes with the pair: the server, its REPL and its namespace; the cell's entry in
    the line cache is dropped. Each fork then finds this code warm (see the template's
    ``_settling``)."""
    import socket  # held by the template this runs in

    here, there = socket.socketpair()
    with here, there:
        stream = protocol.PipeStream(there.fileno(), there.fileno())  # as serve() reads
        tool = {"name": "a_tool", "doc": "A tool."}
        init = {
            "t": "init",
            "workdir": "/",
            "limits": {},
            "max_output_bytes": 1024,
            "tools": [tool],
        }
        here.sendall(protocol.encode(init))
        frame = protocol.read_frame(stream)
        assert frame is not None
        server = Server(stream, frame[0], capture=False)
        here.sendall(
            protocol.encode({"t": "req", "id": 1, "op": "run_code", "code": REHEARSED_CELL})
        )
        frame = protocol.read_frame(stream)
        assert frame is not None
        server.handle_request(*frame)
        item = server.repl_queue.get_nowait()
        assert item is not None
        server.repl_op(*item)()  # the reply goes out on the pair
        protocol.read_frame(here)
        codec.encode([["a prompt"], {}], where="a_tool() argument")
    linecache.cache.pop("<cell-1>", None)


def _become_environ(wanted: dict[str, str]) -> None:
    """Make ``os.environ`` (and the C library's environment) hold ``wanted`` and nothing else,
    changing only the variables that differ: most are the template's own, and each one
    unset and set again wrote pages of the forked interpreter (each a copy, 45-77 of them
    a start)."""
    for key in [key for key in os.environ if key not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _after_stdlib(path: list[str]) -> int:
    """Where the workdir goes on ``sys.path``: before site-packages, after the standard library."""
    for i, entry in enumerate(path):
        if entry.endswith(("site-packages", "dist-packages")):
            return i
    return len(path)


def serve(fd: int) -> None:
    """Entry point: take the channel on socket ``fd``, read the init frame, serve."""
    serve_on(protocol.PipeStream(fd, fd))


def serve_stdio() -> None:
    """Entry point: take the channel on stdin and stdout (a pipe pair), serve.

    The channel moves to descriptors of its own first, and 0 and 1 are pointed at
    ``/dev/null``: the cells' output capture takes over 1 and 2.
    """
    read_fd, write_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    serve_on(protocol.PipeStream(read_fd, write_fd))


def serve_on(sock: protocol.ByteStream) -> None:
    """Read the init frame from ``sock``, set the process up as it says, serve."""
    gc.enable()  # off while the driver imported (places.GC_OFF), on for the sandbox's code
    first = protocol.read_frame(sock)
    if first is None:
        return
    init = first[0]
    global DIAG_FD
    DIAG_FD = os.dup(2)  # fd 2 itself is about to be captured for the cells
    # A host started with SIGINT ignored (a background job of a script, nohup, some CI
    # runners) hands that on through every exec. Cells are interrupted with SIGINT, so
    # the driver takes Python's own handler back; its children then start with the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if "environ" in init:  # forked from a template: the sandbox's own variables come here
            _become_environ(init["environ"])
        if init.get("drop_to"):
            uid, gid = init["drop_to"]
            # A cold driver only (a fork's template loaded them: no stat on its start).
            if not LOADED and not readable_by(os.path.dirname(linecache.__file__), uid, gid):
                load_on_demand(rarely=True)  # no import would work after the drop
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        _die_with_parent()
        if sys.flags.no_site and not SITE_DONE:  # started with -S: the environment's .pth
            import site  # files and sitecustomize run only now, as the sandbox's user, filtered

            site.main()
        os.makedirs(init["workdir"], exist_ok=True)
        os.chdir(init["workdir"])
        sys.path.insert(_after_stdlib(sys.path), init["workdir"])
        apply_limits(init.get("limits", {}))
        sys.path.append(SHIM_DIR)  # 'from sandlot import expose' in interface files
        server = Server(sock, init)
        global CURRENT
        CURRENT = server
    except Exception as exc:
        sock.sendall(
            protocol.encode(
                {
                    "t": "ready",
                    "ok": False,
                    "error": protocol.error_info(exc, traceback.format_exc()),
                }
            )
        )
        return
    server.send(
        {
            "t": "ready",
            "ok": True,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
        }
    )
    threading.Thread(target=server.read_loop, name="sandlot-reader", daemon=True).start()
    if init.get("owner_timeout"):
        args = (float(init["owner_timeout"]),)
        threading.Thread(target=server.watch_owner, args=args, daemon=True).start()
    server.repl_loop()
