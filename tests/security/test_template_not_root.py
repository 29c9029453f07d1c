"""Attacks on the sandboxes a host that is not root forks from a template.

Such a template runs in a user namespace of its own, with the capabilities of
that namespace, and the directory of its sandboxes' workdirs (the slots) bound
in: it cannot take a mount of the host's, so each fork binds its own slot and
unmounts the rest. Every sandbox runs as the host's own user, as cold starts do
there. So these attacks: a sibling looking for another's workdir, files and
processes; a fork using a capability it kept, or its PID 1, which has no
seccomp filter and runs as the same user; a slot swapped, on the host, for a
link to a sibling's or for another directory between the host's choice and the
fork's bind; a fork planting or swapping, in what every fork of the template
shares (its root, ``/dev``, the driver's directory), a module a sibling's
driver imports later, a ``/dev/stderr`` a sibling writes to, a link a later
fork resolves for its slots (found by a red-team review of this design). Each
host runs as another user (see ``other_user.py``), and each test checks that
its sandboxes came from a template.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import pytest
from other_user import OTHER_UID, run_as_other_user

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        os.getuid() != 0, reason="a test running as root starts the other user's host"
    ),
]

MARK = "sandlot-sibling-7f3a"

# Run in sandbox A while its sibling B is live: what of B, of the slots and of
# the template A can find, and what A can do.
LOOK = r"""
import ctypes, json, os, subprocess
MARK, SLOT = %r, %r
SYSTEM = ("proc", "sys", "usr", "etc", "lib", "lib64", "bin", "sbin")
found = {"files": [], "cmdlines": []}
for top in ("/", "/workspace", "/tmp", "/var/tmp", "/dev", "/.sandlot"):
    for root, dirs, files in os.walk(top):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in SYSTEM]
        found["files"] += [os.path.join(root, n) for n in dirs + files if MARK in n]
found["files"] = sorted(set(found["files"]))
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        if MARK.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
            found["cmdlines"].append(pid)
    except OSError:
        pass
found["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
found["slots"] = os.listdir("/.sandlot/slots")
found["slot_by_name"] = os.path.lexists(f"/.sandlot/slots/{SLOT}")
found["mounts"] = [l.split()[4] for l in open("/proc/self/mountinfo")]
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
found["caps"] = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
found["nnp"], found["seccomp"] = status["NoNewPrivs"].strip(), status["Seccomp"].strip()
found["exec_caps"] = subprocess.run(
    ["grep", "^Cap", "/proc/self/status"], capture_output=True, text=True
).stdout
pid1 = {}
for what, mode in (("mem", "r+b"), ("environ", "rb"), ("maps", "rb")):
    try:
        open(f"/proc/1/{what}", mode).close()
        pid1[what] = "opened"
    except OSError as exc:
        pid1[what] = type(exc).__name__
found["pid1"] = pid1
libc = ctypes.CDLL(None, use_errno=True)
calls = {
    "unshare user": lambda: libc.unshare(0x10000000),
    "unshare mount": lambda: libc.unshare(0x00020000),
    "mount tmpfs": lambda: libc.mount(b"x", b"/tmp", b"tmpfs", 0, None),
    "umount workspace": lambda: libc.umount2(b"/workspace", 2),
}
found["calls"] = {k: (f(), os.strerror(ctypes.get_errno())) for k, f in calls.items()}
found
"""

SIBLINGS = r"""
import json, os, sandlot
MARK = %r
LOOK = %r
config = sandlot.SandboxConfig(isolation="bubblewrap")
out = {}
with sandlot.Sandbox(config) as a, sandlot.Sandbox(config) as b:
    out["started"] = [a.info.get("started"), b.info.get("started")]
    b.files.write(f"{MARK}-workdir", "b's")
    b.run_code(
        "import subprocess\n"
        f"open('/tmp/{MARK}-tmp', 'w').write('b'); open('/dev/shm/{MARK}-shm', 'w').write('b')\n"
        f"kept = subprocess.Popen(['sh', '-c', 'sleep 60; : {MARK}'])"
    )
    slot = b.async_sandbox._launch.workdir_host.name
    mine = "\n(found['files'], found['cmdlines'])"
    out["b_sees_itself"] = b.run_code(LOOK %% (MARK, slot) + mine).value
    out["a"] = a.run_code("import json\n" + LOOK %% (MARK, slot) + "\njson.dumps(found)").value
print(json.dumps(out))
"""

SWAPS = r"""
import json, os, sandlot
from sandlot.backends import template as templates
real = templates.Template.fork
swap = {}

def fork(self, slot, *args):
    how = swap.pop("how", None)
    if how is not None:  # the attacker's turn: the host has chosen and opened the slot
        path = self.slots / slot
        os.rename(path, path.with_name(slot + "-moved"))
        if how == "link":
            os.symlink(f"/.sandlot/slots/{swap['victim']}", path)
        else:
            os.mkdir(path)
            open(path / "planted", "w").write("the attacker's")
    return real(self, slot, *args)

templates.Template.fork = fork
config = sandlot.SandboxConfig(isolation="bubblewrap")
out = {}
with sandlot.Sandbox(config) as victim:
    victim.files.write("secret.txt", "the victim's")
    out["victim_started"] = victim.info.get("started")
    swap["victim"] = victim.async_sandbox._launch.workdir_host.name
    for how in ("link", "directory"):
        swap["how"] = how
        try:
            with sandlot.Sandbox(config) as sb:
                out[how] = ["started", sb.run_code("import os; os.listdir('/workspace')").value]
        except sandlot.SandboxDied as exc:
            out[how] = ["died", str(exc)]
    out["victim_still"] = victim.files.read_text("secret.txt")
    with sandlot.Sandbox(config) as sb:
        listed = sb.run_code("import os; os.listdir('/workspace')").value
        out["after"] = [sb.info.get("started"), listed]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def siblings(home: Path) -> dict[str, Any]:
    result: dict[str, Any] = run_as_other_user(SIBLINGS % (MARK, LOOK), home)
    assert result["started"] == ["template", "template"], "they did not come from a template"
    result["a"] = json.loads(result["a"].strip("'"))
    return result


def test_a_sibling_finds_none_of_the_others_files_processes_or_workdir(
    siblings: dict[str, Any],
) -> None:
    files, cmdlines = ast.literal_eval(siblings["b_sees_itself"])  # the marks are there to be found
    assert len(files) == 3 and cmdlines
    a = siblings["a"]
    assert a["files"] == [] and a["cmdlines"] == []
    assert a["slots"] == [] and a["slot_by_name"] is False
    assert "/.sandlot/slots" not in a["mounts"] and a["mounts"].count("/workspace") == 1
    assert a["pids"][0] == 1 and len(a["pids"]) <= 4  # its PID 1, driver, what it ran


def test_a_fork_keeps_no_capability_and_cannot_unshare_or_mount(siblings: dict[str, Any]) -> None:
    a = siblings["a"]
    assert set(a["caps"].values()) == {"0000000000000000"}
    assert a["exec_caps"].count("0000000000000000") == 5
    assert a["nnp"] == "1" and a["seccomp"] == "2"
    for call, (result, _) in a["calls"].items():
        assert result == -1, f"{call} succeeded in a fork"


def test_pid_1_runs_as_the_sandbox_user_but_is_not_the_sandbox_s_to_write(
    siblings: dict[str, Any],
) -> None:
    """PID 1 has no seccomp filter: writing its memory would run the system calls the
    filter refuses. A dumpable PID 1 of the same user would let the sandbox do that."""
    assert siblings["a"]["pid1"] == {
        "mem": "PermissionError",
        "environ": "PermissionError",
        "maps": "PermissionError",
    }


@pytest.fixture(scope="module")
def swaps(home: Path) -> dict[str, Any]:
    result: dict[str, Any] = run_as_other_user(SWAPS, home)
    assert result["victim_started"] == "template"
    return result


@pytest.mark.parametrize("how", ["link", "directory"])
def test_a_slot_swapped_after_the_host_opened_it_is_refused(
    swaps: dict[str, Any], how: str
) -> None:
    outcome, detail = swaps[how]
    assert outcome == "died", f"a sandbox started in a swapped slot and saw {detail}"
    if how == "link":
        # Two defences refuse a link: the fork's open of the slot, and the disk
        # watcher's first scan of the workdir; whichever comes first names the death.
        assert "Not a directory" in detail
        assert "failed_to_start" in detail or (
            "(disk)" in detail and "disk use cannot be measured" in detail
        ), detail
    else:
        assert "failed_to_start" in detail and "is not the workdir the host opened" in detail
    assert swaps["victim_still"] == "the victim's"


def test_the_template_forks_again_after_a_refused_slot(swaps: dict[str, Any]) -> None:
    assert swaps["after"] == ["template", "[]"]


def test_the_other_user_is_not_root(home: Path) -> None:
    """The premise of every test here: the host runs as a user without privileges."""
    who = run_as_other_user(
        "import json, os; print(json.dumps([os.getuid(), os.geteuid(), "
        "open('/proc/self/status').read().split('CapEff:')[1].split()[0]]))",
        home,
    )
    assert who == [OTHER_UID, OTHER_UID, "0000000000000000"]


# Run in sandbox A: each change to what every fork of the template shares, as an
# attacker would make it to reach a sibling or a later sandbox.
PLANTS = r"""
import errno, os, socket
def attempt(name, do):
    try:
        do()
        return name, "done"
    except OSError as exc:
        return name, errno.errorcode.get(exc.errno, str(exc.errno))
def bind_socket():
    socket.socket(socket.AF_UNIX).bind("/dev/.sock")
tried = dict([
    attempt("write /", lambda: open("/planted", "w").close()),
    attempt("write /dev", lambda: open("/dev/planted", "w").close()),
    attempt("write /.sandlot", lambda: open("/.sandlot/planted", "w").close()),
    attempt("write /var", lambda: open("/var/planted", "w").close()),
    attempt("write driver", lambda: open("/.sandlot/sandlot_driver/x.py", "w").close()),
    attempt("rename /.sandlot", lambda: os.rename("/.sandlot", "/.sandlot-orig")),
    attempt("rename /dev/stderr", lambda: os.rename("/dev/stderr", "/dev/stderr-orig")),
    attempt("rename /var", lambda: os.rename("/var", "/var-orig")),
    attempt("link in /dev", lambda: os.symlink("/workspace/tap", "/dev/.tap")),
    attempt("fifo in /dev", lambda: os.mkfifo("/dev/.fifo")),
    attempt("socket in /dev", bind_socket),
    attempt("chmod /", lambda: os.chmod("/", 0o777)),
    attempt("chmod /dev", lambda: os.chmod("/dev", 0o777)),
])
tried
"""

SHARED = r"""
import os
sorted((d, sorted(os.listdir(d))) for d in ("/", "/dev", "/.sandlot", "/var"))
"""

PLANTING = r"""
import json, os, time, sandlot
PLANTS, SHARED = %r, %r
config = sandlot.SandboxConfig(isolation="bubblewrap")
out = {}
with sandlot.Sandbox(config) as sibling:
    out["before"] = sibling.run_code(SHARED).value
    with sandlot.Sandbox(config) as a:
        out["started"] = [sibling.info.get("started"), a.info.get("started")]
        out["tried"] = a.run_code(PLANTS).value
        out["pid1_caught"] = a.run_code(
            "[l.split()[1] for l in open('/proc/1/status') if l.startswith('SigCgt:')][0]"
        ).value
        a.run_code("import os, signal, time\nos.kill(1, signal.SIGINT)\nos.kill(1, signal.SIGTERM)")
        time.sleep(0.5)  # a PID 1 that handled them would have ended, and its sandbox
        try:
            out["a_after_signals"] = a.run_code("1+1").value
        except sandlot.SandboxDied as exc:
            out["a_after_signals"] = f"died: {exc}"
    out["sibling"] = sibling.run_code(SHARED).value
    out["sibling_snapshot"] = type(sibling.snapshot(os.environ["HOME"] + "/s.snap")).__name__
with sandlot.Sandbox(config) as later:
    out["later"] = [later.info.get("started"), later.run_code(SHARED).value]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def planting(home: Path) -> dict[str, Any]:
    result: dict[str, Any] = run_as_other_user(PLANTING % (PLANTS, SHARED), home)
    assert result["started"] == ["template", "template"] and result["later"][0] == "template"
    result["tried"] = ast.literal_eval(result["tried"])
    return result


def test_a_fork_can_change_nothing_its_siblings_and_later_forks_share(
    planting: dict[str, Any],
) -> None:
    """Root, /dev and the driver's directory are one filesystem in every fork: a sandbox
    of the host's user would own them, were they writable. A planted driver module ran
    in a sibling's driver, a swapped /dev/stderr carried a sibling's output away, and a
    link flipped under /.sandlot let a later fork keep every slot mounted."""
    assert planting["tried"] == dict.fromkeys(planting["tried"], "EROFS")
    assert planting["sibling"] == planting["before"]
    assert planting["later"][1] == planting["before"]
    assert planting["sibling_snapshot"] == "SnapshotResult"  # its driver's lazy imports


def test_a_sandbox_s_signals_do_not_end_its_pid_1(planting: dict[str, Any]) -> None:
    """PID 1 runs as the sandbox's user: a signal it handled would reach it."""
    assert planting["pid1_caught"] == "'0000000000000000'"
    assert planting["a_after_signals"] == "2"


# The host's removal of a workdir whose sandbox took its permissions away gives each
# directory back the owner's: links planted there to a directory of the host's user
# must lead it nowhere, neither to change that directory's mode nor to remove in it.
LINKS_AT_REMOVAL = r"""
import json, os, time, sandlot
victim = os.path.join(os.environ["HOME"], "victim")
os.makedirs(os.path.join(victim, "inner"), exist_ok=True)
open(os.path.join(victim, "inner", "keep.txt"), "w").write("the host's")
os.chmod(os.path.join(victim, "inner"), 0o500)
os.chmod(victim, 0o500)
out = {}
for templates in ("1", "0"):
    os.environ["SANDLOT_TEMPLATES"] = templates
    with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")) as sb:
        started = sb.info.get("started")
        sb.run_code(
            "import os\n"
            "os.makedirs('/workspace/d/e')\n"
            f"os.symlink({victim!r}, '/workspace/d/to-victim')\n"
            f"os.symlink({victim!r} + '/inner', '/workspace/d/e/to-inner')\n"
            f"os.symlink({victim!r}, '/workspace/top-link')\n"
            "os.chmod('/workspace/d/e', 0)\n"
            "os.chmod('/workspace/d', 0o500)\n"
            "os.chmod('/workspace', 0o500)"
        )
        host_dir = sb.async_sandbox._launch.host_dir
    deadline = time.monotonic() + 20
    while os.path.lexists(host_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    out[started] = {
        "removed": not os.path.lexists(host_dir),
        "modes": [oct(os.stat(p).st_mode & 0o777) for p in (victim, victim + "/inner")],
        "kept": open(os.path.join(victim, "inner", "keep.txt")).read(),
    }
print(json.dumps(out))
"""


def test_the_removal_of_a_locked_workdir_follows_none_of_its_links(home: Path) -> None:
    out = run_as_other_user(LINKS_AT_REMOVAL, home)
    for started in ("template", "cold"):
        assert out[started] == {
            "removed": True,
            "modes": ["0o500", "0o500"],
            "kept": "the host's",
        }, started
