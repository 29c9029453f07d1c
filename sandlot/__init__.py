"""sandlot: isolated sandboxes with a live Python interpreter for LLM agents.

>>> import sandlot
>>> with sandlot.Sandbox() as sb:
...     sb.run_code("x = 41\\nx + 1").value
'42'

``import sandlot`` imports none of the modules below: each public name is
imported from its module on first use (PEP 562), so that a program or a
command (``sandlot --help``) pays only for what it touches.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (a third of what this module costs);
# mypy reads any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .config import ModelConfig, Mount, SandboxConfig, VolumeMount
    from .driver.exposed import expose, models
    from .errors import (
        CallTimeout,
        CodeError,
        ConfigError,
        DownloadRefused,
        FileOperationError,
        FileTooLarge,
        RemoteError,
        SandboxDied,
        SandboxError,
        ServeError,
        SnapshotInvalid,
        ToolError,
    )
    from .pool import AsyncSandboxPool, PoolConfig, PoolMapError
    from .results import (
        CodeResult,
        ExecResult,
        ExecutionError,
        FileInfo,
        OutputChunk,
        RestoreResult,
        SkippedVariable,
        SnapshotResult,
    )
    from .sandbox import AsyncProcess, AsyncSandbox
    from .serving.library import Library, McpServerSpec, RemoteLibrary
    from .sync import Process, Sandbox, SandboxPool
    from .untar import DownloadResult
    from .volumes import Volume, VolumeInfo
    from .workspace import Session, Workspace, create_local_session

# The module each public name is imported from on first use.
_HOMES = {
    "config": ("ModelConfig", "Mount", "SandboxConfig", "VolumeMount"),
    "driver.exposed": ("expose", "models"),
    "errors": (
        "CallTimeout",
        "CodeError",
        "ConfigError",
        "DownloadRefused",
        "FileOperationError",
        "FileTooLarge",
        "RemoteError",
        "SandboxDied",
        "SandboxError",
        "ServeError",
        "SnapshotInvalid",
        "ToolError",
    ),
    "pool": ("AsyncSandboxPool", "PoolConfig", "PoolMapError"),
    "results": (
        "CodeResult",
        "ExecResult",
        "ExecutionError",
        "FileInfo",
        "OutputChunk",
        "RestoreResult",
        "SkippedVariable",
        "SnapshotResult",
    ),
    "sandbox": ("AsyncProcess", "AsyncSandbox"),
    "serving.library": ("Library", "McpServerSpec", "RemoteLibrary"),
    "sync": ("Process", "Sandbox", "SandboxPool"),
    "untar": ("DownloadResult",),
    "volumes": ("Volume", "VolumeInfo"),
    "workspace": ("Session", "Workspace", "create_local_session"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "AsyncProcess",
    "AsyncSandbox",
    "AsyncSandboxPool",
    "CallTimeout",
    "CodeError",
    "CodeResult",
    "ConfigError",
    "DownloadRefused",
    "DownloadResult",
    "ExecResult",
    "ExecutionError",
    "FileInfo",
    "FileOperationError",
    "FileTooLarge",
    "Library",
    "McpServerSpec",
    "ModelConfig",
    "Mount",
    "OutputChunk",
    "PoolConfig",
    "PoolMapError",
    "Process",
    "RemoteError",
    "RemoteLibrary",
    "RestoreResult",
    "Sandbox",
    "SandboxConfig",
    "SandboxDied",
    "SandboxError",
    "SandboxPool",
    "ServeError",
    "Session",
    "SkippedVariable",
    "SnapshotInvalid",
    "SnapshotResult",
    "ToolError",
    "Volume",
    "VolumeInfo",
    "VolumeMount",
    "Workspace",
    "create_local_session",
    "expose",
    "models",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """A public name imported from its module now, or a submodule (``sandlot.backends``).

    Submodules are found too because ``import sandlot`` used to import most of
    them, so ``sandlot.sync`` and its kin were attributes of the package.
    """
    home = _HOME_OF.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value  # later lookups find it without this function
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists; what it imports does not
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names beside what is already loaded (for completion in a REPL)."""
    return sorted({*globals(), *__all__})
