"""An event loop's selector against what its epoll instance really watches.

A descriptor closed while a loop still has it registered leaves its number in
the selector's map, while the kernel drops it from epoll. The next file to get
that number (a sandbox's channel, say) is then "registered" by a ``modify``
that epoll never hears of, and its loop never wakes for it: a start that waits
out its timeout with the driver's reply unread. The suite checks the portal's
loop after each module (``tests/conftest.py``), so a test that leaves such an
entry is named by the module it is in, not found later as a hang elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
from pathlib import Path


def epoll_watches(epoll_fd: int) -> dict[int, int]:
    """What epoll instance ``epoll_fd`` of this process watches: descriptor -> inode."""
    watched = {}
    for line in Path(f"/proc/self/fdinfo/{epoll_fd}").read_text().splitlines():
        if line.startswith("tfd:"):
            fields = line.split()
            inode = next(f for f in fields if f.startswith("ino:"))
            watched[int(fields[1])] = int(inode.removeprefix("ino:"), 16)
    return watched


def unwatched(loop: asyncio.AbstractEventLoop) -> list[str]:
    """The registrations of ``loop`` (on its own thread) that its epoll does not watch as that file.

    Empty for a loop whose selector is not epoll.
    """
    selector = getattr(loop, "_selector", None)
    if not isinstance(selector, selectors.EpollSelector):
        return []
    epoll = selector._selector  # type: ignore[attr-defined]
    assert isinstance(epoll, select.epoll)
    watched = epoll_watches(epoll.fileno())
    problems = []
    for fd, key in selector.get_map().items():
        try:
            inode = os.fstat(fd).st_ino
            now = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            problems.append(f"descriptor {fd} is registered but closed ({key.data!r})")
            continue
        if fd not in watched:
            problems.append(f"descriptor {fd} ({now}) is registered, but epoll does not watch it")
        elif watched[fd] != inode:
            problems.append(
                f"descriptor {fd} ({now}) is registered, but epoll watches an earlier file "
                f"(inode {watched[fd]}) that had its number"
            )
    return problems
