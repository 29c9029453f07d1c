"""Named volumes: they outlive sandboxes, mount read-only when asked, and are shared by rule."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict
from test_cli import sandlot

import sandlot as sl
from sandlot.volumes import Volume


@pytest.fixture(autouse=True)
def volumes_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "volumes"
    monkeypatch.setenv("SANDLOT_VOLUMES", str(root))
    yield root


def test_what_a_sandbox_caches_in_a_volume_is_there_the_next_time() -> None:
    Volume.create("rlm-volume")
    config = strict(volumes={"/data": "rlm-volume"})
    with sl.Sandbox(config) as sb:
        sb.run_code("import os\nos.makedirs('/data/cache')", raise_on_error=True)
        sb.run_code("open('/data/cache/doc.txt', 'w').write('x' * 1000)", raise_on_error=True)
    with sl.Sandbox(config) as sb:
        assert sb.run_code("len(open('/data/cache/doc.txt').read())").value == "1000"
    assert Volume("rlm-volume").size() >= 1000
    (info,) = Volume.list()
    assert info.name == "rlm-volume" and info.size >= 1000


def test_a_read_only_mount_refuses_writes() -> None:
    volume = Volume.create("ro")
    with sl.Sandbox(strict(volumes={"/data": "ro"})) as sb:
        sb.files.write("/data/seed.txt", "seeded")
    ro = strict(volumes={"/data": {"name": "ro", "read_only": True}})
    with sl.Sandbox(ro) as sb:
        assert sb.run_code("open('/data/seed.txt').read()").value == "'seeded'"
        error = sb.run_code("open('/data/new.txt', 'w')").error
        assert error is not None and "Read-only file system" in error.value
    assert [e.name for e in volume.ls()] == ["seed.txt"]


def test_a_missing_volume_or_a_bad_name_or_target_is_a_clear_error() -> None:
    with pytest.raises(sl.ConfigError, match="volume 'nope' does not exist; create it"):
        sl.Sandbox(strict(volumes={"/data": "nope"})).start()
    with pytest.raises(sl.ConfigError, match="is not a volume name"):
        strict(volumes={"/data": "../etc"})
    with pytest.raises(sl.ConfigError, match="cannot hold a volume"):
        strict(volumes={"/usr/lib/x": "a"})
    with pytest.raises(sl.ConfigError, match="cannot hold a volume"):
        strict(volumes={"relative": "a"})
    Volume.create("twice")
    with pytest.raises(sl.ConfigError, match="already exists"):
        Volume.create("twice")
    assert Volume.create("twice", exist_ok=True).exists()
    assert Volume.from_name("fresh", create_if_missing=True).exists()


def test_two_sandboxes_writing_one_volume_at_once_follow_the_shared_directory_rule() -> None:
    """The rule (sandlot.volumes): one shared directory. Different files never conflict;
    a file published by rename is one writer's whole version, never a mix."""
    Volume.create("shared")
    config = strict(volumes={"/data": "shared"})
    code = (
        "import os\n"
        "for i in range(200):\n"
        "    open(f'/data/{WHO}-{i}.txt', 'w').write(WHO * 1000)\n"
        "    tmp = f'/data/.result.{WHO}.tmp'\n"
        "    with open(tmp, 'w') as f:\n"
        "        f.write(WHO * 100_000)\n"
        "    os.replace(tmp, '/data/result.txt')\n"
    )
    errors: list[BaseException] = []

    def writer(who: str) -> None:
        try:
            with sl.Sandbox(config) as sb:
                sb.run_code(f"WHO = {who!r}", raise_on_error=True)
                sb.run_code(code, raise_on_error=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(who,)) for who in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with sl.Sandbox(strict(volumes={"/data": {"name": "shared", "read_only": True}})) as sb:
        names = sb.run_code("import os\nsorted(os.listdir('/data'))").value
        result = sb.run_code("text = open('/data/result.txt').read()\nset(text), len(text)").value
    assert names is not None
    for who in "ab":
        assert all(f"'{who}-{i}.txt'" in names for i in range(200))
    assert result in ("({'a'}, 100000)", "({'b'}, 100000)")


def test_a_writable_volumes_growth_counts_against_disk_mb() -> None:
    Volume.create("big")
    config = strict(volumes={"/data": "big"}, disk_mb=8)
    sb = sl.Sandbox(config)
    sb.start()
    try:
        with pytest.raises(sl.SandboxDied) as info:
            for i in range(40):
                sb.files.write(f"/data/f{i}", b"x" * (1 << 20))
                sb.run_code("import time; time.sleep(0.05)")
            sb.run_code("import time; time.sleep(3)")
        assert info.value.cause == "disk"
        assert "volume at /data" in str(info.value)
    finally:
        sb.terminate()


def test_the_volume_commands(tmp_path: Path, volumes_root: Path) -> None:
    env = {"SANDLOT_VOLUMES": str(volumes_root)}
    assert sandlot("volume", "create", "docs", env=env).returncode == 0
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    put = sandlot("volume", "put", "docs", str(src), "/in", env=env)
    assert put.returncode == 0, put.stderr
    listed = sandlot("volume", "ls", "docs", "/in", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "a.txt" in listed.stdout and "sub/" in listed.stdout
    table = sandlot("volume", "list", env=env)
    assert "docs" in table.stdout and "KiB" in table.stdout
    got = sandlot("volume", "get", "docs", "/in", str(tmp_path / "out"), env=env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "beta"
    assert sandlot("volume", "rm", "docs", "/in/sub", env=env).returncode == 2  # not empty
    assert sandlot("volume", "rm", "docs", "/in/sub", "-r", env=env).returncode == 0
    assert "sub" not in sandlot("volume", "ls", "docs", "/in", env=env).stdout
    refused = sandlot("volume", "rm", "docs", env=env)
    assert refused.returncode == 2 and "needs --yes" in refused.stderr
    assert Volume("docs").exists()
    assert sandlot("volume", "rm", "docs", "--yes", env=env).returncode == 0
    assert not Volume("docs").exists()
    missing = sandlot("volume", "ls", "docs", env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert sandlot("volume", "create", "docs", env=env).returncode == 0
    absent = sandlot("volume", "ls", "docs", "/nope", env=env)
    assert absent.returncode == 2 and "'docs:/nope'" in absent.stderr  # not the helper's mount


def test_volume_get_does_not_replace_a_host_path_unless_forced(
    tmp_path: Path, volumes_root: Path
) -> None:
    env = {"SANDLOT_VOLUMES": str(volumes_root)}
    volume = Volume.create("v")
    src = tmp_path / "a"
    src.mkdir()
    (src / "new.txt").write_text("new")
    volume.put(src, "/a")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    refused = sandlot("volume", "get", "v", "/a", str(target), env=env)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert (target / "precious.txt").read_text() == "keep me"
    forced = sandlot("volume", "get", "v", "/a", str(target), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    here = sandlot("volume", "get", "v", "/a", ".", "--force", env=env, cwd=tmp_path)
    assert here.returncode == 2 and "Traceback" not in here.stderr
