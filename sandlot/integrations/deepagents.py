"""``SandlotBackend``: a LangChain Deep Agents sandbox backend on a sandlot sandbox.

Deep Agents' filesystem middleware gives the model ``ls``, ``read_file``,
``write_file``, ``edit_file``, ``glob``, ``grep`` and, for a backend that
implements ``SandboxBackendProtocol``, ``execute``. deepagents' own
``BaseSandbox`` derives every file operation from ``execute()`` (a Python or
shell script per call, its output parsed back). This backend keeps
``BaseSandbox`` as its base, for what it does not override, and does the work
natively instead:

- ``execute``: ``sh -c`` through sandlot's ``exec``, in its own process group
  (killed whole at the timeout), output in the order it was produced;
- ``read``, ``write``, ``edit``, ``ls``, ``delete``, ``upload_files``,
  ``download_files``: sandlot's files API (raw chunks, no shell, no quoting,
  regular files only, links never followed);
- ``glob`` and ``grep``: one call each to a small helper in the sandbox's
  REPL (``in_sandbox/deepagents_ops.py``) that walks the tree without
  following links; globs are matched on the host with deepagents' own matcher
  (``compile_grep_include_glob``), so the semantics are deepagents'.

Everything that comes back is checked on the host, since sandboxed code can
forge it: names must be single path components and relative paths may not
climb out of the search root (forged ones are dropped); control characters in
names are shown as ``\\xNN`` (so a name cannot add lines to a tool result);
sizes are bounded; secret values of the config are redacted from command
output, file text and grep lines. Nothing is ever written on the host: file
contents come back as bytes in memory.

Sync and async methods share one implementation: coroutines on the event loop
the sandbox runs on, waited for by the blocking methods.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import posixpath
import re
import uuid
from collections.abc import Coroutine
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import backends
from ..backends import BackendSpec
from ..config import SandboxConfig
from ..errors import FileOperationError, SandboxDied, SandboxError
from ..resources import package_text
from ..sandbox import AsyncSandbox
from ..secrets import Redactor
from ..sink import escape_controls
from ..sync import Sandbox, portal

try:
    from deepagents.backends.protocol import (
        ASYNC_GLOB_TIMEOUT,
        ASYNC_GREP_TIMEOUT,
        DeleteResult,
        EditResult,
        ExecuteResponse,
        FileData,
        FileDownloadResponse,
        FileInfo,
        FileUploadResponse,
        GlobResult,
        GrepMatch,
        GrepResult,
        LsResult,
        ReadResult,
        WriteResult,
    )
    from deepagents.backends.sandbox import (
        MAX_BINARY_BYTES,
        MAX_OUTPUT_BYTES,
        TRUNCATION_MSG,
        BaseSandbox,
    )
    from deepagents.backends.utils import (
        EMPTY_CONTENT_WARNING,
        EMPTY_OLD_STRING_ERROR,
        InvalidGlobPatternError,
        _get_backend_read_file_type,
        compile_grep_include_glob,
        normalize_read_bounds,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sandlot.integrations.deepagents needs deepagents ({exc}); "
        "install it with: pip install 'sandlot[deepagents]'"
    ) from exc

__all__ = ["SandlotBackend"]

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 120  # seconds a command may run, as deepagents' LocalShellBackend
DEFAULT_MAX_FILE_BYTES: Final = 64 << 20  # the largest file read/edit/download bring to the host
GLOB_BUDGET: Final = 5.0  # seconds a glob's walk may take before it answers with what it has
GREP_BUDGET: Final = 20.0  # seconds a grep may search before it answers with what it has
MAX_GLOB_FILES: Final = 100_000  # files a glob's walk lists at most
MAX_LINE_CHARS: Final = 5000  # a grep match's text is cut here (deepagents' MAX_LINE_LENGTH)
OPS: Final = package_text("sandlot.integrations", "in_sandbox/deepagents_ops.py")
# Where grep's list of files to search (its glob filter, applied on the host) is written.
CHOSEN_DIR: Final = "/tmp/.sandlot-deepagents"
# What travels in a request's header (1 MiB at most) is bounded well below that.
MAX_PATH_BYTES: Final = 4096  # PATH_MAX
MAX_PATTERN_BYTES: Final = 64 << 10
MAX_COMMAND_BYTES: Final = 256 << 10
_NAME_CONTROLS: Final = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 (newline too), DEL, C1


class _Reply(BaseModel):
    """What a helper in the sandbox prints: checked field by field before use."""

    model_config = ConfigDict(extra="forbid", strict=True)

    error: str | None = None
    files: list[str] = []
    matches: list[tuple[str, int, str]] = []
    unreadable: int = 0
    cut: bool = False


def _shown(name: str) -> str:
    """A name from the sandbox as it may be shown: bytes that are not UTF-8 and every
    control character (newline and tab too: a name is one line) written as ``\\xNN``."""
    return _NAME_CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", _text(name))


def _text(text: str) -> str:
    """Text from the sandbox with bytes that are not UTF-8 written as ``\\xNN``."""
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _bad_path(path: str) -> bool:
    """Whether ``path`` cannot name a file: it holds NUL or is longer than ``PATH_MAX``."""
    return "\0" in path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES


def _relative(rel: str) -> bool:
    """Whether ``rel``, a path the sandbox says lies under a search root, really does."""
    if rel == "":
        return True
    parts = rel.split("/")
    return "\0" not in rel and all(part not in ("", ".", "..") for part in parts)


def _under(root: str, rel: str) -> str:
    return root if rel == "" else f"{root.rstrip('/')}/{rel}"


def _error_code(exc: FileOperationError) -> str:
    """deepagents' error literal for a failed file operation."""
    if isinstance(exc, FileNotFoundError):
        return "file_not_found"
    if isinstance(exc, PermissionError):
        return "permission_denied"
    if isinstance(exc, IsADirectoryError) or "is a directory" in str(exc):
        return "is_directory"
    return "invalid_path"


def _page(content: str, offset: int, limit: int) -> ReadResult:
    """Lines ``offset`` to ``offset + limit`` of ``content``, as deepagents' ``read`` gives
    them: lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (as Python's universal newlines,
    and ``BaseSandbox``) and are joined with ``\\n``; at most ``MAX_OUTPUT_BYTES`` of text."""
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":  # the end of the last line, not a line of its own
        lines.pop()
    total = len(lines)
    if offset >= total:
        return ReadResult(error=f"Line offset {offset} exceeds file length ({total} lines)")
    window = lines[offset : offset + limit]
    text = "\n".join(window)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_BYTES:
        room = MAX_OUTPUT_BYTES - len(TRUNCATION_MSG.encode())
        kept: list[str] = []
        used = 0
        for line in window:
            used += len(line.encode("utf-8", "surrogatepass")) + 1
            if used > room:
                break
            kept.append(line)
        if kept:
            window, text = kept, "\n".join(kept)
        else:  # one line alone is too long: its start, and the next read moves past it
            window = window[:1]
            text = window[0].encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
        text += TRUNCATION_MSG
    end = offset + len(window)
    return ReadResult(
        file_data=FileData(content=text, encoding="utf-8"),
        total_lines=total,
        start_line=offset + 1,
        end_line=end,
        next_offset=end if end < total else None,
    )


def _replace(text: str, old: str, new: str, replace_all: bool) -> tuple[str, int] | str:
    """``text`` with ``old`` replaced, or the error message.

    ``read`` shows CRLF files with LF endings, so an ``old`` that is not found as
    sent is tried with CRLF endings, and ``new`` is given the same endings.
    """
    count = text.count(old)
    if count == 0 and "\n" in old:
        crlf_old = old.replace("\r\n", "\n").replace("\n", "\r\n")
        count = text.count(crlf_old)
        if count:
            old, new = crlf_old, new.replace("\r\n", "\n").replace("\n", "\r\n")
    if count == 0:
        return f"Error: String not found in file: '{old}'"
    if count > 1 and not replace_all:
        return (
            f"Error: String '{old}' appears multiple times ({count}). Use replace_all=True "
            "to replace all occurrences, or include more context to make it unique."
        )
    return text.replace(old, new) if replace_all else text.replace(old, new, 1), count


class SandlotBackend(BaseSandbox):
    """A deepagents sandbox backend whose commands and files live in a sandlot sandbox.

    ::

        from deepagents import create_deep_agent
        from sandlot.integrations.deepagents import SandlotBackend

        with SandlotBackend(SandboxConfig(memory_mb=1024)) as backend:
            agent = create_deep_agent(model=..., backend=backend)
            agent.invoke({"messages": [...]})

    Without ``sandbox`` the backend starts its own sandbox from ``config`` (on
    ``backend``: ``"local"``, ``"ray"``, ...) and ends it in :meth:`close`; if that
    sandbox dies (out of memory, a command that ignored its timeout), the call says
    so and the next call starts a fresh one. With ``sandbox`` (a started
    :class:`~sandlot.Sandbox` or :class:`~sandlot.AsyncSandbox`, say from a pool)
    the backend uses it and leaves its lifetime to its owner.

    ``timeout``: seconds a command may run when the caller names none (0: no limit
    but the sandbox's lifetime). ``max_file_bytes``: the largest file that
    ``read``, ``edit`` and ``download_files`` bring to the host.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        backend: BackendSpec = None,
        sandbox: Sandbox | AsyncSandbox | None = None,
        timeout: int = DEFAULT_TIMEOUT,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        if timeout < 0:
            raise ValueError(f"timeout must be 0 (no limit) or more seconds, not {timeout}")
        self.timeout = timeout
        self.max_file_bytes = max_file_bytes
        self._id = f"sandlot-{uuid.uuid4().hex[:12]}"
        self._closed = False
        self._helpers = False  # the REPL holds deepagents_ops
        if sandbox is not None:
            inner = sandbox.async_sandbox if isinstance(sandbox, Sandbox) else sandbox
            if not inner.is_alive or inner.loop is None:
                raise ValueError("sandbox must be started (and alive) before it is handed over")
            self.config = inner.config
            self._owned = False
            self._sandbox: AsyncSandbox | None = inner
            self._loop = inner.loop
        else:
            self.config = config if config is not None else SandboxConfig()
            self._backend = backends.resolve(backend)  # an unknown name fails here
            self._owned = True
            self._sandbox = None
            self._loop = portal().loop
        self._redactor = Redactor.for_config(self.config)
        self._starting: asyncio.Lock | None = None
        if self._owned:
            self._blocking(self._live())

    # -- lifetime ----------------------------------------------------------------

    @property
    def id(self) -> str:
        """This backend's id (stable across the sandboxes it starts)."""
        return self._id

    @property
    def sandbox(self) -> AsyncSandbox | None:
        """The sandbox in use now (None between a death and the next call)."""
        return self._sandbox

    def close(self) -> None:
        """End the sandbox if this backend started it; safe to call more than once."""
        self._closed = True
        if self._owned:
            self._blocking(self._end())

    async def aclose(self) -> None:
        """Async version of :meth:`close`."""
        self._closed = True
        if self._owned:
            await self._async(self._end())

    def __enter__(self) -> SandlotBackend:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def __aenter__(self) -> SandlotBackend:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _end(self) -> None:
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            await sandbox.terminate()

    async def _live(self) -> AsyncSandbox:
        """The sandbox, started (again, if this backend owns it and it died)."""
        if self._closed:
            raise SandboxError("this SandlotBackend was closed")
        sandbox = self._sandbox
        if sandbox is not None:
            return sandbox  # one that died raises SandboxDied when used, saying why
        if self._starting is None:  # only an owned sandbox is ever dropped
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sandbox is None:
                fresh = AsyncSandbox(self.config, backend=self._backend)
                await fresh.start()
                self._sandbox, self._helpers = fresh, False
            return self._sandbox

    def _died(self, exc: SandboxDied) -> str:
        """Forget a dead sandbox; the message the caller gets about it."""
        what = f"the sandbox died ({exc.cause}): {exc.detail or 'no detail'}"
        if self._owned:
            self._sandbox = None
            return self._redact(f"{what}. Its files are lost; the next call starts a fresh one.")
        return self._redact(f"{what}. Its owner must give this backend a new one.")

    # -- running on the sandbox's loop ------------------------------------------

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the sandbox's loop and wait for it (from any other thread)."""
        shared = portal()
        if self._loop is shared.loop:
            return shared.call(coro)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError(
                "a blocking SandlotBackend method was called on its sandbox's own event loop; "
                "use the async methods (aexecute, aread, ...) there"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the sandbox's loop, from whatever loop the caller runs."""
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _redact(self, text: str) -> str:
        return self._redactor.redact(text) if self._redactor else text

    def _shown(self, name: str) -> str:
        """A name from the sandbox as it may be shown (see :func:`_shown`), secrets redacted."""
        return self._redact(_shown(name))

    # -- execute -----------------------------------------------------------------

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Run ``command`` with ``sh -c`` in the sandbox's workdir; see :meth:`aexecute`."""
        return self._blocking(self._execute(command, timeout))

    async def aexecute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Run ``command`` with ``sh -c`` in the sandbox's workdir, stdin empty.

        The output is stdout and stderr as they were produced, cut at the config's
        ``max_output_bytes`` (``truncated`` says so). A command past its timeout
        (``timeout``, else the backend's) is killed with its whole process group:
        exit code 124 and a line that says so. A sandbox that dies meanwhile gives
        exit code None and the reason.
        """
        return await self._async(self._execute(command, timeout))

    async def _execute(self, command: str, timeout: int | None) -> ExecuteResponse:
        limit = self.timeout if timeout is None else timeout
        if limit < 0:
            return ExecuteResponse(
                output=f"Error: timeout must be 0 or more, not {limit}", exit_code=1
            )
        size = len(command.encode("utf-8", "surrogatepass"))
        if size > MAX_COMMAND_BYTES:
            return ExecuteResponse(
                output=f"Error: the command is {size} bytes, over the {MAX_COMMAND_BYTES} a "
                "command may have; write the script to a file with write_file and run that",
                exit_code=1,
            )
        try:
            sandbox = await self._live()
            # stderr joins stdout in the shell, so the output keeps the order it was written in.
            script = f"exec 2>&1\n{command}"
            proc = sandbox.exec_stream("sh", "-c", script, timeout=limit or None, stdin=b"")
            parts = [chunk.data async for chunk in proc]
        except SandboxDied as exc:
            return ExecuteResponse(output=f"Error: {self._died(exc)}", exit_code=None)
        except SandboxError as exc:
            return ExecuteResponse(output=self._redact(f"Error: {exc}"), exit_code=None)
        result = proc.result
        assert result is not None
        output = self._redact(b"".join(parts).decode("utf-8", "replace"))
        if result.timed_out:
            note = (
                f"Error: Command timed out after {limit} seconds and was killed with its "
                "process group. For long-running commands, re-run with a larger timeout."
            )
            return ExecuteResponse(
                output=f"{output.rstrip()}\n{note}" if output.strip() else note,
                exit_code=124,
                truncated=result.truncated,
            )
        return ExecuteResponse(
            output=output, exit_code=result.returncode, truncated=result.truncated
        )

    # -- files: read, write, edit, delete ------------------------------------------

    async def _fetch(self, path: str) -> bytes:
        if _bad_path(path):
            raise FileOperationError(f"{path[:100]!r}...: not a usable path (NUL, or too long)")
        sandbox = await self._live()
        return await sandbox.files.read(path, max_bytes=self.max_file_bytes)

    def read(self, file_path: str, offset: int = 0, limit: int = 2000) -> ReadResult:
        """Lines ``offset`` to ``offset + limit`` of a text file; binary files in base64."""
        return self._blocking(self._read(file_path, offset, limit))

    async def aread(self, file_path: str, offset: int = 0, limit: int = 2000) -> ReadResult:
        """Async version of :meth:`read`."""
        return await self._async(self._read(file_path, offset, limit))

    async def _read(self, file_path: str, offset: int, limit: int) -> ReadResult:
        offset, limit = normalize_read_bounds(offset, limit)
        try:
            data = await self._fetch(file_path)
        except SandboxDied as exc:
            return ReadResult(error=f"File '{file_path}': {self._died(exc)}")
        except FileOperationError as exc:
            return ReadResult(error=f"File '{file_path}': {self._file_error(exc)}")
        if not data:
            return ReadResult(file_data=FileData(content=EMPTY_CONTENT_WARNING, encoding="utf-8"))
        text: str | None = None
        if _get_backend_read_file_type(file_path) == "text":
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode("utf-8")
        if text is None:
            if len(data) > MAX_BINARY_BYTES:
                return ReadResult(
                    error=f"File '{file_path}': Binary file exceeds maximum preview size of "
                    f"{MAX_BINARY_BYTES} bytes"
                )
            encoded = base64.b64encode(data).decode("ascii")
            return ReadResult(file_data=FileData(content=encoded, encoding="base64"))
        if limit == 0:
            return ReadResult(
                file_data=FileData(content="", encoding="utf-8"), no_lines_requested=True
            )
        page = _page(text, offset, limit)
        if page.file_data is not None:
            page.file_data["content"] = self._redact(page.file_data["content"])
        return page

    def _file_error(self, exc: FileOperationError) -> str:
        """What to tell the model about a failed file operation."""
        code = _error_code(exc)
        if code == "invalid_path":  # say what it is: a link, a fifo, too large
            return self._redact(escape_controls(str(exc)))
        return code

    def write(self, file_path: str, content: str) -> WriteResult:
        """Write ``content`` to ``file_path`` (parents made; an existing file replaced)."""
        return self._blocking(self._write(file_path, content))

    async def awrite(self, file_path: str, content: str) -> WriteResult:
        """Async version of :meth:`write`."""
        return await self._async(self._write(file_path, content))

    async def _write(self, file_path: str, content: str) -> WriteResult:
        (response,) = await self._upload([(file_path, content.encode("utf-8"))])
        if response.error is not None:
            return WriteResult(error=f"Failed to write file '{file_path}': {response.error}")
        return WriteResult(path=file_path)

    def edit(
        self,
        file_path: str,
        old_string: str,
        new_string: str,
        replace_all: bool = False,
    ) -> EditResult:
        """Replace ``old_string`` (once, unless ``replace_all``) in a text file."""
        return self._blocking(self._edit(file_path, old_string, new_string, replace_all))

    async def aedit(
        self,
        file_path: str,
        old_string: str,
        new_string: str,
        replace_all: bool = False,
    ) -> EditResult:
        """Async version of :meth:`edit`."""
        return await self._async(self._edit(file_path, old_string, new_string, replace_all))

    async def _edit(
        self, file_path: str, old_string: str, new_string: str, replace_all: bool
    ) -> EditResult:
        if not old_string:
            return EditResult(error=EMPTY_OLD_STRING_ERROR)
        try:
            data = await self._fetch(file_path)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return EditResult(error=f"Error: File '{file_path}' is not a text file")
            replaced = _replace(text, old_string, new_string, replace_all)
            if isinstance(replaced, str):
                return EditResult(error=replaced)
            sandbox = await self._live()
            await sandbox.files.write(file_path, replaced[0].encode("utf-8"))
        except SandboxDied as exc:
            return EditResult(error=f"Error editing file '{file_path}': {self._died(exc)}")
        except FileOperationError as exc:
            if isinstance(exc, FileNotFoundError):
                return EditResult(error=f"Error: File '{file_path}' not found")
            return EditResult(error=f"Error editing file '{file_path}': {self._file_error(exc)}")
        return EditResult(path=file_path, occurrences=replaced[1])

    def delete(self, file_path: str) -> DeleteResult:
        """Remove a file, or a directory with everything in it (a link itself, never its target)."""
        return self._blocking(self._delete(file_path))

    async def adelete(self, file_path: str) -> DeleteResult:
        """Async version of :meth:`delete`."""
        return await self._async(self._delete(file_path))

    async def _delete(self, file_path: str) -> DeleteResult:
        if _bad_path(file_path):
            return DeleteResult(error=f"Error deleting file '{file_path[:100]}': invalid_path")
        try:
            sandbox = await self._live()
            await sandbox.files.remove(file_path, recursive=True)
        except SandboxDied as exc:
            return DeleteResult(error=f"Error deleting file '{file_path}': {self._died(exc)}")
        except FileOperationError as exc:
            if isinstance(exc, FileNotFoundError):
                return DeleteResult(error=f"Error: '{file_path}' not found")
            return DeleteResult(error=f"Error deleting file '{file_path}': {self._file_error(exc)}")
        return DeleteResult(path=file_path)

    # -- files: upload and download ------------------------------------------------

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Write each ``(absolute path, bytes)`` into the sandbox; one response each, in order."""
        return self._blocking(self._upload(files))

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Async version of :meth:`upload_files`."""
        return await self._async(self._upload(files))

    async def _upload(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        responses = []
        for path, data in files:
            error: str | None = None
            if not path.startswith("/") or _bad_path(path):
                error = "invalid_path"
            else:
                try:
                    sandbox = await self._live()
                    await sandbox.files.write(path, data)
                except SandboxDied as exc:
                    error = self._died(exc)
                except FileOperationError as exc:
                    error = _error_code(exc)
            responses.append(FileUploadResponse(path=path, error=error))
        return responses

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """The bytes of each regular file (absolute paths), in memory; nothing is written
        on the host. Links are refused, not followed."""
        return self._blocking(self._download(paths))

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """Async version of :meth:`download_files`."""
        return await self._async(self._download(paths))

    async def _download(self, paths: list[str]) -> list[FileDownloadResponse]:
        responses = []
        for path in paths:
            if not path.startswith("/") or _bad_path(path):
                responses.append(FileDownloadResponse(path=path, error="invalid_path"))
                continue
            try:
                data = await self._fetch(path)
            except SandboxDied as exc:
                responses.append(FileDownloadResponse(path=path, error=self._died(exc)))
            except FileOperationError as exc:
                responses.append(FileDownloadResponse(path=path, error=_error_code(exc)))
            else:
                responses.append(FileDownloadResponse(path=path, content=data))
        return responses

    # -- listing and searching -----------------------------------------------------

    def ls(self, path: str) -> LsResult:
        """The entries of directory ``path``: absolute paths, ``is_dir``, ``size``."""
        return self._blocking(self._ls(path))

    async def als(self, path: str) -> LsResult:
        """Async version of :meth:`ls`."""
        return await self._async(self._ls(path))

    async def _ls(self, path: str) -> LsResult:
        if _bad_path(path):
            return LsResult(error=f"Path '{path[:100]}': invalid_path")
        try:
            sandbox = await self._live()
            listed = await sandbox.files.list(path)
        except SandboxDied as exc:
            return LsResult(error=f"Path '{path}': {self._died(exc)}")
        except FileOperationError as exc:
            code = {"file_not_found": "path_not_found", "invalid_path": "not_a_directory"}
            return LsResult(
                error=f"Path '{path}': {code.get(_error_code(exc), 'permission_denied')}"
            )
        root = path.rstrip("/") or "/"
        entries: list[FileInfo] = []
        for item in listed:
            if not isinstance(item.name, str) or not _relative(item.name) or "/" in item.name:
                continue  # not a name a directory can hold: forged
            if item.name == "":
                continue
            entries.append(
                FileInfo(
                    path=self._shown(_under(root, item.name)),
                    is_dir=item.type == "dir",
                    size=max(int(item.size), 0),
                )
            )
        return LsResult(entries=entries)

    async def _helper(self, sandbox: AsyncSandbox, call: str, timeout: float) -> _Reply | str:
        """Run a helper of ``deepagents_ops`` in the REPL; its checked reply, or an error."""
        if not self._helpers:
            setup = await sandbox.run_code(OPS)
            if setup.error is not None:
                return self._redact(escape_controls(f"the helpers did not load: {setup.error}"))
            self._helpers = True
        result = await sandbox.run_code(call, timeout=timeout)
        if result.timed_out:
            return f"timed out after {timeout:g}s. Try a more specific pattern or a narrower path."
        if result.error is not None:
            return self._redact(escape_controls(f"the search failed: {result.error}"))
        if result.truncated:
            return "the sandbox's answer was larger than max_output_bytes; narrow the search"
        try:
            return _Reply.model_validate_json(result.stdout)
        except ValidationError:
            return "the sandbox sent an answer that is not what was asked for"

    def glob(self, pattern: str, path: str | None = None) -> GlobResult:
        """Regular files under ``path`` (default ``/``) matching ``pattern``, by deepagents'
        glob rules; absolute paths."""
        return self._blocking(self._glob(pattern, path))

    async def aglob(self, pattern: str, path: str | None = None) -> GlobResult:
        """Async version of :meth:`glob`."""
        return await self._async(self._glob(pattern, path))

    async def _walk(self, sandbox: AsyncSandbox, root: str) -> _Reply | str:
        """The regular files under directory ``root``, relative to it, as the sandbox
        lists them (links not followed); or an error."""
        budget = self.config.max_output_bytes // 2
        call = f"_sandlot_da_glob({root!r}, {GLOB_BUDGET!r}, {MAX_GLOB_FILES}, {budget})"
        return await self._helper(sandbox, call, ASYNC_GLOB_TIMEOUT)

    async def _glob(self, pattern: str, path: str | None) -> GlobResult:
        root = path if path and path.startswith("/") else f"/{path or ''}"
        if _bad_path(root) or len(pattern.encode("utf-8", "surrogatepass")) > MAX_PATTERN_BYTES:
            return GlobResult(error=f"Path '{root[:100]}': the path or the pattern is too long")
        try:
            matcher = compile_grep_include_glob(pattern)
        except InvalidGlobPatternError as exc:
            return GlobResult(error=str(exc))
        try:
            reply = await self._walk(await self._live(), root)
        except SandboxDied as exc:
            return GlobResult(error=f"Path '{root}': {self._died(exc)}")
        if isinstance(reply, str):
            return GlobResult(error=f"Path '{root}': {reply}")
        if reply.error is not None:
            return GlobResult(error=f"Path '{root}': {self._shown(reply.error)[:200]}")
        matches = [
            FileInfo(path=self._shown(_under(root, rel)), is_dir=False)
            for rel in reply.files
            if rel and _relative(rel) and matcher(rel)
        ]
        truncated = reply.cut or reply.unreadable > 0
        reason: Literal["budget", "unreadable"] | None = None
        if truncated:
            reason = "unreadable" if reply.unreadable else "budget"
        return GlobResult(matches=matches, truncated=truncated, truncation_reason=reason)

    def grep(
        self,
        pattern: str,
        path: str | None = None,
        glob: str | None = None,
        *,
        max_count: int | None = None,
    ) -> GrepResult:
        """Lines holding ``pattern`` literally, in the regular text files under ``path``
        (default: the workdir) that ``glob`` selects; links are not followed."""
        return self._blocking(self._grep(pattern, path, glob, max_count))

    async def agrep(
        self,
        pattern: str,
        path: str | None = None,
        glob: str | None = None,
        *,
        max_count: int | None = None,
    ) -> GrepResult:
        """Async version of :meth:`grep`."""
        return await self._async(self._grep(pattern, path, glob, max_count))

    async def _grep(
        self, pattern: str, path: str | None, glob: str | None, max_count: int | None
    ) -> GrepResult:
        if _bad_path(path or "") or any(
            len(text.encode("utf-8", "surrogatepass")) > MAX_PATTERN_BYTES
            for text in (pattern, glob or "")
        ):
            return GrepResult(error="Error: the path, the pattern or the glob is too long")
        try:
            matcher = compile_grep_include_glob(glob) if glob else None
        except InvalidGlobPatternError as exc:
            return GrepResult(error=str(exc))
        try:
            sandbox = await self._live()
            root = path or sandbox.workdir
            skip = tuple(d for d in self.grep_exclude_dirs if d != posixpath.basename(root))
            chosen: str | None = None
            if matcher is not None:
                listed = await self._walk(sandbox, root)
                if isinstance(listed, str):
                    return GrepResult(error=f"Path '{root}': {listed}")
                if listed.error is None:  # a directory: search the files the glob selects
                    picked = [
                        rel
                        for rel in listed.files
                        if rel
                        and _relative(rel)
                        and not set(skip) & set(rel.split("/")[:-1])
                        and matcher(rel)
                    ]
                    chosen = f"{CHOSEN_DIR}/{uuid.uuid4().hex}.json"
                    await sandbox.files.write(chosen, json.dumps(picked).encode())
            budget = self.config.max_output_bytes // 2
            count = None if max_count is None else int(max_count)
            call = (
                f"_sandlot_da_grep({root!r}, {pattern!r}, {skip!r}, {chosen!r}, "
                f"{GREP_BUDGET!r}, {count!r}, {budget})"
            )
            reply = await self._helper(sandbox, call, ASYNC_GREP_TIMEOUT)
        except SandboxDied as exc:
            return GrepResult(error=f"Path '{path or '.'}': {self._died(exc)}")
        except FileOperationError as exc:
            return GrepResult(error=f"Path '{path or '.'}': {self._file_error(exc)}")
        if isinstance(reply, str):
            return GrepResult(error=f"Path '{root}': {reply}")
        if reply.error is not None:
            return GrepResult(error=f"Path '{root}': {self._shown(reply.error)[:200]}")
        matches = [
            GrepMatch(
                path=self._shown(_under(root, rel)),
                line=line,
                text=self._redact(_text(text))[:MAX_LINE_CHARS],
            )
            for rel, line, text in reply.matches
            if _relative(rel) and line >= 1 and pattern in text
        ]
        truncated = reply.cut
        if count is not None and len(matches) > count:
            matches, truncated = matches[:count], True
        return GrepResult(matches=matches, truncated=truncated)
