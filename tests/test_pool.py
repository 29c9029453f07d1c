"""SandboxPool: lazy and warm starts, free-sandbox dispatch, faults, reuse, bounds, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import strict

import sandlot
from sandlot.backends.local import LocalBackend, LocalLaunch
from sandlot.sandbox import live_sandboxes


def _ident(sb: sandlot.Sandbox) -> int:
    return id(sb.async_sandbox)


def test_lazy_until_used_and_warm_when_asked() -> None:
    with sandlot.SandboxPool(strict(), size=3) as pool:
        assert pool.stats()["total"] == 0
        with pool.sandbox() as sb:
            assert sb.run_code("1 + 1").value == "2"
        # Returned means retired (no reuse by default): nothing is kept.
        assert pool.stats() == {
            "total": 0,
            "idle": 0,
            "lent": 0,
            "starting": 0,
            "started": 1,
            "retired": 1,
        }
    with sandlot.SandboxPool(strict(), size=3, warm=2) as pool:
        pool.wait_warm()
        assert pool.stats()["idle"] == 2
        with pool.sandbox() as sb:
            _wait_for(lambda: pool.stats()["idle"] == 2)  # the pool refills in the background
            assert pool.stats() == {
                "total": 3,
                "idle": 2,
                "lent": 1,
                "starting": 0,
                "started": 3,
                "retired": 0,
            }
            assert sb.is_alive


def _wait_for(ready: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready()


def test_warm_borrows_after_returns_still_get_started_sandboxes() -> None:
    with sandlot.SandboxPool(strict(), size=3, warm=2) as pool:
        pool.wait_warm()
        lent: list[sandlot.AsyncSandbox] = []  # held, so no two share an id()
        for n in range(1, 5):
            _wait_for(lambda: pool.stats()["idle"] == 2)  # refilled after the last return
            ready = [slot.sandbox for slot in pool.async_pool._idle]
            with pool.sandbox() as sb:
                assert any(sb.async_sandbox is box for box in ready)  # a queue pop, not a start
                assert sb.run_code("1 + 1").value == "2"
                lent.append(sb.async_sandbox)
            assert pool.stats()["retired"] == n
        _wait_for(lambda: pool.stats()["idle"] == 2)
        assert len({id(box) for box in lent}) == 4  # never the same sandbox twice
        assert pool.stats()["started"] == 2 + 4  # each return was replaced by a fresh start


def test_without_reuse_warm_sandboxes_wait_beside_the_lent_ones() -> None:
    """With all ``size`` lent, ``warm`` more are started for the next borrowers (who still
    wait for a slot: ``size`` caps the lent ones); with reuse the warm count within size."""
    with sandlot.SandboxPool(strict(), size=2, warm=2) as pool:
        pool.wait_warm()
        with pool.sandbox(), pool.sandbox():
            _wait_for(lambda: pool.stats()["idle"] == 2)
            assert pool.stats()["total"] == 4 and pool.stats()["lent"] == 2
            third = threading.Thread(target=lambda: pool.map(lambda sb, i: i, [0]))
            third.start()
            time.sleep(0.3)
            assert third.is_alive() and pool.stats()["lent"] == 2  # no third at once
        third.join(10)
        assert not third.is_alive()
    with sandlot.SandboxPool(strict(), size=2, warm=2, reuse=True) as pool:
        pool.start()  # two borrowers come while the warm ones still start: no more than 2
        threads = [threading.Thread(target=lambda: pool.map(lambda sb, i: i, [0])) for _ in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        pool.wait_warm()
        assert pool.stats()["total"] == 2 and pool.stats()["started"] == 2  # no cold extras
        with pool.sandbox(), pool.sandbox():
            time.sleep(0.3)
            assert pool.stats()["total"] == 2 and pool.stats()["starting"] == 0


def test_map_keeps_input_order_and_feeds_whichever_sandbox_is_free() -> None:
    handled: dict[int, list[int]] = {}
    lock = threading.Lock()

    def work(sb: sandlot.Sandbox, item: int) -> str | None:
        with lock:
            handled.setdefault(_ident(sb), []).append(item)
        delay = 1.5 if item == 0 else 0.05
        return sb.run_code(f"import time\ntime.sleep({delay})\n{item} * 10").value

    with sandlot.SandboxPool(strict(), size=2, warm=2, reuse=True) as pool:
        pool.wait_warm()
        out = pool.map(work, range(10))
    assert out == [str(i * 10) for i in range(10)]
    slow_box = next(box for box, items in handled.items() if 0 in items)
    assert handled[slow_box] == [0]  # while item 0 ran, the other sandbox took all the rest


def test_size_caps_concurrency_and_progress_is_reported() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    seen: list[tuple[int, int]] = []

    def work(sb: sandlot.Sandbox, item: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        sb.run_code("import time\ntime.sleep(0.3)")  # longer than a start: the three overlap
        with lock:
            running -= 1
        return item

    with sandlot.SandboxPool(strict(), size=3) as pool:
        assert pool.map(work, range(12), progress=lambda d, t: seen.append((d, t))) == list(
            range(12)
        )
        assert pool.stats()["total"] <= 3
    assert peak == 3
    assert [d for d, _ in seen] == list(range(1, 13)) and seen[-1] == (12, 12)


def test_a_dead_sandbox_is_replaced_and_its_item_retried_once() -> None:
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def work(sb: sandlot.Sandbox, item: int) -> str | None:
        with lock:
            attempts[item] = attempts.get(item, 0) + 1
            first = attempts[item] == 1
        if (item == 2 and first) or item == 5:  # item 2 dies once, item 5 every time
            sb.run_code("import os\nos._exit(1)")
        return sb.run_code(f"{item}").value

    with sandlot.SandboxPool(strict(), size=2) as pool:
        with pytest.raises(sandlot.PoolMapError) as info:
            pool.map(work, range(8))
        err = info.value
        assert list(err.errors) == [5]
        assert isinstance(err.errors[5], sandlot.SandboxDied) and err.errors[5].cause == "crashed"
        assert err.results == ["0", "1", "2", "3", "4", None, "6", "7"]
        assert attempts[2] == 2 and attempts[5] == 2
        out = pool.map(work, [5, 6], return_exceptions=True)
        assert isinstance(out[0], sandlot.SandboxDied) and out[1] == "6"
        assert all(b.is_alive for b in live_sandboxes())


def test_retired_by_default_kept_with_reuse_and_retired_by_clean_uses_and_idle_time() -> None:
    with sandlot.SandboxPool(strict(), size=1) as pool:
        with pool.sandbox() as sb:
            sb.run_code("state = 'left'")
            first = _ident(sb)
        with pool.sandbox() as sb:
            assert _ident(sb) != first
            assert sb.run_code("state").error is not None  # a fresh interpreter
    with sandlot.SandboxPool(strict(), size=1, reuse=True) as pool:
        with pool.sandbox() as sb:
            sb.run_code("state = 'kept'")
            first = _ident(sb)
        with pool.sandbox(clean=True) as sb:
            assert _ident(sb) == first and sb.run_code("state").value == "'kept'"
        with pool.sandbox() as sb:
            assert _ident(sb) != first
            assert sb.run_code("state").error is not None  # clean retired the last one
    with sandlot.SandboxPool(strict(), size=1, reuse=True, max_uses=2) as pool:
        ids = []
        for _ in range(4):
            with pool.sandbox() as sb:
                ids.append(_ident(sb))
        assert ids[0] == ids[1] != ids[2] == ids[3]
    with sandlot.SandboxPool(strict(), size=1, reuse=True, max_idle=0.2) as pool:
        with pool.sandbox() as sb:
            before = _ident(sb)
        time.sleep(0.4)
        with pool.sandbox() as sb:
            assert _ident(sb) != before


def test_shutdown_leaves_nothing_running_even_after_an_error() -> None:
    def boom(sb: sandlot.Sandbox, item: int) -> None:
        sb.exec("bash", "-c", "sleep 600 &")
        raise ValueError(f"user code failed on {item}")

    pool = sandlot.SandboxPool(strict(), size=3)
    with pytest.raises(sandlot.PoolMapError, match="user code failed"), pool:
        pool.map(boom, range(6))
    assert live_sandboxes() == []
    assert pool.stats()["total"] == 0
    with pytest.raises(sandlot.SandboxError, match="closed"), pool.sandbox():
        pass


def test_bad_pool_arguments_are_config_errors() -> None:
    with pytest.raises(sandlot.ConfigError, match="warm"):
        sandlot.SandboxPool(strict(), size=2, warm=3)
    with pytest.raises(sandlot.ConfigError, match="size"):
        sandlot.SandboxPool(strict(), size=0)
    with pytest.raises(sandlot.ConfigError, match="max_uses=3 needs reuse=True"):
        sandlot.SandboxPool(strict(), max_uses=3)


def test_async_pool() -> None:
    async def main() -> list[str | None]:
        async with sandlot.AsyncSandboxPool(strict(), size=2, warm=1) as pool:
            await pool.wait_warm()
            async with pool.sandbox() as sb:
                assert (await sb.run_code("6 * 7")).value == "42"

            async def square(sb: sandlot.AsyncSandbox, n: int) -> str | None:
                return (await sb.run_code(f"{n} ** 2")).value

            return await pool.map(square, range(5))

    assert asyncio.run(main()) == ["0", "1", "4", "9", "16"]
    assert live_sandboxes() == []


class _CountingBackend(LocalBackend):
    """The local backend, counting the starts under way at once."""

    def __init__(self, background_starts: int | None) -> None:
        super().__init__()
        self.background_starts = background_starts  # type: ignore[assignment]
        self.now = self.peak = 0

    async def launch(self, config: sandlot.SandboxConfig, init: dict[str, Any]) -> LocalLaunch:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await super().launch(config, init)
        finally:
            self.now -= 1


@pytest.mark.parametrize("limit", [2, None])
def test_refills_while_sandboxes_are_lent_start_background_starts_at_a_time(
    limit: int | None,
) -> None:
    """Six borrowers take the six warm sandboxes at once: the six refills go two at a time
    on a backend whose starts cost this machine's CPU, all at once on one without a limit.
    The first fill is never held back."""

    async def main() -> tuple[int, int]:
        backend = _CountingBackend(limit)
        async with sandlot.AsyncSandboxPool(strict(), size=6, warm=6, backend=backend) as pool:
            await pool.wait_warm()
            first, backend.peak = backend.peak, 0
            async with contextlib.AsyncExitStack() as lent:
                for _ in range(6):  # each borrow starts a refill
                    await lent.enter_async_context(pool.sandbox())
                await pool.wait_warm()
            return first, backend.peak

    first, refills = asyncio.run(main())
    assert first == 6
    assert refills == (2 if limit == 2 else 6)
