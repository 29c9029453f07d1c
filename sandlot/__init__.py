"""sandlot: isolated sandboxes with a live Python interpreter for LLM agents.

>>> import sandlot
>>> with sandlot.Sandbox() as sb:
...     sb.run_code("x = 41\\nx + 1").value
'42'
"""

from .config import ModelConfig, Mount, SandboxConfig, VolumeMount
from .driver.exposed import expose, models
from .errors import (
    CallTimeout,
    CodeError,
    ConfigError,
    DownloadRefused,
    FileOperationError,
    RemoteError,
    SandboxDied,
    SandboxError,
    ServeError,
    ToolError,
)
from .pool import AsyncSandboxPool, PoolConfig, PoolMapError
from .results import CodeResult, ExecResult, ExecutionError, FileInfo, OutputChunk
from .sandbox import AsyncProcess, AsyncSandbox
from .serving.library import Library, McpServerSpec, RemoteLibrary
from .sync import Process, Sandbox, SandboxPool
from .untar import DownloadResult
from .volumes import Volume, VolumeInfo
from .workspace import Session, Workspace, create_local_session

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
    "Sandbox",
    "SandboxConfig",
    "SandboxDied",
    "SandboxError",
    "SandboxPool",
    "ServeError",
    "Session",
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
