"""``sb.files``: the sandbox's files, relative to its workdir.

Contents travel as raw payload chunks of at most 1 MiB, with flow control, so a
file of any size crosses without being held twice in memory or encoded as text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import tarfile
import tempfile
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any, Protocol

from .channel import Request
from .driver.protocol import CHUNK
from .errors import DownloadRefused, FileTooLarge
from .link import Link
from .results import FileInfo
from .untar import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    DownloadResult,
    SkippedMember,
    extract,
)

DEFAULT_MAX_READ = 1 << 30  # what read() holds in the host's memory
READ_BLOCK = 8 * CHUNK  # what one thread hop reads of a file being sent


class Spool(Protocol):
    """Where :meth:`AsyncFiles.receive_tar` writes: a file, or anything with these two."""

    def write(self, data: bytes, /) -> int:
        """Append ``data``."""
        ...

    def flush(self) -> None:
        """Make what was written reach the file."""
        ...


@dataclasses.dataclass(frozen=True)
class InSandbox:
    """Bytes the sandbox already sees, to be read there instead of sent: ``size`` bytes of
    its file ``path`` from ``offset`` (a host file mounted into it read-only)."""

    path: str
    offset: int
    size: int

    def fields(self) -> dict[str, Any]:
        """The request's header fields that name them."""
        return {"from_file": {"path": self.path, "offset": self.offset, "size": self.size}}


class AsyncFiles:
    """File operations on one sandbox (``await sb.files.read("a.txt")``).

    The sandbox makes it with its :class:`~sandlot.link.Link`, which carries each
    request with the sandbox's bounds and deadlines.
    """

    def __init__(self, link: Link) -> None:
        self._link = link

    async def _simple(self, op: str, path: str, **fields: Any) -> dict[str, Any]:
        async with self._link.request(op, path=path, **fields) as req:
            header, _ = await req.result()
        return await self._link.reply(header, op, f"{op} {path!r}")

    async def write(self, path: str, data: bytes | str, *, mode: int | None = None) -> int:
        """Write ``data`` to ``path`` (parents created, replaced atomically); return its size."""
        if isinstance(data, str):
            data = data.encode()
        async with self._link.request("write", path=path, mode=mode) as req:
            await req.send_all(data)
            header, _ = await req.result()
        return int((await self._link.reply(header, "write", f"write {path!r}"))["size"])

    async def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
        """Return the bytes of regular file ``path``.

        Anything else (a directory, a link, a fifo, a socket, a device) is
        refused at once with :class:`FileOperationError` naming its kind: the
        sandbox opens without following a link or waiting on a fifo.

        The host holds at most ``max_bytes`` of it in memory (whatever the
        sandbox sends): past that, the read stops and raises
        :class:`~sandlot.errors.FileTooLarge` (a :class:`FileOperationError`);
        use :meth:`download` for larger files.
        """
        parts: list[bytes] = []
        size = 0
        async with self._link.request("read", path=path) as req:
            while True:
                header, payload = await req.next()
                if header["t"] == "res":
                    break
                size += len(payload)
                if size > max_bytes:
                    raise FileTooLarge(
                        f"read {path!r}: more than max_bytes={max_bytes} bytes arrived; "
                        "raise max_bytes, or download() the file to disk"
                    )
                parts.append(payload)
        await self._link.reply(header, "read", f"read {path!r}")
        return b"".join(parts)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """Return file ``path`` decoded as text."""
        return (await self.read(path)).decode(encoding)

    async def list(self, path: str = ".") -> list[FileInfo]:
        """The entries of directory ``path``, sorted by name.

        Each entry's ``type`` is what it is itself (a link is ``"link"``, not its
        target): ``file``, ``dir``, ``link``, ``fifo``, ``socket`` or ``device``.
        """
        header = await self._simple("list", path)
        return [FileInfo(e["name"], e["type"], e["size"]) for e in header["entries"]]

    async def exists(self, path: str) -> bool:
        """True if ``path`` exists in the sandbox."""
        return bool((await self._simple("exists", path))["exists"])

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (``recursive=True`` for a non-empty one)."""
        await self._simple("remove", path, recursive=recursive)

    async def mkdir(self, path: str) -> None:
        """Create directory ``path`` and its parents."""
        await self._simple("mkdir", path)

    async def upload(
        self, local: str | Path, remote: str, *, exclude: Collection[str] = ()
    ) -> None:
        """Copy a host file or directory tree to ``remote`` in the sandbox.

        ``exclude``: glob patterns (``fnmatch``) for names, at any depth of the
        tree, left out with everything below them (``[".git", ".env*"]``).
        """
        local = Path(local)
        if local.is_file():
            data = await _to_thread(local.read_bytes)
            await self.write(remote, data, mode=local.stat().st_mode & 0o777)
            return
        if not local.is_dir():
            raise FileNotFoundError(f"upload: {str(local)!r} is neither a file nor a directory")
        with tempfile.TemporaryFile() as spool:
            await _to_thread(_tar_dir, local, spool, tuple(exclude))
            spool.seek(0)
            await self.send_tar(spool, remote)

    async def send_tar(
        self, source: IO[bytes] | InSandbox, remote: str, size: int | None = None
    ) -> int:
        """Unpack the tar stream read from ``source`` (``size`` bytes, or to its end) at ``remote``.

        The sandbox unpacks it with the ``data`` filter (no names outside
        ``remote``, no devices); returns how many members it unpacked.
        """
        extra = source.fields() if isinstance(source, InSandbox) else {}
        async with self._link.request("put_tar", path=remote, **extra) as req:
            await send_chunks(req, source, size)
            header, _ = await req.result()
        reply = await self._link.reply(header, "put_tar", f"upload to {remote!r}")
        return int(reply["members"])

    async def download(
        self,
        remote: str,
        local: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_members: int = DEFAULT_MAX_MEMBERS,
    ) -> DownloadResult:
        """Copy sandbox file or directory ``remote`` to the host path ``local``.

        The sandbox sends a tar stream, which the host reads as hostile: at most
        ``max_bytes`` of it and ``max_members`` members, regular files and
        directories only (links, devices, fifos and sockets are skipped, reported
        in ``result.skipped`` and warned about), no name outside its one root. What
        ``local`` becomes (file or directory) is what ``remote`` is; an existing
        ``local`` is replaced (a symlink itself, never its target), and only once
        the whole stream is out. Anything else raises :class:`DownloadRefused`
        and leaves ``local`` as it was.
        """
        local = Path(local)
        what = f"download {remote!r}"
        local.parent.mkdir(parents=True, exist_ok=True)
        # Beside local: the same filesystem as the copy, so the kernel can copy in place.
        spool = tempfile.TemporaryFile(dir=local.parent)  # noqa: SIM115 (handed to a thread)
        try:
            reply, received = await self.receive_tar(remote, spool, max_bytes)
        except BaseException:
            spool.close()
            raise
        # From here the worker thread owns the spool, even if this task is cancelled.
        result: DownloadResult = await _to_thread(
            _extract, spool, received, local, max_members, what
        )
        # What the stream could not carry (sockets), as the sandbox names it: only reported.
        unsent = [SkippedMember(e["name"], e["type"]) for e in reply.get("skipped", [])]
        if unsent:
            result = dataclasses.replace(result, skipped=(*result.skipped, *unsent))
        if result.skipped:
            shown = ", ".join(f"{s.name!r} ({s.kind})" for s in result.skipped[:10])
            more = len(result.skipped) - 10
            warnings.warn(
                f"{what}: skipped {len(result.skipped)} member(s) that are neither regular "
                f"files nor directories: {shown}{f' and {more} more' if more > 0 else ''}",
                stacklevel=2,
            )
        return result

    async def receive_tar(
        self, remote: str, spool: Spool, max_bytes: int, *, root: str | None = None
    ) -> tuple[dict[str, Any], int]:
        """Write the sandbox's tar stream of ``remote`` to ``spool``, unread; return reply and size.

        The stream is the sandbox's: nothing here looks inside it. More than
        ``max_bytes`` of it raises :class:`DownloadRefused`. ``root`` names
        ``remote`` in the stream (its own name unless given; ``"."`` puts its
        entries at the top).
        """
        what = f"download {remote!r}"
        received = 0
        async with self._link.request("get_tar", path=remote, root=root) as req:
            while True:
                header, payload = await req.next()
                if header.get("t") == "res":
                    break
                received += len(payload)
                if received > max_bytes:
                    raise DownloadRefused(
                        f"{what}: the stream is larger than max_bytes={max_bytes}"
                    )
                spool.write(payload)  # in the loop's thread: no other thread holds the file
        reply = await self._link.reply(header, "get_tar", what)
        spool.flush()
        return reply, received


async def send_chunks(req: Request, source: IO[bytes] | InSandbox, size: int | None = None) -> None:
    """Send ``size`` bytes of ``source`` (or all, to its end) as data frames, then the end;
    only the end where the sandbox reads them itself (:class:`InSandbox`)."""
    if isinstance(source, InSandbox):
        req.send_data(b"", eof=True)
        return
    left = size
    while left is None or left > 0:
        # A few frames per read: a thread's hop costs more than reading a cached MiB.
        block = await _to_thread(source.read, READ_BLOCK if left is None else min(READ_BLOCK, left))
        if not block:
            break
        if left is not None:
            left -= len(block)
        for start in range(0, len(block), CHUNK):
            req.send_data(block[start : start + CHUNK])
            await req.channel.drain()
    req.send_data(b"", eof=True)


async def _to_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _tar_dir(local: Path, out: IO[bytes], exclude: tuple[str, ...] = ()) -> None:
    # tar.add does not dereference: a symlink in the tree travels as a link, so no host
    # file outside the tree the user named is read into the sandbox.
    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = member.name.rsplit("/", 1)[-1]
        return None if any(fnmatch.fnmatchcase(name, p) for p in exclude) else member

    with tarfile.open(fileobj=out, mode="w") as tar:
        for entry in sorted(local.iterdir()):
            tar.add(entry, arcname=entry.name, filter=keep)


def _extract(
    spool: IO[bytes], length: int, local: Path, max_members: int, what: str
) -> DownloadResult:
    """Unpack the spooled stream to ``local``, then close the spool."""
    with spool:
        try:
            return extract(spool, length, local, max_members=max_members)
        except DownloadRefused as exc:
            raise DownloadRefused(f"{what}: {exc}") from None
