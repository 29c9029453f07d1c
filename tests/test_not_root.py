"""A host that is not root: its sandboxes fork from a template in a user namespace.

Each test runs a host as another user (see ``other_user.py``) and checks what
its sandboxes are and can do. The attacks on such templates are in
``tests/security/test_template_not_root.py``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import pids_with, wait_gone
from other_user import OTHER_UID, other_user_command, run_as_other_user

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="a test running as root starts the other user's host"
)

TAMPER = r'''
CODE = """
import builtins, os
p = '/.sandlot-fork/parent.snap'
out = []
for act in (lambda: open(p, 'r+b'), lambda: os.chmod(p, 0o666), lambda: os.unlink(p),
            lambda: os.rename(p, p + '.x'), lambda: open('/.sandlot-fork/x', 'w')):
    try:
        act()
        out.append('worked')
    except OSError as e:
        out.append(e.errno)
builtins.TAMPERED = out
"""
class Tamper:
    def __reduce__(self):
        return (exec, (CODE, {}))
tamper = Tamper()
'''

STARTS = r"""
import json, os, socket, sandlot
from sandlot.backends import local

def net():
    return sorted(name for _, name in socket.if_nameindex())

NET = "import socket; sorted(n for _, n in socket.if_nameindex())"
PTY = "import os, pty; m, s = pty.openpty(); print(os.ttyname(s))"
TAMPER = TAMPER_CODE

out = {"host_uid": os.getuid(), "root": local.probe().root}
config = sandlot.SandboxConfig(isolation="bubblewrap")
with sandlot.Sandbox(config) as sb:
    out["started"] = sb.info.get("started")
    out["path"] = local.start_path(local.probe(), out["started"])
    out["uid"] = sb.run_code("import os; os.getuid(), os.getgid()").value
    out["exec"] = sb.exec("sh", "-c", "echo hi; id -u").stdout.split()
    sb.files.write("d/a.txt", "written")
    out["read"] = sb.run_code("open('/workspace/d/a.txt').read()").value
    host_dir = sb.async_sandbox._launch.workdir_host
    out["host_owner"] = os.stat(host_dir / "d" / "a.txt").st_uid
    out["loopback"] = sb.run_code(
        "import socket\ns = socket.create_server(('127.0.0.1', 0))\n"
        "c = socket.create_connection(s.getsockname()); c.send(b'up'); s.accept()[0].recv(2)"
    ).value
    out["interfaces"] = sb.run_code(NET).value
    out["workdir_mount"] = [
        line.split()[5] for line in sb.exec("cat", "/proc/self/mountinfo").stdout.splitlines()
        if line.split()[4] == "/workspace"
    ]
    out["tty"] = sb.exec("python", "-c", PTY).stdout.strip()
with sandlot.Sandbox(config) as sb:
    out["second"] = sb.info.get("started")
    out["fresh"] = sb.run_code("import os; os.listdir('/workspace')").value
with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap", network=True)) as sb:
    out["net_started"] = sb.info.get("started")
    out["net_interfaces"] = sb.run_code(NET).value
out["host_interfaces"] = net()
os.mkdir("/mnt/home/out")
from sandlot.volumes import Volume
Volume.create("kept")
mounts = [
    sandlot.Mount(source="/usr/share", target="/data"),
    sandlot.Mount(source="/mnt/home/out", target="/out", writable=True),
]
mounted = sandlot.SandboxConfig(isolation="bubblewrap", mounts=mounts, volumes={"/v": "kept"})
WRITES = (
    "import os\n"
    "try:\n    open('/data/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
    "open('/out/' + os.environ['N'], 'w').write('w')\n"
    "open('/v/' + os.environ['N'], 'w').write('v')\n"
    "print(os.path.isdir('/data/doc'), sorted(os.listdir('/v')))\n"
)
out["mounted"] = []
for n in ("one", "two"):
    with sandlot.Sandbox(mounted.model_copy(update={"env": {"N": n}})) as sb:
        out["mounted"].append([sb.info.get("started"), sb.run_code(WRITES).stdout.split()])
out["mounted_path"] = local.start_path(local.probe(), out["mounted"][0][0])
out["out_dir"] = sorted(os.listdir("/mnt/home/out"))
other = sandlot.Mount(source="/usr/lib", target="/data")
with sandlot.Sandbox(mounted.model_copy(update={"mounts": [other]})) as sb:
    seen = sb.run_code("import os; os.path.isdir('/data/doc')").value
    out["other_source"] = [sb.info.get("started"), seen]
# A source swapped between the key's look and the template's opening (a sandbox renaming
# what it can write): the template would bind the other one for good; it starts cold.
real_seen = local._sources_seen
def stale(config, volumes, look=os.stat):
    seen = real_seen(config, volumes, look)
    return seen if look is not os.stat else tuple((p, d, i + 1, w) for p, d, i, w in seen)
local._sources_seen = stale
os.mkdir("/mnt/home/raced")
raced = sandlot.SandboxConfig(
    isolation="bubblewrap", mounts=[sandlot.Mount(source="/mnt/home/raced", target="/r")]
)
with sandlot.Sandbox(raced) as sb:
    out["raced"] = [sb.info.get("started"), local.template_problem]
local._sources_seen = real_seen
# More sets of sources than templates may bind: an idle one makes room for the next.
out["sets"] = []
for i in range(6):
    os.mkdir(f"/mnt/home/set{i}")
    one = sandlot.Mount(source=f"/mnt/home/set{i}", target="/s")
    with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap", mounts=[one])) as sb:
        out["sets"].append(sb.info.get("started"))
os.rename("/mnt/home/out", "/mnt/home/out-was")  # a link where the writable source was
os.symlink("/mnt/src", "/mnt/home/out")
try:
    sandlot.Sandbox(mounted).start()
except sandlot.ConfigError as e:
    out["swapped"] = str(e)
# A fork, whose workdir comes as a tar: the system's Python may predate tarfile's data filter.
with sandlot.Sandbox(config) as sb:
    sb.run_code("x = 41\nopen('k.txt', 'w').write('kept')", raise_on_error=True)
    (kid,) = sb.fork(1)
    with kid:
        out["forked"] = kid.run_code("x + 1, open('k.txt').read()").value
        out["forked_shown"] = "/.sandlot-fork " in kid.exec("cat", "/proc/self/mountinfo").stdout
    sb.run_code("big = bytes(16 << 20)", raise_on_error=True)  # past SHOWN_FROM: mounted
    # What the parent's state runs in a child as it loads: at the file its siblings read.
    sb.run_code(TAMPER, raise_on_error=True)
    (kid,) = sb.fork(1)
    with kid:
        out["big_forked"] = kid.run_code("len(big) >> 20, x").value
        out["big_shown"] = "/.sandlot-fork " in kid.exec("cat", "/proc/self/mountinfo").stdout
        out["tampered"] = kid.run_code("import builtins; builtins.TAMPERED").value
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def starts(home: Path) -> dict[str, Any]:
    script = STARTS.replace("TAMPER_CODE", repr(TAMPER))
    result: dict[str, Any] = run_as_other_user(script, home)
    return result


def test_a_host_that_is_not_root_forks_its_sandboxes_from_a_template(
    starts: dict[str, Any],
) -> None:
    assert starts["host_uid"] == OTHER_UID and starts["root"] is False
    assert starts["started"] == "template" and starts["second"] == "template"
    assert starts["path"][0].startswith("forked from a template")
    assert starts["net_started"] == "template"  # a template of its own: the network's on


def test_a_fork_of_a_host_that_is_not_root_runs_as_that_user_and_works(
    starts: dict[str, Any],
) -> None:
    assert starts["uid"] == f"({OTHER_UID}, {OTHER_UID})"
    assert starts["exec"] == ["hi", str(OTHER_UID)]
    assert starts["read"] == "'written'" and starts["host_owner"] == OTHER_UID
    assert starts["fresh"] == "[]"  # the second sandbox's workdir is a new one
    assert starts["tty"].startswith("/dev/pts/")  # its own devpts
    (options,) = starts["workdir_mount"]
    assert {"rw", "nosuid", "nodev"} <= set(options.split(","))


def test_the_network_setting_holds_in_forks_of_a_host_that_is_not_root(
    starts: dict[str, Any],
) -> None:
    assert starts["loopback"] == "b'up'"
    assert starts["interfaces"] == "['lo']"
    assert starts["net_interfaces"] == str(starts["host_interfaces"])
    assert starts["host_interfaces"] != ["lo"]


def test_sandboxes_with_mounts_and_volumes_fork_where_the_host_is_not_root(
    starts: dict[str, Any],
) -> None:
    """The template binds them itself: a read-only mount refuses writes, a writable one and
    a volume take them, the next sandbox sees the volume's, and other sources at the same
    path come from another template, each sandbox seeing its own."""
    one, two = starts["mounted"]
    assert one == ["template", ["30", "True", "['one']"]]
    assert two == ["template", ["30", "True", "['one',", "'two']"]]
    assert "template" in starts["mounted_path"][0]
    assert starts["out_dir"] == ["one", "two"]
    assert starts["other_source"] == ["template", "False"]  # /usr/lib has no doc/
    assert "changed since the config named it" in starts["swapped"]  # not the old template's
    assert starts["raced"] == ["cold", ""]  # a source that changed under its template's start
    assert starts["sets"] == ["template"] * 6  # idle ones made room (4 bind sources at most)


def test_a_fork_works_on_a_python_without_tarfile_s_data_filter(starts: dict[str, Any]) -> None:
    """The system's Python 3.11 here predates 3.11.4's ``data`` filter, which the driver
    unpacks a fork's workdir with where it has it (``test_tar_without_data_filter``)."""
    assert starts["forked"] == "(42, 'kept')"
    # A small snapshot is sent to the child; a large one is mounted in it (read there).
    assert starts["forked_shown"] is False
    assert starts["big_forked"] == "(16, 41)" and starts["big_shown"] is True
    assert starts["tampered"] == "[30, 30, 30, 30, 30]"  # a read-only mount, for the host's user


def test_a_fork_s_processes_end_when_a_host_that_is_not_root_is_killed(home: Path) -> None:
    """The template dies with its host (bubblewrap's die-with-parent), and every sandbox it
    forked with it, a process that left its session among them."""
    mark = f"sandlot-orphan-{uuid.uuid4().hex}"
    script = (
        "import sys, time, sandlot\n"
        "box = sandlot.Sandbox(sandlot.SandboxConfig(isolation='bubblewrap')).start()\n"
        f"box.exec('sh', '-c', 'setsid sh -c \"sleep 600\" {mark} >/dev/null 2>&1 </dev/null &')\n"
        "print(box.info.get('started'), flush=True)\n"
        "time.sleep(600)\n"
    )
    host = subprocess.Popen(
        other_user_command(["-c", script], home), stdout=subprocess.PIPE, text=True
    )
    try:
        assert host.stdout is not None
        assert host.stdout.readline().strip() == "template"
        deadline = time.monotonic() + 10  # between its execs a process's cmdline reads empty
        while not pids_with(mark):
            assert time.monotonic() < deadline, "the detached process never showed"
            time.sleep(0.05)
    finally:
        host.kill()
        host.wait()
    assert wait_gone(mark) == []


# bubblewrap, but a template's walls lose CAP_NET_ADMIN (as a security module or a
# kernel's rules for user namespaces might refuse one of the template's steps): its
# forks cannot bring their loopback up.
NO_NET_ADMIN = """#!/bin/sh
case "$*" in *template.main*) ;; *) exec /usr/bin/bwrap "$@" ;; esac
[ "$1" = --args ] || exit 99
fd=$2
shift 2
exec /usr/bin/bwrap --args "$fd" --cap-drop CAP_NET_ADMIN "$@"
"""

REFUSED = r"""
import json, warnings, sandlot
from sandlot.backends import local
out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")) as sb:
            out.setdefault("started", []).append(sb.info.get("started"))
            out.setdefault("results", []).append(sb.run_code("1+1").value)
out["warnings"] = [str(w.message) for w in caught]
out["path"] = local.start_path(local.probe(), "cold")
print(json.dumps(out))
"""


def test_where_a_template_s_walls_are_refused_sandboxes_start_cold_and_one_warning_says_why(
    home: Path,
) -> None:
    wrapper = home / "bwrap-no-net-admin"
    wrapper.write_text(NO_NET_ADMIN)
    wrapper.chmod(0o755)
    out = run_as_other_user(REFUSED, home, env={"SANDLOT_BWRAP": f"/mnt/home/{wrapper.name}"})
    assert out["started"] == ["cold", "cold"] and out["results"] == ["2", "2"]
    (warning,) = out["warnings"]
    assert "start cold (no template)" in warning and "walls failed" in warning
    assert "Operation not permitted" in warning
    assert out["path"][0].startswith("cold start: the template failed here")


LOCKED_OUT = r"""
import json, os, time, sandlot
out = {}
for templates in ("1", "0"):
    os.environ["SANDLOT_TEMPLATES"] = templates
    with sandlot.Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")) as sb:
        started = sb.info.get("started")
        sb.run_code(
            "import os\n"
            "os.makedirs('/workspace/d/e')\n"
            "open('/workspace/d/e/f', 'wb').write(b'x' * 100000)\n"
            "os.symlink('/workspace/d', '/workspace/d/e/back')\n"
            "os.chmod('/workspace/d/e', 0)\n"
            "os.chmod('/workspace/d', 0o500)\n"
            "os.chmod('/workspace', 0o500)"
        )
        host_dir = sb.async_sandbox._launch.host_dir
    deadline = time.monotonic() + 20  # a fork's directory goes on the host's remover thread
    while os.path.lexists(host_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    out[started] = os.path.lexists(host_dir)
print(json.dumps(out))
"""


def test_a_workdir_its_sandbox_locked_is_removed_all_the_same(home: Path) -> None:
    """Where the host is not root, the sandbox owns its workdir and may take the owner's
    permissions from it: its directories would stay on disk for good, each sandbox's
    share of the disk left behind."""
    assert run_as_other_user(LOCKED_OUT, home) == {"template": False, "cold": False}
