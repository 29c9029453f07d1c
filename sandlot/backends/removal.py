"""Removing what an ended sandbox leaves on the host: its workdir, whatever it did to it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

_ENTER = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path | str) -> None:
    """Remove the directory ``path`` and all below it, whatever the sandbox did to it.

    ``shutil.rmtree`` does it, but for two things a sandbox can do: take the owner's
    permissions from its directories (where the host is not root, it runs as the host's
    own user and owns them), and nest them deeper than Python's recursion limit
    (``rmtree`` recurses once a level before Python 3.13). Then :func:`_remove_walking`
    removes what is left. Neither follows a link. Call it once nothing of the sandbox
    runs any more; a tree that moves meanwhile is left where it is.
    """
    with contextlib.suppress(RecursionError):
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        with contextlib.suppress(OSError):
            _remove_walking(os.fspath(path))


def _enter(name: str, parent: int | None) -> int:
    """A descriptor to list directory ``name`` (in ``parent``) by, once the owner has all
    permissions on it; never through a link."""
    where = os.open(name, _ENTER, dir_fd=parent)
    try:
        os.chmod(f"/proc/self/fd/{where}", 0o700)
        # The magic link leads to what ``where`` holds, a directory reached without a link.
        return os.open(f"/proc/self/fd/{where}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(where)


def _remove_walking(top: str) -> None:
    """Remove ``top`` depth first with one directory open at a time: down by name, back up
    through ``..`` checked to be the directory it came down from (device and inode). No
    recursion, no descriptor held per level, no path longer than a name."""
    fd = _enter(top, None)
    down: list[tuple[str, int, int]] = []  # per level: its name, its parent's device and inode
    try:
        while True:
            with os.scandir(fd) as entries:
                listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            child = next((name for name, is_dir in listed if is_dir), None)
            if child is not None:
                here = os.fstat(fd)
                inner = _enter(child, fd)
                os.close(fd)
                fd = inner
                down.append((child, here.st_dev, here.st_ino))
                continue
            for name, _ in listed:
                os.unlink(name, dir_fd=fd)
            if not down:
                break
            name, dev, ino = down.pop()
            parent = os.open("..", _LIST, dir_fd=fd)
            os.close(fd)
            fd = parent
            up = os.fstat(fd)
            if (up.st_dev, up.st_ino) != (dev, ino):
                raise OSError(errno.EXDEV, "the tree moved while it was being removed")
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(top)
