"""Owned background tasks: every task sandlot starts belongs to a :class:`TaskScope`.

Where a task's lifetime is one block and the block waits for it, the code uses
``asyncio.TaskGroup``. Everything else (a sandbox's exit watch and timers, a
channel's reader and the calls it answers, a pool's warm-ups, a backend's pumps)
is started with :meth:`TaskScope.spawn` on the scope of the object that owns
it, and that object's close ends them with :meth:`TaskScope.close` (cancel,
then wait) or :meth:`TaskScope.wait` (let them finish). ``tests/test_layers.py``
fails when a module of ``sandlot/`` starts a task any other way.

Two promises hold for every scope:

- **Nothing is lost.** A task whose outcome nobody awaits and that fails is
  reported at once to the event loop's exception handler (the channel asyncio
  itself uses for a failed callback), not when it happens to be collected.
- **Cancellation is never swallowed.** Closing a scope waits for its tasks
  with ``asyncio.wait``, which tells the caller's own cancellation apart from
  the children's; one that arrives meanwhile cancels the children, and is
  raised again once they have ended (as ``asyncio.TaskGroup`` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar, overload

T = TypeVar("T")


class TaskScope:
    """The background tasks of one owner, ended with it.

    ``owner`` names the owner in words ("a sandbox", "a sandbox's channel"): it
    is what a report of a failed task says. A task of the scope may close its
    own scope: it is left to finish on its own (it cannot wait for itself).
    ``async with TaskScope(...) as scope:`` closes the scope when the block ends.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Future[Any]] = set()

    def __len__(self) -> int:
        """How many tasks of the scope have not ended yet."""
        return len(self._tasks)

    @overload
    def spawn(self, work: Coroutine[Any, Any, T], *, awaited: bool = False) -> asyncio.Task[T]: ...
    @overload
    def spawn(self, work: Awaitable[T], *, awaited: bool = False) -> asyncio.Future[T]: ...
    def spawn(self, work: Awaitable[T], *, awaited: bool = False) -> asyncio.Future[T]:
        """Start ``work`` (a coroutine, or any awaitable) as a task of this scope.

        Its failure is reported to the loop's exception handler, unless
        ``awaited``: then whoever awaits the task gets its outcome, and a failure
        nobody awaits goes with the task.
        """
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget if awaited else self._finished)
        return task

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # seen: its awaiter, if any, still gets it

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        task.get_loop().call_exception_handler(
            {
                "message": f"a background task of {self.owner} failed",
                "exception": exc,
                "future": task,
            }
        )

    def cancel(self) -> None:
        """Cancel every task of the scope but the calling one, without waiting."""
        me = asyncio.current_task()
        for task in list(self._tasks):
            if task is not me:
                task.cancel()

    async def close(self) -> None:
        """Cancel every task of the scope and wait until they have ended."""
        await self._end(cancel=True)

    async def wait(self) -> None:
        """Wait until every task of the scope has ended, the ones they start included.

        If the caller is cancelled meanwhile, the tasks are cancelled too.
        """
        await self._end(cancel=False)

    async def _end(self, *, cancel: bool) -> None:
        me = asyncio.current_task()
        interrupted: asyncio.CancelledError | None = None
        told: set[asyncio.Future[Any]] = set()  # each child is cancelled once, not in its cleanup
        while pending := [t for t in self._tasks if t is not me and not t.done()]:
            if cancel:
                for task in set(pending) - told:
                    task.cancel()
                told.update(pending)
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError as exc:
                # The caller was cancelled, not a child (asyncio.wait does not raise
                # theirs): end the children, then let the cancellation go on.
                interrupted = interrupted or exc
                cancel = True
        if interrupted is not None:
            raise interrupted

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
