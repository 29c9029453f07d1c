"""Attacks between sandboxes forked from one template, and on the template itself.

Sandboxes with the same walls come from one template (see
``sandlot.backends.template``): one bubblewrap process whose fork server makes
each sandbox's namespaces and mounts. That shares more than two cold starts
would (one mount namespace to start from, one bubblewrap, one directory of
workdirs), so each test here is an attack from one sibling on another, or on
the template, through the public API. Each checks first that the sandboxes it
attacks really came from a template, so a silent fall back to cold starts fails
the test instead of passing it.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    children,
    forked,
    make_wheel,
    pids_with,
    spares,
    strict,
    template_processes,
    wait_settled,
)

import sandlot
from sandlot.backends import cgroups
from sandlot.backends import template as templates
from sandlot.backends.local import _templates
from sandlot.driver.places import SANDBOX_UID

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.getuid() != 0, reason="templates are used where the host runs as root"),
]


@pytest.fixture
def pair() -> Iterator[tuple[sandlot.Sandbox, sandlot.Sandbox]]:
    """Two sandboxes of one config: siblings from one template."""
    with sandlot.Sandbox(strict()) as a, sandlot.Sandbox(strict()) as b:
        forked(a), forked(b)
        yield a, b


def _code(body: str) -> str:
    return textwrap.dedent(body).strip()


def test_siblings_see_none_of_each_others_files(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    a, b = pair
    mark = f"sandlot-mark-{uuid.uuid4().hex}"
    # Every place the sandbox user may write, and the workdir, gets a marker from a.
    wrote = a.run_code(
        _code(f"""
        import os
        places = []
        for top in ("/tmp", "/var/tmp", "/dev/shm", "/workspace", os.path.expanduser("~")):
            try:
                with open(os.path.join(top, "{mark}"), "w") as f:
                    f.write("secret")
                places.append(top)
            except OSError:
                pass
        places
        """)
    )
    assert wrote.error is None
    assert {"/tmp", "/var/tmp", "/dev/shm", "/workspace"} <= set(eval(wrote.value or "[]"))
    # b looks everywhere it can read (not /proc or /sys: those are not files of a's).
    found = b.run_code(
        _code(f"""
        import os
        hits = []
        skip = ("/proc", "/sys", "/usr")  # not files of a sandbox's
        for root, dirs, files in os.walk("/", onerror=lambda e: None):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
            hits += [os.path.join(root, f) for f in files if f == "{mark}"]
        hits
        """)
    )
    assert found.error is None
    assert found.value == "[]"


def test_siblings_see_none_of_each_others_processes_sockets_or_shared_memory(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    a, b = pair
    mark = uuid.uuid4().hex
    key = int(mark[:6], 16)
    held = a.run_code(
        _code(f"""
        import ctypes, socket, subprocess
        sleeper = subprocess.Popen(["sh", "-c", "sleep 300", "{mark}"])
        abstract = socket.socket(socket.AF_UNIX)
        abstract.bind("\\0sandlot-{mark}")
        abstract.listen()
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        shm = ctypes.CDLL(None, use_errno=True).shmget({key}, 4096, 0o1666)
        (tcp.getsockname()[1], shm)
        """)
    )
    assert held.error is None, held.error
    port, shm = eval(held.value or "(0, -1)")
    assert shm >= 0  # a made the segment, so b's miss below means something
    probe = _code(f"""
        import ctypes, os, socket
        seen = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                    if b"{mark}" in f.read():
                        seen.append(pid)
            except OSError:
                pass
        def connects(address, family):
            with socket.socket(family) as s:
                try:
                    s.connect(address)
                    return True
                except OSError:
                    return False
        (
            len(seen),
            connects("\\0sandlot-{mark}", socket.AF_UNIX),
            connects(("127.0.0.1", {port}), socket.AF_INET),
            ctypes.CDLL(None, use_errno=True).shmget({key}, 0, 0) >= 0,
        )
        """)
    from_b, from_a = b.run_code(probe), a.run_code(probe)
    assert from_b.error is None and from_a.error is None, (from_b.error, from_a.error)
    assert from_b.value == "(0, False, False, False)"
    assert from_a.value == "(1, True, True, True)"  # the probe finds what is there


def test_a_fork_sees_neither_the_template_nor_the_other_workdirs(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    a, b = pair
    b_slot = b.async_sandbox._launch.host_dir.name  # type: ignore[union-attr]
    seen = a.run_code(
        _code("""
        import os
        def listing(path):
            try:
                return sorted(os.listdir(path))
            except OSError:
                return None
        mounts = open("/proc/self/mountinfo").read()
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        with open("/proc/1/cmdline", "rb") as f:
            init = f.read()
        (listing("/.sandlot-slots"), listing("/.sandlot-cgroups"), mounts, pids, len(init))
        """)
    )
    assert seen.error is None, seen.error
    slots, cgroup_dirs, mounts, pids, _ = eval(seen.value or "")
    assert slots in (None, [])  # the directory of every workdir is unmounted
    assert cgroup_dirs in (None, [])  # and the host's cgroup directories
    assert b_slot not in mounts and "sandlot-slots" not in mounts
    assert "sandlot-cgroups" not in mounts
    # Its own PID namespace: its first process, the driver, what the code started.
    assert pids[:2] == [1, 2]
    assert all(pid < 50 for pid in pids)


def test_a_fork_runs_as_the_sandbox_user_without_privileges(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    a, _ = pair
    status = a.run_code("import os; (os.getuid(), os.getgid(), open('/proc/self/status').read())")
    assert status.error is None
    uid, gid, text = eval(status.value or "")
    assert (uid, gid) == (SANDBOX_UID, SANDBOX_UID)
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    for caps in ("CapPrm", "CapEff", "CapAmb"):  # inheritable ones are inert under NoNewPrivs
        assert int(fields[caps], 16) == 0, caps
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    # The first process (root, which built the walls) kept no capability once it forked
    # the driver, and is out of reach: no signal, no peek.
    first = a.run_code("open('/proc/1/status').read()").value or ""
    first_fields = dict(line.split(":\t", 1) for line in eval(first).splitlines() if ":\t" in line)
    for caps in ("CapPrm", "CapEff", "CapAmb"):
        assert int(first_fields[caps], 16) == 0, caps
    reach = a.run_code(
        _code("""
        import os
        tries = []
        for attempt in (lambda: os.kill(1, 9), lambda: open("/proc/1/environ").read(),
                        lambda: os.listdir("/proc/1/fd"), lambda: os.listdir("/proc/1/root")):
            try:
                attempt()
                tries.append("reached")
            except OSError as exc:
                tries.append(type(exc).__name__)
        tries
        """)
    )
    assert reach.error is None
    assert "reached" not in (reach.value or "")
    assert a.run_code("1 + 1").value == "2"


def test_mount_and_namespace_calls_are_refused_in_a_fork(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    a, _ = pair
    result = a.run_code(
        _code("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        calls = {
            "umount /workspace": lambda: libc.umount2(b"/workspace", 2),
            "mount tmpfs": lambda: libc.mount(b"x", b"/tmp", b"tmpfs", 0, None),
            "unshare user": lambda: libc.unshare(0x10000000),
            "setns": lambda: libc.setns(os.open("/proc/self/ns/mnt", os.O_RDONLY), 0),
        }
        {name: call() for name, call in calls.items()}
        """)
    )
    assert result.error is None, result.error
    assert all(code == -1 for code in eval(result.value or "{}").values()), result.value


def test_each_fork_gets_a_fresh_workdir_and_tmp(tmp_path: Path) -> None:
    for _ in range(3):
        with sandlot.Sandbox(strict()) as box:
            forked(box)
            left = box.run_code(
                "import os; sorted(os.listdir('/workspace') + os.listdir('/tmp') + "
                "os.listdir('/dev/shm') + os.listdir('/var/tmp'))"
            )
            assert left.value == "[]"  # nothing from the sandbox before
            box.files.write("/workspace/here.txt", b"x")
            box.exec("sh", "-c", "touch /tmp/t /dev/shm/s /var/tmp/v")


def test_terminate_ends_every_process_a_fork_started() -> None:
    mark = uuid.uuid4().hex
    with sandlot.Sandbox(strict()) as box:
        forked(box)
        box.exec("sh", "-c", f"setsid sh -c 'sleep 600' {mark} >/dev/null 2>&1 < /dev/null &")
        deadline = time.monotonic() + 10  # between its execs a process's cmdline reads empty
        while pids_with(mark) == []:
            assert time.monotonic() < deadline, "the detached process never showed"
            time.sleep(0.01)
    assert pids_with(mark) == []


def test_a_killed_template_is_replaced_and_its_sandboxes_are_dead() -> None:
    box = sandlot.Sandbox(strict()).start()
    try:
        forked(box)
        slots = box.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
        (template,) = [t for t in _templates.values() if t.slots == slots]
        os.killpg(template.proc.pid, signal.SIGKILL)
        template.proc.wait()
        # bubblewrap's monitor is gone; the kernel ends the rest of its PID namespace (the
        # sandboxes' own are inside it) as its init exits, a moment later.
        assert select.select([forked(box).pidfd], [], [], 10)[0], "the sandbox outlived it"
        with pytest.raises(sandlot.SandboxDied) as died:
            box.run_code("1")
        assert died.value.cause == "killed"
    finally:
        box.terminate()
    with sandlot.Sandbox(strict()) as fresh:
        forked(fresh)  # a new template took over
        assert fresh.run_code("1 + 1").value == "2"


def test_the_fork_server_is_each_sandboxs_parent_and_reaps_it(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    """No keeper between them: the fork server waits on each first process itself, reports
    how it ended, and leaves no zombie behind."""
    a, b = pair
    firsts = {forked(a).pid, forked(b).pid}
    slots = a.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
    (template,) = [t for t in _templates.values() if t.slots == slots]
    (init,) = children(template.proc.pid)
    (fork_server,) = children(init)
    assert firsts <= set(children(fork_server))
    for pid in firsts:  # each sandbox's PID 1, named for ps and top
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "sandlot-init"
    with pytest.raises(sandlot.SandboxDied) as died:
        b.run_code("import os\nos._exit(7)")
    assert died.value.cause == "crashed" and "status 7" in str(died.value)
    a.terminate()
    b.terminate()
    left = firsts & set(children(fork_server))
    assert left == set(), f"not reaped: {left}"


def test_siblings_draw_random_numbers_neither_can_predict_from_the_other(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    """Sandboxes copied from one template must not share a generator's state, or one could
    predict another's draws: ``random``'s is reseeded by the hooks of ``os.fork``, which
    forks each driver; ``tempfile`` names files with a generator of its own, made anew
    only in a process whose PID differs from its maker's (every driver, as the template,
    is PID 2 of its namespace), so the template must never have made it. The fork
    server, which forks the first processes without those hooks, runs one thread, as
    that needs (PID 1 draws nothing)."""
    draw = (
        "import random, tempfile\n"
        "([random.getrandbits(64) for _ in range(4)], tempfile.mkstemp()[1], tempfile.mkstemp()[1])"
    )
    a, b = pair
    seen = [a.run_code(draw).value, b.run_code(draw).value, a.run_code(draw).value]
    assert len(set(seen)) == 3, seen
    slots = a.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
    (template,) = [t for t in _templates.values() if t.slots == slots]
    (init,) = children(template.proc.pid)
    (fork_server,) = children(init)
    assert os.listdir(f"/proc/{fork_server}/task") == [str(fork_server)]


def test_sandboxes_asked_for_as_their_template_dies_still_start() -> None:
    with sandlot.Sandbox(strict()) as first:
        slots = first.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
    (template,) = [t for t in _templates.values() if t.slots == slots]
    (init,) = children(template.proc.pid)  # bubblewrap's init, then the fork server
    (fork_server,) = children(init)
    os.kill(fork_server, signal.SIGKILL)  # no wait: the next starts race the template's end
    for _ in range(3):
        with sandlot.Sandbox(strict()) as box:  # from the dying template (cold) or a new one
            assert box.info["started"] in ("template", "cold")
            assert box.run_code("1 + 1").value == "2"


def test_templates_off_gives_a_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(templates.ENV_VAR, "0")
    with sandlot.Sandbox(strict()) as box:
        proc = box.async_sandbox._launch.proc  # type: ignore[union-attr]
        assert isinstance(proc, subprocess.Popen)
        assert box.run_code("1 + 1").value == "2"


def test_one_sandboxes_variables_and_secrets_reach_neither_a_sibling_nor_the_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SANDLOT_TEMPLATE_SECRET", secret)
    holder = strict(secrets=["SANDLOT_TEMPLATE_SECRET"], env={"ONLY_A": "a"})
    with sandlot.Sandbox(holder) as a, sandlot.Sandbox(strict(env={"ONLY_B": "b"})) as b:
        forked(a), forked(b)
        slots = a.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
        assert slots == b.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
        assert a.exec("sh", "-c", "echo $SANDLOT_TEMPLATE_SECRET $ONLY_A").stdout.split() == [
            secret,
            "a",
        ]
        seen = b.run_code("import os; sorted(os.environ)").value or ""
        assert "SANDLOT_TEMPLATE_SECRET" not in seen and "ONLY_A" not in seen
        assert "ONLY_B" in seen
        kept = template_processes(os.getpid())
        assert len(kept) >= 3  # bubblewrap, its init and the fork server of this template
        for pid in kept:
            with contextlib.suppress(OSError):
                memory = Path(f"/proc/{pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert secret.encode() not in memory + cmdline, pid


def test_a_forks_environment_is_a_cold_starts_in_python_and_in_what_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver turns the template's environment into the sandbox's (changing only the
    variables that differ): ``os.environ`` and the C library's copy, which the sandbox's
    processes inherit, hold what a cold start's do (less ``PWD``, which a cold start's
    start-up shell sets)."""
    code = (
        "import os, subprocess\n"
        "env = subprocess.run(['env', '-0'], capture_output=True).stdout.split(b'\\0')\n"
        "(sorted(os.environ.items()), sorted(e.decode() for e in env if e))"
    )
    config = strict(env={"ONLY_HERE": "1"})
    with sandlot.Sandbox(config) as box:
        forked(box)
        fork_python, fork_env = ast.literal_eval(box.run_code(code).value or "")
    monkeypatch.setenv(templates.ENV_VAR, "0")
    with sandlot.Sandbox(config) as box:
        cold_python, cold_env = ast.literal_eval(box.run_code(code).value or "")
    assert fork_python == [kv for kv in cold_python if kv[0] != "PWD"]
    assert fork_env == [e for e in cold_env if not e.startswith("PWD=")]
    assert fork_env == [f"{k}={v}" for k, v in fork_python]
    assert ("ONLY_HERE", "1") in fork_python


@pytest.mark.parametrize("hook", ["sandlot_hook_probe.pth", "sitecustomize.py"])
@pytest.mark.parametrize("templates_on", ["1", "0"])
def test_an_environments_start_up_code_runs_only_as_the_sandbox_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, templates_on: str, hook: str
) -> None:
    """A package's ``.pth`` line, or its ``sitecustomize`` module, runs at interpreter start
    (``site``): never in the template (root, with the capability to mount, no filter, every
    sibling's channel passing through; it runs ``site`` itself only for an environment where
    ``site`` runs no such code), and in a sandbox only after the driver dropped to the sandbox
    user under the filter."""
    probe = (
        "import os; os.environ['SANDLOT_HOOK_PROBE'] = '%d %s' % (os.getuid(), "
        "[l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0])\n"
    )
    wheel = make_wheel(tmp_path, "sandlot_hook_probe", {hook: probe})
    monkeypatch.setenv(templates.ENV_VAR, templates_on)
    with sandlot.Sandbox(strict(python_packages=[str(wheel)])) as box:
        assert box.info["started"] == ("template" if templates_on == "1" else "cold")
        ran_as = box.run_code("import os; os.environ.get('SANDLOT_HOOK_PROBE')")
        assert ran_as.value == repr(f"{SANDBOX_UID} 2")  # uid 65534, seccomp filter mode


# What a module of a package's records when it is imported: by whom, in which process,
# under which seccomp mode. msvcrt is a name the standard library lacks on Linux that
# subprocess tries to import (and goes on without): found on a path that holds the
# environment's packages, a package's msvcrt.py would run.
NAMESAKE = (
    "import os, sys\n"
    "sys.sandlot_namesake = (os.getuid(), open('/proc/self/comm').read().strip(), "
    "[l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0])\n"
)
TEMPLATE_HELD = (
    "import sys\n"
    "(getattr(sys, 'sandlot_namesake', None), "
    "sorted(n for n, m in list(sys.modules.items())\n"
    "       if '-packages' in str(getattr(m, '__file__', ''))))"
)


def test_the_template_imports_nothing_of_the_environment_s_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template imports only the standard library, before ``site`` puts the environment's
    packages on its path: a package's module named as something the standard library
    lacks but tries (``msvcrt``, from ``subprocess``) would otherwise run in the template,
    as root with no filter, and in every later fork. Three sandboxes of a new template
    (its first, forked before it settles, and two after): none holds a module from the
    environment's packages, and the namesake ran in none of them."""
    wheel = make_wheel(tmp_path, "sandlot_namesake", {"msvcrt.py": NAMESAKE})
    monkeypatch.setenv(templates.ENV_VAR, "1")
    config = strict(python_packages=[str(wheel)])  # an environment of its own: a new template
    for i in range(3):
        with sandlot.Sandbox(config) as box:
            forked(box)
            ran, held = ast.literal_eval(box.run_code(TEMPLATE_HELD).value or "")
            assert (ran, held) == (None, []), (ran, held)
            slots = box.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
        if i == 0:  # the next two from the template settled (site run, if it runs it)
            wait_settled(*[t for t in _templates.values() if t.slots == slots])


def test_a_fork_sees_the_same_site_set_up_as_a_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the default environment the template runs ``site`` once for all its forks: each
    sees what a cold start's own ``site.main()`` gives (path, prefixes, the builtins it adds,
    the environment's packages importable)."""
    probe = (
        "import sys, builtins\n"
        "(sys.path, sys.prefix, sys.exec_prefix, "
        "[n for n in ('exit', 'quit', 'help', 'copyright', 'credits', 'license') "
        "if hasattr(builtins, n)], 'site' in sys.modules)"
    )
    seen = {}
    for on in ("1", "0"):
        monkeypatch.setenv(templates.ENV_VAR, on)
        with sandlot.Sandbox(strict()) as box:
            seen[box.info["started"]] = box.run_code(probe).value
    assert seen["template"] == seen["cold"], seen
    path, prefix, *_ = ast.literal_eval(seen["cold"])
    monkeypatch.setenv(templates.ENV_VAR, "1")
    with sandlot.Sandbox(strict()) as box:  # forked: its driver ran no site.main() of its own
        assert box.info["started"] == "template"
        assert box.run_code("import sys; sys.modules['sandlot_driver.server'].SITE_DONE").value == (
            "True"
        )
    assert any(p.startswith(prefix) and p.endswith("site-packages") for p in path), seen


def test_the_templates_site_check_counts_directories_a_distributions_site_reads() -> None:
    """The template runs ``site`` only where it would run no code. Its check over-counts:
    with ``site.getsitepackages`` naming nothing (as Debian's names no environment's
    ``site-packages`` before ``site`` has switched to it), a ``.pth`` file or a
    ``sitecustomize`` module there still makes it say no. Run in a sandbox, on an
    environment made there, so no environment's interpreter runs on the host."""
    with sandlot.Sandbox(strict()) as box:
        root = box.run_code(
            "import os, sys\n"
            "os.path.dirname(os.path.dirname(sys.modules['sandlot_driver.server'].__file__))"
        ).value
        made = box.exec("python", "-m", "venv", "--without-pip", "/tmp/v")
        assert made.returncode == 0, made.stderr
        check = (
            f"import sys; sys.path.insert(0, {root}); import site\n"
            "site.getsitepackages = lambda prefixes=None: []\n"
            "from sandlot_driver.template import site_runs_nothing\n"
            "print(site_runs_nothing())"
        )

        def verdict() -> str:
            done = box.exec("/tmp/v/bin/python", "-I", "-S", "-c", check)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert verdict() == "True"
        packages = box.exec(
            "/tmp/v/bin/python",
            "-I",
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ).stdout.strip()
        assert packages.startswith("/tmp/v/")
        for name, text in (("extra.pth", "/tmp\n"), ("sitecustomize.py", "x = 1\n")):
            box.files.write(f"{packages}/{name}", text)
            assert verdict() == "False", name
            box.files.remove(f"{packages}/{name}")
        assert verdict() == "True"


def _mountinfo(pid: int) -> list[tuple[str, str, str]]:
    """The mounts ``pid`` sees: (root within its filesystem, mount point, filesystem type)."""
    mounts = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        mounts.append((parts[3], parts[4], rest.split()[0]))
    return mounts


def test_no_workdir_and_no_cgroup_directory_is_in_the_templates_sight(
    pair: tuple[sandlot.Sandbox, sandlot.Sandbox],
) -> None:
    """The host clones each sandbox's workdir as a detached mount and opens the files that
    join its cgroups; the template and its spare see neither the directory of workdirs nor
    any cgroup directory. Each sandbox sees its own workdir only, and no cgroup mount."""
    a, b = pair
    slots = a.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
    (template,) = [t for t in _templates.values() if t.slots == slots]
    (init,) = children(template.proc.pid)
    (fork_server,) = children(init)
    spare = _spare_of(b)
    workdirs = {
        box: str(box.async_sandbox._launch.workdir_host)  # type: ignore[union-attr]
        for box in (a, b)
    }
    for pid in (fork_server, *spare):
        for root, point, kind in _mountinfo(pid):
            assert kind != "cgroup" and kind != "cgroup2", (pid, point)
            assert slots.name not in root and "/.sandlot-slots" not in point, (pid, root, point)
    for box, other in ((a, b), (b, a)):
        mine = _mountinfo(forked(box).pid)
        roots = [root for root, point, _ in mine if point == "/workspace"]
        assert len(roots) == 1 and workdirs[box].endswith(roots[0]), (roots, workdirs[box])
        assert not any(workdirs[other].endswith(root) for root, point, _ in mine if root != "/")
        assert not any(kind.startswith("cgroup") for *_, kind in mine)
        assert box.run_code("open('/proc/self/mountinfo').read().count(' cgroup')").value == "0"


def test_the_workdir_mount_is_the_sandboxs_own_with_no_suid_and_no_devices() -> None:
    """The workdir comes as a clone of the host's mount: inside it is no peer of the host's
    (a mount the host makes below the workdir does not appear inside), and it carries
    ``nosuid`` and ``nodev`` as a cold start's bubblewrap bind does."""
    with sandlot.Sandbox(strict()) as box:
        (line,) = [
            line
            for line in Path(f"/proc/{forked(box).pid}/mountinfo").read_text().splitlines()
            if line.split()[4] == "/workspace"
        ]
        fields, _, _ = line.partition(" - ")
        options, *optional = fields.split()[5:]
        assert not [f for f in optional if f.startswith(("shared:", "master:"))], line
        assert {"nosuid", "nodev"} <= set(options.split(",")), line
        below = box.async_sandbox._launch.workdir_host / "below"  # type: ignore[union-attr]
        below.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "none", str(below)], check=True)
        try:
            assert box.run_code("import os; os.path.ismount('/workspace/below')").value == "False"
        finally:
            subprocess.run(["umount", str(below)], check=True)


def test_a_process_reaped_before_the_host_saw_it_has_no_pid_and_no_error() -> None:
    """A forked sandbox whose first process ended before the host read its pidfd (its walls
    failed) still gets a process object: its end, and its log, then tell why."""
    child = subprocess.Popen(["true"])
    pidfd = os.pidfd_open(child.pid)
    child.wait()
    try:
        assert templates.host_pid(pidfd) == 0
    finally:
        os.close(pidfd)
    live = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(live.pid)
    try:
        assert templates.host_pid(pidfd) == live.pid
    finally:
        os.close(pidfd)
        live.kill()
        live.wait()


def _spare_of(box: sandlot.Sandbox) -> tuple[int, int]:
    """The spare the fork server that forked ``box`` keeps for the next one: a first
    process and its driver-to-be."""
    fork_server = int(
        Path(f"/proc/{forked(box).pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    )
    deadline = time.monotonic() + 10
    while not (found := spares(fork_server)) and time.monotonic() < deadline:
        time.sleep(0.01)  # forked once the host had its answer: a moment after the start
    (spare,) = found
    return spare


def _held(pid: int) -> dict[int, str]:
    """The descriptors of ``pid`` above 2, with what each one is (one closed between the
    listing and its reading, as a rehearsal's socket pair is, is left out)."""
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return {fd: target for fd, target in fds.items() if fd > 2}


def test_the_spare_holds_nothing_but_its_link_and_no_sandboxs_cgroup() -> None:
    """The fork server forks each next sandbox's first process ahead, and that its
    driver-to-be: until it is given a sandbox, neither holds a descriptor of the
    template's (no control socket, no namespace, no other sandbox's pidfd, channel or
    log); the driver-to-be holds only the socket it waits on, the first process nothing.
    Neither is in any sandbox's cgroup."""
    with sandlot.Sandbox(strict()) as a, sandlot.Sandbox(strict()) as b:
        first, waiting = _spare_of(b)
        # For a moment each holds more: the first process the link until its fork has
        # returned, the driver-to-be a socket pair of its own while it rehearses.
        deadline = time.monotonic() + 5
        while _held(first) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _held(first) == {}
        while len(held := _held(waiting)) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(held) == 1 and next(iter(held.values())).startswith("socket:"), held
        theirs = {forked(box).pid for box in (a, b)}
        for pid in (first, waiting):
            groups = Path(f"/proc/{pid}/cgroup").read_text()
            assert f"/{cgroups.PREFIX}" not in groups, groups
        assert first not in theirs


@pytest.mark.parametrize("which", ["first process", "driver-to-be"])
def test_a_spare_that_ended_is_reaped_and_the_next_start_still_forks(which: str) -> None:
    """A spare killed while it waits (the machine's OOM killer, say), either of its two
    processes, is reaped at once, no zombie left; the next start forks a first process of
    its own, and a new spare follows."""
    with sandlot.Sandbox(strict()) as first:
        spare = _spare_of(first)
        os.kill(spare[0] if which == "first process" else spare[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{spare[0]}").exists():
            assert time.monotonic() < deadline, "the killed spare was not reaped"
            time.sleep(0.01)
        with sandlot.Sandbox(strict()) as second:
            forked(second)
            assert second.run_code("1 + 1").value == "2"
            assert _spare_of(second)[0] != spare[0]


def test_pid_1_is_in_no_sandbox_cgroup_and_names_none_inside() -> None:
    """A forked sandbox's PID 1 only reaps: the driver joins the sandbox's cgroups, PID 1
    stays in the template's. From inside (the sandbox's own cgroup namespace) PID 1's
    cgroups read as ancestors, ``/..``, never a name; all the sandbox runs is in its
    cgroups, and a cell's process is too."""
    with sandlot.Sandbox(strict()) as box:
        pid1 = forked(box).pid
        cgroup = box.async_sandbox._launch.cgroup  # type: ignore[union-attr]
        assert cgroup is not None
        box.run_code("import subprocess\nchild = subprocess.Popen(['sleep', '30'])")
        inside = box.run_code("[child.pid, open('/proc/1/cgroup').read()]").value or ""
        _, text = eval(inside)
        held = cgroup.pids()
        assert pid1 not in held and len(held) >= 2, held  # the driver and the sleep
        for line in text.splitlines():
            path = line.split(":", 2)[2]
            assert set(path.split("/")) <= {"", ".."}, line
        box.run_code("child.kill(); child.wait()")


def test_a_start_given_up_as_its_process_arrives_harms_no_sibling() -> None:
    with sandlot.Sandbox(strict()) as sibling:
        slots = sibling.async_sandbox._launch.host_dir.parent  # type: ignore[union-attr]
        (template,) = [t for t in _templates.values() if t.slots == slots]
        for _ in range(5):
            slot = Path(tempfile.mkdtemp(prefix="box-", dir=slots))  # its workdir, as a start's
            ours, theirs = socket.socketpair(socket.AF_UNIX)
            log_r, log_w = os.pipe()
            workdir = templates.workdir_mount(slot)
            waiting = template.fork(slot.name, False, theirs.fileno(), log_w, [workdir])
            theirs.close()
            os.close(log_w)
            os.close(workdir)
            if not waiting.pidfd.cancel():  # a spare answered first: given up as the host does
                templates.drop_pidfd(waiting.pidfd)
            ours.close()  # else its driver reads the end of its channel and exits
            assert waiting.status.result(10) in (0, -signal.SIGKILL)
            os.close(log_r)
            shutil.rmtree(slot)
        assert template.alive
        assert sibling.run_code("1 + 1").value == "2"


REHEARSAL = """
import ctypes, json, linecache, os, resource, sys
from pathlib import Path
from sandlot.backends.local import _seccomp_program
from sandlot.driver import server, template

libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(template.CLONE_NEWNS) == 0  # as a spare: in a mount namespace of its own
private = ctypes.c_ulong(template.MS_REC | template.MS_PRIVATE)
assert libc.mount(None, b"/", None, private, None) == 0

LIMITS = [n for n in dir(resource) if n.startswith("RLIMIT_")]

def fds():  # each with what it is; not the one that lists them, gone once listed
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except FileNotFoundError:
            pass
    return sorted(held)

def state():
    status = Path("/proc/self/status").read_text().splitlines()
    return {
        "fds": fds(),
        "output": [type(sys.stdout).__name__, type(sys.stderr).__name__],
        "threads": len(os.listdir("/proc/self/task")),
        "cells cached": sorted(k for k in linecache.cache if k.startswith("<cell")),
        "environ": dict(os.environ),
        "ids": [os.getresuid(), os.getresgid(), sorted(os.getgroups())],
        "limits": [resource.getrlimit(getattr(resource, n)) for n in LIMITS],
        "cwd": os.getcwd(),
        "mounts": Path("/proc/self/mountinfo").read_text(),
        "status": [l for l in status if l.startswith(("NoNewPrivs", "Seccomp", "Cap"))],
    }

before = state()
if sys.argv[1] == "spare":
    template._rehearse_walls(_seccomp_program())
    server.rehearse()
else:
    list(template._settling(_seccomp_program()))  # every step: imports, warm-up, freeze
after = state()
print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}))
"""


@pytest.mark.parametrize("who", ["spare", "template"])
def test_the_rehearsal_raises_nothing_and_changes_nothing(who: str) -> None:
    """A driver-to-be goes through its start's calls before it is given a sandbox, so that
    their copy-on-write faults come off the start's path (``server.rehearse`` and the
    template's ``_rehearse_walls``); the template goes through them a few times once
    (``_settling``), so that fewer come. Run as a spare runs them (as root, in a mount
    namespace of its own) but with nothing to hide an error, they raise nothing and leave
    every descriptor, variable, id, group, limit, directory, mount, capability and filter
    as they were, and the output, threads and line cache too (the template's also runs a
    session: a server built, a cell run): the sandbox that spare becomes starts from what
    a cold one would, and the template forks every sandbox from what it was."""
    done = subprocess.run(
        [sys.executable, "-c", REHEARSAL, who], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}


WARMED = """
import os, resource, sys
from sandlot.backends.local import _seccomp_program
from sandlot.driver import server, template

program = _seccomp_program()

def rehearsal_faults():  # the page faults of a fork's rehearsal, the fewest of three forks
    taken = []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            template._rehearse_walls(program)
            server.rehearse()
            after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            os.write(w, str(after - before).encode())
            os._exit(0)
        os.close(w)
        taken.append(int(os.read(r, 64)))
        os.close(r)
        os.waitpid(pid, 0)
    return min(taken)

cold = rehearsal_faults()
list(template._settling(program))  # every step: imports, warm-up, freeze
print(cold, rehearsal_faults())
"""


def test_a_warmed_templates_forks_copy_fewer_pages_on_their_starts_path() -> None:
    """Code that runs for the first time writes to itself (call counts, bytecode rewritten
    as it specializes, caches filled), and in a fork each such write copies a page. The
    template runs its forks' start code a few times before it forks the spare that
    serves the second start: a fork of a warmed process copies fewer pages running that
    code than a fork of a cold one (345 against 228 where measured)."""
    done = subprocess.run(
        [sys.executable, "-c", WARMED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    cold, warmed = map(int, done.stdout.split())
    assert warmed < cold * 0.85, (cold, warmed)
