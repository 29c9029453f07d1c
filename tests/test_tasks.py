"""Every background task has an owner that ends it; cancellation is never swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import strict

import sandlot
from sandlot.rlm import Completion, Message, engine
from sandlot.tasks import TaskScope


def _others() -> set[asyncio.Task[Any]]:
    """The tasks of the running loop that have not ended, but the calling one."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


def test_a_failing_background_task_is_reported_at_once_not_lost() -> None:
    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        scope = TaskScope("a test's owner")

        async def fail() -> None:
            raise ValueError("lost?")

        async def fail_awaited() -> None:
            raise KeyError("mine")

        scope.spawn(fail())
        awaited = scope.spawn(fail_awaited(), awaited=True)
        with pytest.raises(KeyError):
            await awaited  # its awaiter gets it; it is not reported besides
        await asyncio.sleep(0)
        assert len(scope) == 0
        return seen

    (reported,) = asyncio.run(main())
    assert isinstance(reported["exception"], ValueError)
    assert reported["message"] == "a background task of a test's owner failed"


def test_close_cancels_and_waits_and_an_outer_cancellation_still_arrives() -> None:
    async def main() -> None:
        scope = TaskScope("a test's owner")
        cleaning, ended = asyncio.Event(), asyncio.Event()

        async def slow_to_stop() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleaning.set()
                await asyncio.sleep(0.2)  # a child that takes a moment to clean up
                ended.set()

        scope.spawn(slow_to_stop())
        await asyncio.sleep(0)
        closer = asyncio.ensure_future(scope.close())
        await cleaning.wait()
        closer.cancel()  # the closer's own cancellation, arriving while it waits
        with pytest.raises(asyncio.CancelledError):
            await closer
        assert ended.is_set(), "the cancelled closer returned before its child ended"
        assert not _others()

    asyncio.run(main())


def test_a_timeout_around_close_is_a_timeout_and_wait_cancels_the_children() -> None:
    async def main() -> None:
        scope = TaskScope("a test's owner")
        scope.spawn(asyncio.sleep(3600))
        with pytest.raises(TimeoutError):  # not a CancelledError: the count stays right
            async with asyncio.timeout(0.1):
                await scope.wait()
        assert len(scope) == 0 and not _others()
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_task_may_close_its_own_scope() -> None:
    async def main() -> None:
        scope = TaskScope("a test's owner")
        other = scope.spawn(asyncio.sleep(3600))

        async def closing() -> str:
            await scope.close()
            return "closed"

        assert await scope.spawn(closing(), awaited=True) == "closed"
        assert other.cancelled()

    asyncio.run(main())


def test_a_terminated_sandbox_leaves_no_task_behind() -> None:
    gate = asyncio.Event()

    async def hold() -> str:
        await gate.wait()  # a host call still in flight when the sandbox ends
        return "answered"

    async def main() -> None:
        before = _others()
        sb = sandlot.AsyncSandbox(strict(idle_timeout=600, timeout=600), tools={"hold": hold})
        await sb.start()
        cell = asyncio.ensure_future(sb.run_code("hold()"))
        while not sb._channel or not len(sb._channel.tasks) > 1:  # the reader and the call
            await asyncio.sleep(0.05)
        await sb.terminate()
        left = _others() - before - {cell}
        assert not left, f"pending after terminate: {left}"
        with pytest.raises(sandlot.SandboxDied):
            await cell

    asyncio.run(main())


class _SlowToStop:
    """A stand-in for AsyncSandbox whose start, once cancelled, takes a moment to stop."""

    cleaning: asyncio.Event

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    async def start(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            _SlowToStop.cleaning.set()
            await asyncio.sleep(0.3)
            raise


class _AnswersAtOnce:
    model = "answers-at-once"

    async def acomplete(self, messages: Sequence[Message]) -> Completion:
        return Completion(text="FINAL(done)", model=self.model)


def test_an_rlm_run_ending_its_sandbox_start_does_not_swallow_a_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The root LM answers before the sandbox is up; the run is cancelled while it stops it."""
    monkeypatch.setattr(engine, "AsyncSandbox", _SlowToStop)

    async def main() -> None:
        _SlowToStop.cleaning = asyncio.Event()
        rlm = engine.RLM(_AnswersAtOnce(), _AnswersAtOnce())
        run = asyncio.ensure_future(rlm.acompletion("context", "query"))
        await _SlowToStop.cleaning.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run  # before: the run went on and returned its answer

    asyncio.run(main())
