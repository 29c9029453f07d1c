"""The blocking API: ``Sandbox`` runs ``AsyncSandbox`` on a shared event-loop thread.

There is one implementation (the async one). Every blocking method hands its
coroutine to the portal's loop and waits; nothing is implemented twice. The
twins are declared, not written: ``blocking(AsyncSandbox.run_code)`` makes the
blocking method from the async one (same signature, same docstring), and
``mirror`` reads an attribute through; ``blocking_twin(arun_harness)`` does
the same for a function, or a method of the same object, outside the twin
classes (the experiment stages, the notebook functions, the RLM). Only what
must differ is written out: start-up and context managers, streaming
(``Process``), and the pool's host threads; ``same_parameters``
(:mod:`sandlot.signatures`) gives such a method the async one's parameters.
``tests/test_sync_twins.py`` fails when an async class gains a public member
its twin lacks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Generic, NoReturn, ParamSpec, Self, TypeVar, overload

from .backends import BackendSpec
from .backends.base import Backend
from .config import SandboxConfig
from .exits import at_exit
from .files import AsyncFiles
from .pool import AsyncSandboxPool, PoolConfig, Progress
from .results import ExecResult, OutputChunk, RestoreResult
from .router import Router
from .sandbox import AsyncProcess, AsyncSandbox, live_sandboxes
from .signatures import same_parameters
from .tasks import TaskScope

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class Portal:
    """An event loop on a daemon thread that blocking callers hand coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="sandlot-loop", daemon=True
        )
        self.thread.start()
        self.tasks = TaskScope("the blocking portal")  # the calls of blocking callers

    def wait(self, awaitable: Awaitable[T]) -> T:
        """Like :meth:`call`, for any awaitable (a coroutine is wrapped in one)."""
        if threading.current_thread() is self.thread and inspect.iscoroutine(awaitable):
            awaitable.close()  # not left unawaited: call() below refuses to run it here

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
        # The future exists before the work is handed over, so that a Ctrl-C landing at
        # any point from here on cancels the work. With run_coroutine_threadsafe, one
        # landing inside it after the hand-over loses the future and leaves the work
        # running: a cell sleeping on while the REPL that started it has moved on.
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            # In the caller's context: a host function's blocking call carries what the
            # async path would (the sandbox whose cell waits on it: channel.CELL_WAITING).
            context = contextvars.copy_context()
            self.loop.call_soon_threadsafe(self._start, coro, future, context=context)
            return future.result()
        except BaseException:
            # Ctrl-C (or any error) in the waiting thread cancels the work on the loop,
            # which tells the sandbox to interrupt the cell or kill the process.
            future.cancel()
            raise

    def _start(self, coro: Coroutine[Any, Any, T], future: concurrent.futures.Future[T]) -> None:
        """On the loop: run ``coro`` as a task whose outcome settles ``future``, both ways."""
        if future.cancelled():  # the caller gave up before the loop got here
            coro.close()
            return
        task = self.tasks.spawn(coro, awaited=True)  # settle() hands its outcome over

        def settle(done: asyncio.Task[T]) -> None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
                if done.cancelled():
                    future.cancel()
                elif (exc := done.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(done.result())

        def abandon(given_up: concurrent.futures.Future[T]) -> None:
            if given_up.cancelled():
                self.loop.call_soon_threadsafe(task.cancel)

        task.add_done_callback(settle)
        future.add_done_callback(abandon)


_portal: Portal | None = None
_portal_lock = threading.Lock()


def portal() -> Portal:
    """The process-wide portal, started on first use."""
    global _portal
    with _portal_lock:
        if _portal is None:
            _portal = Portal()
        return _portal


def _forget_portal() -> None:
    """In a forked child: the portal's thread is the parent's (the child's exit ends none of
    its sandboxes, and waits on no loop)."""
    global _portal, _portal_lock
    _portal = None
    _portal_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_portal)


def _shutdown() -> None:
    """At interpreter exit, end the sandboxes that are still running."""
    if _portal is None:
        return

    async def end_all() -> None:
        await asyncio.gather(*(sb.terminate() for sb in live_sandboxes()), return_exceptions=True)

    # Exiting anyway: if this fails, the kernel ends what is left (die-with-parent).
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(end_all(), _portal.loop).result(timeout=30)


at_exit(_shutdown, "sandboxes")  # once: whatever portal this process holds then, if any


class Twin:
    """Base of the blocking twins: the async object they wrap and the portal they wait on."""

    _async: Any
    _portal: Portal


class blocking(Generic[P, R]):
    """A blocking method made from an async one: ``run_code = blocking(AsyncSandbox.run_code)``.

    Called on a twin, it calls the async method on the twin's async object with
    the same arguments and waits for it on the portal. Its signature and
    docstring are the async method's, so the two cannot drift.
    """

    def __init__(self, method: Callable[Concatenate[Any, P], Awaitable[R]]) -> None:
        self.method = method
        self.__doc__ = method.__doc__
        self.__wrapped__ = method
        signature = inspect.signature(method)
        self.signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def __call__(self, twin: Twin, *args: P.args, **kwargs: P.kwargs) -> R:
        """Called on the class, as an unbound method: ``Sandbox.terminate(sb)``."""
        return twin._portal.wait(self.method(twin._async, *args, **kwargs))

    def __set_name__(self, owner: type, name: str) -> None:
        """Put a plain function on the class (what ``help()`` and ``inspect`` read best).

        The descriptor stays what the type checker sees; at run time the class
        holds a function with the async method's signature, marked with this
        descriptor as ``__blocking__``.
        """
        method = self.method

        @functools.wraps(method)
        def call(twin: Twin, *args: P.args, **kwargs: P.kwargs) -> R:
            return twin._portal.wait(method(twin._async, *args, **kwargs))

        call.__qualname__ = f"{owner.__qualname__}.{name}"
        call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
        call.__blocking__ = self  # type: ignore[attr-defined]
        setattr(owner, name, call)

    @overload
    def __get__(self, twin: None, owner: type) -> Self: ...
    @overload
    def __get__(self, twin: Twin, owner: type) -> Callable[P, R]: ...
    def __get__(self, twin: Twin | None, owner: type) -> Self | Callable[P, R]:
        if twin is None:
            return self
        method, inner, portal = self.method, twin._async, twin._portal

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return portal.wait(method(inner, *args, **kwargs))

        call.__signature__ = self.signature  # type: ignore[attr-defined]  # without self
        return call


@overload
def blocking_twin(function: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]: ...
@overload
def blocking_twin(
    function: Callable[P, Coroutine[Any, Any, T]], into: Callable[[T, Portal], R]
) -> Callable[P, R]: ...
def blocking_twin(
    function: Callable[P, Coroutine[Any, Any, Any]],
    into: Callable[[Any, Portal], Any] | None = None,
) -> Callable[P, Any]:
    """A blocking function made from an async one: ``run_harness = blocking_twin(arun_harness)``.

    The twin calls ``function`` with the same arguments and waits for it on the
    shared portal. Its name is the async one's without the leading ``a``; its
    signature and docstring are the async one's. In a class body it makes a
    method of the same object (``completion = blocking_twin(acompletion)``).
    ``into(result, portal)`` turns what the async one returns into what the
    blocking one does (``into=NotebookSession``: the blocking twin of the handle);
    the signature then says ``into``'s name as the return type.
    """
    name = function.__name__
    if not name.startswith("a"):
        raise ValueError(f"{name}: an async twin's name starts with 'a' (acomplete, complete)")

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> Any:
        shared = portal()
        result = shared.wait(function(*args, **kwargs))
        return result if into is None else into(result, shared)

    call.__name__ = name[1:]
    call.__qualname__ = function.__qualname__.removesuffix(name) + name[1:]
    signature = inspect.signature(function)
    if into is not None:
        signature = signature.replace(return_annotation=into.__name__)
    call.__signature__ = signature  # type: ignore[attr-defined]
    return call


class mirror(Generic[T]):
    """An attribute read from the async object: ``is_alive = mirror(AsyncSandbox.is_alive)``.

    Takes a property of the async class (typed by its getter), or
    ``mirror[int]("size")`` for an instance attribute.
    """

    def __init__(self, source: Callable[[Any], T] | str) -> None:
        if isinstance(source, str):
            self.name, self.__doc__ = source, None
        else:
            getter = source.fget if isinstance(source, property) else source
            assert getter is not None
            self.name, self.__doc__ = getter.__name__, getter.__doc__

    @overload
    def __get__(self, twin: None, owner: type) -> Self: ...
    @overload
    def __get__(self, twin: Twin, owner: type) -> T: ...
    def __get__(self, twin: Twin | None, owner: type) -> Self | T:
        if twin is None:
            return self
        value: T = getattr(twin._async, self.name)
        return value

    def __set__(self, twin: Twin, value: NoReturn) -> None:
        """Read-only, as the async object's attribute is to the twin."""
        raise AttributeError(f"{self.name} is read from the async object; it cannot be set here")


class Files(Twin):
    """Blocking twin of :class:`sandlot.files.AsyncFiles` (``sandbox.files``)."""

    def __init__(self, inner: AsyncFiles, portal: Portal) -> None:
        self._async = inner
        self._portal = portal

    write = blocking(AsyncFiles.write)
    read = blocking(AsyncFiles.read)
    read_text = blocking(AsyncFiles.read_text)
    list = blocking(AsyncFiles.list)
    exists = blocking(AsyncFiles.exists)
    remove = blocking(AsyncFiles.remove)
    mkdir = blocking(AsyncFiles.mkdir)
    upload = blocking(AsyncFiles.upload)
    download = blocking(AsyncFiles.download)
    send_tar = blocking(AsyncFiles.send_tar)
    receive_tar = blocking(AsyncFiles.receive_tar)


class Process(Twin):
    """Blocking twin of :class:`sandlot.sandbox.AsyncProcess`: iterate, then ``result``."""

    def __init__(self, inner: AsyncProcess, portal: Portal) -> None:
        self._async = inner
        self._portal = portal

    def __iter__(self) -> Iterator[OutputChunk]:
        agen = aiter(self._async)

        async def step() -> OutputChunk | None:
            try:
                return await anext(agen)
            except StopAsyncIteration:
                return None

        while (chunk := self._portal.call(step())) is not None:
            yield chunk

    wait = blocking(AsyncProcess.wait)
    kill = blocking(AsyncProcess.kill)
    result = mirror[ExecResult | None]("result")
    returncode = mirror(AsyncProcess.returncode)


class Sandbox(Twin):
    """An isolated sandbox with a live Python interpreter (blocking API).

    ``with Sandbox(config) as sb:`` starts it and terminates it on exit; or call
    :meth:`start` and :meth:`terminate` yourself. Each method is
    :class:`AsyncSandbox`'s, waited for; ``files`` is the blocking twin of its
    ``files``.
    """

    @same_parameters(AsyncSandbox.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._portal = portal()
        self._async = AsyncSandbox(*args, **kwargs)
        self.files = Files(self._async.files, self._portal)

    @classmethod
    def wrapping(cls, sandbox: AsyncSandbox) -> Sandbox:
        """A blocking view of an existing ``AsyncSandbox`` (one that runs on the portal's loop)."""
        view = cls.__new__(cls)
        view._portal = portal()
        view._async = sandbox
        view.files = Files(sandbox.files, view._portal)
        return view

    @property
    def async_sandbox(self) -> AsyncSandbox:
        """The async sandbox this one wraps."""
        return self._async  # type: ignore[no-any-return]

    config = mirror[SandboxConfig]("config")
    backend = mirror[Backend]("backend")
    router = mirror[Router]("router")
    info = mirror[dict[str, Any]]("info")
    is_alive = mirror(AsyncSandbox.is_alive)
    started = mirror(AsyncSandbox.started)
    workdir = mirror(AsyncSandbox.workdir)

    def start(self) -> Self:
        """Start the sandbox and wait until its interpreter is ready."""
        self._portal.wait(self._async.start())
        return self

    terminate = blocking(AsyncSandbox.terminate)
    run_code = blocking(AsyncSandbox.run_code)
    exec = blocking(AsyncSandbox.exec)
    upload = blocking(AsyncSandbox.upload)
    download = blocking(AsyncSandbox.download)
    serve = blocking(AsyncSandbox.serve)
    snapshot = blocking(AsyncSandbox.snapshot)
    load_snapshot = blocking(AsyncSandbox.load_snapshot)
    restored = mirror[RestoreResult | None]("restored")

    def fork(self, n: int = 1, *, config: SandboxConfig | None = None) -> list[Sandbox]:
        """``n`` new sandboxes that start as copies of this one (see :meth:`AsyncSandbox.fork`)."""
        made = self._portal.wait(self._async.fork(n, config=config))
        return [Sandbox.wrapping(child) for child in made]

    @classmethod
    def restore(
        cls,
        path: str | Path,
        config: SandboxConfig | None = None,
        *,
        backend: BackendSpec = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> Sandbox:
        """Start a sandbox with ``config`` and load snapshot ``path`` into it (blocking).

        As :meth:`AsyncSandbox.restore`; what came back is in ``sb.restored``.
        """
        start = AsyncSandbox.restore(path, config, backend=backend, tools=tools)
        return cls.wrapping(portal().wait(start))

    def __enter__(self) -> Self:
        return self if self._async.started else self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()

    def register_tool(self, name: str, fn: Callable[..., Any], doc: str | None = None) -> None:
        """Expose host function ``fn`` to sandboxed code as ``name`` (on the sandbox's loop)."""

        async def register() -> None:
            self._async.register_tool(name, fn, doc)

        self._portal.wait(register())

    @same_parameters(AsyncSandbox.exec_stream)
    def exec_stream(self, *args: Any, **kwargs: Any) -> Process:
        """Start a command; iterate the returned process for its output as it comes."""
        return Process(self._async.exec_stream(*args, **kwargs), self._portal)


class SandboxPool(Twin):
    """Blocking twin of :class:`sandlot.pool.AsyncSandboxPool`.

    ``with SandboxPool(config, size=4, warm=2) as pool:`` then
    ``pool.map(fn, items)`` calls ``fn(sandbox, item)`` on host threads, one per
    sandbox in use, or ``with pool.sandbox() as sb:`` borrows one. A returned
    sandbox is retired unless ``reuse=True`` (see docs/pools.md for what reuse
    shares between borrowers).
    """

    @same_parameters(AsyncSandboxPool.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._portal = portal()
        self._async = AsyncSandboxPool(*args, **kwargs)
        self._threads = ThreadPoolExecutor(
            max_workers=self._async.size, thread_name_prefix="sandlot-pool"
        )

    @classmethod
    def from_config(
        cls, config: SandboxConfig | None, options: PoolConfig, **runtime: Any
    ) -> SandboxPool:
        """A pool of ``config`` sandboxes with ``options``; ``runtime``: tools, backend."""
        return cls(config, **options.model_dump(), **runtime)

    def _call(self, awaitable: Awaitable[T]) -> T:
        return self._portal.wait(awaitable)

    @property
    def async_pool(self) -> AsyncSandboxPool:
        """The async pool this one wraps."""
        return self._async  # type: ignore[no-any-return]

    config = mirror[SandboxConfig]("config")
    backend = mirror[Backend]("backend")
    size = mirror[int]("size")
    warm = mirror[int]("warm")
    reuse = mirror[bool]("reuse")
    max_uses = mirror[int | None]("max_uses")
    max_idle = mirror[float | None]("max_idle")
    tools = mirror[dict[str, Callable[..., Any]]]("tools")

    def stats(self) -> dict[str, int]:
        """See :meth:`AsyncSandboxPool.stats`."""
        return self._async.stats()  # type: ignore[no-any-return]

    def start(self) -> Self:
        """Begin warming up (``warm`` sandboxes start in the background)."""
        self._call(self._async.start())
        return self

    wait_warm = blocking(AsyncSandboxPool.wait_warm)

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
