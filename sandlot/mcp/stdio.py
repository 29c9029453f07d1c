"""The MCP server over stdio, read and written on the event loop instead of in threads.

The SDK's stdio transport reads and writes the process's stdin and stdout
through worker threads: three thread hand-offs per request and reply, which is
most of what a trivial tool call costs over stdio. Here the same wire is read
and written through asyncio pipe transports, on the loop itself.

As the SDK does, the wire is moved off file descriptors 0 and 1 while the
server runs: fd 0 reads the null device and fd 1 goes to stderr, so a library
(or a child process) that prints cannot corrupt the protocol. Where stdin or
stdout is not a pipe or a socket (a terminal, a file), the SDK's own
transport serves instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server

MAX_LINE = 1 << 30  # bytes in one JSON-RPC message from the client


def _streamable(fd: int) -> bool:
    """Whether ``fd`` is a pipe or a socket, which the loop can watch.

    A terminal could be watched too, but the loop makes its descriptor
    non-blocking, which the shell sharing it would notice afterwards.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Lines:
    """The client's messages, one per line, as the SDK's transport iterates them."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Out:
    """The wire to the client: ``write`` then ``flush``, as the SDK's transport calls them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


@contextlib.asynccontextmanager
async def _wire() -> AsyncIterator[tuple[_Lines, _Out]]:
    """Take fds 0 and 1 for the protocol, and give them back at the end."""
    loop = asyncio.get_running_loop()
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    saved_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    saved_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    transports: list[asyncio.BaseTransport] = []
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
        )
        transports.append(read_transport)
        write_transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
            os.fdopen(wire_out, "wb", buffering=0),
        )
        transports.append(write_transport)
        writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
        yield _Lines(reader), _Out(writer)
    finally:
        for transport in transports:
            transport.close()
        for fd in (saved_in, saved_out):
            os.set_blocking(fd, True)  # the loop made the shared descriptions non-blocking
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


async def _serve(server: MCPServer[Any]) -> None:
    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async drives, too
    async with (
        _wire() as (lines, out),
        stdio_server(lines, out) as (read_stream, write_stream),  # type: ignore[arg-type]
    ):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve ``server`` over this process's stdin and stdout until the client closes stdin."""
    if not (_streamable(0) and _streamable(1)):
        server.run()
        return
    anyio.run(_serve, server)
