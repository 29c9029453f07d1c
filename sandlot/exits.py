"""What sandlot does as the interpreter exits, in an order that does not depend on imports.

``atexit`` runs its hooks last registered first, so the order of two modules' hooks is the
order in which something happened to import them: the blocking API's portal, made by a
``Sandbox()`` before its backend is imported, would end its sandboxes only after the
backend had ended the templates they were forked from, while their own ends were still
moving their directories. Here every hook has a stage: each hook of ``"sandboxes"`` runs
before any of ``"backends"``; within a stage, the last registered first, as ``atexit``
does.
"""

from __future__ import annotations

import atexit
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Literal

Stage = Literal["sandboxes", "backends"]
_STAGES: tuple[Stage, ...] = ("sandboxes", "backends")

_hooks: dict[Stage, list[Callable[[], object]]] = {stage: [] for stage in _STAGES}
_lock = threading.Lock()
_registered = False


def at_exit(hook: Callable[[], object], stage: Stage) -> None:
    """Call ``hook()`` as the interpreter exits: at ``"sandboxes"``, where the sandboxes
    still running are ended; at ``"backends"``, after all of those, where what they ran on
    (templates, cgroups, remote sandboxes an API would keep) is ended."""
    global _registered
    with _lock:
        if not _registered:
            atexit.register(_run)
            _registered = True
        _hooks[stage].append(hook)


def _run() -> None:
    """Every hook, stage by stage, and then any a hook registered meanwhile; one that
    raises (a ``KeyboardInterrupt`` too) is reported as ``atexit`` reports it, and the
    rest still run."""
    while True:
        with _lock:
            if not any(_hooks.values()):
                return
            stages = [_hooks[stage][::-1] for stage in _STAGES]
            for stage in _STAGES:
                _hooks[stage].clear()
        for hook in (hook for hooks in stages for hook in hooks):
            try:
                hook()
            except BaseException:
                name = getattr(hook, "__qualname__", repr(hook))
                print(f"sandlot: at exit, {name} failed:", file=sys.stderr)
                traceback.print_exc()


__all__ = ["Stage", "at_exit"]
