"""Where an experiment's records go, and how files from a sandbox land there safely.

Each ``run``/``deploy`` of an experiment gets a new directory,
``<outputs.dir>/<name>/<YYYYmmdd-HHMMSS>[-N]/``, made with ``mkdir`` that fails
when it exists, so a second run of the same file (even in the same second, even
at the same time) never writes into the first's. Each run of it has
``run-<k>/`` with ``transcript.jsonl``, ``notebook.ipynb``, ``run.log`` and
``summary.json``. What may hold a sandbox's output (the transcript, the notebook,
the log, the summaries, the workspace copied back) is created with mode 0600
and passes the run's :class:`~sandlot.sink.Sink` (its secrets redacted).

A sandbox's workspace copied out (filesystem mode) is untrusted data: its
names never choose where the host writes (one plain name per level, no ``..``,
no separators), links are skipped, every file is created new with
``O_NOFOLLOW | O_EXCL`` in a directory made for it, and the count, depth and
bytes are bounded.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..notebook import AsyncNotebookSession
from ..sink import PRIVATE, Sink, private_opener

MAX_WORKSPACE_FILES = 200
MAX_WORKSPACE_BYTES = 16 << 20
MAX_WORKSPACE_DEPTH = 6
ANSWER_PREVIEW = 60


def new_batch_dir(outputs: str | Path, name: str) -> Path:
    """A new, empty directory for one invocation of experiment ``name``; never an existing one."""
    parent = Path(outputs) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        candidate = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{parent}: no free directory name for {stamp}")


@dataclass
class RunResult:
    """How one run of an experiment ended, and what it spent."""

    run: str
    status: str  # "answered", "stopped", "failed", "interrupted", "deployed"
    stop_reason: str
    answer: str | None = None
    error: str | None = None
    turns: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    seconds: float = 0.0
    run_dir: str = ""
    session_id: str | None = None
    notebook: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``summary.json``)."""
        return {**asdict(self), "tokens": self.tokens}

    def redacted(self, sink: Sink) -> RunResult:
        """This result with its answer, error and extras passed through ``sink``."""
        if sink:
            self.answer, self.error = sink.data([self.answer, self.error])
            self.extra = sink.data(self.extra)
        return self

    def row(self) -> list[str]:
        """The run's row of the summary table."""
        answer = " ".join((self.answer or self.error or "").split())
        if len(answer) > ANSWER_PREVIEW:
            answer = answer[: ANSWER_PREVIEW - 1] + "…"
        return [
            self.run,
            self.status if self.status != "stopped" else f"stopped ({self.stop_reason})",
            str(self.turns),
            str(self.tool_calls),
            f"{self.tokens:,}",
            f"{self.cost:.4f}" if self.cost is not None else "-",
            f"{self.seconds:.1f} s",
            answer,
        ]


SUMMARY_COLUMNS = ["run", "status", "turns", "tool calls", "tokens", "cost", "wall time", "answer"]


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a new file, mode 0600, renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", opener=private_opener) as out:
        out.write(json.dumps(data, indent=2, ensure_ascii=False, default=repr) + "\n")
    os.replace(tmp, path)


def safe_name(name: object) -> str | None:
    """``name`` if it can be one path component on the host; None for anything else."""
    if not isinstance(name, str) or not name or len(name) > 255:
        return None
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return name


@dataclass
class CopyReport:
    """What :func:`save_workspace` wrote and what it left out (and why)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


async def save_workspace(session: AsyncNotebookSession, target: Path) -> CopyReport:
    """Copy a filesystem-mode session's workspace (text files) into ``target``, a new directory.

    The listing and the contents come from the sandbox: they are treated as
    data (see the module's docstring). Binary files arrive with invalid bytes
    replaced, since the session reads text.
    """
    report = CopyReport()
    target.mkdir(parents=True, exist_ok=False)
    budget = [MAX_WORKSPACE_FILES, MAX_WORKSPACE_BYTES]

    async def walk(remote: str, local: Path, depth: int) -> None:
        try:
            entries = await session.list_files(remote)
        except Exception as exc:
            report.skipped.append(f"{remote}: cannot list ({type(exc).__name__})")
            return
        for entry in entries[: MAX_WORKSPACE_FILES * 2] if isinstance(entries, list) else []:
            name = safe_name(entry.get("name") if isinstance(entry, dict) else None)
            kind = entry.get("type") if isinstance(entry, dict) else None
            shown = repr(entry.get("name"))[:120] if isinstance(entry, dict) else "?"
            if name is None:
                report.skipped.append(f"{remote}/{shown}: not a plain name")
                continue
            path = f"{remote}/{name}" if remote != "." else name
            if kind == "dir":
                if depth >= MAX_WORKSPACE_DEPTH:
                    report.skipped.append(f"{path}: deeper than {MAX_WORKSPACE_DEPTH}")
                    continue
                (local / name).mkdir()
                await walk(path, local / name, depth + 1)
            elif kind == "file":
                if budget[0] <= 0:
                    report.skipped.append(f"{path}: over {MAX_WORKSPACE_FILES} files")
                    continue
                try:
                    text = await session.read_file(path)
                except Exception as exc:
                    report.skipped.append(f"{path}: cannot read ({type(exc).__name__})")
                    continue
                data = str(text).encode("utf-8", "replace")
                if len(data) > budget[1]:
                    report.skipped.append(f"{path}: over the {MAX_WORKSPACE_BYTES} byte budget")
                    continue
                _create(local / name, data)
                budget[0] -= 1
                budget[1] -= len(data)
                report.written.append(path)
            else:
                report.skipped.append(f"{path}: a {str(kind)[:20]}, not a file or directory")

    await walk(".", target, 0)
    return report


def _create(path: Path, data: bytes) -> None:
    """Write a new file at ``path``: never through a link, never over an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, PRIVATE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def read_notebook_cells(path: Path, limit: int = 2000, text_limit: int = 200_000) -> list[Any]:
    """The cells of a notebook file as plain JSON (at most ``limit``; texts cut short)."""
    with contextlib.suppress(OSError, ValueError):
        if path.stat().st_size > 256 << 20:
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
        cells = data.get("cells") if isinstance(data, dict) else None
        return [_bounded(c, text_limit) for c in (cells or [])[:limit] if isinstance(c, dict)]
    return []


def _bounded(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "\n[... cut ...]"
    if isinstance(value, list):
        return [_bounded(v, limit) for v in value[:1000]]
    if isinstance(value, dict):
        return {str(k): _bounded(v, limit) for k, v in list(value.items())[:200]}
    return value
