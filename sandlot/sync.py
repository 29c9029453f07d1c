"""The blocking API: ``Sandbox`` runs ``AsyncSandbox`` on a shared event-loop thread.

There is one implementation (the async one). Every blocking method hands its
coroutine to the portal's loop and waits; nothing is implemented twice.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .backends.base import Backend
from .config import SandboxConfig
from .files import DEFAULT_MAX_READ, AsyncFiles
from .pool import AsyncSandboxPool, Progress
from .results import CodeResult, ExecResult, FileInfo, OutputChunk
from .sandbox import AsyncProcess, AsyncSandbox, live_sandboxes
from .serving.library import ExposeAs, McpServerSpec, RemoteLibrary
from .untar import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, DownloadResult

T = TypeVar("T")
R = TypeVar("R")


class Portal:
    """An event loop on a daemon thread that blocking callers hand coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="sandlot-loop", daemon=True
        )
        self.thread.start()

    def wait(self, awaitable: Awaitable[T]) -> T:
        """Like :meth:`call`, for any awaitable (a coroutine is wrapped in one)."""

        async def run() -> T:
            return await awaitable

        return self.call(run())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal's loop and return its result (or raise its error)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking sandlot call was made on sandlot's own event loop; "
                "use the async API (AsyncSandbox) there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or any error) in the waiting thread cancels the work on the loop,
            # which tells the sandbox to interrupt the cell or kill the process.
            future.cancel()
            raise


_portal: Portal | None = None
_portal_lock = threading.Lock()


def portal() -> Portal:
    """The process-wide portal, started on first use."""
    global _portal
    with _portal_lock:
        if _portal is None:
            _portal = Portal()
            atexit.register(_shutdown)
        return _portal


def _shutdown() -> None:
    """At interpreter exit, end the sandboxes that are still running."""
    if _portal is None:
        return

    async def end_all() -> None:
        await asyncio.gather(*(sb.terminate() for sb in live_sandboxes()), return_exceptions=True)

    # Exiting anyway: if this fails, the kernel ends what is left (die-with-parent).
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(end_all(), _portal.loop).result(timeout=30)


class Files:
    """Blocking twin of :class:`sandlot.files.AsyncFiles`."""

    def __init__(self, inner: AsyncFiles, call: Callable[[Awaitable[Any]], Any]) -> None:
        self._inner = inner
        self._call = call

    def write(self, path: str, data: bytes | str, *, mode: int | None = None) -> int:
        """Write ``data`` to ``path`` (parents created, replaced atomically); return its size."""
        return int(self._call(self._inner.write(path, data, mode=mode)))

    def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
        """Return the bytes of file ``path`` (at most ``max_bytes``; see ``AsyncFiles.read``)."""
        return bytes(self._call(self._inner.read(path, max_bytes=max_bytes)))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """Return file ``path`` decoded as text."""
        return str(self._call(self._inner.read_text(path, encoding)))

    def list(self, path: str = ".") -> list[FileInfo]:
        """The entries of directory ``path``, sorted by name."""
        return list(self._call(self._inner.list(path)))

    def exists(self, path: str) -> bool:
        """True if ``path`` exists in the sandbox."""
        return bool(self._call(self._inner.exists(path)))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (``recursive=True`` for a non-empty one)."""
        self._call(self._inner.remove(path, recursive=recursive))

    def mkdir(self, path: str) -> None:
        """Create directory ``path`` and its parents."""
        self._call(self._inner.mkdir(path))

    def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory tree to ``remote`` in the sandbox."""
        self._call(self._inner.upload(local, remote))

    def download(
        self,
        remote: str,
        local: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_members: int = DEFAULT_MAX_MEMBERS,
    ) -> DownloadResult:
        """Copy a sandbox file or directory tree to ``local`` (see ``AsyncFiles.download``)."""
        result: DownloadResult = self._call(
            self._inner.download(remote, local, max_bytes=max_bytes, max_members=max_members)
        )
        return result


class Process:
    """Blocking twin of :class:`sandlot.sandbox.AsyncProcess`: iterate, then ``result``."""

    def __init__(self, inner: AsyncProcess, portal: Portal) -> None:
        self._inner = inner
        self._portal = portal

    def __iter__(self) -> Iterator[OutputChunk]:
        agen = aiter(self._inner)

        async def step() -> OutputChunk | None:
            try:
                return await anext(agen)
            except StopAsyncIteration:
                return None

        while (chunk := self._portal.call(step())) is not None:
            yield chunk

    def wait(self) -> ExecResult:
        """Consume the rest of the output and return the result."""
        return self._portal.call(self._inner.wait())

    @property
    def result(self) -> ExecResult | None:
        """The result, once the output has been consumed."""
        return self._inner.result

    @property
    def returncode(self) -> int | None:
        """The exit status, once the process has ended."""
        return self._inner.returncode


class Sandbox:
    """An isolated sandbox with a live Python interpreter (blocking API).

    ``with Sandbox(config) as sb:`` starts it and terminates it on exit; or call
    :meth:`start` and :meth:`terminate` yourself. See :class:`AsyncSandbox` for
    the meaning of each method; this class only waits for them.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        backend: Backend | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self._portal = portal()
        self._async = AsyncSandbox(config, backend=backend, tools=tools)
        self.files = Files(self._async.files, self._call)

    @classmethod
    def wrapping(cls, sandbox: AsyncSandbox) -> Sandbox:
        """A blocking view of an existing ``AsyncSandbox`` (one that runs on the portal's loop)."""
        view = cls.__new__(cls)
        view._portal = portal()
        view._async = sandbox
        view.files = Files(sandbox.files, view._call)
        return view

    def _call(self, awaitable: Awaitable[T]) -> T:
        return self._portal.wait(awaitable)

    @property
    def config(self) -> SandboxConfig:
        """The sandbox's configuration."""
        return self._async.config

    @property
    def is_alive(self) -> bool:
        """True between a successful ``start`` and the sandbox's end."""
        return self._async.is_alive

    @property
    def workdir(self) -> str:
        """The sandbox's working directory as its code sees it."""
        return self._async.workdir

    @property
    def async_sandbox(self) -> AsyncSandbox:
        """The async sandbox this one wraps."""
        return self._async

    def start(self) -> Self:
        """Start the sandbox and wait until its interpreter is ready."""
        self._call(self._async.start())
        return self

    def terminate(self) -> None:
        """End the sandbox and every process in it; safe to call more than once."""
        self._call(self._async.terminate())

    def __enter__(self) -> Self:
        return self if self._async.started else self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()

    def register_tool(self, name: str, fn: Callable[..., Any], doc: str | None = None) -> None:
        """Expose host function ``fn`` to sandboxed code as ``name``."""

        async def register() -> None:
            self._async.register_tool(name, fn, doc)

        self._call(register())

    def run_code(
        self,
        code: str,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> CodeResult:
        """Run ``code`` in the persistent interpreter, like a notebook cell."""
        return self._call(
            self._async.run_code(code, timeout=timeout, raise_on_error=raise_on_error)
        )

    def exec(
        self,
        *argv: str,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
    ) -> ExecResult:
        """Run a command in the sandbox and wait for it."""
        return self._call(self._async.exec(*argv, timeout=timeout, cwd=cwd, env=env, stdin=stdin))

    def exec_stream(
        self,
        *argv: str,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
    ) -> Process:
        """Start a command; iterate the returned process for its output as it comes."""
        inner = self._async.exec_stream(*argv, timeout=timeout, cwd=cwd, env=env, stdin=stdin)
        return Process(inner, self._portal)

    def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory to ``remote`` (relative to the workdir)."""
        self._call(self._async.upload(local, remote))

    def serve(
        self,
        path: str | Path,
        expose_as: ExposeAs = "library",
        name: str | None = None,
    ) -> RemoteLibrary | McpServerSpec | str:
        """Import interface file ``path`` here once and serve its ``@expose`` functions.

        See :meth:`AsyncSandbox.serve`; a returned library's functions are plain
        blocking calls from the host (``lib.fn(...)``).
        """
        return self._call(self._async.serve(path, expose_as, name))

    def download(self, remote: str, local: str | Path) -> DownloadResult:
        """Copy a sandbox file or directory to ``local`` (``files.download`` takes the caps)."""
        result: DownloadResult = self._call(self._async.download(remote, local))
        return result


class SandboxPool:
    """Blocking twin of :class:`sandlot.pool.AsyncSandboxPool`.

    ``with SandboxPool(config, size=4, warm=2) as pool:`` then
    ``pool.map(fn, items)`` calls ``fn(sandbox, item)`` on host threads, one per
    sandbox in use, or ``with pool.sandbox() as sb:`` borrows one. A returned
    sandbox is retired unless ``reuse=True`` (see docs/pools.md for what reuse
    shares between borrowers).
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        size: int = 4,
        warm: int = 0,
        reuse: bool = False,
        max_uses: int | None = None,
        max_idle: float | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        backend: Backend | None = None,
    ) -> None:
        self._portal = portal()
        self._async = AsyncSandboxPool(
            config,
            size=size,
            warm=warm,
            reuse=reuse,
            max_uses=max_uses,
            max_idle=max_idle,
            tools=tools,
            backend=backend,
        )
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sandlot-pool")

    def _call(self, awaitable: Awaitable[T]) -> T:
        return self._portal.wait(awaitable)

    @property
    def async_pool(self) -> AsyncSandboxPool:
        """The async pool this one wraps."""
        return self._async

    def stats(self) -> dict[str, int]:
        """See :meth:`AsyncSandboxPool.stats`."""
        return self._async.stats()

    def start(self) -> Self:
        """Begin warming up (``warm`` sandboxes start in the background)."""
        self._call(self._async.start())
        return self

    def wait_warm(self) -> None:
        """Wait until ``warm`` sandboxes are started and idle."""
        self._call(self._async.wait_warm())

    def close(self) -> None:
        """Terminate every sandbox of the pool."""
        self._call(self._async.close())
        self._threads.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def sandbox(self, *, clean: bool = False) -> Iterator[Sandbox]:
        """Borrow a sandbox for the block (``clean=True``: retire it even with ``reuse``)."""
        borrowed = self._async.sandbox(clean=clean)
        sb = self._call(borrowed.__aenter__())
        try:
            yield Sandbox.wrapping(sb)
        except BaseException as exc:
            if not self._call(borrowed.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._call(borrowed.__aexit__(None, None, None))

    def map(
        self,
        fn: Callable[[Sandbox, T], R],
        items: Iterable[T],
        *,
        clean: bool = False,
        progress: Progress | bool | None = None,
        return_exceptions: bool = False,
    ) -> list[R]:
        """Call ``fn(sandbox, item)`` for every item across the pool; results in input order.

        ``progress=True`` shows a rich progress bar; a callable gets
        ``(done, total)`` after each item. See ``AsyncSandboxPool.map`` for
        retries and failures.
        """
        loop = self._portal.loop
        work = list(items)

        async def call(sb: AsyncSandbox, item: T) -> R:
            return await loop.run_in_executor(self._threads, fn, Sandbox.wrapping(sb), item)

        if progress is not True:
            report = progress if callable(progress) else None
            return self._call(
                self._async.map(
                    call, work, clean=clean, progress=report, return_exceptions=return_exceptions
                )
            )
        from rich.progress import Progress as Bar

        with Bar(transient=True) as bar:
            task = bar.add_task("sandboxes", total=len(work))
            return self._call(
                self._async.map(
                    call,
                    work,
                    clean=clean,
                    return_exceptions=return_exceptions,
                    progress=lambda done, total: bar.update(task, completed=done),
                )
            )
