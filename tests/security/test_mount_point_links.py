"""Attacks through mount points: a link one sandbox plants steers where bubblewrap writes next.

bubblewrap makes each mount point by path, as root when the host is root, and
follows links on the way. Where a mount or volume lies inside another writable
one (or inside a workdir that outlives its sandbox), sandbox A replaces a
directory there with a link to ``/oldroot/...`` (the host's root as bubblewrap
sees it while it builds the next sandbox); when sandbox B starts, bubblewrap
creates B's mount point through that link, on the host. Each test plants the
link for real from sandbox A, starts B, and checks that nothing appeared at the
attacker's host path and that B was refused with both places named. The last
attack swaps a mount's source (a directory in a volume) for a link instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict

import sandlot as sl
from sandlot.backends.local import LocalBackend
from sandlot.config import VolumeMount
from sandlot.volumes import Volume

HOST_SECRET = "host-only-secret-contents"


class Host:
    """What sandbox A wrote into: a writable host directory and a volume, and the host paths
    the links it planted point at."""

    def __init__(self, root: Path) -> None:
        self.shared = root / "shared"  # mounted writable at /data
        self.evil = root / "evil"  # where the attacker wants bubblewrap to write
        self.file_source = root / "file.txt"  # a host file B mounts


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """Sandbox A, run once: it plants an absolute, a relative and a file-mount link."""
    root = tmp_path_factory.mktemp("mount-points")
    found = Host(root)
    found.evil.mkdir()
    found.shared.mkdir()
    found.file_source.write_text("mounted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDLOT_VOLUMES", str(root / "volumes"))
        Volume.create("outer")
        Volume.create("inner")
        if os.getuid() == 0:  # sandboxes of a root host run as nobody
            os.chown(found.shared, 65534, 65534)
        config = strict(
            volumes={"/vol": "outer"},
            mounts=[
                sl.Mount(source=str(found.shared), target="/data", writable=True),
                # Inside a fresh workdir: nothing was written there before bubblewrap ran.
                sl.Mount(source=str(found.file_source), target="/workspace/in/file.txt"),
            ],
        )
        with sl.Sandbox(config) as a:
            planted = a.run_code(
                "import os\n"
                f"os.symlink('/oldroot{found.evil}', '/vol/abs')\n"
                f"os.symlink('../../../oldroot{found.evil}', '/data/rel')\n"
                f"os.symlink('/oldroot{found.evil}/made-file', '/data/file')\n"
                "print(open('/workspace/in/file.txt').read())\n",
                raise_on_error=True,
            )
            assert planted.stdout.strip() == "mounted"
        yield found


def _start_b(**fields: object) -> str:
    """Start sandbox B with ``fields``; what refused it ("" if it started)."""
    try:
        with sl.Sandbox(strict(**fields)):  # type: ignore[arg-type]
            pass
    except sl.ConfigError as exc:
        return str(exc)
    return ""


def test_an_absolute_link_in_a_volume_does_not_steer_a_nested_volume(host: Host) -> None:
    refused = _start_b(volumes={"/vol": "outer", "/vol/abs/made": "inner"})
    assert os.listdir(host.evil) == []
    assert (
        "'/vol/abs/made'" in refused and "inside the writable volume 'outer' at '/vol'" in refused
    )


def test_a_relative_link_in_a_writable_mount_does_not_steer_a_volume(host: Host) -> None:
    refused = _start_b(
        mounts=[sl.Mount(source=str(host.shared), target="/data", writable=True)],
        volumes={"/data/rel/made-rel": "inner"},
    )
    assert os.listdir(host.evil) == []
    assert "'/data/rel/made-rel'" in refused and "writable mount" in refused
    assert f"{str(host.shared)!r} at '/data'" in refused


def test_a_file_mount_makes_no_empty_file_through_a_link(host: Host) -> None:
    refused = _start_b(
        mounts=[
            sl.Mount(source=str(host.shared), target="/data", writable=True),
            sl.Mount(source=str(host.file_source), target="/data/file"),
        ]
    )
    assert os.listdir(host.evil) == []
    assert "at '/data/file' lies inside the writable mount" in refused and "'/data'" in refused


def test_a_link_left_in_a_kept_workdir_does_not_steer_a_mount(host: Host, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    with sl.Sandbox(strict(), backend=LocalBackend(workdir=workdir)) as a:
        a.run_code(f"import os\nos.symlink('/oldroot{host.evil}', 'kept')\n", raise_on_error=True)
    try:
        with sl.Sandbox(
            strict(volumes={"/workspace/kept/made-work": "inner"}),
            backend=LocalBackend(workdir=workdir),
        ):
            refused = ""
    except sl.ConfigError as exc:
        refused = str(exc)
    assert os.listdir(host.evil) == []
    assert "'/workspace/kept/made-work' lies inside the workdir /workspace" in refused
    assert str(workdir) in refused


# -- the rule itself --------------------------------------------------------------------


def _refusal(**fields: object) -> str:
    with pytest.raises(sl.ConfigError) as caught:
        sl.SandboxConfig(**fields)  # type: ignore[arg-type]
    return str(caught.value)


RO_A = {"name": "a", "read_only": True}


@pytest.mark.parametrize(
    ("fields", "inner", "outer"),
    [
        (
            {"volumes": {"/data": "a", "/data/b": "b"}},
            "writable volume 'b' at '/data/b'",
            "writable volume 'a' at '/data'",
        ),
        (  # read-only inside writable: its point is still made through the writable one
            {"volumes": {"/data": "a", "/data/b": {"name": "b", "read_only": True}}},
            "read-only volume 'b' at '/data/b'",
            "writable volume 'a' at '/data'",
        ),
        (  # read-only inside read-only: another sandbox may mount the outer one writable
            {"volumes": {"/data": RO_A, "/data/x/b": {"name": "b", "read_only": True}}},
            "read-only volume 'b' at '/data/x/b'",
            "read-only volume 'a' at '/data'",
        ),
        (
            {
                "mounts": [
                    sl.Mount(source="/usr", target="/m", writable=True),
                    sl.Mount(source="/tmp", target="/m/in"),
                ]
            },
            "read-only mount of '/tmp' at '/m/in'",
            "writable mount of '/usr' at '/m'",
        ),
        (
            {
                "mounts": [sl.Mount(source="/tmp", target="/data/out", writable=True)],
                "volumes": {"/data": RO_A},
            },
            "writable mount of '/tmp' at '/data/out'",
            "read-only volume 'a' at '/data'",
        ),
        (  # spellings: trailing slashes, '.', '..', '//' make one path
            {"volumes": {"//data/": "a", "/srv/../data/./deep/": "b"}},
            "writable volume 'b' at '/data/deep'",
            "writable volume 'a' at '/data'",
        ),
        (
            {"mounts": {"/tmp": "/"}, "volumes": {"/data": "a"}},
            "writable volume 'a' at '/data'",
            "read-only mount of '/tmp' at '/'",
        ),
    ],
)
def test_a_mount_point_inside_another_is_refused(
    fields: dict[str, object], inner: str, outer: str
) -> None:
    said = _refusal(**fields)
    assert f"the {inner} lies inside the {outer}: " in said
    assert "side by side" in said


def test_two_at_one_path_are_refused_in_any_spelling() -> None:
    said = _refusal(mounts={"/tmp": "/data/"}, volumes={"//data/.": "a"})
    assert "mount of '/tmp' at '/data'" in said and "volume 'a'" in said and "same path" in said
    said = _refusal(
        mounts=[sl.Mount(source="/tmp", target="/x"), sl.Mount(source="/usr", target="/y/../x")]
    )
    assert "'/tmp' at '/x'" in said and "'/usr' at '/x'" in said


def test_side_by_side_mount_points_are_allowed() -> None:
    config = sl.SandboxConfig(
        volumes={"/data": "a", "/database": "b", "/cache/one": "c"},
        mounts={"/tmp": "/cache/two", "/usr": "/workspace/src"},
    )
    assert sorted(p for p, _ in config.mount_points()) == [
        "/cache/one",
        "/cache/two",
        "/data",
        "/database",
        "/workspace/src",
    ]


def test_an_assignment_is_checked_and_a_refused_one_changes_nothing() -> None:
    config = sl.SandboxConfig(volumes={"/data": "a"})
    with pytest.raises(sl.ConfigError, match="'/data/in' lies inside"):
        config.mounts = [sl.Mount(source="/tmp", target="/data/in")]
    assert config.mounts == []


def test_a_config_changed_in_place_is_checked_again_at_start() -> None:
    config = strict(volumes={"/data": "a"})
    config.volumes["/data/./in"] = VolumeMount(name="b")  # no validation runs here
    with pytest.raises(sl.ConfigError, match=re.escape("volume 'b' at '/data/./in' lies inside")):
        sl.Sandbox(config).start()


def test_an_experiment_refuses_a_nested_volume_when_read() -> None:
    from sandlot.experiment.config import EnvironmentConfig

    with pytest.raises(sl.ConfigError, match="volume 'b' at '/data/b' lies inside"):
        EnvironmentConfig(volumes={"/data": "a", "/data/b": "b"})


def test_a_mount_source_swapped_for_a_link_is_not_bound(host: Host) -> None:
    """The config names a directory in a volume; a sandbox then swaps it for a relative link
    (the same on the host and as bubblewrap sees it) to a host directory of its choice."""
    private = host.evil.parent / "private"
    private.mkdir()
    (private / "secret.txt").write_text(HOST_SECRET)
    sub = Volume("outer").path / "sub"
    sub.mkdir()
    config = strict(mounts=[sl.Mount(source=str(sub), target="/x")])  # sub is a directory now
    with sl.Sandbox(strict(volumes={"/vol": "outer"})) as a:
        link = os.path.relpath(private, sub.parent)
        a.run_code(
            f"import os\nos.rmdir('/vol/sub')\nos.symlink({link!r}, '/vol/sub')\n",
            raise_on_error=True,
        )
    seen, refused = "", ""
    try:
        with sl.Sandbox(config) as b:
            seen = b.run_code("print(open('/x/secret.txt').read())").stdout
    except sl.ConfigError as exc:
        refused = str(exc)
    assert HOST_SECRET not in seen
    assert f"{str(sub)!r} changed since the config named it: {sub} is a link now" in refused
