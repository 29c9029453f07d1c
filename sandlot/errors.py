"""The errors sandlot raises. ``SandboxError`` is the base of all of them."""

from __future__ import annotations

import builtins
from typing import Any, Literal

DeathCause = Literal[
    "out_of_memory",  # the kernel's OOM killer ended it at the memory limit
    "killed",  # a signal from outside sandlot
    "crashed",  # the driver exited on its own (os._exit, a fatal error)
    "lifetime",  # SandboxConfig.timeout ran out
    "idle",  # SandboxConfig.idle_timeout ran out
    "timeout",  # a call's timeout ran out and the code ignored the interrupt
    "terminated",  # terminate() was called while the request was in flight
    "failed_to_start",  # the sandbox never came up
    "protocol",  # it sent a frame that breaks the protocol, so the host killed it
    "disk",  # its workdir grew past SandboxConfig.disk_mb, so the host killed it
    # a remote backend lost the machine it ran on (a Ray node died or became unreachable);
    # its state is gone with it (backends do not restart sandboxes)
    "node_lost",
    # a stream backend's connection to the far side dropped (ssh, a Modal stream); the
    # driver there ends at once with it, and its state is gone
    "connection_lost",
]


class SandboxError(Exception):
    """Base class of every error sandlot raises."""


class ConfigError(SandboxError, ValueError):
    """A configuration that cannot work; the message names the field and the fix."""

    problems: list[tuple[str, str]] = []  # (field path, what is wrong) when from validation


class SandboxDied(SandboxError):
    """The sandbox is gone; ``cause`` says why and ``detail`` what was seen."""

    def __init__(self, cause: DeathCause, detail: str = "") -> None:
        self.cause: DeathCause = cause
        self.detail = detail
        super().__init__(f"sandbox died ({cause}){': ' + detail if detail else ''}")


class CallTimeout(SandboxError, TimeoutError):
    """A call did not finish within its timeout (the sandbox itself survived)."""


class CodeError(SandboxError):
    """Code run with ``raise_on_error=True`` raised inside the sandbox."""

    def __init__(self, name: str, value: str, traceback: str) -> None:
        self.name = name
        self.value = value
        self.traceback = traceback
        super().__init__(f"{name}: {value}\n{traceback}".rstrip())


class ToolFailure(Exception):
    """A tool call that cannot run as asked: an MCP tool's or an experiment harness's.

    Its message goes back to the agent or LM that made the call, saying why and
    what to call instead; it never reaches sandlot's own callers.
    """


class ToolError(SandboxError):
    """A host function called from the sandbox raised (seen by the host's own callers)."""


class FileOperationError(SandboxError, OSError):
    """A file operation in the sandbox failed (missing path, permission, ...)."""


class FileTooLarge(FileOperationError):
    """``files.read`` met more bytes than its ``max_bytes``; nothing of the file was kept."""


class DownloadRefused(FileOperationError):
    """``download()`` refused what the sandbox sent, and the host destination is as it was.

    The stream may be forged by sandboxed code, so the host refuses a name that
    is absolute, holds ``..`` or leaves the stream's one root, a member under a
    link, a duplicate, a malformed header, or a stream past the byte or member cap.
    """


class SnapshotInvalid(SandboxError, ValueError):
    """A file that is not a whole, unchanged sandlot snapshot; nothing of it was used."""


class RemoteError(SandboxError):
    """A served function raised; ``remote_traceback`` is where, in the serving sandbox."""

    def __init__(self, where: str, name: str, value: str, remote_traceback: str) -> None:
        self.name = name
        self.value = value
        self.remote_traceback = remote_traceback
        self.summary = f"{where} raised {name}: {value}"
        super().__init__(f"{self.summary}\n\nRemote traceback:\n{remote_traceback}")


class ServeError(SandboxError):
    """An interface could not be served (it failed to import, or a model failed to load)."""


# FileOperationError mixed with each builtin OSError subclass, so that callers can
# catch FileNotFoundError and the like. Made once, from the builtins: the name a
# sandbox sends only picks one of these (a cache keyed by that name would let a
# sandbox grow the host's memory with every distinct name it invents).
_FILE_ERRORS: dict[str, type[FileOperationError]] = {
    name: type(name, (FileOperationError, cls), {"__module__": __name__})
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, OSError) and cls is not OSError
}


def _file_error(name: str) -> type[FileOperationError]:
    """``FileOperationError`` mixed with the builtin error called ``name``, if there is one."""
    return _FILE_ERRORS.get(name, FileOperationError)


FILE_OPS = frozenset({"write", "put_tar", "read", "get_tar", "list", "exists", "remove", "mkdir"})


def error_from_reply(op: str, error: dict[str, Any], what: str) -> SandboxError:
    """The exception for a failed reply to request ``op``: the one place they are mapped.

    ``error`` is the reply's checked ``{name, value, traceback}``; ``what`` names
    the call for the message.
    """
    name, value, tb = error["name"], error["value"], error.get("traceback", "")
    if op in FILE_OPS:
        return _file_error(name)(f"{what}: {name}: {value}")
    if op == "invoke":
        return RemoteError(what, name, value, tb)
    if op == "serve":
        return ServeError(f"{what} failed: {name}: {value}\n\n{tb}".rstrip())
    return SandboxError(f"{what} failed in the sandbox: {name}: {value}\n{tb}".rstrip())
