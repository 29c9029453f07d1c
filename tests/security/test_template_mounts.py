"""Mounts and volumes in sandboxes forked from a template (a host that is root).

Such a template's root holds an empty directory at each mount's path, and each
fork mounts there a detached copy of its own sources that the host made (its
flags set by the host: read-only all the way down where asked, no device files,
no set-user-ID). These tests attack what that shares: the template's root, one
template for sandboxes whose sources differ, the host's opening of a source, and
paths a template cannot hold. Each checks first that its sandboxes came from a
template, so a silent fall back to cold starts fails the test.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import forked, strict, template_processes

import sandlot
from sandlot.backends import local
from sandlot.backends.kit.bootstrap import IsolationWarning
from sandlot.volumes import Volume

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.getuid() != 0, reason="templates give mounts where the host is root"),
]


def _mounts(pid: int) -> dict[str, tuple[str, set[str], list[str]]]:
    """``pid``'s mounts by mount point: (root within the filesystem, options, optional fields)."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, _ = line.partition(" - ")
        parts = fields.split()
        found[parts[4]] = (parts[3], set(parts[5].split(",")), parts[6:])
    return found


@pytest.fixture
def sources(tmp_path: Path) -> Iterator[Path]:
    """Two host directories with a file each, readable by the sandbox's user."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "whose").write_text(name)
        (tmp_path / name).chmod(0o777)
    yield tmp_path


@pytest.fixture
def volumes_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SANDLOT_VOLUMES", str(tmp_path / "volumes"))
    return tmp_path / "volumes"


def test_mounts_and_volumes_come_from_a_template_as_a_cold_start_gives_them(
    sources: Path, volumes_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount refuses writes, a writable one writes the host's directory, a
    volume keeps what one sandbox wrote for the next; the same as a cold start."""
    Volume.create("cache")
    config = strict(
        mounts=[
            sandlot.Mount(source=str(sources / "a"), target="/data"),
            sandlot.Mount(source=str(sources / "b"), target="/home/out", writable=True),
        ],
        volumes={"/cache": "cache"},
    )
    probe = (
        "import os\n"
        "try:\n    open('/data/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
        "open('/home/out/from-' + os.environ['WHO'], 'w').write('w')\n"
        "open('/cache/' + os.environ['WHO'], 'w').write('v')\n"
        "print(open('/data/whose').read(), sorted(os.listdir('/cache')))\n"
    )
    seen = {}
    for who in ("template", "cold"):
        monkeypatch.setenv("SANDLOT_TEMPLATES", "1" if who == "template" else "0")
        with sandlot.Sandbox(config.model_copy(update={"env": {"WHO": who}})) as box:
            assert box.info["started"] == who
            if who == "template":
                forked(box)
            seen[who] = box.run_code(probe, raise_on_error=True).stdout.split()
    assert seen["template"] == ["30", "a", "['template']"], seen
    assert seen["cold"] == ["30", "a", "['cold',", "'template']"], seen
    written = sorted(p.name for p in (sources / "b").iterdir())
    assert written == ["from-cold", "from-template", "whose"]


def test_siblings_with_one_mount_path_see_each_their_own_and_the_template_neither(
    sources: Path,
) -> None:
    """One template serves sandboxes whose sources differ at the same path: each sees its own
    source there, no other's in its mounts, and the template sees none of them."""
    configs = [
        strict(mounts=[sandlot.Mount(source=str(sources / n), target="/data")]) for n in "ab"
    ]
    with sandlot.Sandbox(configs[0]) as a, sandlot.Sandbox(configs[1]) as b:
        for box, name in ((a, "a"), (b, "b")):
            assert box.run_code("open('/data/whose').read()").value == repr(name)
            mine = _mounts(forked(box).pid)
            assert mine["/data"][0].endswith(f"/{name}"), mine["/data"]
            other = str(sources / ("b" if name == "a" else "a"))
            assert not any(other.endswith(root) for root, _, _ in mine.values() if root != "/")
        held = template_processes(os.getpid())
        assert held
        for pid in held:
            text = Path(f"/proc/{pid}/mountinfo").read_text()
            assert str(sources) not in text, pid
            assert "/data" not in _mounts(pid), pid  # an empty directory of its root


def test_a_read_only_mount_is_read_only_all_the_way_down_and_no_peer_of_the_hosts(
    sources: Path,
) -> None:
    """A mount below a read-only source is read-only inside too, every mount of it has no
    device files and no set-user-ID, and none is a peer of the host's: what the host mounts
    below the source later does not show inside (as bubblewrap's binds for a cold start)."""
    source = sources / "a"
    below, later = source / "below", source / "later"
    below.mkdir()
    later.mkdir()
    # The source a shared mount of its own (as on a host whose init makes mounts shared),
    # so that a copy left its peer would see the later mount.
    subprocess.run(["mount", "--bind", str(source), str(source)], check=True)
    subprocess.run(["mount", "--make-shared", str(source)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0777", "none", str(below)], check=True)
    try:
        with sandlot.Sandbox(
            strict(mounts=[sandlot.Mount(source=str(sources / "a"), target="/data")])
        ) as box:
            mine = _mounts(forked(box).pid)
            for point in ("/data", "/data/below"):
                _, options, optional = mine[point]
                assert {"ro", "nosuid", "nodev"} <= options, (point, options)
                assert not [f for f in optional if f.startswith(("shared:", "master:"))], optional
            code = "try:\n    open('/data/below/x', 'w')\nexcept OSError as e:\n    print(e.errno)"
            assert box.run_code(code).stdout.strip() == "30"
            subprocess.run(["mount", "-t", "tmpfs", "none", str(later)], check=True)
            try:
                assert box.run_code("import os; os.path.ismount('/data/later')").value == "False"
            finally:
                subprocess.run(["umount", str(later)], check=True)
    finally:
        subprocess.run(["umount", str(below)], check=True)
        subprocess.run(["umount", str(source)], check=True)
    assert not (below / "x").exists()


def test_a_source_swapped_for_a_link_since_the_config_is_refused(sources: Path) -> None:
    """A source that became a link after the config named it (perhaps by a sandbox that
    writes its parent) is refused with the reason, not followed to where it points."""
    config = strict(mounts=[sandlot.Mount(source=str(sources / "a"), target="/data")])
    with sandlot.Sandbox(config) as box:  # the template for this config is running
        forked(box)
    (sources / "a").rename(sources / "a-was")
    (sources / "a").symlink_to("/etc")
    with pytest.raises(sandlot.ConfigError, match="changed since the config named it"):
        sandlot.Sandbox(config).start()


def test_mount_paths_a_template_cannot_hold_start_cold_with_no_warning(sources: Path) -> None:
    """A mount inside the workdir or a fresh tmpfs (each fork's own), or a file, starts cold
    as before: it works, says so, warns of nothing, and leaves templates on for the rest."""
    (sources / "file").write_text("f")
    (sources / "file").chmod(0o644)
    cases = {
        "/workspace/data": str(sources / "a"),
        "/tmp/data": str(sources / "a"),
        "/etc-like/file": str(sources / "file"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", IsolationWarning)
        for target, source in cases.items():
            config = strict(mounts=[sandlot.Mount(source=source, target=target)])
            with sandlot.Sandbox(config) as box:
                assert box.info["started"] == "cold", target
                assert box.run_code(f"import os; os.path.exists({target!r})").value == "True"
        with sandlot.Sandbox(strict()) as box:
            forked(box)
    assert not local.template_problem


def test_a_relative_or_linked_volumes_root_is_the_directory_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SANDLOT_VOLUMES`` given relative, or through a link, names the directory it does
    from here: a volume called ``tmp`` is never the host's own ``/tmp`` (a walk from ``/``
    of a relative path would drop its first part), and a link of the operator's on the way
    is no reason to refuse the start."""
    mark = f"from-a-sandbox-{os.getpid()}"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for root, where in (("vols", tmp_path / "vols"), ("link/vols", tmp_path / "real" / "vols")):
        monkeypatch.setenv("SANDLOT_VOLUMES", root)
        Volume.create("tmp")
        with sandlot.Sandbox(strict(volumes={"/v": "tmp"})) as box:
            forked(box)
            box.run_code(f"open('/v/{mark}', 'w').write('x')", raise_on_error=True)
        assert (where / "tmp" / mark).exists(), root
        assert not Path("/tmp", mark).exists(), root
    with pytest.raises(sandlot.ConfigError, match="not an absolute host path"):
        local._open_source("vols/tmp")


def test_a_nul_in_a_mount_s_path_is_refused_before_it_splits_bubblewrap_s_arguments(
    sources: Path,
) -> None:
    """bubblewrap's arguments travel NUL-separated: a NUL in a path would add arguments of
    the config's choosing (and a template that fails on them turns templates off)."""
    for field in ("target", "source"):
        bad = {"source": str(sources / "a"), "target": "/data"}
        bad[field] += "\0--tmpfs\0/injected"
        with pytest.raises(sandlot.ConfigError, match="NUL byte"):
            strict(mounts=[sandlot.Mount(**bad)])
    with pytest.raises(sandlot.ConfigError, match="NUL byte"):
        strict(volumes={"/data\0--tmpfs\0/x": "v"})
    assert not local.template_problem


def test_more_mounts_than_one_message_carries_start_cold_and_leave_templates_on(
    sources: Path,
) -> None:
    """A fork's request carries a descriptor per mount, and one message at most 253: beyond
    that a sandbox starts cold (no template made for it), and templates stay on."""
    for i in range(250):
        (sources / "many" / str(i)).mkdir(parents=True)
    mounts = [
        sandlot.Mount(source=str(sources / "many" / str(i)), target=f"/m/{i}") for i in range(250)
    ]
    before = len(local._templates)
    with sandlot.Sandbox(strict(mounts=mounts)) as box:
        assert box.info["started"] == "cold"
        assert box.run_code("import os; len(os.listdir('/m'))").value == "250"
    assert len(local._templates) == before and not local.template_problem
