"""``sandlot mcp`` as any MCP-speaking agent uses it: Pydantic AI's own agent loop.

The recipe of docs/integrations.md, as written: ``sandlot mcp --print-config``
gives the ``mcpServers`` block, Pydantic AI's ``load_mcp_toolsets`` reads it (the
same file Claude Code, Cursor and the Claude Agent SDK take) and starts
``sandlot mcp`` over stdio, and a real ``Agent`` runs its loop with a scripted
``FunctionModel`` that calls the sandlot tools. The sessions are real notebook
sessions on a session server of this module's own (``SANDLOT_SESSIONS_DIR``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from pydantic_ai import Agent
from pydantic_ai.mcp import load_mcp_toolsets
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from session_servers import own_session_server

from sandlot.notebook import list_sessions, shutdown_session

Step = Callable[[Any], ModelResponse]


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session server of this module's own: its sessions shut down afterwards, and the
    server must then exit by itself (a short linger)."""
    folder = tmp_path_factory.mktemp("agent-sessions")
    folder.chmod(0o700)
    with own_session_server(folder, linger=2):
        try:
            yield folder
        finally:
            for info in list_sessions():
                shutdown_session(info.session_id)


@pytest.fixture(scope="module")
def mcp_json(sessions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Claude Code block ``sandlot mcp --print-config`` prints, saved as ``.mcp.json``."""
    notebooks = tmp_path_factory.mktemp("notebooks")
    command = ["mcp", "--print-config", "--notebook-dir", str(notebooks)]
    printed = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    blocks = printed.split("\n# ")  # "# Claude Code: ...", then "# Cursor: ..."
    claude_code = json.loads(blocks[0].split("\n", 1)[1])
    entry = claude_code["mcpServers"]["sandlot"]
    assert entry["type"] == "stdio" and entry["env"] == {"SANDLOT_SESSIONS_DIR": str(sessions_dir)}
    entry["env"]["SANDLOT_SESSIONS_LINGER"] = "2"  # this module's server ends soon after
    path = tmp_path_factory.mktemp("project") / ".mcp.json"
    path.write_text(json.dumps(claude_code))
    return path


def call(tool: str, **args: Any) -> ModelResponse:
    """A model turn that calls one sandlot tool (``load_mcp_toolsets`` prefixes ``sandlot_``)."""
    return ModelResponse(parts=[ToolCallPart(f"sandlot_{tool}", args)])


class ScriptedModel:
    """Pydantic AI's ``FunctionModel`` function: turn n is ``steps[n](what the last tool
    call gave)``; every tool result (or retry prompt) is kept in ``got``."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.got: list[Any] = []
        self.tools: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.tools = [tool.name for tool in info.function_tools]
        last = messages[-1]
        assert isinstance(last, ModelRequest)
        part = last.parts[-1]
        if isinstance(part, (ToolReturnPart, RetryPromptPart)):
            self.got.append(part)
        return self.steps[len(self.got)](part)


def text_of(part: Any) -> str:
    """A tool result's text (a retry prompt's message) as the model read it."""
    if isinstance(part, RetryPromptPart):
        return str(part.content)
    return part.model_response_str()  # type: ignore[no-any-return]


def test_a_pydantic_ai_agent_works_in_a_sandlot_session(mcp_json: Path) -> None:
    session: dict[str, Any] = {}

    def started(result: ToolReturnPart) -> ModelResponse:
        session.update(result.content)
        code = (
            "import os\nopen('made_by_agent.txt', 'w').write('forty-two')\n"
            "total = sum(range(10))\nos.getcwd(), total"
        )
        return call("execute_code", session_id=session["session_id"], code=code)

    def in_session(code: str, **more: Any) -> Step:
        return lambda _: call("execute_code", session_id=session["session_id"], code=code, **more)

    model = ScriptedModel(
        [
            lambda _: call("start_new_session", name="pydantic-ai"),
            started,
            in_session("while True:\n    pass", timeout=1),  # runs away: interrupted
            in_session("print(open('made_by_agent.txt').read(), total)"),
            in_session("hog = bytearray(3 * 2**30)"),  # past the sandbox's 2 GiB
            lambda _: call("restart", session_id=session["session_id"]),  # the agent goes on
            in_session("import os\nprint(os.path.exists('made_by_agent.txt'), 'total' in dir())"),
            lambda _: call("shutdown_session", session_id=session["session_id"]),
            lambda _: ModelResponse(parts=[TextPart("the sandbox did it")]),
        ]
    )
    agent = Agent(FunctionModel(model), toolsets=load_mcp_toolsets(mcp_json), retries=3)
    result = agent.run_sync("Compute in a sandlot session, then shut it down.")

    assert result.output == "the sandbox did it"
    assert "sandlot_execute_code" in model.tools and "sandlot_start_new_session" in model.tools
    ran, runaway, again, bomb, _, fresh, ended = (text_of(part) for part in model.got[1:])
    assert "('/workspace', 45)" in ran  # the sandbox's working directory, not the host's
    assert "ran out of time and was interrupted" in runaway
    assert "forty-two 45" in again  # the runaway cell left the kernel and its state
    assert "KernelDied" in bomb and "call restart(" in bomb
    assert "stdout:\nTrue False" in fresh  # a fresh kernel: the files stay, the variables not
    assert "is shut down" in ended
    assert not (Path.cwd() / "made_by_agent.txt").exists()
    cells = nbformat.read(session["notebook_path"], as_version=4).cells
    assert any("made_by_agent.txt" in cell.source for cell in cells)
    assert session["session_id"] not in {info.session_id for info in list_sessions()}


def test_the_example_runs_as_written(
    sessions_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "integrations"
    monkeypatch.chdir(tmp_path)  # its notebooks go to ./notebooks
    spec = importlib.util.spec_from_file_location("example_mcp", path / "mcp_pydantic_ai.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before = {info.session_id for info in list_sessions()}
    assert example.main() == "The 30th Fibonacci number is 832040."
    assert {info.session_id for info in list_sessions()} <= before  # it shut its session down
    assert len(list((tmp_path / "notebooks").glob("*.ipynb"))) == 1
