"""A run's trajectory: one JSON object per line, appended and flushed as things happen.

A crash loses nothing already written. The RLM engine's events are declared in
:mod:`sandlot.rlm.events`, one data class per ``type``; an experiment's
transcript is written through the same writer with events of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..sink import Sink, private_opener

PREVIEW_CHARS = 2000


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` cut to about ``limit`` chars, head and tail kept, the cut marked."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} chars ...]\n{text[-half:]}"


class TrajectoryWriter:
    """Appends events to a JSONL file (and keeps them in memory); thread-safe.

    With ``path=None`` events are only kept in memory. The file is created with
    mode 0600 (it holds what sandboxes printed); with a ``sink``, every event
    passes it first (secrets redacted).
    """

    def __init__(self, path: str | Path | None, sink: Sink | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.sink = sink if sink is not None else Sink()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(  # noqa: SIM115 - open until close()
                self.path, "a", encoding="utf-8", opener=private_opener
            )

    def write(self, event: dict[str, Any]) -> dict[str, Any]:
        """Record ``event``; it is on disk when this returns. Returns it as recorded."""
        event = self.sink.data(event)
        line = json.dumps(event, ensure_ascii=False, default=repr)
        with self._lock:
            self.events.append(event)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
        return event

    def close(self) -> None:
        """Close the file; the events stay readable in ``events``."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_trajectory(path: str | Path) -> Iterator[dict[str, Any]]:
    """The events of a JSONL trajectory, in order.

    A last line cut short by a crash is skipped; any other bad line raises
    ``ValueError`` naming the file and line.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return
            raise ValueError(f"{path}:{number}: not a JSON trajectory event ({exc})") from None
        if not isinstance(event, dict) or "type" not in event:
            raise ValueError(f"{path}:{number}: not a trajectory event (no 'type' field)")
        yield event
