"""What sandbox calls return: plain data classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExecutionError:
    """An exception raised by code in the sandbox, as data: its type name, message and traceback.

    One type for ``run_code`` (:class:`CodeResult`) and a notebook cell
    (:class:`sandlot.notebook.Execution`); ``sandlot.notebook.ExecutionError`` is
    this class.
    """

    name: str
    value: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"


@dataclass(frozen=True)
class CodeResult:
    """The outcome of one ``run_code`` call, like a notebook cell's.

    ``value`` is the ``repr`` of the last expression (None when there is none or
    it is None). ``error`` is set when the code raised; ``timed_out`` when the
    call's timeout interrupted it (the interpreter survived).
    """

    stdout: str
    stderr: str
    value: str | None
    error: ExecutionError | None
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the code ran to the end without raising."""
        return self.error is None


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a process run with ``exec``."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False
    #: Why the command could not start (``"PermissionError: ..."``, the sandbox's words,
    #: clipped), or None when it started; its ``returncode`` is then 127.
    spawn_error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the process exited with status 0."""
        return self.returncode == 0


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a streaming process's output, as it was produced."""

    stream: str  # "stdout" or "stderr"
    data: bytes

    @property
    def text(self) -> str:
        """The chunk decoded as UTF-8 (undecodable bytes replaced)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class FileInfo:
    """One entry of a directory listing."""

    name: str
    type: str  # what the entry is itself: "file", "dir", "link", "fifo", "socket", "device"
    size: int


@dataclass(frozen=True)
class SkippedVariable:
    """A REPL variable a snapshot could not hold, or a restore could not bring back, and why."""

    name: str
    type: str
    why: str


@dataclass(frozen=True)
class SnapshotResult:
    """What ``sb.snapshot(path)`` wrote.

    ``captured``: the variables the file holds; ``skipped``: those it could not
    (each with its reason); ``modules``: variables bound to modules, imported
    again on restore; ``tools``: the host's tools the REPL had, which the
    restoring sandbox binds from its own host. ``unlisted`` counts names left
    out of these lists (each lists at most 2000).
    """

    path: Path
    size: int
    captured: tuple[str, ...]
    skipped: tuple[SkippedVariable, ...]
    modules: tuple[str, ...]
    tools: tuple[str, ...]
    unlisted: int = 0


@dataclass(frozen=True)
class RestoreResult:
    """What loading a snapshot brought back.

    ``restored``: the variables now in the REPL (modules included); ``failed``:
    those that could not come back here, and why (a module not installed, code
    made by another Python version); ``missing_tools``: the snapshot's host tools
    this sandbox does not have; ``files``: the workdir entries unpacked.
    """

    path: Path
    restored: tuple[str, ...]
    failed: tuple[SkippedVariable, ...]
    missing_tools: tuple[str, ...]
    files: int
    unlisted: int = 0
