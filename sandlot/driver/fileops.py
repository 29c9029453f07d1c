"""File operations inside the sandbox; paths are relative to the workdir."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from .protocol import CHUNK

Send = Callable[[dict[str, Any], bytes], None]


def resolve(workdir: str, path: str) -> str:
    """Return ``path`` as an absolute path, relative ones under ``workdir``."""
    return os.path.normpath(os.path.join(workdir, path))


def incoming(inbox: queue.Queue[tuple[dict[str, Any], bytes]]) -> Iterator[bytes]:
    """Yield the payloads of ``data`` frames until the one marked ``eof``."""
    while True:
        header, payload = inbox.get()
        if header.get("abort"):
            raise ConnectionAbortedError("the host abandoned the transfer")
        if payload:
            yield payload
        if header.get("eof"):
            return


class _InboxReader:
    """A read-only file object over incoming data frames, for ``tarfile``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buf) < size:
            nxt = next(self.chunks, None)
            if nxt is None:
                break
            self.buf += nxt
        if size < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:size], self.buf[size:]
        return out


class _ChunkWriter:
    """A write-only file object that sends what is written as ``chunk`` frames.

    Small writes (tar headers, padding) are gathered into frames of up to
    :data:`CHUNK` bytes; large ones (file contents) go out as they are, uncopied.
    """

    def __init__(self, rid: int, send: Send) -> None:
        self.rid = rid
        self.send = send
        self.buf = bytearray()
        self.written = 0

    def tell(self) -> int:
        return self.written

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if len(data) < CHUNK // 4:
            self.buf += data
            if len(self.buf) >= CHUNK:
                self.flush()
            return len(data)
        self.flush()
        for start in range(0, len(data), CHUNK):
            self.send({"t": "chunk", "id": self.rid}, bytes(data[start : start + CHUNK]))
        return len(data)

    def flush(self) -> None:
        while self.buf:
            self.send({"t": "chunk", "id": self.rid}, bytes(self.buf[:CHUNK]))
            del self.buf[:CHUNK]


def write_file(path: str, mode: int | None, chunks: Iterator[bytes]) -> dict[str, Any]:
    """Write a file atomically (temp file, then rename) from incoming chunks."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".sandlot-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return {"size": size}


def read_file(rid: int, path: str, send: Send) -> dict[str, Any]:
    """Send a file's bytes as chunks; reply with its size."""
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            send({"t": "chunk", "id": rid}, chunk)
            size += len(chunk)
    return {"size": size}


def list_dir(path: str) -> dict[str, Any]:
    """Entries of a directory with their kind and size, sorted by name."""
    entries = []
    with os.scandir(path) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if entry.is_symlink() else "file"
            entries.append({"name": entry.name, "type": kind, "size": st.st_size})
    entries.sort(key=lambda e: str(e["name"]))
    return {"entries": entries}


def remove(path: str, recursive: bool) -> dict[str, Any]:
    """Remove a file, or a directory (its contents too when ``recursive``)."""
    if os.path.isdir(path) and not os.path.islink(path):
        if recursive:
            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.unlink(path)
    return {}


def put_tar(dest: str, chunks: Iterator[bytes]) -> dict[str, Any]:
    """Unpack an incoming tar stream under ``dest`` (no paths outside it)."""

    os.makedirs(dest, exist_ok=True)
    count = 0
    src: IO[bytes] = _InboxReader(chunks)  # type: ignore[assignment]
    with tarfile.open(fileobj=src, mode="r|") as tar:
        for member in tar:
            tar.extract(member, dest, filter="data")
            count += 1
    for _ in chunks:  # the tar end may come before the last frame
        pass
    return {"members": count}


def get_tar(rid: int, path: str, send: Send) -> dict[str, Any]:
    """Send ``path`` (file or directory) as a tar stream of chunks."""

    out = _ChunkWriter(rid, send)
    with tarfile.open(fileobj=out, mode="w") as tar:  # type: ignore[call-overload]
        tar.copybufsize = CHUNK  # file contents go out in whole chunks
        tar.add(path, arcname=os.path.basename(path.rstrip("/")) or ".")
    out.flush()
    return {}
