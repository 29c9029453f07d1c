"""Processes started in the sandbox: each in its own process group.

Output is read as it comes and each read is sent to the host at once as a
``chunk`` (the host collects them, or streams them to its caller), so no reply
is ever larger than a frame. At most ``limit`` bytes leave the sandbox per
process and the rest is counted, so a chatty process can neither block on a full
pipe nor fill the host's memory (the host enforces the same limit on its side).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time

from .protocol import TYPE_CHECKING, no_thread

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from .protocol import Send


class Process:
    """One running command and what it has printed so far."""

    def __init__(
        self, argv: list[str], cwd: str, env: dict[str, str], stdin: Iterator[bytes] | None
    ) -> None:
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stdin = stdin
        self.killed_reason: str | None = None

    def kill(self, reason: str) -> None:
        """Kill the whole process group, remembering why."""
        if self.killed_reason is None:
            self.killed_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def pump(
        self,
        rid: int,
        limit: int,
        send: Send,
        timeout: float | None,
    ) -> dict[str, Any]:
        """Read output until the process exits (or ``timeout`` kills it); return the reply."""
        p = self.popen
        if self.stdin is not None and p.stdin is not None:
            try:
                threading.Thread(target=_feed, args=(p.stdin, self.stdin), daemon=True).start()
            except RuntimeError as exc:
                raise no_thread("a process's input", exc) from None
        assert p.stdout is not None and p.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ, "stdout")
        sel.register(p.stderr, selectors.EVENT_READ, "stderr")
        sent = 0
        dropped = 0
        exited_at: float | None = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while sel.get_map():
            if deadline is not None and exited_at is None and time.monotonic() > deadline:
                self.kill("timeout")
            # After the leader exits, a detached child may hold the pipes open:
            # take what is already there, briefly, then stop reading.
            if exited_at is None and p.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > 0.05:
                break
            for key, _ in sel.select(timeout=0.02):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                room = limit - sent
                if room <= 0:
                    dropped += len(data)
                    continue
                part, extra = data[:room], len(data) - min(room, len(data))
                sent += len(part)
                dropped += extra
                send({"t": "chunk", "id": rid, "stream": key.data}, part)
        sel.close()
        returncode = p.wait()
        p.stdout.close()
        p.stderr.close()
        return {"returncode": returncode, "killed": self.killed_reason, "dropped": dropped}


def _feed(pipe: Any, chunks: Iterator[bytes]) -> None:
    """Write the host's input to the process as it arrives, then close its stdin.

    A process that exits or closes its stdin early leaves the rest unread; a
    cancelled request ends the input where it stands.
    """
    with contextlib.suppress(OSError):
        try:
            for chunk in chunks:
                pipe.write(chunk)
        except ConnectionAbortedError:
            pass
        finally:
            pipe.close()
