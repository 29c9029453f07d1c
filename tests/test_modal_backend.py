"""ModalBackend's own logic, against a LOCAL STAND-IN for Modal (tests/modal_standin.py).

Modal's service cannot be reached from here. The stand-in has the names and
async behaviour of modal 1.6's Sandbox, ContainerProcess, StreamReader and
StreamWriter, and runs each exec as a real local subprocess, so the real
bootstrap and driver answer. What is proved here is sandlot's side: the config
becomes the right ``Sandbox.create`` arguments, frames are parsed from chunks
of any size, stdin never holds more than the cap before a drain, the driver
ends itself when its owner stops pinging, and cleanup finds sandboxes by tag.
That Modal's service behaves as the stand-in does is checked only by the live
tests (tests/test_modal_live.py, which need Modal credentials).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from modal_standin import API, StandInModalSandbox
from processes import alive
from typer.testing import CliRunner

import sandlot
from sandlot import cli
from sandlot.backends import modal as modal_backend
from sandlot.backends.kit.remote import StreamLaunch
from sandlot.backends.modal import MAX_WRITE, ModalBackend, ModalProcess
from sandlot.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    left = list(StandInModalSandbox.running.values())
    StandInModalSandbox.running.clear()
    assert not left, f"stand-in sandboxes left running: {[sb.object_id for sb in left]}"


def backend(**options: object) -> ModalBackend:
    return ModalBackend(api=API, owner="tester@here", **options)  # type: ignore[arg-type]


def _far_side(sb: sandlot.Sandbox) -> tuple[Path, int, StandInModalSandbox]:
    launch = sb._async._launch
    assert isinstance(launch, StreamLaunch) and isinstance(launch.process, ModalProcess)
    root = Path(launch.hello["workdir"]).parent
    return root, launch.process.proc.proc.pid, launch.process.sandbox  # type: ignore[attr-defined,return-value]


def test_the_config_becomes_sandbox_create_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDLOT_MODAL_KEY", "s3cret-value")
    config = sandlot.SandboxConfig(
        python_packages=["rich==13.7.1"],
        gpu="H100:2",
        cpus=2,
        memory_mb=4096,
        timeout=600,
        secrets=["SANDLOT_MODAL_KEY"],
        volumes={"/data": "cache", "/ref": {"name": "refs", "read_only": True}},
    )
    sb = asyncio.run(backend().create(config))
    try:
        opts = sb.options
        assert sb.entrypoint[:2] == ("sh", "-c")  # the keeper, which ends with the driver
        assert opts["app"].name == "sandlot"
        assert opts["image"].layers == (("debian_slim", None), ("uv_pip_install", "rich==13.7.1"))
        assert opts["gpu"] == "H100:2" and opts["cpu"] == 2 and opts["memory"] == 4096
        assert opts["block_network"] is True
        assert opts["timeout"] == 660  # the lifetime, and a minute for the host to end it first
        assert [s.env for s in opts["secrets"]] == [{"SANDLOT_MODAL_KEY": "s3cret-value"}]
        volumes = {t: (v.name, v.read_only) for t, v in opts["volumes"].items()}
        assert volumes == {"/data": ("cache", False), "/ref": ("refs", True)}
        assert sb.tags["sandlot"] == "1" and sb.tags["sandlot-owner"] == "tester@here"
        assert sb.tags["sandlot-pid"] == str(os.getpid())
    finally:
        asyncio.run(sb.terminate.aio())
    count = asyncio.run(backend().create(sandlot.SandboxConfig(gpu=2, network=True)))
    assert count.options["gpu"] == "any:2" and count.options["block_network"] is False
    asyncio.run(count.terminate.aio())


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"isolation": "bubblewrap"}, "gVisor"),
        ({"gpu": "0,1"}, "count"),
        ({"mounts": {"/tmp": "/mnt"}}, "mounts"),
    ],
)
def test_what_modal_cannot_honour_is_refused(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        sandlot.Sandbox(sandlot.SandboxConfig(**fields), backend=backend()).start()  # type: ignore[arg-type]


def test_a_sandbox_on_the_stand_in_speaks_frames_from_any_chunks_within_the_drain_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(StandInModalSandbox, "stdin_cap", 2 << 20)  # the smaller of Modal's caps
    monkeypatch.setenv("SANDLOT_MODAL_KEY", "s3cret-value")
    config = sandlot.SandboxConfig(secrets=["SANDLOT_MODAL_KEY"], memory_mb=512)
    host_pid = os.getpid()
    with sandlot.Sandbox(config, backend=backend(), tools={"host_pid": os.getpid}) as sb:
        r = sb.run_code("import os\nx = 1\n(os.environ['SANDLOT_MODAL_KEY'], host_pid())")
        assert r.value == repr(("s3cret-value", host_pid))
        blob = os.urandom(5 << 20)  # frames of 1 MiB: more than the stdin cap in all
        sb.files.write("blob.bin", blob)
        assert sb.files.read("blob.bin") == blob
        assert sb.exec("sh", "-c", "echo out; echo err >&2").stdout == "out\n"
        root, driver_side, stand_in = _far_side(sb)
        proc = stand_in.processes[0]
        assert 0 < proc.stdin.most_buffered <= MAX_WRITE  # never more than the cap
        assert len(set(proc.stdout.sizes)) > 3 and min(proc.stdout.sizes) == 1  # any chunks
        assert root.is_dir()
    assert stand_in.returncode is not None and stand_in.object_id not in StandInModalSandbox.running
    deadline = time.monotonic() + 10
    while (root.exists() or alive(driver_side)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not root.exists() and not alive(driver_side)


OWNER = """
import json, sys, time
sys.path[:0] = {paths!r}
from modal_standin import API
import sandlot
from sandlot.backends.modal import ModalBackend
backend = ModalBackend(api=API, owner="gone@here", owner_timeout=2)
sb = sandlot.Sandbox(sandlot.SandboxConfig(), backend=backend).start()
launch = sb._async._launch
print(json.dumps({{"root": str(__import__("pathlib").Path(launch.hello["workdir"]).parent),
                  "pid": launch.process.proc.proc.pid}}), flush=True)
time.sleep(600)
"""


def test_a_driver_whose_owner_stops_pinging_ends_itself_and_its_directory() -> None:
    """The owner freezes (SIGSTOP) with the stream open: no end of input, no pings."""
    here = Path(__file__).parent
    script = OWNER.format(paths=[str(here)])
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert owner.stdout is not None
        far = json.loads(owner.stdout.readline())
        root, bootstrap = Path(far["root"]), far["pid"]
        assert root.is_dir() and alive(bootstrap)
        os.kill(owner.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        while (root.exists() or alive(bootstrap)) and time.monotonic() - stopped < 15:
            time.sleep(0.1)
        gone_after = time.monotonic() - stopped
        assert not root.exists() and not alive(bootstrap), "the driver outlived its owner"
        assert 1.5 < gone_after < 8  # owner_timeout=2, checked every half second
    finally:
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait()


def test_cleanup_finds_sandboxes_by_tag_and_terminates_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = [asyncio.run(backend().create(sandlot.SandboxConfig())) for _ in range(2)]
    theirs = asyncio.run(
        ModalBackend(api=API, owner="someone@else").create(sandlot.SandboxConfig())
    )
    found = asyncio.run(modal_backend.find_sandboxes("tester@here", api=API))
    assert {sb.object_id for sb, _ in found} == {sb.object_id for sb in mine}
    monkeypatch.setattr(modal_backend, "_modal", lambda: API)  # the CLI imports modal: the stand-in
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["modal", "cleanup", "--owner", "tester@here"], input="n\n")
    assert all(sb.object_id in listed.output for sb in mine)
    assert theirs.object_id not in listed.output
    assert len(StandInModalSandbox.running) == 3  # not confirmed: nothing ended
    done = runner.invoke(cli.app, ["modal", "cleanup", "--owner", "tester@here", "--yes"])
    assert done.exit_code == 0 and "terminated 2" in done.output, done.output
    assert list(StandInModalSandbox.running) == [theirs.object_id]
    everyone = runner.invoke(cli.app, ["modal", "cleanup", "--all", "--yes"])
    assert "terminated 1" in everyone.output and not StandInModalSandbox.running


def test_sandboxes_still_owned_at_exit_are_terminated() -> None:
    sb = asyncio.run(backend().create(sandlot.SandboxConfig()))
    modal_backend._live[sb.object_id] = sb  # as launch() records it
    modal_backend._terminate_live()  # what atexit runs
    assert sb.returncode is not None and not StandInModalSandbox.running


def test_the_stand_in_keeps_modals_buffer_rule() -> None:
    """The stand-in itself: write past the cap without a drain raises, as modal's does."""

    async def main() -> None:
        sb = await StandInModalSandbox.create.aio("sleep", app=API.App("x"))
        proc = await sb.exec.aio("sh", "-c", "cat >/dev/null", text=False)
        proc.stdin.write(b"x" * (16 << 20))
        with pytest.raises(BufferError, match="drain"):
            proc.stdin.write(b"y")
        await proc.stdin.drain.aio()
        proc.stdin.write(b"y")
        await sb.terminate.aio()

    asyncio.run(main())


def test_missing_modal_credentials_are_one_clear_config_error() -> None:
    import modal.exception

    async def lookup(*args: object, **kwargs: object) -> object:
        raise modal.exception.AuthError("Token missing. Could not authenticate client.")

    no_token_app = SimpleNamespace(lookup=SimpleNamespace(aio=lookup))  # as modal without a token
    api = SimpleNamespace(**{**vars(API), "App": no_token_app})
    with pytest.raises(ConfigError, match=r"Token missing.*modal setup"):
        asyncio.run(ModalBackend(api=api).create(sandlot.SandboxConfig()))
