"""What a backend is: something that starts a driver and hands back a channel.

Like an httpx transport, a backend holds no policy: timeouts, tools, retries and
results belong to the sandbox. It only starts the driver somewhere, walled in as
the config asks, and reports how it ended.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..config import SandboxConfig
from ..errors import DeathCause

SANDBOX_UID = 65534  # the user (nobody) a sandbox runs as when the host runs as root


class Launched(Protocol):
    """A running driver as its backend sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    workdir: str  # the workdir as the code inside sees it
    limits: dict[str, int]  # per-process rlimits the driver should set on itself
    drop_to: tuple[int, int] | None  # uid, gid the driver switches to, if any

    async def wait(self) -> int:
        """Wait for the driver's process to end; return its exit status."""
        ...

    def kill(self) -> None:
        """End the driver and every process of the sandbox, at once."""
        ...

    def death_cause(self) -> tuple[DeathCause, str]:
        """Why the sandbox ended, when nobody on the host ended it."""
        ...

    def log_tail(self) -> str:
        """The last lines the driver wrote outside the channel (its own errors)."""
        ...

    async def cleanup(self) -> None:
        """Release what the launch held: cgroups, temporary directories, descriptors."""
        ...


class Backend(Protocol):
    """Starts drivers. ``LocalBackend`` is the default."""

    async def launch(self, config: SandboxConfig) -> Launched:
        """Start a driver for ``config`` and return it connected."""
        ...
