"""What a backend is: something that starts a driver and hands back a frame connection.

Like an httpx transport, a backend holds no policy: timeouts, tools, retries and
results belong to the sandbox. It only starts the driver somewhere, walled in as
the config asks, builds the driver's start-up (the init message: the sandbox's
fields, plus what only the backend knows, such as the workdir inside, the
rlimits and the user to drop to), and reports how the driver ended.

The connection is a byte stream each way: ``reader`` (an
``asyncio.StreamReader``, which a backend may feed itself from any source with
``feed_data``) and ``writer`` (anything with ``write``, ``drain``, ``close`` and
``wait_closed``). The driver speaks frames over any byte stream: a socket, or a
pipe pair such as a remote process's stdin and stdout (``python -m
sandlot_driver --stdio``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..channel import ByteSink
from ..config import SandboxConfig
from ..errors import DeathCause


class Launched(Protocol):
    """A running driver as its backend sees it: its frame connection, and its end."""

    @property
    def reader(self) -> asyncio.StreamReader:
        """Bytes from the driver."""
        ...

    @property
    def writer(self) -> ByteSink:
        """Bytes to the driver."""
        ...

    @property
    def workdir(self) -> str:
        """The workdir as the code inside sees it."""
        ...

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
    """Starts drivers. ``LocalBackend`` is the default; ``sandlot.backends`` names them."""

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> Launched:
        """Start a driver for ``config``, send it its init message, and return it connected.

        ``init`` holds the sandbox's own fields of the init message (``t``,
        ``max_output_bytes``, ``tools``); the backend adds ``workdir``,
        ``limits`` and ``drop_to`` and sends it as the first frame.
        """
        ...
