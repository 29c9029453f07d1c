"""Backends by name, and ``backend=`` reaching every layer that makes sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import strict

import sandlot
from sandlot import backends
from sandlot.backends.base import Launched
from sandlot.backends.local import LocalBackend
from sandlot.config import SandboxConfig
from sandlot.integrations.dspy import SandlotInterpreter
from sandlot.rlm.engine import RLM
from sandlot.rlm.niah import ScriptedRootLM, StandInSubLM


class CountingBackend:
    """A real backend (the local one underneath) that counts the sandboxes it starts."""

    launched = 0

    def __init__(self) -> None:
        self.inner = LocalBackend()

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> Launched:
        type(self).launched += 1
        return await self.inner.launch(config, init)


@pytest.fixture
def counting() -> Iterator[type[CountingBackend]]:
    CountingBackend.launched = 0
    backends.register("counting", CountingBackend)
    yield CountingBackend
    backends._factories.pop("counting", None)


def test_names_resolve_and_unknown_names_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert isinstance(backends.resolve(None), LocalBackend)
    assert isinstance(backends.resolve("local"), LocalBackend)
    mine = LocalBackend()
    assert backends.resolve(mine) is mine
    with pytest.raises(
        sandlot.ConfigError,
        match="unknown backend 'nope'; the backends here: local, modal, ray, ssh",
    ):
        backends.resolve("nope")
    monkeypatch.setenv(backends.ENV_VAR, "kubernetes")
    with pytest.raises(
        sandlot.ConfigError, match=r"unknown backend 'kubernetes' \(from \$SANDLOT_BACKEND\)"
    ):
        backends.resolve(None)
    with pytest.raises(sandlot.ConfigError, match="must be an identifier"):
        backends.register("not a name", LocalBackend)


def test_backend_reaches_every_layer(
    counting: type[CountingBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = strict()
    with sandlot.Sandbox(config, backend="counting") as sb:
        assert sb.run_code("1 + 1").value == "2"
        assert isinstance(sb.backend, CountingBackend)
    assert counting.launched == 1

    with sandlot.SandboxPool(config, size=2, backend="counting") as pool:
        assert pool.map(lambda s, i: s.run_code(f"{i} * 2").value, [1, 2]) == ["2", "4"]
    assert counting.launched == 3

    monkeypatch.setenv(backends.ENV_VAR, "counting")  # the environment variable alone
    with sandlot.Sandbox(config) as sb:
        sb.run_code("pass")
    assert counting.launched == 4
    monkeypatch.delenv(backends.ENV_VAR)

    def policy(messages: list[dict[str, str]]) -> str:
        turns = sum(1 for m in messages if m["role"] == "assistant")
        return "```repl\nx = len(context)\n```" if turns == 0 else "FINAL(done)"

    rlm = RLM(
        ScriptedRootLM(policy),  # type: ignore[arg-type]
        StandInSubLM(0.0),
        sandbox=config,
        backend="counting",
    )
    result = rlm.completion("some context", "q")
    assert result.finished, result.error
    assert counting.launched == 5

    interpreter = SandlotInterpreter(config=config, backend="counting")
    try:
        assert interpreter.execute("print(6 * 7)").strip() == "42"
    finally:
        interpreter.shutdown()
    assert counting.launched == 6
    factory = SandlotInterpreter.factory(config=config, backend="counting")
    made = factory()
    try:
        made.execute("x = 1")
    finally:
        made.shutdown()
    assert counting.launched == 7

    session = sandlot.create_local_session(config=config, backend="counting")
    try:
        assert session.run_code("3 + 3").value == "6"
    finally:
        session.terminate()
    assert counting.launched == 8


def test_an_unknown_backend_fails_before_anything_starts() -> None:
    with pytest.raises(sandlot.ConfigError, match="unknown backend"):
        sandlot.SandboxPool(backend="nope")
    with pytest.raises(sandlot.ConfigError, match="unknown backend"):
        RLM(ScriptedRootLM(lambda m: "FINAL(x)"), backend="nope")  # type: ignore[arg-type]
    with pytest.raises(sandlot.ConfigError, match="unknown backend"):
        SandlotInterpreter.factory(backend="nope")
    with pytest.raises(sandlot.ConfigError, match="unknown backend"):
        sandlot.create_local_session(backend="nope")


def test_the_driver_speaks_over_a_pipe_pair_as_over_a_socket(tmp_path: Any) -> None:
    """LocalBackend(stdio=True): the channel is the driver's stdin and stdout, as a remote
    driver's would be; everything above the backend works the same."""
    calls: list[str] = []

    def note(text: str) -> str:
        calls.append(text)
        return text.upper()

    config = strict(max_output_bytes=8 << 20)
    with sandlot.Sandbox(config, backend=LocalBackend(stdio=True), tools={"note": note}) as sb:
        assert sb.run_code("import os\nx = 20\nx + 22").value == "42"
        assert sb.run_code("print('out'); note('hi')").value == "'HI'"
        assert calls == ["hi"]
        assert sb.run_code("os.readlink('/proc/self/fd/0')").value == "'/dev/null'"
        chunks = list(sb.exec_stream("sh", "-c", "for i in 1 2 3; do echo $i; done"))
        assert b"".join(c.data for c in chunks) == b"1\n2\n3\n"
        sb.files.write("big.bin", b"x" * (3 << 20))  # several frames each way
        assert len(sb.files.read("big.bin")) == 3 << 20
        local = tmp_path / "back.bin"
        sb.download("big.bin", local)
        assert local.stat().st_size == 3 << 20
        big = sb.run_code("print('y' * (2 << 20))")
        assert len(big.stdout) == (2 << 20) + 1 and not big.truncated


def test_host_paths_are_the_local_backends_options_not_the_configs(tmp_path: Any) -> None:
    for field in ("workdir", "python"):
        with pytest.raises(sandlot.ConfigError, match=rf"pass backend=LocalBackend\({field}="):
            SandboxConfig(**{field: "/somewhere"})
    work = tmp_path / "work"
    work.mkdir()
    (work / "seed.txt").write_text("from the host")
    with sandlot.Sandbox(strict(), backend=LocalBackend(workdir=work)) as sb:
        assert sb.files.read_text("seed.txt") == "from the host"
        sb.files.write("made.txt", "in the sandbox")
    assert (work / "made.txt").read_text() == "in the sandbox"  # kept after the sandbox


def test_a_workspace_dir_needs_the_local_backend(
    counting: type[CountingBackend], tmp_path: Any
) -> None:
    with pytest.raises(sandlot.ConfigError, match="workspace_dir is a host directory"):
        sandlot.create_local_session(workspace_dir=tmp_path / "ws", backend="counting")
    assert counting.launched == 0


def test_ray_client_addresses_are_refused_with_the_reason() -> None:
    from sandlot.backends.ray import RayBackend

    with pytest.raises(sandlot.ConfigError, match=r"Ray Client \(ray://\) cannot stream"):
        RayBackend(address="ray://127.0.0.1:10001")
