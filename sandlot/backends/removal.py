"""Removing what an ended sandbox leaves on the host: its workdir, whatever it did to it."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

_ENTER = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path | str) -> None:
    """Remove the directory ``path`` and all below it, whatever the sandbox did to it; what
    cannot go stays (nothing is raised).

    Not ``shutil.rmtree``, for what a sandbox can do to its tree: nest it deeper than
    Python's recursion limit (``rmtree`` recurses once a level before Python 3.13, and
    holds a descriptor per level), take the owner's permissions from its directories
    (where the host is not root it runs as the host's own user and owns them), and, were
    any of its processes still running, swap a directory for a FIFO that ``rmtree``'s
    plain ``open`` of it would wait on for good. So a walk, depth first, with one
    directory open at a time: down by name (``O_PATH|O_NOFOLLOW``, its owner given back
    every permission only where it lacks one), back up through ``..`` checked to be the
    directory it came down from. Each directory is listed once, its files unlinked before
    its subdirectories are entered. It follows no link and stays on the top's mount: a
    mount point inside the tree (no sandbox can make one) stops it. Call it
    once nothing of the sandbox runs any more; a tree that moves meanwhile stays.
    """
    with contextlib.suppress(OSError):
        _remove_walking(os.fspath(path))


def _mount_of(fd: int) -> str:
    """The ID of the mount ``fd`` lies on (``/proc/self/fdinfo``): a bind mount of a
    directory of the same filesystem has the same device, not the same mount."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return line.split()[1]
    raise OSError(errno.ENOENT, "no mount ID in /proc/self/fdinfo")


def _enter(name: str, parent: int | None, mount: str | None) -> int:
    """A descriptor to list directory ``name`` (in ``parent``) by, on ``mount`` (any for
    the top), once its owner has every permission on it; never through a link."""
    where = os.open(name, _ENTER, dir_fd=parent)
    try:
        if mount is not None and _mount_of(where) != mount:
            raise OSError(errno.EXDEV, f"{name} is a mount point inside the tree")
        found = os.fstat(where)
        if found.st_mode & 0o700 != 0o700:
            os.chmod(f"/proc/self/fd/{where}", 0o700)
        # The magic link leads to what ``where`` holds, a directory reached without a link.
        return os.open(f"/proc/self/fd/{where}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(where)


def _empty(fd: int) -> list[str]:
    """Unlink everything in directory ``fd`` but its directories; their names."""
    with os.scandir(fd) as entries:
        listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in listed:
        if not is_dir:
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile: as well
                os.unlink(name, dir_fd=fd)
    return [name for name, is_dir in listed if is_dir]


def _remove_walking(top: str) -> None:
    fd = _enter(top, None, None)
    device, mount = os.fstat(fd).st_dev, _mount_of(fd)
    # Per level below the top: the name of the directory entered, its parent's inode, and
    # the parent's subdirectories still to remove.
    levels: list[tuple[str, int, list[str]]] = []
    try:
        pending = _empty(fd)
        while True:
            if pending:
                name = pending.pop()
                here = os.fstat(fd).st_ino
                try:
                    inner = _enter(name, fd, mount)
                except FileNotFoundError:  # removed meanwhile (another of the host's threads)
                    continue
                os.close(fd)
                fd = inner
                levels.append((name, here, pending))
                pending = _empty(fd)
                continue
            if not levels:
                break
            name, inode, pending = levels.pop()
            parent = os.open("..", _LIST, dir_fd=fd)
            os.close(fd)
            fd = parent
            back = os.fstat(fd)
            if (back.st_dev, back.st_ino) != (device, inode):
                raise OSError(errno.EXDEV, "the tree moved while it was being removed")
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(top)
