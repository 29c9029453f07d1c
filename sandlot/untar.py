"""The host's strict reader of the tar stream that ``download()`` receives.

The driver shares its process with sandboxed code, so every byte of the stream
may be forged. This module trusts none of it. It reads uncompressed ustar, GNU
and pax headers itself (not :mod:`tarfile`: on this Python its ``data`` filter
can be bypassed with a long symlink chain, CVE-2025-4517, and its pax parser
has a ReDoS, CVE-2024-6232), creates regular files and directories only, and
skips and reports every other kind of member (links, devices, fifos, sparse
files). It refuses a name that is absolute, empty, holds a NUL or a ``.`` or
``..`` component, leaves the stream's single root, repeats an earlier name or
lies under anything but a directory declared before it.

Two passes over the spooled stream: :func:`read_plan` reads every header and
checks names, kinds, sizes and counts before anything is created; then the
tree is made in a fresh directory beside the destination, relative to directory
file descriptors with ``O_NOFOLLOW`` and ``O_EXCL``, each file getting exactly
the bytes its header declares, copied from the spool. Only when all of it is
out does the root replace the destination (a symlink there is replaced itself,
never followed). On any error the fresh directory goes and the destination is
as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import DownloadRefused

DEFAULT_MAX_BYTES = 4 << 30  # what the host spools of one stream
DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_MAX_NAME_BYTES = 32 << 20  # of all member names together; see name_bytes_cap
NAME_BYTES_PER_MEMBER = 256  # what raising max_members adds to that cap, per member

BLOCK = 512
MAX_NAME = 4096  # bytes; the sandbox's own paths stop at PATH_MAX
MAX_COMPONENT = 255  # bytes; NAME_MAX
MAX_DEPTH = 256  # levels; extraction holds one descriptor per level
MAX_PAX = 1 << 20  # bytes of one pax header
MAX_EXTENSIONS = 4  # extension headers (pax, long name) in a row before a member

_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_FILE_TYPES = (b"0", b"\0", b"7")
_DIR_TYPE = b"5"
_SKIPPED_KINDS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"6": "fifo",
    b"S": "GNU sparse file",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY = 1 << 20


@dataclass(frozen=True)
class SkippedMember:
    """A member of the stream that is not a regular file or directory, so not created."""

    name: str  # as the stream named it, root first: 'out/link'
    kind: str  # 'symbolic link', 'hard link', 'character device', ... or "type 'V'"


@dataclass(frozen=True)
class DownloadResult:
    """What ``download()`` put on the host: ``path`` and what is under it, and what it skipped."""

    path: Path
    files: int
    directories: int
    size: int  # bytes of file contents written
    skipped: tuple[SkippedMember, ...] = ()


@dataclass(slots=True, eq=False)
class _Member:
    name: bytes  # its last component: a member holds its own name, never its path
    is_dir: bool
    mode: int
    mtime: int | None
    offset: int  # of its data in the spool
    size: int
    # A directory's members by name, in stream order; None marks a skipped one.
    entries: dict[bytes, _Member | None] | None = None


@dataclass
class Plan:
    """The checked contents of a stream: what to create, in tree order, and what to skip.

    The members form a tree, each node holding only its last name component,
    so the plan grows with the number of members, not with the length of their
    names (a deep tree's paths repeat every parent's name in every member).
    """

    root: _Member | None = None
    skipped: list[SkippedMember] = field(default_factory=list)
    files: int = 0
    directories: int = 0
    size: int = 0
    _root_name: bytes = b""
    _root_kind: str = ""
    # The directory of the member before, by path: members come grouped by directory.
    _last_dir: tuple[tuple[bytes, ...], _Member | None] = ((), None)

    def add(self, parts: tuple[bytes, ...], kind: str, member: _Member | None) -> None:
        """Record a member (``member`` is None for one that is skipped), checking its place."""
        if not self._root_name:
            if len(parts) != 1:
                raise DownloadRefused(
                    f"the stream's first member {_show(b'/'.join(parts))} is not a single name"
                )
            self._root_name, self._root_kind = parts[0], kind
            if member is None:
                self.skipped.append(SkippedMember(os.fsdecode(parts[0]), kind))
                return
            self.root = member
        else:
            if parts[0] != self._root_name:
                raise DownloadRefused(
                    f"member {_show(b'/'.join(parts))} is outside the stream's root"
                )
            entries = self._entries(parts) if len(parts) > 1 else None
            if entries is None or parts[-1] in entries:
                raise DownloadRefused(
                    f"member {_show(b'/'.join(parts))} appears twice in the stream"
                )
            entries[parts[-1]] = member
            if member is None:
                self.skipped.append(SkippedMember(os.fsdecode(b"/".join(parts)), kind))
                return
        if member.is_dir:
            member.entries = {}
            self.directories += 1
        else:
            self.files += 1
            self.size += member.size

    def _entries(self, parts: tuple[bytes, ...]) -> dict[bytes, _Member | None]:
        """The entries of the directory that ``parts`` (below the root) lies in."""
        path = parts[:-1]
        last_path, directory = self._last_dir
        if path != last_path:
            directory = self.root
            for part in path[1:]:
                if directory is None or directory.entries is None:
                    break
                directory = directory.entries.get(part)
            self._last_dir = (path, directory)
        if directory is None or directory.entries is None:
            raise DownloadRefused(
                f"member {_show(b'/'.join(parts))} is not under a directory that the stream "
                "declared before it"
            )
        return directory.entries

    def check_root(self) -> _Member:
        """The root to create; refuses a stream without one, or whose root is not created."""
        if self.root is not None:
            return self.root
        if not self._root_name:
            raise DownloadRefused("the stream holds no members")
        raise DownloadRefused(
            f"the stream's root is a {self._root_kind}; download copies regular files "
            "and directories only"
        )


def name_bytes_cap(max_members: int) -> int:
    """The most bytes that all member names of a stream may add up to.

    32 MiB, or 256 bytes a member where ``max_members`` allows more: it bounds
    the time spent on names and what ``skipped`` holds, and no real tree comes
    near it (100 000 names of 335 bytes each on average).
    """
    return max(DEFAULT_MAX_NAME_BYTES, max_members * NAME_BYTES_PER_MEMBER)


def extract(
    spool: IO[bytes], length: int, local: Path, *, max_members: int = DEFAULT_MAX_MEMBERS
) -> DownloadResult:
    """Unpack the first ``length`` bytes of ``spool`` so that the stream's root becomes ``local``.

    Raises :class:`DownloadRefused` for anything but a well-formed stream of one
    root; ``local`` is then as it was. ``local.parent`` must exist.
    """
    plan = read_plan(spool, length, max_members=max_members)
    root = plan.check_root()
    tmp = tempfile.mkdtemp(dir=local.parent, prefix=".sandlot-download-")
    try:
        tmp_fd = os.open(tmp, _DIR_FLAGS)
        try:
            _create(root, spool.fileno(), tmp_fd)
        finally:
            os.close(tmp_fd)
        _swap(os.path.join(tmp, "root"), local, os.path.join(tmp, "replaced"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DownloadResult(local, plan.files, plan.directories, plan.size, tuple(plan.skipped))


# -- reading -------------------------------------------------------------------


class _Stream:
    """Blocks of the spool, never past ``length``."""

    def __init__(self, spool: IO[bytes], length: int) -> None:
        self.spool = spool
        self.length = length
        self.pos = 0
        spool.seek(0)

    def block(self) -> bytes | None:
        """The next 512-byte block, or None where the stream ends cleanly."""
        if self.pos >= self.length:
            return None
        if self.length - self.pos < BLOCK:
            raise DownloadRefused("the stream ends inside a header")
        data = self.spool.read(BLOCK)
        if len(data) != BLOCK:
            raise DownloadRefused("the stream ends inside a header")
        self.pos += BLOCK
        return data

    def skip(self, size: int, label: bytes | str) -> int:
        """Step over ``size`` bytes of data (and their padding); return where they start."""
        padded = -(-size // BLOCK) * BLOCK
        left = self.length - self.pos
        if padded > left:
            raise DownloadRefused(
                f"{_label(label)} declares {size} bytes; the stream has {left} bytes left"
            )
        start = self.pos
        self.pos += padded
        self.spool.seek(self.pos)
        return start

    def take(self, size: int, label: str) -> bytes:
        """Read ``size`` bytes of data (an extension header's) and step over their padding."""
        start = self.skip(size, label)
        self.spool.seek(start)
        data = self.spool.read(size)
        self.spool.seek(self.pos)
        return data


@dataclass
class _Header:
    type: bytes
    name: bytes
    mode: int
    size: int
    mtime: int | None
    block: bytes


def read_plan(spool: IO[bytes], length: int, *, max_members: int = DEFAULT_MAX_MEMBERS) -> Plan:
    """Read and check every header of the stream; create nothing."""
    stream = _Stream(spool, length)
    plan = Plan()
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    extensions = 0
    members = 0
    name_bytes = 0
    max_name_bytes = name_bytes_cap(max_members)
    while True:
        block = stream.block()
        if block is None or not any(block):  # the end, or the end-of-archive marker
            if extensions:
                raise DownloadRefused("the stream ends after an extension header")
            return plan
        head = _parse_header(block)
        if head.type in (b"x", b"g", b"L", b"K"):
            extensions += 1
            if extensions > MAX_EXTENSIONS:
                raise DownloadRefused(f"more than {MAX_EXTENSIONS} extension headers in a row")
            limit = MAX_PAX if head.type in (b"x", b"g") else MAX_NAME + 1
            if head.size > limit:
                raise DownloadRefused(
                    f"an extension header of type {head.type.decode('latin-1')!r} declares "
                    f"{head.size} bytes (at most {limit})"
                )
            if head.type == b"x":
                pax.update(_pax_records(stream.take(head.size, "a pax header")))
            elif head.type == b"L":
                long_name = _long_name(stream.take(head.size, "a long name"))
            else:  # a global pax header, a long link name: nothing the host uses
                stream.skip(head.size, "an extension header")
            continue
        extensions = 0
        name = pax.get(b"path", long_name if long_name is not None else head.name)
        size = _pax_size(pax[b"size"]) if b"size" in pax else head.size
        sparse = any(key.startswith(b"GNU.sparse.") for key in pax)
        pax, long_name = {}, None
        members += 1
        if members > max_members:
            raise DownloadRefused(f"the stream holds more than {max_members} members (max_members)")
        name_bytes += len(name)
        if name_bytes > max_name_bytes:
            raise DownloadRefused(
                f"the stream's member names add up to more than {max_name_bytes} bytes "
                f"(the cap on names for max_members={max_members})"
            )
        if head.type == b"S" and head.block[482]:  # old GNU sparse: map blocks before the data
            while (ext := stream.block()) is not None and ext[504]:
                pass
            if ext is None:
                raise DownloadRefused(
                    f"member {_show(name)}: the stream ends inside its sparse map"
                )
        offset = stream.skip(size, name)
        is_dir = head.type == _DIR_TYPE
        parts = _split(name, is_dir)
        if sparse or (head.type not in _FILE_TYPES and not is_dir):
            kind = "GNU sparse file" if sparse else _SKIPPED_KINDS.get(head.type, "")
            plan.add(parts, kind or f"type {head.type.decode('latin-1')!r}", None)
            continue
        if is_dir and size:
            raise DownloadRefused(f"directory {_show(name)} declares {size} bytes of data")
        member = _Member(parts[-1], is_dir, head.mode, head.mtime, offset, size)
        plan.add(parts, "directory" if is_dir else "file", member)


def _parse_header(block: bytes) -> _Header:
    stored = _number(block[148:156], "checksum")
    if stored != sum(block) - sum(block[148:156]) + 8 * 0x20:
        raise DownloadRefused("a header's checksum does not match (not an uncompressed tar)")
    magic = block[257:265]
    if magic == _POSIX_MAGIC:
        prefix = _cstring(block[345:500])
    elif magic == _GNU_MAGIC:
        prefix = b""
    else:
        raise DownloadRefused("a header is neither ustar nor GNU tar")
    name = _cstring(block[0:100])
    if prefix:
        name = prefix + b"/" + name
    try:
        mtime: int | None = _number(block[136:148], "mtime")
    except DownloadRefused:
        mtime = None  # a date the host cannot read is no danger: leave it out
    if mtime is not None and mtime >= 1 << 40:
        mtime = None
    return _Header(
        type=block[156:157],
        name=name,
        mode=_number(block[100:108], "mode") & 0o7777,
        size=_number(block[124:136], "size"),
        mtime=mtime,
        block=block,
    )


def _cstring(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _number(raw: bytes, what: str) -> int:
    """A numeric header field: octal digits, or GNU base-256 (positive only)."""
    if raw[:1] == b"\x80":
        return int.from_bytes(raw[1:], "big")
    text = _cstring(raw).strip(b" ")
    if text.strip(b"01234567"):
        raise DownloadRefused(f"a header's {what} field {raw!r} is not a plain octal number")
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """The ``length key=value\\n`` records of a pax header, read in one linear pass."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise DownloadRefused("a pax header has a record without a length")
        end = pos + int(digits)
        if end <= space + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise DownloadRefused("a pax header has a record whose length does not fit")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise DownloadRefused("a pax header has a record that is not key=value")
        records[key] = value
        pos = end
    return records


def _pax_size(value: bytes) -> int:
    if not value.isdigit() or len(value) > 20:
        raise DownloadRefused(f"a pax header's size {value[:40]!r} is not a plain decimal number")
    return int(value)


def _long_name(data: bytes) -> bytes:
    name, _, rest = data.partition(b"\0")
    if rest.strip(b"\0"):
        raise DownloadRefused(f"the long name {_show(name)} has bytes after its end")
    return name


def _split(name: bytes, is_dir: bool) -> tuple[bytes, ...]:
    """The components of a member's name, refusing any that could leave the root."""
    if not name:
        raise DownloadRefused("a member has an empty name")
    if b"\0" in name:
        raise DownloadRefused(f"member {_show(name)} has a NUL byte in its name")
    if len(name) > MAX_NAME:
        raise DownloadRefused(
            f"member {_show(name)[:80]}... has a name longer than {MAX_NAME} bytes"
        )
    if name.startswith(b"/"):
        raise DownloadRefused(f"member {_show(name)} has an absolute name")
    if name.endswith(b"/"):
        if not is_dir:
            raise DownloadRefused(f"member {_show(name)} ends with '/' but is not a directory")
        name = name[:-1]
    parts = tuple(name.split(b"/"))
    if b"" in parts or b"." in parts or b".." in parts:  # checked in C: names can be long
        raise DownloadRefused(f"member {_show(name)} has an empty, '.' or '..' component")
    if max(map(len, parts)) > MAX_COMPONENT:
        raise DownloadRefused(f"member {_show(name)} has a component over {MAX_COMPONENT} bytes")
    if len(parts) > MAX_DEPTH:
        raise DownloadRefused(f"member {_show(name)[:80]}... is deeper than {MAX_DEPTH} levels")
    return parts


def _show(name: bytes) -> str:
    return repr(os.fsdecode(name))


def _label(label: bytes | str) -> str:
    return label if isinstance(label, str) else f"member {_show(label)}"


# -- creating ------------------------------------------------------------------


def _create(root: _Member, src: int, tmp_fd: int) -> None:
    """Make the planned tree as ``root`` in directory ``tmp_fd``, depth first."""
    if not root.is_dir:
        _write_file(tmp_fd, b"root", root, src)
        return
    os.mkdir(b"root", 0o700, dir_fd=tmp_fd)
    stack = [(root, os.open(b"root", _DIR_FLAGS, dir_fd=tmp_fd), _created(root))]
    try:
        while stack:
            member, fd, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                try:
                    os.fchmod(fd, (member.mode & 0o755) | 0o700)
                    if member.mtime is not None:
                        os.utime(fd, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
            elif child.is_dir:
                os.mkdir(child.name, 0o700, dir_fd=fd)
                child_fd = os.open(child.name, _DIR_FLAGS, dir_fd=fd)
                stack.append((child, child_fd, _created(child)))
            else:
                _write_file(fd, child.name, child, src)
    finally:
        for _, fd, _ in stack:
            os.close(fd)


def _created(directory: _Member) -> Iterator[_Member]:
    """The members to create in ``directory``, in stream order (skipped ones left out)."""
    return (child for child in (directory.entries or {}).values() if child is not None)


def _write_file(dir_fd: int, name: bytes, member: _Member, src: int) -> None:
    fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        _copy(src, member.offset, fd, member.size)
        os.fchmod(fd, (member.mode & 0o755) | 0o600)
        if member.mtime is not None:
            os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)


def _copy(src: int, offset: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes at ``offset`` of ``src`` to ``dst``, in the kernel where it can."""
    done = 0
    fast = True
    while done < size:
        if fast:
            try:
                n = os.copy_file_range(src, dst, size - done, offset + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                fast = False
                continue
        else:
            data = os.pread(src, min(_COPY, size - done), offset + done)
            n = len(data) and os.write(dst, data)
        if n <= 0:
            raise OSError(errno.EIO, "the download spool ended early")
        done += n


def _swap(new: str, local: Path, aside: str) -> None:
    """Put ``new`` at ``local``; what was there (a link itself, not its target) goes ``aside``."""
    try:
        os.replace(local, aside)
    except FileNotFoundError:
        os.replace(new, local)
        return
    try:
        os.replace(new, local)
    except BaseException:
        os.replace(aside, local)
        raise
