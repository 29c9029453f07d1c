"""Named volumes: directories that outlive sandboxes, mounted where a config says.

>>> cache = Volume.from_name("rlm-cache", create_if_missing=True)
>>> config = SandboxConfig(volumes={"/data": "rlm-cache"})    # or {"name": ..., "read_only": True}

A volume is a directory under :func:`~sandlot.backends.kit.store.volumes_root`
on this host. What one sandbox writes at its mount point is there for the next
sandbox that mounts it.

**Several sandboxes at once.** A volume is one shared directory: every sandbox
that mounts it sees the others' writes as they happen, as processes on one
machine see a local directory. Writes to different files never conflict. Two
writers of one file interleave, so publish a file whole by writing it under a
temporary name and renaming it into place (a rename replaces atomically: a
reader sees the old file or the new one, never a mix). Mount a volume
read-only (``read_only=True``) where a sandbox only reads it; a write there
fails with ``EROFS``.

**Trust.** Sandboxed code writes what it likes into a writable volume:
links to host paths, names with control characters, FIFOs. The host never
walks a volume's contents itself: ``ls``, ``put``, ``get`` and ``remove`` run in
a short-lived sandbox that mounts the volume, so links resolve inside that
sandbox, and ``get`` goes through the same checked download as
:meth:`Sandbox.download` (regular files and directories only). The host only
measures a volume's size (a walk that never follows a link) and deletes it
whole (``shutil.rmtree``, which does not follow links either).

**Disk.** While a sandbox lives, the growth of each volume it mounts writable
counts against its ``disk_mb``, as its workdir's does, whoever wrote it (the
host cannot tell one sandbox's writes from another's in a shared directory),
and each volume has an allowance of its own.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import posixpath
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .backends import disk
from .backends.kit.store import checked_name, missing, volumes_root
from .config import SandboxConfig, VolumeMount, check_volume_name
from .driver.places import SANDBOX_UID
from .errors import ConfigError, FileOperationError, SandboxError
from .results import FileInfo
from .untar import DownloadResult

if TYPE_CHECKING:
    from .sync import Sandbox

MOUNT = "/volume"  # where the helper sandbox of Volume's methods mounts the volume
# Remove "$1" whatever its depth and modes; exit 3 when there is nothing by that name.
_REMOVE_TREE = (
    '[ -e "$1" ] || [ -L "$1" ] || exit 3; chmod -R u+rwx -- "$1" 2>/dev/null; rm -rf -- "$1"'
)


@dataclass(frozen=True)
class VolumeInfo:
    """A volume as ``Volume.list()`` and ``sandlot volume list`` show it."""

    name: str
    size: int  # bytes allocated on the host's disk
    modified: float  # when its top directory last changed, in seconds since the epoch


class Volume:
    """A named volume on this host (see the module's docstring for the rules)."""

    def __init__(self, name: str) -> None:
        self.name = checked_name(name)

    def __repr__(self) -> str:
        return f"Volume({self.name!r})"

    @property
    def path(self) -> Path:
        """The volume's directory on the host."""
        return volumes_root() / self.name

    def exists(self) -> bool:
        """True when the volume has been created (and not deleted)."""
        return self.path.is_dir()

    @classmethod
    def create(cls, name: str, *, exist_ok: bool = False) -> Volume:
        """Create volume ``name``; an existing one is an error unless ``exist_ok``."""
        volume = cls(name)
        root = volumes_root()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            volume.path.mkdir(mode=0o755)
        except FileExistsError:
            if exist_ok:
                return volume
            raise ConfigError(f"volume {name!r} already exists") from None
        if os.getuid() == 0:  # sandboxes of a root host run as nobody, and write here
            os.chown(volume.path, SANDBOX_UID, SANDBOX_UID)
        return volume

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False) -> Volume:
        """Volume ``name``; a missing one is created when asked, else a ConfigError."""
        volume = cls(name)
        if volume.exists():
            return volume
        if create_if_missing:
            return cls.create(name, exist_ok=True)
        raise missing(name)

    @staticmethod
    def list() -> list[VolumeInfo]:
        """Every volume on this host, by name, with its size."""
        root = volumes_root()
        if not root.is_dir():
            return []
        found = []
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            try:
                if entry.is_dir(follow_symlinks=False) and Volume._valid(entry.name):
                    modified = entry.stat(follow_symlinks=False).st_mtime
                    found.append(VolumeInfo(entry.name, Volume(entry.name).size(), modified))
            except OSError:  # gone meanwhile, or unreadable: listed without a size
                found.append(VolumeInfo(entry.name, -1, 0.0))
        return found

    @staticmethod
    def _valid(name: str) -> bool:
        try:
            check_volume_name(name)
        except ValueError:
            return False
        return True

    def size(self) -> int:
        """Bytes the volume holds on the host's disk (links are not followed)."""
        self._must_exist()
        try:
            return disk.usage(self.path)
        except (disk.Unmeasurable, OSError):  # too deep, or made unreadable from inside
            return -1

    def delete(self) -> None:
        """Delete the volume and everything in it.

        Its contents are removed inside a sandbox that mounts it (``find
        -delete`` there copes with any depth, after a ``chmod`` undoes modes its
        code set), then the host removes what is left, never following a link.
        """
        self._must_exist()
        # A failure here leaves the host's own removal below to do the rest.
        with contextlib.suppress(SandboxError), self._sandbox(read_only=False) as sb:
            sb.exec("chmod", "-R", "u+rwx", MOUNT, timeout=600)
            sb.exec("find", MOUNT, "-mindepth", "1", "-delete", timeout=3600)
        try:
            shutil.rmtree(self.path)
        except (OSError, RecursionError) as exc:
            raise ConfigError(
                f"volume {self.name!r} could not be deleted entirely ({type(exc).__name__}: "
                f"{exc}); what is left is in {self.path}"
            ) from None

    def _must_exist(self) -> None:
        if not self.exists():
            raise ConfigError(f"volume {self.name!r} does not exist ('sandlot volume list')")

    # -- contents, through a sandbox that mounts the volume ------------------------

    def _sandbox(self, *, read_only: bool) -> Sandbox:
        from .sync import Sandbox

        self._must_exist()
        config = SandboxConfig(
            isolation="bubblewrap",  # the volume must be at MOUNT, not a host path of that name
            volumes={MOUNT: VolumeMount(name=self.name, read_only=read_only)},
            disk_mb=None,  # the host writes (put) or reads; no sandboxed code runs
            max_file_bytes=None,
            timeout=24 * 3600.0,
        )
        return Sandbox(config)

    @staticmethod
    def _inside(path: str) -> str:
        """``path`` in the volume as the helper sandbox sees it (never above the volume)."""
        inside = posixpath.normpath("/" + path).lstrip("/")
        return posixpath.join(MOUNT, inside) if inside else MOUNT

    @contextlib.contextmanager
    def _as_named(self) -> Iterator[None]:
        """File errors of the helper sandbox, with paths as ``NAME:/path`` (not its mount)."""
        try:
            yield
        except FileOperationError as exc:
            shown = str(exc).replace(MOUNT + "/", f"{self.name}:/").replace(MOUNT, f"{self.name}:/")
            raise type(exc)(shown) from None

    def ls(self, path: str = "/") -> builtins.list[FileInfo]:
        """The entries of directory ``path`` in the volume."""
        with self._as_named(), self._sandbox(read_only=True) as sb:
            entries: builtins.list[FileInfo] = sb.files.list(self._inside(path))
            return entries

    def put(self, local: str | Path, remote: str = "/") -> None:
        """Copy a host file or directory into the volume at ``remote``."""
        with self._as_named(), self._sandbox(read_only=False) as sb:
            sb.files.upload(local, self._inside(remote))

    def get(self, remote: str, local: str | Path) -> DownloadResult:
        """Copy ``remote`` from the volume to the host path ``local`` (a checked download)."""
        with self._as_named(), self._sandbox(read_only=True) as sb:
            result: DownloadResult = sb.files.download(self._inside(remote), local)
            return result

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (``recursive=True`` for a non-empty one), in the volume."""
        inside = self._inside(path)
        if inside == MOUNT:
            raise ConfigError("to remove a whole volume, delete it (Volume.delete)")
        with self._as_named(), self._sandbox(read_only=False) as sb:
            if not recursive:
                sb.files.remove(inside)
                return
            # rm -rf, not a walk in Python: it copes with any depth and any modes set inside.
            done = sb.exec("sh", "-c", _REMOVE_TREE, "sh", inside, timeout=3600)
        if done.returncode == 3:
            raise FileOperationError(f"{self.name}:{path}: no such file or directory")
        if done.returncode != 0:
            raise FileOperationError(f"{self.name}:{path}: {done.stderr.strip()[-500:]}")
