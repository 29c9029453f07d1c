"""Forged cell results and forged tool lists: what reaches an MCP client stays bounded.

A cell's outputs and a served library's tool list both come from inside a
sandbox. Whatever they hold (megabytes of text, hundreds of images, tool names
that are not names, schemas that are not schemas), the reply a client gets is
small and well formed.
"""

from __future__ import annotations

import base64
import io
import json

from mcp.types import ImageContent, TextContent
from PIL import Image

from sandlot.mcp.render import RenderLimits, render_execution
from sandlot.mcp.served import MAX_TOOLS, checked_tools, result_text
from sandlot.notebook import Execution, ExecutionError, Result


def _png(size: tuple[int, int]) -> str:
    out = io.BytesIO()
    Image.effect_noise(size, 80).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def _total_text(blocks: list[TextContent | ImageContent]) -> int:
    return sum(len(b.text) for b in blocks if isinstance(b, TextContent))


def test_huge_text_outputs_are_cut_to_the_budgets() -> None:
    ex = Execution(
        stdout="o" * 5_000_000,
        stderr="e" * 5_000_000,
        results=[Result({"text/plain": "v" * 5_000_000}, is_main_result=True)] * 500,
        error=ExecutionError("E" * 900, "x" * 1_000_000, "t" * 5_000_000),
        cell_index=0,
    )
    blocks = render_execution(ex, "sid", "/nb.ipynb")
    limits = RenderLimits()
    budget = limits.stdout + limits.stderr + limits.result * (limits.results + 1) + limits.traceback
    assert _total_text(blocks) < budget + 10_000
    assert "/nb.ipynb" in blocks[0].text  # type: ignore[union-attr]


def test_many_images_are_capped_in_count_and_bytes() -> None:
    picture = _png((600, 600))
    ex = Execution(results=[Result({"image/png": picture}) for _ in range(200)], cell_index=1)
    blocks = render_execution(ex, "sid", limits=RenderLimits(results=200))
    images = [b for b in blocks if isinstance(b, ImageContent)]
    assert 0 < len(images) <= RenderLimits().images
    assert sum(len(i.data) for i in images) <= RenderLimits().image_bytes
    assert "not shown" in blocks[0].text  # type: ignore[union-attr]


def test_forged_image_in_a_result_becomes_a_note() -> None:
    ex = Execution(results=[Result({"image/png": "PHNjcmlwdD4=", "text/plain": "x"})])
    blocks = render_execution(ex, "sid")
    assert len(blocks) == 1
    assert "image/png output not shown" in blocks[0].text  # type: ignore[union-attr]


def test_forged_tool_lists_keep_only_well_formed_tools() -> None:
    good = {"name": "lib_f", "description": "ok", "inputSchema": {"type": "object"}}
    forged: list[object] = [
        good,
        dict(good),  # a duplicate
        {"name": "has space", "inputSchema": {"type": "object"}},
        {"name": "ünïcode", "inputSchema": {"type": "object"}},
        {"name": "x" * 500, "inputSchema": {"type": "object"}},
        {"name": 7},
        "not a dict",
        None,
        {"name": "lib_string_schema", "inputSchema": "rm -rf /"},
        {"name": "lib_array_schema", "inputSchema": {"type": "array"}},
        {
            "name": "lib_big",
            "description": "d" * 1_000_000,
            "inputSchema": {
                "type": "object",
                "properties": {f"p{i}": {"type": "string"} for i in range(20_000)},
            },
        },
    ]
    tools = {t.name: t for t in checked_tools(forged)}
    assert set(tools) == {"lib_f", "lib_string_schema", "lib_array_schema", "lib_big"}
    assert tools["lib_string_schema"].input_schema == {"type": "object"}
    assert tools["lib_array_schema"].input_schema == {"type": "object"}
    assert tools["lib_big"].input_schema == {"type": "object"}
    assert len(tools["lib_big"].description or "") <= 4_000
    assert checked_tools("not a list") == []
    many = [{"name": f"t{i}", "inputSchema": {"type": "object"}} for i in range(10 * MAX_TOOLS)]
    assert len(checked_tools(many)) == MAX_TOOLS


def test_served_results_are_bounded_text() -> None:
    assert len(result_text("r" * 10_000_000)) < 110_000
    assert json.loads(result_text({"a": [1, 2]})) == {"a": [1, 2]}
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert len(result_text(deep)) < 110_000  # too deep for json: its repr, cut
