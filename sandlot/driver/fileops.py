"""File operations inside the sandbox; paths are relative to the workdir."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import stat
import threading

from .protocol import CHUNK, TYPE_CHECKING

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Iterator
    from typing import IO, Any

    from .protocol import Send

# Opening never waits (a fifo without a writer) and never follows a link at the last step.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SKIPPED = 1000  # entries a get_tar reply names at most (its header stays small)


def kind_of(mode: int) -> str:
    """What an ``lstat`` mode says an entry is: one of :data:`protocol.FILE_KINDS`."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"  # character or block: Linux has no other kind


class NotRegularFile(OSError):
    """A read met something that is not a regular file; ``kind`` says what it is."""

    def __init__(self, path: str, kind: str) -> None:
        self.kind = kind
        how = "a directory" if kind == "dir" else f"a {kind}"
        super().__init__(f"{path!r} is {how}, not a regular file; only regular files are read")


def open_regular(path: str) -> int:
    """Open ``path`` for reading if it is a regular file; raise :class:`NotRegularFile` if not.

    A fifo, a socket or a device could block the read forever or never end, and a
    link's target is whatever the link says: anything ``lstat`` does not call a
    regular file is refused unopened, and the open itself neither waits nor
    follows the last component, with ``fstat`` on what it opened deciding (the
    entry may have been replaced in between).
    """
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode):
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a link since the lstat
                raise NotRegularFile(path, "link") from None
            raise
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
    if stat.S_ISDIR(mode):  # the builtin error, so the host raises IsADirectoryError
        raise IsADirectoryError(errno.EISDIR, str(NotRegularFile(path, "dir")))
    raise NotRegularFile(path, kind_of(mode))


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


def payload(
    inbox: queue.Queue[tuple[dict[str, Any], bytes]],
    header: dict[str, Any],
    at_once: bool = False,
) -> Iterator[bytes]:
    """A request's data: its ``data`` frames, or, where its header names ``from_file`` (a
    file this sandbox sees: the host sends only the end), ``size`` bytes of that file from
    ``offset``, a MiB at a time or (``at_once``) in one block."""
    named = header.get("from_file")
    if named is None:
        return incoming(inbox)
    for _ in incoming(inbox):  # the end, and nothing before it
        pass
    size = int(named["size"])
    block = size if at_once else 1 << 20
    return _file_chunks(str(named["path"]), int(named["offset"]), size, block)


def _file_chunks(path: str, offset: int, size: int, block: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while size > 0:
            data = f.read(min(size, block))
            if not data:
                raise EOFError(f"{path} ended {size} bytes early")
            size -= len(data)
            yield data


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


class ChunkWriter:
    """A write-only file object that sends what is written as ``chunk`` frames.

    Small writes (tar headers, padding) are gathered into frames of up to
    :data:`CHUNK` bytes; large ones (file contents) go out as they are, uncopied.
    """

    def __init__(self, rid: int, send: Send, stop: threading.Event | None = None) -> None:
        self.rid = rid
        self.send = send
        self.buf = bytearray()
        self.written = 0
        self.stop = stop  # once set, a write raises: the host cancelled the request

    def tell(self) -> int:
        return self.written

    def write(self, data: bytes) -> int:
        if self.stop is not None and self.stop.is_set():
            raise ConnectionAbortedError("the host cancelled this request")
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
    fd, tmp = _new_beside(parent)
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


def _new_beside(parent: str) -> tuple[int, str]:
    """A new empty file in ``parent`` (named ``.sandlot-`` and 12 random hex digits, mode
    0600), open for writing, and its path: ``tempfile.mkstemp``'s contract, without importing
    ``tempfile`` (and ``random``, ``shutil``) into every driver."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC  # O_EXCL: never through a link
    while True:
        path = os.path.join(parent, f".sandlot-{os.urandom(6).hex()}")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue


def read_file(rid: int, path: str, send: Send) -> dict[str, Any]:
    """Send a regular file's bytes as chunks; reply with its size."""
    size = 0
    with os.fdopen(open_regular(path), "rb") as fh:
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
            entries.append({"name": entry.name, "type": kind_of(st.st_mode), "size": st.st_size})
    entries.sort(key=lambda e: str(e["name"]))
    return {"entries": entries}


def remove(path: str, recursive: bool) -> dict[str, Any]:
    """Remove a file, or a directory (its contents too when ``recursive``)."""
    if os.path.isdir(path) and not os.path.islink(path):
        if recursive:
            import shutil  # lazily: not needed before the first such remove (start-up time)

            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.unlink(path)
    return {}


def put_tar(dest: str, chunks: Iterator[bytes]) -> dict[str, Any]:
    """Unpack an incoming tar stream under ``dest`` (no paths outside it).

    A file replaces what is at its name (as :func:`write_file` does): an old fifo
    or link there is removed first, never opened or followed.
    """

    os.makedirs(dest, exist_ok=True)
    count = 0
    src: IO[bytes] = _InboxReader(chunks)  # type: ignore[assignment]
    root = os.path.realpath(dest)
    import tarfile  # lazily: not needed before the first tar (start-up time)

    with tarfile.open(fileobj=src, mode="r|") as tar:
        for member in tar:
            if not member.isdir():
                _clear(root, member.name)
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, dest, filter="data")
            else:
                tar.extract(_as_data_would(member, root), dest)
            count += 1
    for _ in chunks:  # the tar end may come before the last frame
        pass
    return {"members": count}


def _as_data_would(member: Any, root: str) -> Any:
    """``member`` as the ``data`` extraction filter would pass it, for a Python without one
    (3.11 before 3.11.4, as Debian 12's): its name and any link inside ``root``, only
    files, directories and links, no set-user-ID and no write for others; else ValueError.
    """
    import copy

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    where = os.path.join(root, member.name)
    if os.path.isabs(member.name) or not inside(where):
        raise ValueError(f"{member.name!r} would be extracted outside the destination")
    if member.issym() or member.islnk():
        base = os.path.dirname(where) if member.issym() else root
        if os.path.isabs(member.linkname) or not inside(os.path.join(base, member.linkname)):
            raise ValueError(f"{member.name!r} links outside the destination")
    elif not (member.isfile() or member.isdir()):
        raise ValueError(f"{member.name!r} is a special file")
    safe = copy.copy(member)
    safe.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    safe.uid = safe.gid = 0
    safe.uname = safe.gname = ""
    return safe


def _clear(root: str, name: str) -> None:
    """Remove the entry at ``name`` under directory ``root`` unless it is a directory.

    Only inside ``root``: a name the ``data`` filter will refuse is left to it.
    """
    target = os.path.join(root, name)
    parent = os.path.realpath(os.path.dirname(target))
    if os.path.isabs(name) or not (parent == root or parent.startswith(root + os.sep)):
        return
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(target).st_mode):
            os.unlink(target)


def get_tar(rid: int, path: str, send: Send, root: str | None = None) -> dict[str, Any]:
    """Send ``path`` (file or directory) as a tar stream of chunks, named ``root`` in it.

    ``root`` defaults to ``path``'s own name; ``"."`` makes a directory's
    entries the stream's top level, to unpack in another directory as they are.

    Links, fifos and devices travel as their own headers (the host skips them);
    file contents are read through :func:`open_regular`, so nothing blocks the
    stream. What a tar cannot hold (a socket) is left out and named in the
    reply's ``skipped``.
    """

    out = ChunkWriter(rid, send)
    skipped: list[dict[str, str]] = []
    import tarfile  # lazily: not needed before the first tar (start-up time)

    with tarfile.open(fileobj=out, mode="w") as tar:  # type: ignore[call-overload]
        tar.copybufsize = CHUNK  # file contents go out in whole chunks
        _add(tar, path, root or os.path.basename(path.rstrip("/")) or ".", skipped)
    out.flush()
    return {"skipped": skipped[:MAX_SKIPPED]} if skipped else {}


def _add(tar: tarfile.TarFile, path: str, arcname: str, skipped: list[dict[str, str]]) -> None:
    """Add ``path`` to ``tar`` as ``tarfile.add`` would, opening files with :func:`open_regular`."""
    try:
        fh = os.fdopen(open_regular(path), "rb")
    except (NotRegularFile, IsADirectoryError):
        info = tar.gettarinfo(path, arcname)  # lstat: a link is a link, a fifo is not opened
    else:
        with fh:  # the header from the open file: its size is the one read
            tar.addfile(tar.gettarinfo(arcname=arcname, fileobj=fh), fh)
        return
    if info is None:  # a socket: no tar member type holds one
        skipped.append({"name": arcname, "type": "socket"})
        return
    tar.addfile(info)
    if info.isdir():
        for name in sorted(os.listdir(path)):
            _add(tar, os.path.join(path, name), f"{arcname}/{name}", skipped)
