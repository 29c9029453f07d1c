"""``sb.files``: the sandbox's files, relative to its workdir.

Contents travel as raw payload chunks of at most 1 MiB, with flow control, so a
file of any size crosses without being held twice in memory or encoded as text.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import shutil
import tarfile
import tempfile
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .driver.protocol import CHUNK
from .errors import FileOperationError
from .results import FileInfo

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox


@cache
def _error_class(name: str) -> type[FileOperationError]:
    """``FileOperationError`` mixed with the builtin error of the same name, if any."""
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, OSError) and builtin is not OSError:
        return type(name, (FileOperationError, builtin), {"__module__": "sandlot.errors"})
    return FileOperationError


def _check(header: dict[str, Any], what: str) -> dict[str, Any]:
    if header.get("ok"):
        return header
    err = header.get("error") or {}
    name = err.get("name", "OSError")
    raise _error_class(name)(f"{what}: {name}: {err.get('value', '')}")


class AsyncFiles:
    """File operations on one sandbox (``await sb.files.read("a.txt")``)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self.sandbox = sandbox

    async def _simple(self, op: str, path: str, **fields: Any) -> dict[str, Any]:
        async with self.sandbox._request(op, path=path, **fields) as req:
            header, _ = await req.result()
        return _check(header, f"{op} {path!r}")

    async def write(self, path: str, data: bytes | str, *, mode: int | None = None) -> int:
        """Write ``data`` to ``path`` (parents created, replaced atomically); return its size."""
        if isinstance(data, str):
            data = data.encode()
        view = memoryview(data)
        async with self.sandbox._request("write", path=path, mode=mode) as req:
            for start in range(0, len(view), CHUNK):
                req.send_data(bytes(view[start : start + CHUNK]))
                await req.channel.drain()
            req.send_data(b"", eof=True)
            header, _ = await req.result()
        return int(_check(header, f"write {path!r}")["size"])

    async def read(self, path: str) -> bytes:
        """Return the bytes of file ``path``."""
        parts: list[bytes] = []
        async with self.sandbox._request("read", path=path) as req:
            while True:
                header, payload = await req.next()
                if header["t"] == "res":
                    break
                parts.append(payload)
        _check(header, f"read {path!r}")
        return b"".join(parts)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """Return file ``path`` decoded as text."""
        return (await self.read(path)).decode(encoding)

    async def list(self, path: str = ".") -> list[FileInfo]:
        """The entries of directory ``path``, sorted by name."""
        header = await self._simple("list", path)
        return [FileInfo(**e) for e in header["entries"]]

    async def exists(self, path: str) -> bool:
        """True if ``path`` exists in the sandbox."""
        return bool((await self._simple("exists", path))["exists"])

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (``recursive=True`` for a non-empty one)."""
        await self._simple("remove", path, recursive=recursive)

    async def mkdir(self, path: str) -> None:
        """Create directory ``path`` and its parents."""
        await self._simple("mkdir", path)

    async def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory tree to ``remote`` in the sandbox."""
        local = Path(local)
        if local.is_file():
            await self.write(remote, await _to_thread(local.read_bytes))
            return
        if not local.is_dir():
            raise FileNotFoundError(f"upload: {str(local)!r} is neither a file nor a directory")
        with tempfile.TemporaryFile() as spool:
            await _to_thread(_tar_dir, local, spool)
            spool.seek(0)
            async with self.sandbox._request("put_tar", path=remote) as req:
                while chunk := await _to_thread(spool.read, CHUNK):
                    req.send_data(chunk)
                    await req.channel.drain()
                req.send_data(b"", eof=True)
                header, _ = await req.result()
        _check(header, f"upload to {remote!r}")

    async def download(self, remote: str, local: str | Path) -> None:
        """Copy a sandbox file or directory tree to the host path ``local``."""
        local = Path(local)
        info = await self._simple("exists", remote)
        if not info["exists"]:
            raise _error_class("FileNotFoundError")(f"download: {remote!r} does not exist")
        if not info["is_dir"]:
            data = await self.read(remote)
            local.parent.mkdir(parents=True, exist_ok=True)
            await _to_thread(local.write_bytes, data)
            return
        with tempfile.TemporaryFile() as spool:
            async with self.sandbox._request("get_tar", path=remote) as req:
                while True:
                    header, payload = await req.next()
                    if header["t"] == "res":
                        break
                    await _to_thread(spool.write, payload)
            _check(header, f"download {remote!r}")
            spool.seek(0)
            await _to_thread(_untar_as, spool, local)


async def _to_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _tar_dir(local: Path, out: IO[bytes]) -> None:
    with tarfile.open(fileobj=out, mode="w") as tar:
        for entry in sorted(local.iterdir()):
            tar.add(entry, arcname=entry.name)


def _untar_as(spool: IO[bytes], local: Path) -> None:
    """Unpack a one-root tar stream so that its root becomes ``local``."""
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=local.parent) as tmp:
        with tarfile.open(fileobj=spool, mode="r") as tar:
            tar.extractall(tmp, filter="data")
        (root,) = os.listdir(tmp)
        if local.exists():
            shutil.rmtree(local) if local.is_dir() else local.unlink()
        os.replace(os.path.join(tmp, root), local)
