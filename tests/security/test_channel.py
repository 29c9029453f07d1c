"""Attacks on the channel: sandboxed code forges frames; the host stays bounded and answers.

Sandboxed code shares its process with the driver, so it can write any bytes to
the channel (``CURRENT.sock``) or replace any driver function. Each test forges
something from inside and checks one promise of the host: it kills that sandbox
with ``cause="protocol"`` and a message, keeps its own reader and every other
sandbox alive, holds output to the configured limit, buffers a bounded amount,
and never hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict

import sandlot

FORGE = """
import json, struct
import sandlot_driver.server as _srv
def raw(header_bytes, payload=b""):
    with _srv.CURRENT.send_lock:
        _srv.CURRENT.sock.sendall(struct.pack("!II", len(header_bytes), len(payload))
                                  + header_bytes + payload)
def frame(header, payload=b""):
    raw(json.dumps(header).encode(), payload)
"""


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def bystander() -> Iterator[sandlot.Sandbox]:
    """A second sandbox of the same host, which must not notice the attacks."""
    with sandlot.Sandbox(strict(memory_mb=256)) as box:
        box.run_code("x = 1")
        yield box


def _dies_of_protocol(sb: sandlot.Sandbox, code: str, match: str) -> None:
    started = time.monotonic()
    with pytest.raises(sandlot.SandboxDied) as info:
        sb.run_code(code, timeout=20)
    assert info.value.cause == "protocol", info.value
    assert match in str(info.value)
    assert time.monotonic() - started < 10  # it did not wait for a timeout to notice
    assert not sb.is_alive


@pytest.mark.parametrize(
    ("forgery", "match"),
    [
        ('frame({"t": "res", "id": [1], "ok": True})', "shape"),  # once stopped the reader
        ('frame({"t": "chunk", "id": "1"})', "shape"),
        ('frame({"t": "ret", "id": 1, "ok": True})', "may not send"),
        ('frame({"t": "ready", "ok": True})', "after start-up"),
        ('raw(b"[1, 2]")', "not a JSON object"),
        ('raw(b"{" * 50)', "not JSON"),
        ('raw(json.dumps({"t": "chunk", "pad": "x" * (2 << 20)}).encode())', "bounds"),
        ('frame({"t": "chunk", "id": 1, "parts": 2})', "more than one frame"),
        (
            'frame({"t": "res", "id": _srv.CURRENT.running_cell, "ok": True, "parts": 2});'
            ' frame({"t": "res", "id": 1})',
            "continu",
        ),
        (
            'frame({"t": "res", "id": _srv.CURRENT.running_cell, "ok": True, "parts": 100})',
            "allows",
        ),
        ('frame({"t": "chunk", "id": 1}, b"x" * (2 << 20))', "bounds"),
        ('frame({"t": "call", "id": 1, "name": "f", "vlen": 99}, b"{}")', "vlen"),
    ],
)
def test_a_malformed_message_kills_only_that_sandbox(
    forgery: str, match: str, bystander: sandlot.Sandbox
) -> None:
    """A forged frame ends its sandbox with cause 'protocol'; the host reader and others live."""
    with sandlot.Sandbox(strict(memory_mb=256)) as sb:
        sb.run_code(FORGE)
        _dies_of_protocol(sb, forgery + "\nimport time; time.sleep(30)", match)
    assert bystander.run_code("x + 1").value == "2"


def test_a_forged_reply_cannot_carry_output_past_the_limit() -> None:
    """Forged output over a 1 KiB limit: cut to the limit, or the sandbox killed if too long.

    A reply may be at most about twice the output limit plus 1 MiB; once, a forged
    reply carried 48 MiB of stdout past a 1 KiB limit into the host's result.
    """
    config = strict(memory_mb=512, max_output_bytes=1024)
    with sandlot.Sandbox(config) as sb:
        sb.run_code(FORGE)
        big_reply = (
            "_srv.CURRENT.send({'t': 'res', 'id': _srv.CURRENT.running_cell, 'ok': True,"
            " 'out': 48 << 20, 'err': 0, 'val': None, 'error': None, 'truncated': False},"
            " b'A' * (48 << 20))\nimport time; time.sleep(30)"
        )
        _dies_of_protocol(sb, big_reply, "allows")
    with sandlot.Sandbox(config) as sb:
        sb.run_code(FORGE)
        r = sb.run_code(
            "rid = _srv.CURRENT.running_cell\n"
            "big = b'A' * (900 << 10)\n"
            "_srv.CURRENT.send({'t': 'res', 'id': rid, 'ok': True, 'out': len(big), 'err': 0,"
            " 'val': 3, 'error': None, 'truncated': False}, big + b'abc')\n"
            "del big"
        )
        assert len(r.stdout) <= 1024 + 200 and r.truncated
        assert r.value == "abc"
        # Process output forged past the limit, through the driver's own pump.
        sb.run_code(
            "import sandlot_driver.procs as _p\n"
            "def pump(self, rid, limit, send, timeout):\n"
            "    for _ in range(48):\n"
            "        send({'t': 'chunk', 'id': rid, 'stream': 'stdout'}, b'B' * (1 << 20))\n"
            "    self.popen.wait()\n"
            "    return {'returncode': 0, 'killed': None, 'dropped': 0}\n"
            "_p.Process.pump = pump"
        )
        p = sb.exec("true")
        assert len(p.stdout) == 1024 and p.truncated
        assert sb.run_code("1 + 1").value == "2"


def test_a_reply_whose_lengths_lie_kills_the_sandbox() -> None:
    """run_code's lengths must add up to its payload; a forged one is a protocol violation."""
    with sandlot.Sandbox(strict(memory_mb=256)) as sb:
        sb.run_code(FORGE)
        code = (
            "frame({'t': 'res', 'id': _srv.CURRENT.running_cell, 'ok': True, 'out': 10**9,"
            " 'err': 0, 'val': None, 'error': None, 'truncated': False}, b'x')\n"
            "import time; time.sleep(30)"
        )
        _dies_of_protocol(sb, code, "do not add up")


def test_process_output_over_a_frame_returns() -> None:
    """70 MB of stdout with a limit above the old 64 MiB frame cap comes back; no hang."""
    with sandlot.Sandbox(strict(memory_mb=1024, max_output_bytes=80 << 20)) as sb:
        p = sb.exec("python", "-c", "import sys; sys.stdout.write('x' * 70_000_000)", timeout=60)
        assert p.returncode == 0 and len(p.stdout) == 70_000_000 and not p.truncated


def test_a_sandbox_that_stops_reading_cannot_make_the_host_buffer_its_answers() -> None:
    """200 calls to a tool that answers 1 MiB each, and the sandbox reads none of the answers.

    Once this made the host hold 191 MB; now at most a few calls' answers wait in
    the host's send buffer and the rest of the calls wait their turn.
    """
    answered = 0

    def big(_: int) -> str:
        nonlocal answered
        answered += 1
        return "y" * (1 << 20)

    with sandlot.Sandbox(strict(memory_mb=256), tools={"big": big}) as sb:
        sb.run_code(FORGE)
        before = _rss_mb()
        sb.run_code(
            "import sandlot_driver.protocol as _proto, time, threading\n"
            "_stop = threading.Event()\n"
            "def _never(sock, size):\n"
            "    _stop.wait()\n"
            "    return None\n"
            "_proto._recv_exact = _never\n"
            "_srv.CURRENT.sock.setblocking(True)\n"
            "for i in range(200):\n"
            "    frame({'t': 'call', 'id': 10**6 + i, 'name': 'big', 'value': [[i], {}]})\n"
        )
        time.sleep(3)
        grown = _rss_mb() - before
        assert answered < 100, answered  # the rest wait for the sandbox to read
        assert grown < 100, f"the host grew by {grown:.0f} MB"
    # The sandbox ended cleanly although its calls were still waiting.


def test_one_sandbox_flooding_host_calls_does_not_starve_another() -> None:
    """A sandbox with 1000 threads calling a slow tool; another's single call still runs soon.

    Before the per-sandbox bound, the flood took every worker thread and the other
    sandbox's 0.25 s call took 3 s.
    """

    def slow() -> int:
        time.sleep(0.25)
        return 1

    tools = {"slow": slow}
    with (
        sandlot.Sandbox(strict(memory_mb=1024, max_processes=1200), tools=tools) as flood,
        sandlot.Sandbox(strict(memory_mb=256), tools=tools) as victim,
    ):
        flood.run_code(
            "import threading\n"
            "ts = [threading.Thread(target=slow) for _ in range(1000)]\n"
            "for t in ts: t.start()"
        )
        time.sleep(0.3)  # the flood is under way
        r = victim.run_code("import time\nt = time.monotonic()\nslow()\ntime.monotonic() - t")
        assert r.error is None, r.error
        assert float(r.value or "99") < 1.0
        # The flood is still queued (1000 calls at 16 at a time); ending it ends its calls.


def test_a_huge_host_call_crosses_as_payload() -> None:
    """40 MB of prompts in one host call crosses, as payload bytes rather than JSON."""
    got: list[int] = []

    def batched(prompts: list[str]) -> list[int]:
        got.append(sum(map(len, prompts)))
        return [len(p) for p in prompts]

    with sandlot.Sandbox(strict(memory_mb=1024), tools={"batched": batched}) as sb:
        r = sb.run_code("r = batched(['p' * 400_000] * 100)\n(len(r), sum(r))")
        assert r.error is None, r.error
        assert r.value == "(100, 40000000)" and got == [40_000_000]


def test_calls_run_concurrently_up_to_the_bound_while_the_rest_wait() -> None:
    """Calls beyond the per-sandbox bound are not refused: they wait, and all finish."""
    lock = threading.Lock()
    running = peak = 0

    def tool() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return 1

    with sandlot.Sandbox(strict(memory_mb=512), tools={"tool": tool}) as sb:
        r = sb.run_code(
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(64) as ex:\n"
            "    total = sum(ex.map(lambda _: tool(), range(128)))\n"
            "total"
        )
        assert r.error is None, r.error
        assert r.value == "128"
        assert 1 < peak <= 16


def test_a_value_cannot_reference_its_payload_more_than_once() -> None:
    """700 references to one 1 MiB slice in a forged call: refused, the host stays small.

    Each reference once copied the slice: a 1 MiB message cost the host 700 MiB.
    """
    with sandlot.Sandbox(strict(memory_mb=256), tools={"echo": lambda *a: len(a)}) as sb:
        sb.run_code(FORGE)
        before = _rss_mb()
        r = sb.run_code(
            "import threading, time\n"
            "ref = {'$b': [0, (1 << 20) - 1]}\n"
            "_srv.CURRENT.calls[77] = p = _srv._Pending()\n"
            "frame({'t': 'call', 'id': 77, 'name': 'echo', 'value': [[ref] * 700, {}]},"
            " b'z' * ((1 << 20) - 1))\n"
            "answer, _ = p.box.get(timeout=20)\n"
            "(answer.get('ok'), answer.get('error', {}).get('name'))"
        )
        assert r.error is None, r.error
        assert r.value == "(False, 'MalformedValue')"
        assert _rss_mb() - before < 100
        assert sb.run_code("echo(1, 2)").value == "2"


def test_a_value_structure_past_the_cap_is_a_violation() -> None:
    """A call whose value JSON claims more than the host parses kills the sandbox."""
    with sandlot.Sandbox(strict(memory_mb=512)) as sb:
        sb.run_code(FORGE)
        code = (
            "blob = b'[' + b'[],' * (3 << 20) + b'[]]'\n"
            "head = {'t': 'call', 'id': 5, 'name': 'nosuchtool', 'vlen': len(blob)}\n"
            "_srv.CURRENT.send(head, blob)\n"
            "import time; time.sleep(30)"
        )
        _dies_of_protocol(sb, code, "vlen")


def test_exec_returns_by_its_timeout_even_if_the_sandbox_never_answers() -> None:
    """The driver kills a command at its timeout; if a forged driver does not, the host does."""
    with sandlot.Sandbox(strict(memory_mb=256, interrupt_grace=1)) as sb:
        sb.run_code(
            "import sandlot_driver.procs as _p, threading\n"
            "def pump(self, rid, limit, send, timeout):\n"
            "    threading.Event().wait()\n"
            "_p.Process.pump = pump"
        )
        started = time.monotonic()
        with pytest.raises(sandlot.SandboxDied) as info:
            sb.exec("sleep", "100", timeout=1)
        assert info.value.cause == "timeout" and "did not end it" in str(info.value)
        assert time.monotonic() - started < 10


def test_a_file_operation_the_sandbox_never_answers_ends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver that goes silent on a file operation is ended after the idle bound."""
    monkeypatch.setattr(sandlot.sandbox, "FILE_OP_IDLE", 2.0)  # 120 s by default
    with sandlot.Sandbox(strict(memory_mb=256)) as sb:
        sb.run_code(
            "import sandlot_driver.server as _srv, threading\n"
            "_srv.Server.run_file_op = lambda self, rid, header, payload: threading.Event().wait()"
        )
        started = time.monotonic()
        with pytest.raises(sandlot.SandboxDied) as info:
            sb.files.exists("anything")
        assert info.value.cause == "timeout" and "sent nothing for 2s" in str(info.value)
        assert time.monotonic() - started < 10


def test_invented_error_names_do_not_grow_the_host() -> None:
    """Failed replies with ever new error names map to FileOperationError; nothing is cached."""
    known = len(sandlot.errors._FILE_ERRORS)
    with sandlot.Sandbox(strict(memory_mb=256)) as sb:
        sb.run_code(
            "import sandlot_driver.server as _srv, itertools\n"
            "_n = itertools.count()\n"
            "def _fail(self, rid, header, payload):\n"
            "    name = 'E%d' % next(_n) + 'x' * 50000\n"
            "    self.send({'t': 'res', 'id': rid, 'ok': False,"
            " 'error': {'name': name, 'value': 'no', 'traceback': ''}})\n"
            "_srv.Server.run_file_op = _fail"
        )
        for _ in range(20):
            with pytest.raises(sandlot.FileOperationError) as info:
                sb.files.exists("x")
            assert type(info.value) is sandlot.FileOperationError
    assert len(sandlot.errors._FILE_ERRORS) == known


def test_a_huge_exception_message_comes_back_clipped_and_the_sandbox_lives() -> None:
    """``raise ValueError('x' * 10**6)``: once the reply was too big to send, killing the driver."""
    with sandlot.Sandbox(strict(memory_mb=256, max_output_bytes=1024)) as sb:
        r = sb.run_code("raise ValueError('x' * 10**6)")
        assert r.error is not None and r.error.name == "ValueError"
        assert "characters cut" in r.error.value and len(r.error.value) < 70_000
        assert sb.run_code("1 + 1").value == "2"


def test_a_listing_with_forged_extra_fields_still_lists() -> None:
    """Extra fields in a forged listing are ignored, not passed to the host's constructors."""
    with sandlot.Sandbox(strict(memory_mb=256)) as sb:
        sb.run_code(
            "import sandlot_driver.fileops as _f\n"
            "_f.list_dir = lambda path: {'entries': [{'name': 'a', 'type': 'file', 'size': 1,"
            " 'evil': 1}]}"
        )
        assert [(e.name, e.size) for e in sb.files.list()] == [("a", 1)]


def test_honest_cells_with_wide_characters_come_back_cut_not_killed() -> None:
    """Output and value are cut by bytes in the driver, so no honest cell breaks the bounds.

    The value was once cut by characters: 2 million 4-byte characters made a reply
    the host refused as a protocol violation.
    """
    with sandlot.Sandbox(strict(memory_mb=512)) as sb:
        r = sb.run_code("print('x' * 2_000_000)\n'\\U0001F600' * 2_000_000")
        assert r.error is None and r.truncated
        assert r.value is not None and r.value.endswith("...[sandlot: repr truncated]")
        assert len(r.value.encode()) <= (1 << 20) + 200
        r = sb.run_code("import sys\nsys.stdout.buffer.write(b'\\xff' * 3_000_000)")
        assert r.error is None and r.truncated and len(r.stdout.encode()) <= 3 * (1 << 20) + 600
        assert sb.run_code("1 + 1").value == "2"


def test_process_output_on_a_kernels_stream_is_a_violation() -> None:
    # The protocol lets a kernel's messages ride a "kernel" stream; a process has only
    # stdout and stderr, and callers index their output by stream name.
    with sandlot.Sandbox(strict(memory_mb=256)) as sb:
        sb.run_code(
            "import sandlot_driver.procs as _p\n"
            "_pump = _p.Process.pump\n"
            "def pump(self, rid, limit, send, timeout):\n"
            "    send({'t': 'chunk', 'id': rid, 'stream': 'kernel'}, b'forged')\n"
            "    return _pump(self, rid, limit, send, timeout)\n"
            "_p.Process.pump = pump\n"
        )
        with pytest.raises(sandlot.SandboxDied) as info:
            sb.exec("true")
        assert info.value.cause == "protocol" and "'kernel'" in str(info.value)
