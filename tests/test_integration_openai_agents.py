"""SandlotSandboxClient: the OpenAI Agents SDK's own Runner, driven by its ScriptedModel,
running a SandboxAgent's shell and file tools in real sandlot sandboxes.

The SDK's tests of its built-in UnixLocal sandbox are not in its wheel; the
contract-level ones are ported here in spirit (pause and resume through a saved
RunState, the manifest root, reads and writes confined to the workspace, ``rm``
of missing paths, session state round trips, undeclared ports, refused manifest
accounts and host path grants). docs/integrations.md lists the rest and why.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agents import RunConfig, Runner, function_tool
from agents.exceptions import UserError
from agents.items import RunItem, ToolCallOutputItem
from agents.run_state import RunState
from agents.sandbox import LocalSnapshotSpec, Manifest, SandboxAgent, SandboxRunConfig, User
from agents.sandbox.entries import File
from agents.sandbox.errors import (
    ExecNonZeroError,
    ExecTimeoutError,
    ExposedPortUnavailableError,
    InvalidManifestPathError,
    WorkspaceReadNotFoundError,
)
from agents.sandbox.session import CallbackSink, Instrumentation, SandboxSessionEvent
from agents.sandbox.workspace_paths import SandboxPathGrant
from agents.testing import ScriptedModel, assistant_message, function_call
from conftest import strict
from openai.types.responses import ResponseCustomToolCall

from sandlot.integrations.openai_agents import (
    SandlotSandboxClient,
    SandlotSandboxSession,
    SandlotSandboxSessionState,
)
from sandlot.sandbox import live_sandboxes

pytestmark = pytest.mark.timeout(60)

CONFIG = strict(memory_mb=256)


def shell(cmd: str, call_id: str, **args: Any) -> list[Any]:
    """A model turn that calls the SandboxAgent's shell tool."""
    return [function_call("exec_command", {"cmd": cmd, **args}, call_id=call_id)]


def patch(text: str, call_id: str) -> list[Any]:
    """A model turn that calls the SandboxAgent's apply_patch file tool."""
    return [
        ResponseCustomToolCall(
            type="custom_tool_call",
            name="apply_patch",
            call_id=call_id,
            input=f"*** Begin Patch\n{text}*** End Patch\n",
        )
    ]


def outputs(items: Sequence[RunItem]) -> list[str]:
    return [str(item.output) for item in items if isinstance(item, ToolCallOutputItem)]


def shown(output: str) -> str:
    """What a shell tool's output says the command printed."""
    return output.split("Output:\n", 1)[1]


def run_config(client: SandlotSandboxClient, snapshots: Path) -> RunConfig:
    return RunConfig(
        tracing_disabled=True,
        sandbox=SandboxRunConfig(client=client, snapshot=LocalSnapshotSpec(base_path=snapshots)),
    )


def test_a_sandbox_agent_runs_its_tools_in_sandlot_and_goes_on_after_bad_steps(
    tmp_path: Path,
) -> None:
    """Shell and apply_patch run in the sandbox; an endless loop ends as the SDK's timeout
    and a memory bomb as a killed process; the next step runs in the same sandbox."""
    marker = tmp_path / "host-only.txt"
    marker.write_text("on the host\n")
    model = ScriptedModel(
        [
            shell(f"pwd; echo one > a.txt; test -e {marker} && echo seen || echo unseen", "c1"),
            patch("*** Add File: notes/b.txt\n+patched\n", "c2"),
            shell("cat a.txt notes/b.txt", "c3"),
            shell("while :; do :; done", "c4", yield_time_ms=500),
            shell("python3 -c 'b = bytearray(1 << 30); b[::4096] = b\"x\" * (1 << 18)'", "c5"),
            shell("echo still here; cat a.txt", "c6"),
            [assistant_message("done")],
        ]
    )
    agent = SandboxAgent(name="coder", model=model, instructions="Use the shell.")
    client = SandlotSandboxClient(CONFIG)

    result = asyncio.run(Runner.run(agent, "go", run_config=run_config(client, tmp_path)))

    said = outputs(result.new_items)
    assert shown(said[0]) == "/workspace\nunseen\n"  # the host's /tmp is not the sandbox's
    assert said[1] == "Created notes/b.txt"
    assert shown(said[2]) == "one\npatched"  # apply_patch adds no final newline
    assert "Command timed out after 0.500 seconds." in said[3]
    assert "Process exited with code 137" in said[4]  # killed at the sandbox's memory limit
    assert shown(said[5]) == "still here\none\n"
    assert result.final_output == "done"
    model.assert_complete()
    assert not live_sandboxes()


def test_a_sandbox_that_dies_ends_the_run_as_the_sdks_error_and_the_next_run_starts_fresh(
    tmp_path: Path,
) -> None:
    """Killing the sandbox's driver loses the sandbox: as with the SDK's Docker client, the
    run ends with the SDK's UserError naming the cause; nothing is left running, and the
    next run gets a fresh sandbox."""
    client = SandlotSandboxClient(CONFIG)
    model = ScriptedModel([shell("kill -9 $PPID; sleep 5", "c1"), [assistant_message("never")]])
    agent = SandboxAgent(name="victim", model=model, instructions="Use the shell.")
    with pytest.raises(UserError, match="sandbox died"):
        asyncio.run(Runner.run(agent, "go", run_config=run_config(client, tmp_path)))
    assert not live_sandboxes()

    model = ScriptedModel([shell("echo fresh", "c2"), [assistant_message("done")]])
    agent = SandboxAgent(name="next", model=model, instructions="Use the shell.")
    result = asyncio.run(Runner.run(agent, "go", run_config=run_config(client, tmp_path)))
    assert shown(outputs(result.new_items)[0]) == "fresh\n"
    assert not live_sandboxes()


def test_the_workspace_survives_a_pause_and_a_resume_from_saved_json(tmp_path: Path) -> None:
    """The SDK's pause/resume contract: a run stopped for an approval ends its sandbox after
    persisting the workspace; the resumed run (from the RunState's JSON) finds it restored."""
    events: list[SandboxSessionEvent] = []
    client = SandlotSandboxClient(
        CONFIG,
        instrumentation=Instrumentation(
            sinks=[CallbackSink(lambda event, _session: events.append(event), mode="sync")]
        ),
    )

    @function_tool(name_override="approval_tool", needs_approval=True)
    def approval_tool() -> str:
        return "approved"

    def agent(model: ScriptedModel) -> SandboxAgent[Any]:
        return SandboxAgent(
            name="sandbox",
            model=model,
            instructions="Use the shell.",
            default_manifest=Manifest(entries={"seed.txt": File(content=b"from the manifest\n")}),
            tools=[approval_tool],
        )

    def finished(op: str) -> int:
        return sum(1 for e in events if e.op == op and e.phase == "finish" and e.ok is True)

    first_model = ScriptedModel(
        [
            shell("mkdir -p out && echo note v1 > out/note.txt && echo made > made.txt", "c1"),
            [function_call("approval_tool", {}, call_id="c2")],
        ]
    )
    first = asyncio.run(
        Runner.run(agent(first_model), "go", run_config=run_config(client, tmp_path))
    )
    assert len(first.interruptions) == 1
    state = first.to_state()
    assert state._sandbox is not None
    assert state._sandbox["backend_id"] == "sandlot"
    session_state = state._sandbox["session_state"]
    assert isinstance(session_state, dict) and session_state["type"] == "sandlot"
    assert session_state["snapshot"]["type"] == "local"
    assert finished("stop") == 1 and finished("shutdown") == 1
    assert not live_sandboxes()

    second_model = ScriptedModel(
        [shell("cat out/note.txt made.txt seed.txt", "c3"), [assistant_message("done")]]
    )
    second_agent = agent(second_model)

    async def resume() -> Any:
        restored = await RunState.from_json(second_agent, state.to_json())
        restored.approve(restored.get_interruptions()[0])
        return await Runner.run(second_agent, restored, run_config=run_config(client, tmp_path))

    second = asyncio.run(resume())
    said = outputs(second.new_items)[-2:]  # the items before the pause come first
    assert said[0] == "approved"
    assert shown(said[1]) == "note v1\nmade\nfrom the manifest\n"
    assert second.final_output == "done"
    assert finished("stop") == 2 and finished("shutdown") == 2
    assert not live_sandboxes()


async def _started(client: SandlotSandboxClient, **create: Any) -> Any:
    session = await client.create(**create)
    await session.start()
    return session


def test_files_and_exec_keep_the_sdk_contract(tmp_path: Path) -> None:
    async def scenario() -> None:
        client = SandlotSandboxClient(CONFIG)
        session = await _started(client)
        try:
            assert session.state.manifest.root == "/workspace"
            assert await session.running()
            await session.write(Path("dir/a.txt"), io.BytesIO(b"\x00bytes\xff"))
            assert (await session.read(Path("/workspace/dir/a.txt"))).read() == b"\x00bytes\xff"
            with pytest.raises(WorkspaceReadNotFoundError):
                await session.read(Path("missing.txt"))
            for escape in ("../outside.txt", "/etc/passwd"):
                with pytest.raises(InvalidManifestPathError):
                    await session.read(Path(escape))
                with pytest.raises(InvalidManifestPathError):
                    await session.write(Path(escape), io.BytesIO(b"x"))
            await session.rm("no/such/dir", recursive=True)  # recursive: a missing path is fine
            with pytest.raises(ExecNonZeroError):
                await session.rm("no-such-file")
            await session.mkdir("made/deeper", parents=True)
            await session.mv("dir/a.txt", "made/deeper/b.txt")
            names = {Path(e.path).name for e in await session.ls("made/deeper")}
            assert names == {"b.txt"}
            result = await session.exec("echo $0; printf err >&2; exit 3", shell=True)
            assert (result.stdout, result.stderr, result.exit_code) == (b"sh\n", b"err", 3)
            with pytest.raises(ExecTimeoutError):
                await session.exec("sleep", "30", timeout=0.3, shell=False)
            assert (await session.exec("echo", "alive", shell=False)).stdout == b"alive\n"
            with pytest.raises(ExposedPortUnavailableError):
                await session.resolve_exposed_port(8080)
            with pytest.raises(ValueError, match="unprivileged user"):
                await session.exec("id", user="root")
        finally:
            await session.aclose()
            await client.delete(session)
        assert not await session.running()

    asyncio.run(scenario())
    assert not live_sandboxes()


def test_snapshots_leave_out_skip_paths_and_links_and_restore_into_a_fresh_sandbox(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        client = SandlotSandboxClient(CONFIG)
        snapshot = LocalSnapshotSpec(base_path=tmp_path)
        session = await _started(client, snapshot=snapshot)
        await session.exec(
            "mkdir -p src cache && echo code > src/main.py && echo tmp > cache/junk "
            "&& ln -s /etc/passwd src/passwd && ln -s main.py src/alias",
            shell=True,
        )
        session.register_persist_workspace_skip_path("cache")
        with pytest.warns(UserWarning, match="skipped 2 member"):
            await session.aclose()  # stop() persists the workspace
        await client.delete(session)
        stored = next(tmp_path.glob("*.tar"))
        with tarfile.open(stored) as tar:
            assert sorted(tar.getnames()) == ["src", "src/main.py"]
            assert all(m.isdir() or m.isreg() for m in tar.getmembers())

        payload = client.serialize_session_state(session.state)
        state = client.deserialize_session_state(payload)
        assert isinstance(state, SandlotSandboxSessionState)
        assert state.session_id == session.state.session_id
        resumed = await client.resume(state)
        await resumed.start()
        try:
            listing = await resumed.exec("find . | sort; cat src/main.py", shell=True)
            assert listing.stdout == b".\n./src\n./src/main.py\ncode\n"
        finally:
            await resumed.aclose()
            await client.delete(resumed)

    asyncio.run(scenario())
    assert not live_sandboxes()


def test_what_a_sandbox_cannot_honour_is_refused_before_it_starts() -> None:
    async def scenario() -> None:
        client = SandlotSandboxClient(CONFIG)
        with pytest.raises(ValueError, match="host_path"):
            await client.create(
                manifest=Manifest(
                    extra_path_grants=(SandboxPathGrant(path="/data", host_path="/srv/data"),)
                )
            )
        with pytest.raises(ValueError, match="users and groups"):
            await client.create(manifest=Manifest(users=[User(name="dev")]))
        with pytest.raises(TypeError, match="takes no options"):
            await client.create(options=object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="either pool"):
            SandlotSandboxClient(CONFIG, pool=object())  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert not live_sandboxes()


def test_a_pool_lends_each_session_a_sandbox_and_takes_it_back(tmp_path: Path) -> None:
    """Many agents at once: each Runner.run borrows a started sandbox from one pool."""
    import sandlot

    async def scenario() -> list[str]:
        async with sandlot.AsyncSandboxPool(CONFIG, size=2, warm=2) as pool:
            client = SandlotSandboxClient(pool=pool)

            async def one(n: int) -> str:
                model = ScriptedModel(
                    [
                        shell(f"echo agent {n} > me.txt; cat me.txt", f"c{n}"),
                        [assistant_message(f"done {n}")],
                    ]
                )
                agent = SandboxAgent(name=f"a{n}", model=model, instructions="x")
                result = await Runner.run(agent, "go", run_config=run_config(client, tmp_path))
                return shown(outputs(result.new_items)[0]) + str(result.final_output)

            got = await asyncio.gather(*(one(n) for n in range(3)))
            assert pool.stats()["lent"] == 0
            return list(got)

    assert asyncio.run(scenario()) == [f"agent {n}\ndone {n}" for n in range(3)]
    assert not live_sandboxes()


def test_a_session_object_is_what_the_sdk_wraps() -> None:
    async def scenario() -> None:
        client = SandlotSandboxClient(CONFIG)
        session = await _started(client)
        try:
            inner = session._inner
            assert isinstance(inner, SandlotSandboxSession)
            value = await inner.sandbox.run_code("6 * 7")
            assert value.value == "42"  # sandlot's own API, in the agent's sandbox
        finally:
            await session.aclose()
            await client.delete(session)

    asyncio.run(scenario())
    assert not live_sandboxes()


def test_the_example_runs_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/integrations/openai_agents.py, with the SDK's ScriptedModel (no API key)."""
    import importlib.util

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = Path(__file__).parents[1] / "examples" / "integrations" / "openai_agents.py"
    spec = importlib.util.spec_from_file_location("openai_agents_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    asyncio.run(example.main(1))
    assert capsys.readouterr().out == "Mumbai is the wettest, with 2400 mm a year.\n"
    assert not live_sandboxes()
