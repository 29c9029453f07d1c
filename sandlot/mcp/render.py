"""What a model reads back from a cell: one text block, then the cell's images.

An MCP client puts a tool's reply into the model's context, and clients cut or
refuse long replies (Claude Code warns past about 25,000 tokens). So the text
is a summary with fixed budgets: the start and end of stdout and stderr, the
cell's value, the end of a traceback, and a line saying what was cut and that
the whole output is in the notebook file. Images come after the text, each
bounded by :mod:`sandlot.mcp.images`, at most a few per reply.

The text says where the cell stands: its index in the notebook (for
``edit_cell``), and when it is still running, which tool gets the rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mcp.types import ImageContent, TextContent

from ..notebook import Execution, Result
from .images import IMAGE_MIME_TYPES, ImageLimits, image_content

# Text MIME types worth showing, best first, when an output has no image.
TEXT_MIME_TYPES = ("text/markdown", "text/plain", "application/json", "text/latex")
# IPython's text/plain for an object without a text form: "<IPython.core.display.HTML object>".
BARE_REPR = re.compile(r"<[\w.]+ object( at 0x[0-9a-f]+)?>")

Block = TextContent | ImageContent


@dataclass(frozen=True)
class RenderLimits:
    """Budgets, in characters, for each part of a cell's reply, and for its images."""

    stdout: int = 12_000
    stderr: int = 6_000
    result: int = 4_000  # each rich output's text
    traceback: int = 6_000
    results: int = 20  # rich outputs described
    images: int = 6  # images per reply
    image_bytes: int = 4 << 20  # base64 characters of all images in one reply
    image: ImageLimits = field(default_factory=ImageLimits)


def clip(text: str, limit: int, where: str, keep: str = "both") -> tuple[str, bool]:
    """``text`` within ``limit`` characters, keeping its start and end (or only ``keep``).

    Returns the text and whether anything was cut; the cut is marked in place.
    """
    if len(text) <= limit:
        return text, False
    cut = len(text) - limit
    marker = f"\n[... {cut:,} characters cut; all of it is in {where} ...]\n"
    if keep == "end":
        return marker.lstrip("\n") + text[-limit:], True
    if keep == "start":
        return text[:limit] + marker.rstrip("\n"), True
    head = limit // 3
    return text[:head] + marker + text[len(text) - (limit - head) :], True


def _result_text(result: Result) -> str | None:
    """The best text form of a rich output, if it has one."""
    for mime in TEXT_MIME_TYPES:
        value = result.data.get(mime)
        if isinstance(value, str):
            if mime == "text/plain" and len(result.data) > 1 and BARE_REPR.fullmatch(value):
                return None  # say which richer forms there are instead
            return value
        if value is not None and mime == "application/json":
            return json.dumps(value, indent=1)[:100_000]
    return None


class CellReply:
    """Builds the blocks for one :class:`Execution`."""

    def __init__(self, limits: RenderLimits, where: str) -> None:
        self.limits = limits
        self.where = where
        self.lines: list[str] = []
        self.images: list[ImageContent] = []
        self.image_room = limits.image_bytes
        self.cut = False

    def section(self, title: str, text: str, limit: int, keep: str = "both") -> None:
        if not text:
            return
        shown, cut = clip(text.rstrip("\n"), limit, self.where, keep)
        self.cut = self.cut or cut
        self.lines += [f"{title}:", shown]

    def image(self, result: Result) -> bool:
        """Add the output's image, or a note about it; False if it has none."""
        for mime in IMAGE_MIME_TYPES:
            payload = result.data.get(mime)
            if payload is None:
                continue
            if len(self.images) >= self.limits.images:
                self.lines.append(f"[{mime} output not shown: over {self.limits.images} images]")
                return True
            shown = image_content(payload, mime, self.limits.image, self.where)
            if isinstance(shown, str):
                self.lines.append(shown)
            elif len(shown.data) > self.image_room:
                self.lines.append(
                    f"[{mime} output not shown: the images in this reply already fill "
                    f"{self.limits.image_bytes / 2**20:.0f} MiB; it is in {self.where}]"
                )
            else:
                self.image_room -= len(shown.data)
                self.images.append(shown)
                self.lines.append(f"[image {len(self.images)}: {mime}, shown below]")
            return True
        return False

    def result(self, result: Result) -> None:
        if self.image(result):
            return
        text = _result_text(result)
        title = "value" if result.is_main_result else "display"
        if text is None:
            kinds = ", ".join(result.formats()) or "nothing"
            self.lines.append(f"[{title} output ({kinds}) not shown as text; see {self.where}]")
            return
        self.section(title, text, self.limits.result, keep="start")


def render_exec(result: dict[str, Any]) -> str:
    """The text of a filesystem-mode command's result: exit status, then its output."""
    lines = [f"exit status {result.get('returncode')}"]
    if result.get("timed_out"):
        lines[0] += " (timed out: the command was killed)"
    for stream in ("stdout", "stderr"):
        text = result.get(stream)
        if isinstance(text, str) and text:
            lines += [f"{stream}:", text.rstrip("\n")]
    if result.get("truncated"):
        lines.append("[output past the session's limit was dropped]")
    return "\n".join(lines)


def _status_line(ex: Execution, session_id: str) -> str:
    where = f"code cell {ex.cell_index}" if ex.cell_index is not None else "cell"
    count = f" [{ex.execution_count}]" if ex.execution_count is not None else ""
    if not ex.done:
        after = f" after {ex.duration:.1f} s" if ex.duration else ""  # partial results may lack it
        return f"{where}{count} still running{after} (session {session_id})"
    if ex.restarted:
        state = "did not stop when interrupted, so the kernel was restarted (its state is gone)"
    elif ex.timed_out:
        state = "ran out of time and was interrupted"
    elif ex.interrupted:
        state = "was interrupted"
    elif ex.error is not None:
        state = "raised an error"
    else:
        state = "finished"
    return f"{where}{count} {state} after {ex.duration:.1f} s (session {session_id})"


def render_execution(
    ex: Execution,
    session_id: str,
    where: str = "the notebook file",
    limits: RenderLimits | None = None,
) -> list[Block]:
    """One text block summarising ``ex`` (what ran, what came out, what to do next), then images.

    ``where`` names the notebook file that holds the full output.
    """
    limits = limits or RenderLimits()
    reply = CellReply(limits, where)
    reply.lines.append(_status_line(ex, session_id))
    reply.section("stdout", ex.stdout, limits.stdout)
    reply.section("stderr", ex.stderr, limits.stderr)
    for result in ex.results[: limits.results]:
        reply.result(result)
    if len(ex.results) > limits.results:
        extra = len(ex.results) - limits.results
        reply.lines.append(f"[{extra} more outputs not shown; they are in {where}]")
    if ex.error is not None:
        value, cut = clip(ex.error.value, limits.result, where, keep="start")
        reply.cut = reply.cut or cut
        reply.lines.append(f"error: {ex.error.name}: {value}")
        reply.section("traceback", ex.error.traceback, limits.traceback, keep="end")
    if ex.truncated:
        reply.lines.append(
            "[the kernel's output passed the session's output limit; what came after it was "
            "dropped, also from the notebook]"
        )
    elif reply.cut:
        reply.lines.append(f"[parts of the output were cut here; the notebook {where} has it all]")
    if not ex.done:
        reply.lines.append(
            f"The cell is still running; call wait_for_cell(session_id='{session_id}') to wait "
            f"for the rest, or interrupt(session_id='{session_id}') to stop it."
        )
    elif ex.restarted:
        reply.lines.append("Variables from earlier cells are gone: run the cells you need again.")
    elif ex.error is not None and ex.error.name == "KernelDied":
        reply.lines.append(
            f"The kernel is gone: call restart(session_id='{session_id}') for a fresh one "
            "(variables from earlier cells are lost)."
        )
    blocks: list[Block] = [TextContent(type="text", text="\n".join(reply.lines))]
    return blocks + reply.images
