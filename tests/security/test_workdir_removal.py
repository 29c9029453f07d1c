"""What a sandbox leaves in its workdir cannot keep the host from removing it.

The host removes an ended sandbox's workdir: a tree the sandbox built as it
liked. ``shutil.rmtree`` recursed once a level before Python 3.13: a workdir
nested 1,500 levels deep made it raise ``RecursionError``, out of
``terminate()`` for a cold start, and left the tree on disk for good (its
owner file gone, the next host's sweep passed it by). Where the host is not
root the sandbox owns its tree and can take the owner's permissions from it
(``tests/test_not_root.py``). The removal follows no link the sandbox
planted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import remover_drained, strict

import sandlot
from sandlot.backends.removal import remove_tree

DEEP = """
import os
os.chdir('/workspace')
for level in range(1500):
    os.mkdir('d')
    os.chdir('d')
    if level % 100 == 0:
        os.symlink('/', 'root-link')
open('bottom.txt', 'w').write('deep')
os.chdir('/')
"""


@pytest.mark.parametrize("templates_on", ["1", "0"], ids=["template", "cold"])
def test_a_workdir_nested_past_the_recursion_limit_is_removed_and_its_end_is_quiet(
    monkeypatch: pytest.MonkeyPatch, templates_on: str
) -> None:
    monkeypatch.setenv("SANDLOT_TEMPLATES", templates_on)
    # Without disk_mb, which would kill it at 64 levels (its watcher follows no deeper),
    # perhaps before the cell ends: the tree is as deep either way.
    sb = sandlot.Sandbox(strict(disk_mb=None)).start()
    assert sb.info["started"] == ("template" if templates_on == "1" else "cold")
    sb.run_code(DEEP)
    launch = sb.async_sandbox._launch
    assert launch is not None
    host_dir, trash = launch.host_dir, launch.trash
    sb.terminate()  # raised RecursionError for a cold start
    remover_drained()
    assert not host_dir.exists()
    if trash is not None:  # a fork's directory went to its template's trash first
        assert not (trash / host_dir.name).exists()


def _tree(root: Path, outside: Path, depth: int) -> Path:
    """A tree ``depth`` levels deep, links to ``outside`` at each level, every directory
    with no permission left (the last ones first, so the owner can still build it)."""
    top = root / "workdir"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    made = [fd]
    for _ in range(depth):
        os.symlink(outside, "to-outside", dir_fd=fd)
        with open(os.open("file", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as f:
            f.write("x")
        os.mkdir("d", dir_fd=fd)
        fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        made.append(fd)
    for fd in reversed(made):
        os.fchmod(fd, 0)
        os.close(fd)
    return top


@pytest.mark.parametrize("depth", [3, 1500])
def test_remove_tree_removes_a_locked_deep_tree_and_touches_nothing_its_links_name(
    depth: int,
) -> None:
    # Not under pytest's own temporary directories: a tree left there by a broken removal
    # would break pytest's clean-up of old ones (its rmtree recurses too).
    root = Path(tempfile.mkdtemp(prefix="sandlot-removal-"))
    try:
        outside = root / "outside"
        (outside / "inner").mkdir(parents=True)
        (outside / "inner" / "keep.txt").write_text("the host's")
        outside.chmod(0o500)
        top = _tree(root, outside, depth)
        remove_tree(top)
        assert not os.path.lexists(top)
        assert (outside / "inner" / "keep.txt").read_text() == "the host's"
        assert oct(outside.stat().st_mode & 0o777) == "0o500"
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(root)], check=False)
        subprocess.run(["rm", "-rf", "--", str(root)], check=True)


MOUNTED = """
import json, os, subprocess, sys
from sandlot.backends.removal import remove_tree
root = sys.argv[1]
outside, top = f"{root}/outside", f"{root}/workdir"
os.makedirs(f"{outside}/sub")
open(f"{outside}/sub/keep.txt", "w").write("the host's")
os.chmod(f"{outside}/sub", 0o555)
os.makedirs(f"{top}/m")
subprocess.run(["mount", "--bind", outside, f"{top}/m"], check=True)
remove_tree(top)
print(json.dumps({
    "kept": open(f"{outside}/sub/keep.txt").read(),
    "mode": oct(os.stat(f"{outside}/sub").st_mode & 0o777),
}))
"""


def test_remove_tree_stops_at_a_mount_point_inside_the_tree(tmp_path: Path) -> None:
    """No sandbox can mount in the host's namespace, but a root host's walk might meet a
    bind mount an administrator or a tool made: one of the same filesystem has the same
    device, so the walk compares mounts, and leaves the mounted directory as it was."""
    here = ["unshare", "--mount", "--propagation", "private"]
    done = subprocess.run(
        [*here, sys.executable, "-c", MOUNTED, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == {"kept": "the host's", "mode": "0o555"}
