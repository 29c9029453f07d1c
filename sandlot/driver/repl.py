"""The persistent interpreter: runs cells, captures their output, returns values.

A cell runs like a notebook cell: statements in order, and when the last one is
an expression its ``repr`` is the cell's value. Top-level ``await`` works. Output
written to ``sys.stdout``/``sys.stderr`` and to file descriptors 1 and 2 (child
processes, C extensions) is captured, up to a byte limit per cell.
"""

from __future__ import annotations

import _thread
import ast
import builtins
import importlib
import io
import linecache
import os
import select
import sys
import threading
import traceback
from types import CodeType, CoroutineType, TracebackType

from .protocol import TYPE_CHECKING, error_info

if TYPE_CHECKING:
    import asyncio
    from typing import Any

TRUNCATION_MARKER = "\n[sandlot: output truncated at {limit} bytes; {dropped} more bytes dropped]\n"


class OutputSink:
    """stdout and stderr of one cell, bounded by ``limit`` bytes in total."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.size = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def write(self, stream: str, data: bytes) -> None:
        with self.lock:
            room = self.limit - self.size
            if room >= len(data):
                self.parts[stream].append(data)
                self.size += len(data)
                return
            if room > 0:
                self.parts[stream].append(data[:room])
                self.size += room
            self.dropped += len(data) - max(room, 0)

    def data(self, stream: str) -> bytes:
        """What was kept of ``stream``, as written (stdout ends with a note when output was cut)."""
        with self.lock:
            out = b"".join(self.parts[stream])
            if self.dropped and stream == "stdout":
                out += TRUNCATION_MARKER.format(limit=self.limit, dropped=self.dropped).encode()
            return out


class _BinaryProxy:
    def __init__(self, owner: StreamProxy) -> None:
        self.owner = owner

    def write(self, data: bytes) -> int:
        self.owner.repl.sink.write(self.owner.stream, bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class StreamProxy(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` inside the sandbox: writes go to the current cell."""

    def __init__(self, repl: Repl, stream: str, fd: int) -> None:
        super().__init__()
        self.repl = repl
        self.stream = stream
        self._fd = fd
        self.buffer = _BinaryProxy(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.repl.sink.write(self.stream, text.encode("utf-8", "replace"))
        return len(text)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd


class FdCapture:
    """Drains file descriptors 1 and 2 (redirected to pipes) into the current cell."""

    def __init__(self, repl: Repl) -> None:
        self.repl = repl
        self.lock = threading.Lock()
        self.fds: dict[int, str] = {}
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.fds[r] = stream
        # A bare thread: threading.Thread.start() would wait until it runs (0.36 ms of a
        # fork's start here), and nothing needs to know it has begun.
        _thread.start_new_thread(self._loop, ())

    def _loop(self) -> None:
        while True:
            ready, _, _ = select.select(list(self.fds), [], [])
            self.drain(ready)

    def drain(self, fds: list[int] | None = None) -> None:
        """Move what is readable now from the pipes into the current sink."""
        with self.lock:
            for fd in fds if fds is not None else list(self.fds):
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    self.repl.sink.write(self.fds[fd], data)


DRIVER_DIR = os.path.dirname(os.path.abspath(__file__))


def user_traceback(exc: BaseException) -> str:
    """Format ``exc`` without the driver's own frames above the user's code."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(DRIVER_DIR):
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) or tb is None:
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


class Repl:
    """One interpreter namespace that outlives the cells run in it."""

    def __init__(self, max_output_bytes: int) -> None:
        self.max_output_bytes = max_output_bytes
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.sink = OutputSink(max_output_bytes)
        self.count = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fd_capture: FdCapture | None = None

    def capture(self) -> None:
        """Take the process's output for the cells: ``sys.stdout`` and ``sys.stderr``, and
        descriptors 1 and 2 (pipes a thread drains). Once, before the first cell; a Repl
        that never captures (a template's rehearsal) leaves the process's output alone."""
        sys.stdout = StreamProxy(self, "stdout", 1)
        sys.stderr = StreamProxy(self, "stderr", 2)
        self.fd_capture = FdCapture(self)

    def _compile(self, code: str, filename: str) -> tuple[CodeType, CodeType | None]:
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = ast.parse(code, filename, "exec")
        last: CodeType | None = None
        if tree.body and isinstance(tail := tree.body[-1], ast.Expr):
            tree.body.pop()
            expr = ast.Expression(tail.value)
            last = compile(expr, filename, "eval", flags=flags, dont_inherit=True)
        return compile(tree, filename, "exec", flags=flags, dont_inherit=True), last

    def _eval(self, code: CodeType) -> Any:
        result = eval(code, self.namespace)
        if isinstance(result, CoroutineType):  # top-level await
            if self.loop is None:
                import asyncio  # on first use: it costs the driver's start-up 15 ms

                self.loop = asyncio.new_event_loop()
            result = self.loop.run_until_complete(result)
        return result

    def run(self, code: str) -> dict[str, Any]:
        """Run one cell; return stdout, stderr and value (UTF-8 bytes) and error as plain data."""
        self.count += 1
        # Modules written, uploaded or put on sys.path since the last cell (a path that did
        # not exist at start-up is cached as having no finder) become importable.
        importlib.invalidate_caches()
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        value: bytes | None = None
        error: dict[str, str] | None = None
        try:
            body, last = self._compile(code, filename)
            self._eval(body)
            if last is not None:
                result = self._eval(last)
                if result is not None:
                    value = repr(result).encode("utf-8", "surrogatepass")
                    self.namespace["_"] = result
        except BaseException as exc:  # the cell's errors are data, SystemExit included
            error = error_info(exc, user_traceback(exc))
        sys.stdout.flush()
        if self.fd_capture is not None:
            self.fd_capture.drain()
        sink, self.sink = self.sink, OutputSink(self.max_output_bytes)
        if value is not None and len(value) > self.max_output_bytes:  # bytes, as the host counts
            value = value[: self.max_output_bytes] + b"...[sandlot: repr truncated]"
        return {
            "stdout": sink.data("stdout"),
            "stderr": sink.data("stderr"),
            "value": value,
            "error": error,
            "truncated": sink.dropped > 0,
        }
