"""SandlotInterpreter holds a bounded amount of what the sandbox sends it.

Values reach the host through ``_sandlot_dspy_receive``, a host function any
code in the sandbox can call as often as it likes and with what it likes. Only
the last value of a cell is ever read (the SUBMIT or last-expression value), so
the host keeps only that one, and refuses one over the sandbox's
``max_output_bytes``: the code sees a ``ToolError``, the LM an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import strict
from dspy.primitives.code_interpreter import CodeExecutionError, FinalOutput

from sandlot.integrations.dspy import SandlotInterpreter

MIB = 1 << 20


def rss_mb() -> float:
    """The host's resident memory now, in MiB (a tool the sandboxed code calls)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_many_values_in_one_cell_do_not_pile_up_on_the_host() -> None:
    # 300 values of 1 MiB (each within max_output_bytes) in one cell: kept
    # until the cell ends, they would be 300 MiB of host memory when the cell
    # measures it; kept one at a time, a few MiB.
    with SandlotInterpreter({"rss_mb": rss_mb}, config=strict(memory_mb=512)) as interp:
        grown = interp.execute(
            "before = rss_mb()\n"
            "blob = b'x' * (1 << 20)\n"
            "for _i in range(300):\n"
            "    _sandlot_dspy_receive(blob)\n"
            "rss_mb() - before\n"
        )
        assert isinstance(grown, float)
        assert grown < 64, f"the host grew by {grown:.0f} MiB during the cell"
        # The normal paths still give the last value.
        assert interp.execute("_sandlot_dspy_receive(b'early')\n[1, 2, 3]") == [1, 2, 3]
        out = interp.execute("_sandlot_dspy_receive(b'early')\nSUBMIT('the answer')")
        assert isinstance(out, FinalOutput)
        assert out.output == {"output": "the answer"}
        assert interp.execute("x = b'y' * (1 << 20)\nx") == b"y" * MIB  # at the limit


def test_a_value_over_max_output_bytes_becomes_an_error_not_host_memory() -> None:
    limit = 64 << 10
    with SandlotInterpreter(config=strict(memory_mb=512, max_output_bytes=limit)) as interp:
        # SUBMIT of too large a value: an error the LM sees, naming the limit.
        with pytest.raises(CodeExecutionError, match="max_output_bytes"):
            interp.execute("SUBMIT('x' * 100_000)")
        assert interp._received is None
        # Many small parts count too.
        with pytest.raises(CodeExecutionError, match="max_output_bytes"):
            interp.execute("SUBMIT(list(range(100_000)))")
        # A forged call straight to the host function: refused, nothing kept.
        with pytest.raises(CodeExecutionError, match="max_output_bytes"):
            interp.execute("_sandlot_dspy_receive(b'z' * 100_000)")
        assert interp._received is None
        # Too large a last expression: its repr as the driver cut it, not the value.
        shown = interp.execute("b'q' * 100_000")
        assert isinstance(shown, str)
        assert len(shown) < limit + 100
        # The session goes on, and values within the limit arrive whole.
        assert interp.execute("b'q' * 1000") == b"q" * 1000
        out = interp.execute("SUBMIT({'n': 5})")
        assert isinstance(out, FinalOutput)
        assert out.output == {"output": {"n": 5}}
