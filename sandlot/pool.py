"""Pools of sandboxes: borrow one, or map a function over items across many.

A pool owns its sandboxes. It starts none until asked (unless ``warm`` keeps
some ready), never holds more than ``size``, hands each borrower a sandbox of its
own, and terminates them all when it closes, whatever happened in between.

A sandbox that ran one borrower's code is never lent to another unless the pool
was made with ``reuse=True``: by default a returned sandbox is retired and a
fresh one takes its place, because whatever the last borrower left (globals,
files, processes) would otherwise reach the next one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import Field

from . import backends
from .backends import BackendSpec
from .backends.base import Backend
from .config import SandboxConfig, _Strict
from .errors import ConfigError, SandboxDied, SandboxError
from .sandbox import AsyncSandbox
from .tasks import TaskScope

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]


class PoolMapError(SandboxError, Generic[R]):
    """Some items of a ``map`` failed; the others completed.

    ``results`` holds every item's result in input order (None where it
    failed); ``errors`` maps the index of each failed item to its exception.
    """

    def __init__(self, results: list[R | None], errors: dict[int, BaseException]) -> None:
        self.results = results
        self.errors = errors
        first = min(errors)
        super().__init__(
            f"{len(errors)} of {len(results)} items failed; item {first}: "
            f"{type(errors[first]).__name__}: {errors[first]}"
        )


class PoolConfig(_Strict):
    """A pool's options as data: ``SandboxPool.from_config(sandbox_config, PoolConfig(...))``.

    Each field is the pool's keyword argument of the same name, with the same default.
    """

    size: int = Field(4, ge=1, description="The most sandboxes at once.")
    warm: int = Field(0, ge=0, description="Sandboxes kept started and idle (at most size).")
    reuse: bool = Field(False, description="Lend a returned sandbox again, with its state.")
    max_uses: int | None = Field(None, ge=1, description="Borrows of one sandbox (with reuse).")
    max_idle: float | None = Field(None, gt=0, description="Retire an idle sandbox after this.")


@dataclass
class _Slot:
    sandbox: AsyncSandbox
    uses: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class AsyncSandboxPool:
    """Sandboxes of one config, lent out one borrower at a time, up to ``size`` at once.

    ``warm`` sandboxes are kept started and idle, refilled in the background, so
    that borrowing one costs about a queue pop; without reuse they are kept
    beside the lent ones, so the next borrower finds one ready even while all
    ``size`` are lent (at most ``size + warm`` exist). A returned sandbox is retired
    (terminated in the background) and never lent again, unless ``reuse=True``:
    then it goes back to the idle ones with its interpreter, files and
    processes, until ``max_uses`` borrows. Any idle sandbox is retired after
    ``max_idle`` seconds unused.
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
        backend: BackendSpec = None,
    ) -> None:
        if size < 1:
            raise ConfigError(f"SandboxPool.size must be at least 1 (got {size})")
        if not 0 <= warm <= size:
            raise ConfigError(f"SandboxPool.warm must be between 0 and size={size} (got {warm})")
        if max_uses is not None and not reuse:
            raise ConfigError(
                f"SandboxPool.max_uses={max_uses} needs reuse=True: without reuse every "
                "sandbox is lent once and retired, so there is nothing to count"
            )
        if max_uses is not None and max_uses < 1:
            raise ConfigError(f"SandboxPool.max_uses must be at least 1 (got {max_uses})")
        if max_idle is not None and max_idle <= 0:
            raise ConfigError(f"SandboxPool.max_idle must be positive (got {max_idle})")
        self.config = config if config is not None else SandboxConfig()
        self.size = size
        self.warm = warm
        self.reuse = reuse
        self.max_uses = max_uses
        self.max_idle = max_idle
        self.tools = dict(tools or {})
        self.backend: Backend = backends.resolve(backend)
        self._idle: collections.deque[_Slot] = collections.deque()
        self._count = 0  # sandboxes that exist or are starting
        self._starting = 0  # of which warm-ups still starting
        self._taken = 0  # lent, or starting for a borrower: at most size
        self._cond: asyncio.Condition | None = None
        starts = getattr(self.backend, "background_starts", None)  # see _refill
        self._gate = None if starts is None else asyncio.Semaphore(starts)
        self._tasks = TaskScope("a sandbox pool")  # warm-ups and retirements
        self._lent: set[AsyncSandbox] = set()
        self._closed = False
        self._started = 0  # ever started by this pool
        self._retired = 0  # ever retired (returned without reuse, worn, idle too long, dead)
        self._refill_error: BaseException | None = None

    @classmethod
    def from_config(
        cls, config: SandboxConfig | None, options: PoolConfig, **runtime: Any
    ) -> AsyncSandboxPool:
        """A pool of ``config`` sandboxes with ``options``; ``runtime``: tools, backend."""
        return cls(config, **options.model_dump(), **runtime)

    # -- bookkeeping -------------------------------------------------------------

    @property
    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def stats(self) -> dict[str, int]:
        """Sandboxes that exist, are idle, lent out, starting; and ever started, ever retired."""
        return {
            "total": self._count,
            "idle": len(self._idle),
            "lent": len(self._lent),
            "starting": self._starting,
            "started": self._started,
            "retired": self._retired,
        }

    async def _new(self) -> AsyncSandbox:
        sb = AsyncSandbox(self.config, backend=self.backend, tools=self.tools)
        await sb.start()
        self._started += 1
        return sb

    def _expired(self, slot: _Slot) -> bool:
        if not slot.sandbox.is_alive:
            return True
        return self.max_idle is not None and time.monotonic() - slot.idle_since > self.max_idle

    def _retire(self, slot: _Slot) -> None:
        self._count -= 1
        self._retired += 1
        self._tasks.spawn(slot.sandbox.terminate())

    def _refill(self) -> None:
        """Start sandboxes in the background until ``warm`` are idle or starting.

        Without reuse they are beside the lent ones: with all ``size`` lent,
        ``warm`` more are ready for the next borrower, started while the others
        work. With reuse a returned sandbox is the next borrower's, so the warm
        ones count within ``size``. While sandboxes are lent, a backend whose
        starts cost this machine's CPU (``background_starts`` of
        :class:`~sandlot.backends.local.LocalBackend`) gets that many at a time:
        a burst of starts would only delay the borrowers' work. A fill while
        none is lent (the first one) is not held back.
        """
        gate = self._gate if self._lent else None
        while (
            not self._closed
            and len(self._idle) + self._starting < self.warm
            and (not self.reuse or self._count < self.size)
        ):
            self._count += 1
            self._starting += 1
            self._tasks.spawn(self._warm_one(gate))

    async def _warm_one(self, gate: asyncio.Semaphore | None) -> None:
        try:
            async with gate or contextlib.nullcontext():
                sb = None if self._closed else await self._new()  # closed while it queued
        except BaseException as exc:
            self._refill_error = exc
            async with self._condition:
                self._count -= 1
                self._starting -= 1
                self._condition.notify_all()
            return
        async with self._condition:
            self._starting -= 1
            if sb is None or self._closed:
                self._count -= 1
                if sb is not None:
                    self._tasks.spawn(sb.terminate())
            else:
                self._idle.append(_Slot(sb))
            self._condition.notify_all()  # borrowers and wait_warm() both watch this

    # -- lifetime ----------------------------------------------------------------

    async def start(self) -> Self:
        """Begin warming up (``warm`` sandboxes start in the background)."""
        async with self._condition:
            self._refill()
        return self

    async def wait_warm(self) -> None:
        """Wait until ``warm`` sandboxes are started and idle (re-raises a start failure)."""
        await self.start()
        async with self._condition:
            while len(self._idle) < self.warm and not self._closed:
                if self._refill_error is not None and self._starting == 0:
                    raise self._refill_error
                await self._condition.wait()

    async def close(self) -> None:
        """Terminate every sandbox of the pool, lent ones included."""
        async with self._condition:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
            self._count -= len(idle)
            self._condition.notify_all()
        ends = [slot.sandbox.terminate() for slot in idle]
        ends += [sb.terminate() for sb in list(self._lent)]
        await asyncio.gather(*ends, return_exceptions=True)
        await self._tasks.wait()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- borrowing ---------------------------------------------------------------

    async def _acquire(self) -> _Slot:
        cond = self._condition
        async with cond:
            while True:
                if self._closed:
                    raise SandboxError("the pool is closed")
                while self._idle and self._expired(self._idle[-1]):
                    self._retire(self._idle.pop())
                if self._idle and self._taken < self.size:
                    slot = self._idle.pop()  # the newest: with reuse, its caches are warm
                    self._taken += 1
                    self._lent.add(slot.sandbox)
                    self._refill()
                    return slot
                if self._taken < self.size and (not self.reuse or self._count < self.size):
                    self._count += 1
                    self._taken += 1
                    break
                try:
                    await cond.wait()
                except asyncio.CancelledError:
                    cond.notify()  # pass on a wake-up this waiter may have taken
                    raise
        try:
            slot = _Slot(await self._new())
        except BaseException:
            self._count -= 1  # at once: a second cancel in the wait below loses no count
            self._taken -= 1
            async with cond:
                cond.notify_all()
            raise
        # No await from here: a cancel cannot strike between the start and the lending.
        self._lent.add(slot.sandbox)
        self._refill()
        return slot

    async def _release(self, slot: _Slot, retire: bool) -> None:
        async with self._condition:
            self._lent.discard(slot.sandbox)
            self._taken -= 1
            slot.uses += 1
            worn = self.max_uses is not None and slot.uses >= self.max_uses
            if retire or worn or not self.reuse or self._closed or not slot.sandbox.is_alive:
                self._retire(slot)
            else:
                slot.idle_since = time.monotonic()
                self._idle.append(slot)
            self._refill()
            self._condition.notify()  # one slot freed: wake one borrower, not every waiter

    @contextlib.asynccontextmanager
    async def sandbox(self, *, clean: bool = False) -> AsyncIterator[AsyncSandbox]:
        """Borrow a sandbox for the block; afterwards it is retired, or with ``reuse`` kept.

        ``clean=True`` retires it even in a ``reuse=True`` pool, so the next
        borrower gets a fresh sandbox (without reuse that is what always
        happens). A sandbox that died is never lent again.
        """
        slot = await self._acquire()
        retire = clean
        try:
            yield slot.sandbox
        except SandboxDied:
            retire = True
            raise
        finally:
            await self._release(slot, retire)

    async def map(
        self,
        fn: Callable[[AsyncSandbox, T], Awaitable[R]],
        items: Iterable[T],
        *,
        clean: bool = False,
        progress: Progress | None = None,
        return_exceptions: bool = False,
    ) -> list[R]:
        """Run ``await fn(sandbox, item)`` for every item; results in input order.

        Each sandbox takes one item at a time, and items go to whichever
        sandbox is free. If a sandbox dies during an item, the item is retried
        once on a fresh one. ``clean`` is as in :meth:`sandbox`. A failing item
        does not stop the others: when all are done, failures raise
        :class:`PoolMapError` (with every result), or with
        ``return_exceptions=True`` stand in the list as exception objects.
        """
        work = list(items)
        results: list[Any] = [None] * len(work)
        errors: dict[int, BaseException] = {}
        done = 0

        async def one(index: int, item: T) -> None:
            nonlocal done
            for attempt in range(2):
                try:
                    async with self.sandbox(clean=clean) as sb:
                        results[index] = await fn(sb, item)
                    break
                except SandboxDied as exc:
                    if attempt == 1:
                        errors[index] = exc
                except Exception as exc:
                    errors[index] = exc
                    break
            done += 1
            if progress is not None:
                progress(done, len(work))

        await asyncio.gather(*(one(i, item) for i, item in enumerate(work)))
        if errors and return_exceptions:
            for index, exc in errors.items():
                results[index] = exc
        elif errors:
            raise PoolMapError(results, errors)
        return results
