"""sandlot: isolated sandboxes with a live Python interpreter for LLM agents.

>>> import sandlot
>>> with sandlot.Sandbox() as sb:
...     sb.run_code("x = 41\\nx + 1").value
'42'
"""

from .config import ModelConfig, Mount, SandboxConfig
from .errors import (
    CallTimeout,
    CodeError,
    ConfigError,
    FileOperationError,
    SandboxDied,
    SandboxError,
    ToolError,
)
from .pool import AsyncSandboxPool, PoolMapError
from .results import CodeResult, ExecResult, ExecutionError, FileInfo, OutputChunk
from .sandbox import AsyncProcess, AsyncSandbox
from .sync import Process, Sandbox, SandboxPool

__all__ = [
    "AsyncProcess",
    "AsyncSandbox",
    "AsyncSandboxPool",
    "CallTimeout",
    "CodeError",
    "CodeResult",
    "ConfigError",
    "ExecResult",
    "ExecutionError",
    "FileInfo",
    "FileOperationError",
    "ModelConfig",
    "Mount",
    "OutputChunk",
    "PoolMapError",
    "Process",
    "Sandbox",
    "SandboxConfig",
    "SandboxDied",
    "SandboxError",
    "SandboxPool",
    "ToolError",
]
__version__ = "0.1.0"
