"""What running a cell gives back, built from a kernel's messages the host does not trust.

:class:`Execution` is shaped like E2B's: ``stdout``, ``stderr``, ``results``
(rich outputs, the cell's value among them), a structured ``error`` and the
execution count, plus what sandlot adds: whether output was cut
(``truncated``), and whether the cell ran out of time, was interrupted or cost
the kernel a restart.

:class:`Collector` turns the kernel's messages for one cell into that result
and into the notebook's outputs at once. Every message comes from inside the
sandbox and may be forged: only known output types with fields of the right
types are kept, text is held to the cell's byte limit, rich data to its own.
Everything kept passes the session's :class:`~sandlot.sink.Sink` first, so the
result and the notebook hold ``[redacted NAME]`` where a cell printed a secret.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..results import ExecutionError as ExecutionError  # the one class, re-exported
from ..sink import Sink, TextStream

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
JSON_MIME = re.compile(r"application/(.*\+)?json")  # nbformat lets only these hold JSON data
MAX_RICH_BYTES = 32 << 20  # rich data (images, HTML, JSON) and tracebacks one cell keeps
MAX_RICH_OUTPUTS = 1000  # rich outputs and errors one cell keeps (empty ones cost no bytes)
MAX_MIME_TYPES = 16  # representations kept per output
MAX_TRACEBACK_LINES = 500

# Called with each output message of a cell (a notebook output dict) as it arrives.
OnOutput = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class Result:
    """One rich output: its representations by MIME type (images as base64 text)."""

    data: dict[str, Any]
    is_main_result: bool = False  # the cell's value, as opposed to a display() call

    @property
    def text(self) -> str | None:
        """The ``text/plain`` form."""
        value = self.data.get("text/plain")
        return value if isinstance(value, str) else None

    @property
    def html(self) -> str | None:
        value = self.data.get("text/html")
        return value if isinstance(value, str) else None

    @property
    def png(self) -> bytes | None:
        """The ``image/png`` form, decoded (None if absent or not base64)."""
        value = self.data.get("image/png")
        if not isinstance(value, str):
            return None
        try:
            return base64.b64decode(value, validate=False)
        except ValueError:
            return None

    def formats(self) -> list[str]:
        """The MIME types this output has."""
        return list(self.data)


@dataclass
class Execution:
    """The outcome of one cell.

    It shares its error type and its ``stdout``/``stderr``/``truncated``/
    ``timed_out`` fields with :class:`~sandlot.results.CodeResult` but is a type
    of its own: a Jupyter cell gives rich outputs by MIME type (the value among
    them) rather than one ``repr``, is read while it still runs (``done``), and
    can cost the kernel a restart; ``run_code``'s REPL has none of these.
    """

    stdout: str = ""
    stderr: str = ""
    results: list[Result] = field(default_factory=list)
    error: ExecutionError | None = None
    execution_count: int | None = None
    truncated: bool = False  # output past the limits was dropped
    timed_out: bool = False
    interrupted: bool = False
    restarted: bool = False  # the interrupt did not take, so the kernel was restarted
    done: bool = True  # False: still running (a partial result; wait for the rest)
    cell_index: int | None = None  # the code cell's index in the session's notebook
    duration: float = 0.0

    @property
    def text(self) -> str | None:
        """The cell's value as text (its last expression), if it had one."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Execution:
        """The inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["results"] = [Result(**r) for r in fields.get("results", [])]
        if fields.get("error") is not None:
            fields["error"] = ExecutionError(**fields["error"])
        return cls(**fields)


def _str(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _mime_bundle(data: Any) -> tuple[dict[str, Any], int]:
    """The representations worth keeping from a forged ``data`` field, and their size."""
    if not isinstance(data, dict):
        return {}, 0
    kept: dict[str, Any] = {}
    size = 0
    for mime, value in list(data.items())[:MAX_MIME_TYPES]:
        if not isinstance(mime, str) or len(mime) > 100 or "/" not in mime:
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "".join(value)  # nbformat's multi-line strings
        if isinstance(value, str):
            size += len(value)
        elif JSON_MIME.fullmatch(mime) and isinstance(value, dict | list):
            size += len(repr(value))
        else:
            continue
        kept[mime] = value
    return kept, size


class Collector:
    """Builds an :class:`Execution` and the notebook outputs from one cell's iopub messages.

    With a ``sink`` that redacts, stdout and stderr are redacted as streams: the
    last characters of each that could begin a secret are held until more comes,
    another kind of output comes, or :meth:`finish`.
    """

    def __init__(
        self, max_text_bytes: int, max_rich_bytes: int = MAX_RICH_BYTES, sink: Sink | None = None
    ) -> None:
        self.sink = sink if sink is not None else Sink()
        # Per stream name, while redacting: what a secret split across messages needs.
        self.streams: dict[str, TextStream] | None = {} if self.sink.redactor else None
        self.execution = Execution(done=False)
        self.text_room = max_text_bytes
        self.max_rich_bytes = max_rich_bytes
        self.rich_room = max_rich_bytes
        self.rich_outputs = 0
        self.clear_pending = False  # clear_output(wait=True): clear at the next rich output

    def add(self, msg_type: str, content: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one iopub message; return the notebook outputs it makes (often one).

        Stream text held back for redaction comes first, unless this message
        continues that stream.
        """
        name = content.get("name") if msg_type == "stream" else None
        outputs = self._release(keep=name) if self.streams else []
        output = self._add(msg_type, content)
        if output is not None:
            outputs.append(output)
        return outputs

    def finish(self) -> list[dict[str, Any]]:
        """The stream text still held back, as outputs: call once the cell has ended."""
        return self._release(keep=None) if self.streams else []

    def _release(self, keep: object) -> list[dict[str, Any]]:
        assert self.streams is not None
        outputs = []
        for name in [n for n in self.streams if n != keep]:
            text = self.streams.pop(name).flush()
            if text:
                outputs.append(self._stream_output(name, text))
        return outputs

    def _stream_output(self, name: str, text: str) -> dict[str, Any]:
        if name == "stdout":
            self.execution.stdout += text
        else:
            self.execution.stderr += text
        return {"output_type": "stream", "name": name, "text": text}

    def _add(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
        ex = self.execution
        if msg_type == "stream":
            name = content.get("name")
            text = content.get("text")
            if name not in ("stdout", "stderr") or not isinstance(text, str):
                return None
            raw = text.encode("utf-8", "replace")
            if len(raw) > self.text_room:
                text = raw[: max(self.text_room, 0)].decode("utf-8", "ignore")
                ex.truncated = True
            self.text_room -= len(text.encode())
            if self.streams is not None:
                text = self.streams.setdefault(name, self.sink.text_stream()).feed(text)
            if not text:
                return None
            return self._stream_output(name, text)
        if msg_type in ("execute_result", "display_data", "update_display_data"):
            data, size = _mime_bundle(content.get("data"))
            if not data:
                return None
            if self.clear_pending:
                self._clear_results()
            if not self._room_for(size):
                return None
            data = self._clean(data)
            metadata = content.get("metadata")
            metadata = metadata if isinstance(metadata, dict) and len(repr(metadata)) < 4096 else {}
            metadata = self.sink.data(metadata)
            main = msg_type == "execute_result"
            ex.results.append(Result(data, is_main_result=main))
            output: dict[str, Any] = {
                "output_type": "execute_result" if main else "display_data",
                "data": data,
                "metadata": metadata,
            }
            if main:
                count = content.get("execution_count")
                output["execution_count"] = count if type(count) is int else None
            return output
        if msg_type == "error":
            tb = content.get("traceback")
            lines = (
                [line[:10_000] for line in tb if isinstance(line, str)]
                if isinstance(tb, list)
                else []
            )
            lines = lines[:MAX_TRACEBACK_LINES]
            ename, evalue = _str(content.get("ename"), 1000), _str(content.get("evalue"), 10_000)
            if self.sink:
                ename, evalue, lines = self.sink.data([ename, evalue, lines])
            ex.error = ExecutionError(ename, evalue, ANSI.sub("", "\n".join(lines)))
            if not self._room_for(len(ename) + len(evalue) + sum(map(len, lines))):
                return None
            return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": lines}
        if msg_type == "clear_output":
            # The rich results go, as in the notebook; stdout and stderr stay whole (they are
            # what the cell printed, and an agent reads them as a log).
            wait = content.get("wait") is True
            if wait:
                self.clear_pending = True
            else:
                self._clear_results()
            return {"output_type": "clear_output", "wait": wait}
        return None

    def _clean(self, data: dict[str, Any]) -> dict[str, Any]:
        """A MIME bundle through the sink: text and JSON are, images (base64) are not."""
        if not self.sink:
            return data
        return {
            mime: value if mime.startswith("image/") else self.sink.data(value)
            for mime, value in data.items()
        }

    def _clear_results(self) -> None:
        """Drop the rich results, and the room they took: an animation holds one frame."""
        self.execution.results.clear()
        self.rich_room = self.max_rich_bytes
        self.rich_outputs = 0
        self.clear_pending = False

    def _room_for(self, size: int) -> bool:
        """Whether one more rich output or error of ``size`` fits; if so, count it."""
        if size > self.rich_room or self.rich_outputs >= MAX_RICH_OUTPUTS:
            self.execution.truncated = True
            return False
        self.rich_room -= size
        self.rich_outputs += 1
        return True

    def reply(self, content: dict[str, Any]) -> None:
        """Take the ``execute_reply``: the count, and an error the iopub did not carry."""
        count = content.get("execution_count")
        if type(count) is int:
            self.execution.execution_count = count
        if content.get("status") == "error" and self.execution.error is None:
            ename = _str(content.get("ename"), 1000) or "Error"
            evalue = self.sink.text(_str(content.get("evalue"), 10_000))
            self.execution.error = ExecutionError(self.sink.text(ename), evalue, "")
