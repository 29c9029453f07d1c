"""The link: how the layers above a sandbox send requests to its driver.

A sandbox's files (:mod:`sandlot.files`) and the libraries it serves
(:mod:`sandlot.serving.library`) talk to the driver through the :class:`Link`
the sandbox hands them (``AsyncSandbox.link``), never through the sandbox's own
state. The sandbox implements it, so every request those layers send keeps the
sandbox's policy: its reply is bounded per operation, a file operation whose
sandbox goes silent ends the sandbox, a sandbox that breaks the protocol is
killed with ``SandboxDied(cause="protocol")``, and a dead sandbox raises its
:class:`~sandlot.errors.SandboxDied`.

The dependencies run one way: ``sandbox`` imports ``files``, ``serving.library``
and this module; those two import this module, and neither imports ``sandbox``
at run time.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .channel import Request
from .driver.protocol import Header
from .errors import SandboxDied


class Link(Protocol):
    """A sandbox's requests, with its policy: the interface between it and the layers above."""

    def request(
        self, op: str, payload: bytes = b"", **fields: Any
    ) -> AbstractAsyncContextManager[Request]:
        """Send request ``op``; leaving the block early cancels it in the sandbox.

        What its reply may carry is bounded by ``op``, and waiting on a file
        operation is bounded too; a sandbox that dies raises ``SandboxDied``.
        """
        ...

    async def reply(self, header: Header, op: str, what: str) -> Header:
        """Check the ``res`` message of ``op``: a failed one raises, a malformed one kills.

        ``what`` names the operation in the error raised (``"read 'a.txt'"``).
        """
        ...

    async def value(self, header: Header, payload: bytes) -> tuple[Any, bytes]:
        """The encoded value a checked reply carries; a malformed one kills the sandbox."""
        ...

    async def violation(self, problem: str) -> SandboxDied:
        """End the sandbox for sending ``problem`` (cause ``protocol``); return its error."""
        ...

    def cell_waits(self) -> bool:
        """Whether the code running now is a host function the sandbox's cell waits on."""
        ...

    def refuse_in_cells_call(self, op: str) -> None:
        """Raise ``SandboxError`` if ``op`` (run in the REPL's turn) would wait for that cell."""
        ...
