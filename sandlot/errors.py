"""The errors sandlot raises. ``SandboxError`` is the base of all of them."""

from __future__ import annotations

from typing import Literal

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


class ToolError(SandboxError):
    """A host function called from the sandbox raised (seen by the host's own callers)."""


class FileOperationError(SandboxError, OSError):
    """A file operation in the sandbox failed (missing path, permission, ...)."""
