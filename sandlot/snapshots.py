"""Snapshots: a sandbox's REPL and workdir in one file, and sandboxes started from it.

``await sb.snapshot(path)`` writes the REPL's variables (as the driver pickles
them, in the sandbox: see :mod:`sandlot.driver.snapshot`) and the workdir (a
tar stream, as the sandbox sends it) to ``path``. ``await sb.load_snapshot(path)``
puts both into a started sandbox, and ``AsyncSandbox.restore(path, config)``
starts one and does that, on any backend: this host, another over SSH, a Ray
node.

The file: the line ``sandlot snapshot``, a 4-byte big-endian length, a JSON
manifest of at most :data:`MAX_MANIFEST` bytes, then the bytes of the sections
it lists, in its order, each with its size and SHA-256 there.

The host reads a snapshot as hostile data, whoever wrote it: it checks the
frame (the first line, a manifest of the expected shape, sizes that add up to
the file's, the hashes) and copies the sections into a sandbox as bytes. It
never unpickles the state or unpacks the tar; the sandbox does both, inside
its walls. Unpickling runs code, so restoring a snapshot runs its code in the
restoring sandbox, with the tools that sandbox has: restore a snapshot from
someone else as you would run their code there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import json
import os
import struct
import tempfile
import warnings
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .driver import protocol
from .driver.protocol import CHUNK
from .errors import DownloadRefused, SnapshotInvalid
from .files import InSandbox, send_chunks
from .results import RestoreResult, SkippedVariable, SnapshotResult
from .sink import escape_controls

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox

MAGIC = b"sandlot snapshot\n"
FORMAT = 1
MAX_MANIFEST = 1 << 20
SECTIONS = ("state", "workdir")
DEFAULT_MAX_BYTES = 16 << 30  # what a snapshot may hold unless the caller says otherwise
MANIFEST = {
    "format": int,
    "created": str,
    "python": str,
    "sections": [{"name": SECTIONS, "size": int, "sha256": str}],
    "report": protocol.REPLIES["save_state"],
}


@dataclass(frozen=True)
class Snapshot:
    """A checked snapshot file: its manifest and where each section starts."""

    path: Path
    manifest: dict[str, Any]
    offsets: dict[str, tuple[int, int]]  # section -> (start, size)


def _skipped(entries: list[dict[str, str]]) -> tuple[SkippedVariable, ...]:
    return tuple(SkippedVariable(e["name"], e["type"], e["why"]) for e in entries)


def _warn(what: str, entries: tuple[SkippedVariable, ...], unlisted: int) -> None:
    if not entries:
        return
    shown = "; ".join(f"{e.name!r} ({e.type}: {e.why})" for e in entries[:5])
    shown = escape_controls(shown)  # the sandbox's words: no terminal escapes reach the user
    more = len(entries) - 5 + unlisted
    tail = f" and {more} more" if more > 0 else ""
    warnings.warn(f"{what} {len(entries) + unlisted} variable(s): {shown}{tail}", stacklevel=5)


def _hash(fh: IO[bytes], size: int) -> str:
    digest = hashlib.sha256()
    left = size
    while left:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise SnapshotInvalid("the file ends inside a section: it was cut short")
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


class Spool:
    """A temporary file (beside the snapshot) for one section, its size and its SHA-256."""

    def __init__(self, folder: Path) -> None:
        self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed with the spool)
        self.size = 0
        self.digest = hashlib.sha256()  # as the bytes come: no second pass over them

    def write(self, data: bytes) -> int:
        """Append ``data``."""
        self.size += len(data)
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        """Flush to the file."""
        self.file.flush()

    def close(self) -> None:
        """Remove the file."""
        self.file.close()


def _assemble(path: Path, manifest: dict[str, Any], parts: list[Spool], durable: bool) -> int:
    """Write the snapshot file next to ``path`` and move it there (readable by its owner only).

    ``durable``: on the disk (fsync) before it takes ``path``'s name.
    """
    for section, spool in zip(manifest["sections"], parts, strict=True):
        spool.flush()
        section["size"], section["sha256"] = spool.size, spool.digest.hexdigest()
    head = json.dumps(manifest).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + struct.pack(">I", len(head)) + head)
            out.flush()
            for spool in parts:
                left, at = spool.size, 0
                while left:  # in the kernel, file to file
                    sent = os.copy_file_range(spool.file.fileno(), out.fileno(), left, at)
                    if sent <= 0:
                        raise OSError(f"could not copy a section into {path}")
                    left, at = left - sent, at + sent
            if durable:
                os.fsync(out.fileno())
            size = os.fstat(out.fileno()).st_size
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def check(path: str | Path, *, verify: bool = True) -> Snapshot:
    """Read ``path`` as a snapshot; raise :class:`SnapshotInvalid` saying what is wrong with it.

    ``verify=False`` skips the sections' SHA-256s (the frame is still checked):
    for a file this process wrote where no one else can write.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise SnapshotInvalid(f"{path}: cannot read it: {exc}") from None
    with fh:
        total = os.fstat(fh.fileno()).st_size
        if fh.read(len(MAGIC)) != MAGIC:
            raise SnapshotInvalid(f"{path}: not a sandlot snapshot (its first line is wrong)")
        raw = fh.read(4)
        (length,) = struct.unpack(">I", raw) if len(raw) == 4 else (-1,)
        if not 0 < length <= MAX_MANIFEST:
            raise SnapshotInvalid(f"{path}: its manifest length {length} is not 1..{MAX_MANIFEST}")
        try:
            manifest = json.loads(fh.read(length))
        except (ValueError, RecursionError) as exc:
            raise SnapshotInvalid(f"{path}: its manifest is not JSON: {exc}") from None
        try:
            protocol.check(manifest, MANIFEST, "its manifest")
        except protocol.ProtocolError as exc:
            raise SnapshotInvalid(f"{path}: {exc}") from None
        if manifest["format"] != FORMAT:
            raise SnapshotInvalid(
                f"{path}: snapshot format {manifest['format']}; this sandlot reads format {FORMAT}"
            )
        names = tuple(s["name"] for s in manifest["sections"])
        if names != SECTIONS:
            raise SnapshotInvalid(f"{path}: its sections are {names}, not {SECTIONS}")
        offsets: dict[str, tuple[int, int]] = {}
        start = len(MAGIC) + 4 + length
        for section in manifest["sections"]:
            if section["size"] < 0:
                raise SnapshotInvalid(f"{path}: section {section['name']!r} has a negative size")
            offsets[section["name"]] = (start, section["size"])
            start += section["size"]
        if start != total:
            raise SnapshotInvalid(
                f"{path}: its sections add up to {start} bytes and the file has {total}: "
                "it was cut short or has bytes appended"
            )
        for section in manifest["sections"] if verify else ():
            if _hash(fh, section["size"]) != section["sha256"]:
                raise SnapshotInvalid(
                    f"{path}: section {section['name']!r} does not match its SHA-256: "
                    "the file was changed after it was written"
                )
    return Snapshot(path, manifest, offsets)


async def take(
    sandbox: AsyncSandbox, path: Path, max_bytes: int, *, durable: bool = True
) -> SnapshotResult:
    """Write ``sandbox``'s REPL and workdir to ``path`` (see :meth:`AsyncSandbox.snapshot`)."""
    if path.is_dir():
        raise IsADirectoryError(f"snapshot: {str(path)!r} is a directory; give a file's path")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside path: the same filesystem as the snapshot, so assembling it copies in place.
    state = Spool(path.parent)
    try:
        async with sandbox.link.request("save_state") as req:
            while True:
                header, payload = await req.next()
                if header.get("t") == "res":
                    break
                if state.size + len(payload) > max_bytes:
                    raise DownloadRefused(
                        f"snapshot: the REPL's state is larger than max_bytes={max_bytes}"
                    )
                state.write(payload)
        report = await sandbox.link.reply(header, "save_state", "snapshot")
        return await write(sandbox, path, report, state, max_bytes, durable)
    finally:
        state.close()


FORK_INSIDE = "/.sandlot-fork"  # where a fork's child may see its parent's snapshot's directory


@contextlib.asynccontextmanager
async def private(
    sandbox: AsyncSandbox, prefix: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> AsyncIterator[tuple[SnapshotResult, Snapshot]]:
    """A snapshot of ``sandbox`` in a private temporary directory, checked once, for copies.

    Yields what was taken and the checked file (for :func:`load`, any number of
    times); the directory and file are removed on leaving. The file is readable by
    all, in a directory of its own (``shown``) that a child may have mounted read-only
    (:data:`FORK_INSIDE`); on this host only its owner reaches it.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:  # mode 0700: this user's only
        shown = Path(folder) / "shown"
        shown.mkdir(mode=0o755)
        path = shown / "parent.snap"
        result = await take(sandbox, path, max_bytes, durable=False)  # gone on leaving anyway
        path.chmod(0o644)  # for a sandbox's user, where it is not this one
        yield result, await asyncio.to_thread(functools.partial(check, path, verify=False))


async def write(
    sandbox: AsyncSandbox,
    path: Path,
    report: dict[str, Any],
    state: Spool,
    max_bytes: int,
    durable: bool = True,
) -> SnapshotResult:
    """Write a snapshot of ``sandbox``'s workdir and a REPL state already taken to ``path``.

    ``state`` holds the bytes the sandbox's driver made and ``report`` says
    what they hold (checked as the ``save_state`` reply is); they, the
    workdir and the manifest go to ``path`` at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Spool(path.parent)
    try:
        await sandbox.files.receive_tar(".", work, max_bytes - state.size, root=".")
        manifest = {
            "format": FORMAT,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": str(sandbox.info.get("python", "")),
            "sections": [{"name": name} for name in SECTIONS],
            "report": report,
        }
        size = await asyncio.to_thread(_assemble, path, manifest, [state, work], durable)
    finally:
        work.close()
    result = SnapshotResult(
        path=path,
        size=size,
        captured=tuple(report["captured"]),
        skipped=_skipped(report["skipped"]),
        modules=tuple(report["modules"]),
        tools=tuple(report["tools"]),
        unlisted=report["unlisted"],
    )
    _warn(f"snapshot {str(path)!r}: could not hold", result.skipped, 0)
    return result


@contextlib.contextmanager
def _section(snap: Snapshot, name: str, inside: str | None) -> Iterator[IO[bytes] | InSandbox]:
    """Checked snapshot ``snap``'s section ``name``: the host's file at its start, or the same
    file as a sandbox sees it at ``inside`` (read there, not sent)."""
    start, size = snap.offsets[name]
    if inside is not None:
        yield InSandbox(inside, start, size)
        return
    with snap.path.open("rb") as fh:
        fh.seek(start)
        yield fh


async def send_workdir(sandbox: AsyncSandbox, snap: Snapshot, inside: str | None = None) -> int:
    """Unpack checked snapshot ``snap``'s workdir in ``sandbox``'s; return the entries unpacked.
    ``inside``: the file's path in the sandbox, where it reads the section itself."""
    with _section(snap, "workdir", inside) as source:
        return await sandbox.files.send_tar(source, ".", snap.offsets["workdir"][1])


def read_state(snap: Snapshot) -> bytes:
    """The REPL state section of checked snapshot ``snap``, as bytes (only a sandbox reads them)."""
    start, size = snap.offsets["state"]
    with snap.path.open("rb") as fh:
        fh.seek(start)
        return fh.read(size)


def restored(
    snap: Snapshot, reply: dict[str, Any], files: int, tools: Collection[str]
) -> RestoreResult:
    """The result of a restore from ``snap`` whose state load replied ``reply``, warned about."""
    what = f"restore {str(snap.path)!r}"
    wanted = snap.manifest["report"]["tools"]
    result = RestoreResult(
        path=snap.path,
        restored=tuple(reply["restored"]),
        failed=_skipped(reply["failed"]),
        missing_tools=tuple(t for t in wanted if t not in tools),
        files=files,
        unlisted=reply["unlisted"],
    )
    _warn(f"{what}: could not bring back", result.failed, result.unlisted)
    if result.missing_tools:
        warnings.warn(
            f"{what}: the snapshot's REPL had the host tools {list(result.missing_tools)}, "
            "which this sandbox does not: register them (tools=...) to call them again",
            stacklevel=4,
        )
    return result


async def load(sandbox: AsyncSandbox, snap: Snapshot, inside: str | None = None) -> RestoreResult:
    """Put checked snapshot ``snap`` into ``sandbox`` (see :meth:`AsyncSandbox.load_snapshot`);
    ``inside``: the file's path in the sandbox (a fork's child, which reads it there)."""
    members = await send_workdir(sandbox, snap, inside)
    with _section(snap, "state", inside) as source:
        extra = source.fields() if isinstance(source, InSandbox) else {}
        async with sandbox.link.request("load_state", **extra) as req:
            await send_chunks(req, source, snap.offsets["state"][1])
            header, _ = await req.result()
    reply = await sandbox.link.reply(header, "load_state", f"restore {str(snap.path)!r}")
    return restored(snap, reply, members, sandbox.router.tools)
