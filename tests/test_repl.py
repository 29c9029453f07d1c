"""The persistent interpreter: state, values, errors, output, timeouts."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys

import pytest
from conftest import strict

import sandlot


def test_state_persists_and_last_expression_is_returned(sb: sandlot.Sandbox) -> None:
    r = sb.run_code("import math\nx = 41\nprint('hi')\nx + 1")
    assert r.stdout == "hi\n"
    assert r.value == "42"
    assert r.error is None and r.ok
    assert sb.run_code("x").value == "41"
    assert sb.run_code("y = 3").value is None
    assert sb.run_code("[x, y]").value == "[41, 3]"


def test_exception_comes_back_with_traceback(sb: sandlot.Sandbox) -> None:
    r = sb.run_code("def f():\n    return 1 / 0\nf()")
    assert r.error is not None
    assert r.error.name == "ZeroDivisionError"
    assert r.error.value == "division by zero"
    assert "return 1 / 0" in r.error.traceback
    assert "sandlot_driver" not in r.error.traceback
    with pytest.raises(sandlot.CodeError, match="ZeroDivisionError"):
        sb.run_code("1/0", raise_on_error=True)
    bad = sb.run_code("def (:")
    assert bad.error is not None and bad.error.name == "SyntaxError"


def test_stderr_subprocess_output_and_top_level_await(sb: sandlot.Sandbox) -> None:
    r = sb.run_code("import sys, os\nsys.stderr.write('warn\\n')\nos.system('echo from-child')")
    assert r.stderr == "warn\n"
    assert "from-child" in r.stdout
    r = sb.run_code("import asyncio\nawait asyncio.sleep(0.01)\n'awaited'")
    assert r.value == "'awaited'"


def test_ten_megabytes_of_stdout_are_truncated_and_host_memory_stays_bounded() -> None:
    limit = 100_000
    with sandlot.Sandbox(strict(max_output_bytes=limit)) as box:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = box.run_code("print('x' * 10_000_000)\nprint('y' * 10_000_000)")
        p = box.exec("bash", "-c", "head -c 10000000 /dev/zero | tr '\\0' 'z'")
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert r.truncated and p.truncated
    assert r.stdout.startswith("x" * 1000)
    assert "output truncated at 100000 bytes" in r.stdout
    assert len(r.stdout.encode()) < limit + 200
    assert len(p.stdout) == limit
    assert grown_kb < 8_000  # the 20 MB never reached the host


def test_infinite_loop_is_interrupted_and_the_sandbox_stays_usable(sb: sandlot.Sandbox) -> None:
    sb.run_code("kept = 'state'")
    r = sb.run_code("while True:\n    pass", timeout=1)
    assert r.timed_out
    assert r.error is not None and r.error.name == "TimeoutError"
    assert "interpreter is alive" in r.error.value
    r = sb.run_code("import time\ntime.sleep(60)", timeout=0.5)
    assert r.timed_out
    assert sb.run_code("kept").value == "'state'"
    with pytest.raises(sandlot.CallTimeout):
        sb.run_code("while True: pass", timeout=0.5, raise_on_error=True)


IGNORING_HOST = """
import signal, sandlot
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # as this process was started
with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")) as sb:
    sb.run_code("kept = 'state'")
    r = sb.run_code("import time\\ntime.sleep(30)", timeout=1)
    print(r.timed_out, r.error.name if r.error else None, sb.run_code("kept").value)
    print(sb.exec("sh", "-c", "grep SigIgn /proc/self/status").stdout.strip())
"""


def test_a_host_started_with_sigint_ignored_still_interrupts_cells() -> None:
    """A background job of a script, nohup, some CI runners: SIGINT ignored, passed on by exec."""
    done = subprocess.run(
        [sys.executable, "-c", IGNORING_HOST],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "True TimeoutError 'state'"  # interrupted, not killed: the state is kept
    ignored = int(second.split()[1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1))  # the sandbox's processes start default


def test_code_that_ignores_the_interrupt_is_killed() -> None:
    with sandlot.Sandbox(strict(interrupt_grace=0.5)) as box:
        code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
        with pytest.raises(sandlot.SandboxDied) as info:
            box.run_code(code, timeout=0.5)
        assert info.value.cause == "timeout"
        assert "ignored the interrupt" in str(info.value)
        assert not box.is_alive
        with pytest.raises(sandlot.SandboxDied):
            box.run_code("1")


def test_host_tool_called_from_sixteen_threads() -> None:
    import threading
    import time

    seen_threads: set[int] = set()

    def square(n: int) -> int:
        seen_threads.add(threading.get_ident())
        time.sleep(0.2)
        return n * n

    with sandlot.Sandbox(strict(), tools={"square": square}) as box:
        r = box.run_code(
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(16) as ex:\n"
            "    out = list(ex.map(square, range(16)))\n"
            "out"
        )
        assert r.error is None, r.error
        assert r.value == repr([n * n for n in range(16)])
        assert len(seen_threads) > 1  # the host served them concurrently


def test_tool_errors_reach_the_code_as_catchable_exceptions(sb: sandlot.Sandbox) -> None:
    def fail(msg: str) -> str:
        raise RuntimeError(f"upstream said {msg}")

    sb.register_tool("llm_query", lambda prompt: f"answer to {prompt}")
    sb.register_tool("fail", fail)
    assert sb.run_code("llm_query('hi')").value == "'answer to hi'"
    r = sb.run_code("try:\n    fail('no')\nexcept ToolError as e:\n    caught = str(e)\ncaught")
    assert r.value is not None and "upstream said no" in r.value
    r = sb.run_code("llm_query(object())")
    assert r.error is not None and r.error.name == "TypeError"
    assert "JSON" in r.error.value


def test_async_tool_and_async_sandbox() -> None:
    import asyncio

    async def main() -> tuple[str | None, list[str]]:
        async def lookup(key: str) -> str:
            await asyncio.sleep(0.01)
            return key.upper()

        async with sandlot.AsyncSandbox(strict(), tools={"lookup": lookup}) as box:
            stream = box.exec_stream("bash", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")

            async def collect() -> list[str]:
                return [chunk.text async for chunk in stream]

            chunks_task = asyncio.create_task(collect())
            r = await box.run_code("lookup('abc')")  # the REPL runs while a process streams
            chunks = await chunks_task
            assert stream.returncode == 0
            return r.value, chunks

    value, chunks = asyncio.run(main())
    assert value == "'ABC'"
    assert "".join(chunks) == "1\n2\n3\n"
    assert len(chunks) == 3  # each line arrived as it was produced
