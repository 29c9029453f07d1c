"""Attack: one pool borrower leaves things behind for the next one.

A pool of size 1 must lend its one slot to both borrowers, so the second gets
whatever the first returned unless the pool retires it. The first borrower
plants a secret in an interpreter global, in the environment, in a workdir
file, in /tmp, and in a background process; the second looks for each.

Promise checked: by default (``reuse=False``) the second borrower sees none of
them and the first one's handle reaches nothing; with ``reuse=True`` it sees
what docs/pools.md says reuse shares.
"""

from __future__ import annotations

import time

import pytest
from conftest import strict

import sandlot

SECRET = "s3cret-of-borrower-one"

PLANT = f"""
import os, subprocess, sys
secret = {SECRET!r}
os.environ["LEFT_SECRET"] = secret
with open("left.txt", "w") as f:
    f.write(secret)
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)", secret],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    start_new_session=True,
)
"""

LOOK = f"""
import os
def _cmdlines():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                    yield f.read()
            except OSError:
                pass
seen = {{
    "global": globals().get("secret") == {SECRET!r},
    "env": os.environ.get("LEFT_SECRET") == {SECRET!r},
    "workdir file": os.path.exists("left.txt"),
    "process": any({SECRET!r}.encode() in c for c in _cmdlines()),
}}
sorted(k for k, v in seen.items() if v)
"""

EVERYTHING = "['env', 'global', 'process', 'workdir file']"


def _plant(sb: sandlot.Sandbox) -> None:
    result = sb.run_code(PLANT)
    assert result.error is None, result.error
    # Planted, and the probe sees it. Once, in a clean-clone CI run on a loaded machine, the
    # probe right after the plant missed the background process (not reproduced since, cause
    # not found): look again for a while; a process that never shows still fails.
    deadline = time.monotonic() + 10
    while (seen := sb.run_code(LOOK).value) != EVERYTHING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == EVERYTHING


def test_by_default_the_next_borrower_sees_nothing_the_last_one_left() -> None:
    with sandlot.SandboxPool(strict(), size=1) as pool:
        with pool.sandbox() as first:
            _plant(first)
        with pool.sandbox() as second:
            assert second.run_code(LOOK).value == "[]"
        # The first borrower kept its handle: it reaches a terminated sandbox, not the new one.
        with pytest.raises(sandlot.SandboxDied):
            first.run_code("1")
        assert pool.stats()["retired"] == 2


def test_by_default_map_items_do_not_share_a_sandbox() -> None:
    def item(sb: sandlot.Sandbox, i: int) -> str | None:
        seen = sb.run_code(LOOK).value
        _plant(sb)
        return seen

    with sandlot.SandboxPool(strict(), size=1) as pool:
        assert pool.map(item, range(3)) == ["[]", "[]", "[]"]


def test_with_reuse_the_next_borrower_sees_what_the_docs_say_is_shared() -> None:
    with sandlot.SandboxPool(strict(), size=1, reuse=True) as pool:
        with pool.sandbox() as first:
            _plant(first)
        with pool.sandbox() as second:
            assert second.run_code(LOOK).value == EVERYTHING
        with pool.sandbox(clean=True) as third:  # clean: this borrower's sandbox is not kept
            assert third.run_code(LOOK).value == EVERYTHING
        with pool.sandbox() as fourth:
            assert fourth.run_code(LOOK).value == "[]"


def test_tmp_is_not_shared_by_default_and_is_with_reuse() -> None:
    write = f"open('/tmp/left.txt', 'w').write({SECRET!r})"
    look = "import os\nos.path.exists('/tmp/left.txt')"
    for reuse in (False, True):
        with sandlot.SandboxPool(strict(), size=1, reuse=reuse) as pool:
            with pool.sandbox() as first:
                result = first.run_code(write)
                if result.error is not None and result.error.name == "PermissionError":
                    pytest.skip("/tmp is not writable inside a sandbox yet (issue 9, /tmp 1777)")
                assert result.error is None, result.error
            with pool.sandbox() as second:
                assert second.run_code(look).value == repr(reuse)
