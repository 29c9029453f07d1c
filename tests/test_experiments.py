"""Experiments end to end: real session servers, sandboxes and kernels; a scripted LM on loopback.

The LM is ``tests/openai_server.py`` answering with tool calls, reached through
sandlot's own client (``OpenAICompatibleLM``), so the harness's whole path is
the one a real endpoint takes. The module has a session server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import template_processes
from openai_server import ScriptedOpenAIServer, ScriptedReply, in_order
from session_servers import alive, own_session_server, server_pids

from sandlot import ConfigError
from sandlot.backends.disk import process_tree
from sandlot.experiment import (
    ExperimentConfig,
    load_config,
    run_experiment,
    run_harness,
    setup_environment,
    setup_execution,
)
from sandlot.notebook import attach, list_sessions, shutdown_session

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "experiments" / "seed000"
LINGER = 3.0

# What an agent would write for the seed-000 task, as the scripted LM's cells.
CELL = """\
import model_tools, helpers
info = model_tools.get_model_info()
emb = model_tools.get_embedding("hello world")
stats = embedding_stats(emb["embedding"])
print(helpers.format_result(info, "Model info"))
print(helpers.format_result(stats, "Embedding of 'hello world'"))
"""


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("experiment-sessions") / "server"
    with own_session_server(folder, LINGER):
        yield folder
        for info in list_sessions():
            with contextlib.suppress(Exception):
                shutdown_session(info.session_id)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example, its tiny model made, its sandboxes strictly isolated."""
    folder = tmp_path_factory.mktemp("seed000") / "seed000"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("tiny-model", "runs"))
    done = subprocess.run(
        [sys.executable, str(folder / "make_tiny_model.py"), str(folder / "tiny-model")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = (folder / "experiment.yaml").read_text()
    assert "    memory_mb: 1024\n" in text
    (folder / "experiment.yaml").write_text(
        text.replace("    memory_mb: 1024\n", "    memory_mb: 1024\n    isolation: bubblewrap\n")
    )
    return folder


def configured(path: Path, base_url: str, **harness: Any) -> ExperimentConfig:
    config = load_config(path)
    assert config.harness.lm is not None
    config.harness.lm.base_url = base_url
    config.harness.lm.max_retries = 0
    for key, value in harness.items():
        setattr(config.harness, key, value)
    return config


def events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "transcript.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def deploy(path: Path) -> tuple[str, str]:
    """``sandlot experiment deploy path``: what it printed, and the session it left running."""
    done = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", "experiment", "deploy", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stdout.split("# Session ", 1)[1].split()[0]


def processes_left(sessions_dir: Path, before: set[int], within: float = 20) -> set[int]:
    """Processes under the session server not in ``before``, once they had ``within`` s to end
    (its templates' own, a new spare first process among them, are not the run's)."""
    deadline = time.monotonic() + within
    while True:
        left = {
            p
            for s in server_pids(sessions_dir)
            if alive(s)
            for p in process_tree(s) - before - {s} - template_processes(s)
            if alive(p)
        }
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


# -- the example, end to end --------------------------------------------------------


def test_the_seed000_example_runs_end_to_end_with_a_scripted_agent(
    sessions_dir: Path, example: Path
) -> None:
    script = in_order(
        ScriptedReply.calls(("execute_code", {"code": CELL})),
        # Garbage a real LM sends: arguments that are not JSON, a tool that does not exist.
        ScriptedReply.calls(("execute_code", "{not json"), ("delete_everything", {})),
        ScriptedReply.calls(("add_markdown", {"text": "## Findings\nTwo layers, width 16."})),
        # Files in the kernel's workspace: written by the tool, read back by the tool and a cell.
        ScriptedReply.calls(
            ("write_file", {"path": "notes/found.txt", "content": "width 16"}),
            ("read_file", {"path": "notes/found.txt"}),
            ("execute_code", {"code": "print(open('notes/found.txt').read().upper())"}),
        ),
        ScriptedReply("2 layers, hidden size 16", cost=0.01),
    )
    with ScriptedOpenAIServer(script) as server:
        config = configured(example / "experiment.yaml", server.base_url)
        result = run_experiment(config, source=example / "experiment.yaml")
    [run] = result.runs
    assert result.ok and run.status == "answered", run
    assert run.answer == "2 layers, hidden size 16"
    assert (run.turns, run.tool_calls, run.cost) == (5, 7, 0.01)
    assert run.prompt_tokens > 0

    # The LM saw the tools, the task with the session's prompt, and each result.
    first = server.requests[0].body
    assert [t["function"]["name"] for t in first["tools"]] == [
        "execute_code",
        "add_markdown",
        "read_file",
        "write_file",
    ]
    assert "embedding_stats" in first["messages"][1]["content"]  # the skill, in the prompt
    assert "model_tools" in first["messages"][1]["content"]
    tool_results = [m for m in server.requests[-1].body["messages"] if m["role"] == "tool"]
    assert "**num_layers**: 2" in tool_results[0]["content"]
    assert "**hidden_size**: 16" in tool_results[0]["content"]
    assert "**dims**: 16" in tool_results[0]["content"]
    assert "not valid JSON" in tool_results[1]["content"]
    assert "no tool 'delete_everything'" in tool_results[2]["content"]
    assert tool_results[4]["content"] == "wrote 8 bytes"
    assert tool_results[5]["content"] == "width 16"
    assert "WIDTH 16" in tool_results[6]["content"]

    # The records: transcript, notebook, summary, the config and the file it came from.
    folder = Path(run.run_dir)
    assert folder.parent == result.directory and folder.name == "run-1"
    kinds = [e["type"] for e in events(folder)]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("lm_call") == 5 and kinds.count("tool_call") == 7
    notebook = json.loads((folder / "notebook.ipynb").read_text())
    code, markdown = notebook["cells"][0], notebook["cells"][1]
    assert "model_tools.get_embedding" in "".join(code["source"])
    printed = "".join(o.get("text", "") for o in code["outputs"])
    assert "## Model info" in printed and "tiny-residual-mlp" in printed
    assert markdown["cell_type"] == "markdown" and "Findings" in "".join(markdown["source"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "answered" and summary["tool_calls"] == 7
    assert (result.directory / "experiment.yaml").read_text() == (
        example / "experiment.yaml"
    ).read_text()

    # The view: one self-contained page with both halves of the record.
    page_path = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", "experiment", "view", str(result.directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert page_path.returncode == 0, page_path.stderr
    page = Path(page_path.stdout.strip()).read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "http://" not in page.replace(server.base_url, "") and "https://" not in page
    assert "tiny-residual-mlp" in page and "delete_everything" in page
    assert "</script><" not in page.split('id="experiment-data">', 1)[1].split("</script>")[0]


# -- each stage alone -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stages(sessions_dir: Path, example: Path) -> Iterator[tuple[Any, Any]]:
    """Stages 1 and 2 of the example, by hand: the environment and one shared session."""
    with ScriptedOpenAIServer() as server:
        config = configured(example / "experiment.yaml", server.base_url)
    env = setup_environment(config)
    execution = setup_execution(env, config, notebook=example / "shared.ipynb")
    try:
        yield env, execution
    finally:
        execution.close()


def test_stage_one_checks_the_host_and_puts_the_models_where_they_are_served(
    example: Path, stages: tuple[Any, Any]
) -> None:
    env, _ = stages
    assert env.serve_config is not None and env.serve_config.models
    assert not env.session_config.models  # the kernel holds none: model_tools serves them
    assert "1 model(s) served" in env.describe()
    config = load_config(example / "experiment.yaml")
    config.environment.secrets = ["SANDLOT_TEST_SURELY_UNSET"]
    with pytest.raises(ConfigError, match="SANDLOT_TEST_SURELY_UNSET"):
        setup_environment(config)
    config = load_config(example / "experiment.yaml")
    config.environment.backend = "nowhere"
    with pytest.raises(ConfigError, match="backend 'nowhere' is unknown"):
        setup_environment(config)


def test_stage_one_names_a_model_path_and_an_interface_that_are_missing(
    example: Path, tmp_path: Path
) -> None:
    """The example before its model is made: stage 1 fails, not stage 2's serving sandbox."""
    unmade = tmp_path / "seed000"
    shutil.copytree(example, unmade, ignore=shutil.ignore_patterns("tiny-model", "*.ipynb"))
    config = load_config(unmade / "experiment.yaml")
    assert config.environment.models[0].load_code  # its own loader reads config["name"]
    (unmade / "model_tools.py").unlink()
    (unmade / "model_tools.py").mkdir()
    with pytest.raises(ConfigError) as missing:
        setup_environment(config)
    message = str(missing.value)
    assert "environment.models.0.name: ./tiny-model does not exist" in message
    assert f"execution.interfaces: {unmade / 'model_tools.py'} is not a file" in message


def test_stage_two_alone_gives_a_warm_session_another_process_can_attach_to(
    stages: tuple[Any, Any],
) -> None:
    _, execution = stages
    assert execution.mode == "notebook" and execution.notebook_path.endswith("shared.ipynb")
    assert execution.status == "idle" and execution.kernel_id  # the seed's NotebookHandle
    with attach(execution.session_id) as other:
        assert other.kernel_id == execution.kernel_id
        ex = other.execute("import model_tools\nmodel_tools.get_model_info()['num_layers']")
    assert ex.error is None and ex.text == "2"


def test_stage_three_alone_stops_at_a_limit_and_keeps_transcript_and_notebook(
    example: Path, stages: tuple[Any, Any], tmp_path: Path
) -> None:
    env, execution = stages

    def forever(body: dict[str, Any]) -> ScriptedReply:
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        return ScriptedReply.calls(("execute_code", {"code": f"limit_marker = {turn}"}))

    with ScriptedOpenAIServer(forever) as server:
        config = configured(example / "experiment.yaml", server.base_url)
        config.harness.limits.max_turns = 3
        result = run_harness(env, execution, config, tmp_path / "run-1")
    assert (result.status, result.stop_reason) == ("stopped", "max_turns")
    assert result.turns == 3 and result.tool_calls == 3 and len(server.requests) == 3
    kinds = [e["type"] for e in events(tmp_path / "run-1")]
    assert kinds.count("tool_call") == 3 and kinds[-1] == "run_end"
    assert events(tmp_path / "run-1")[-1]["stop_reason"] == "max_turns"
    cells = json.loads(Path(execution.notebook_path).read_text())["cells"]
    assert [c["source"] for c in cells if "limit_marker" in "".join(c["source"])][-1] == (
        "limit_marker = 2"
    )
    assert json.loads((tmp_path / "run-1" / "summary.json").read_text())["turns"] == 3


# A 2x2 red PNG, as a cell displays it.
PLOT = (
    "import base64\nfrom IPython.display import Image, display\n"
    "display(Image(data=base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklE"
    "QVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==')))\nprint('plotted')"
)


@pytest.mark.parametrize("images", [False, True])
def test_images_a_cell_displays_reach_the_lm_only_when_asked(
    example: Path, stages: tuple[Any, Any], tmp_path: Path, images: bool
) -> None:
    env, execution = stages
    script = in_order(ScriptedReply.calls(("execute_code", {"code": PLOT})), "seen")
    with ScriptedOpenAIServer(script) as server:
        config = configured(example / "experiment.yaml", server.base_url, images=images)
        result = run_harness(env, execution, config, tmp_path / "run-1")
    assert result.status == "answered"
    messages = server.requests[1].body["messages"]
    tool = next(m for m in messages if m["role"] == "tool")
    assert "plotted" in tool["content"]
    shown = [
        part
        for m in messages
        if m["role"] == "user" and isinstance(m["content"], list)
        for part in m["content"]
        if part["type"] == "image_url"
    ]
    if images:
        assert messages[-1]["role"] == "user"  # after the tool results
        [part] = shown
        assert part["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
        assert "shown to you after the tool results" in tool["content"]
        [seen] = [e for e in events(tmp_path / "run-1") if e["type"] == "images"]
        assert seen["count"] == 1 and seen["mime_types"] == ["image/png"]
    else:
        assert shown == [] and "1 image(s) are in the notebook" in tool["content"]


def test_an_lm_endpoint_that_is_down_fails_clearly_and_keeps_the_transcript(
    example: Path, stages: tuple[Any, Any], tmp_path: Path
) -> None:
    env, execution = stages
    with ScriptedOpenAIServer() as server:
        config = configured(example / "experiment.yaml", server.base_url)
    # The server has stopped: nothing listens on its port any more.
    result = run_harness(env, execution, config, tmp_path / "down")
    assert (result.status, result.stop_reason) == ("failed", "lm_error")
    assert result.error is not None and server.base_url in result.error
    assert "gave up after 1 attempts" in result.error
    last = events(tmp_path / "down")
    assert [e["type"] for e in last] == ["run_start", "lm_call", "run_end"]
    assert last[1]["error"] == result.error


# -- many runs, and runs that never clobber each other --------------------------------

FS_EXPERIMENT = """\
name: fs-runs
task: Write notes.txt and say done.
environment:
  sandbox: {isolation: bubblewrap, memory_mb: 512}
execution:
  type: filesystem
harness:
  type: single_agent
  lm: {model: scripted, base_url: "BASE", max_retries: 0}
  runs: RUNS
  max_parallel: 2
"""


def agent_in_a_filesystem(body: dict[str, Any]) -> str | ScriptedReply:
    """Write a file, then answer: any number of runs at once (no state but the messages)."""
    if body["messages"][-1]["role"] == "user":
        return ScriptedReply.calls(
            ("write_file", {"path": "notes.txt", "content": "written by the agent"})
        )
    return "done"


def test_n_runs_side_by_side_and_a_second_invocation_leaves_the_first_alone(
    sessions_dir: Path, tmp_path: Path
) -> None:
    with ScriptedOpenAIServer(agent_in_a_filesystem, latency=0.2) as server:
        text = FS_EXPERIMENT.replace("BASE", server.base_url)
        path = tmp_path / "fs.yaml"
        path.write_text(text.replace("RUNS", "2"))
        first = run_experiment(load_config(path), source=path)
        before = {p: p.read_bytes() for p in first.directory.rglob("*") if p.is_file()}
        path.write_text(text.replace("RUNS", "1"))
        second = run_experiment(load_config(path), source=path)
    assert first.ok and second.ok
    assert first.directory != second.directory
    assert first.directory.parent == second.directory.parent == tmp_path / "runs" / "fs-runs"
    assert {p: p.read_bytes() for p in first.directory.rglob("*") if p.is_file()} == before
    assert [r.run for r in first.runs] == ["run-1", "run-2"]
    assert len({r.session_id for r in first.runs}) == 2  # a session each
    for run in first.runs:
        saved = Path(run.run_dir) / "workspace" / "notes.txt"
        assert saved.read_text() == "written by the agent"
    summary = json.loads((first.directory / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["answered", "answered"]


# -- Ctrl-C ---------------------------------------------------------------------------


def test_ctrl_c_stops_the_run_cleanly_and_leaves_no_process(
    sessions_dir: Path, example: Path, tmp_path: Path
) -> None:
    script = in_order(
        ScriptedReply.calls(("execute_code", {"code": "import time\ntime.sleep(120)"})),
        "not reached",
    )
    # Processes the module's other sessions have (the shared one): not this run's.
    before = {p for s in server_pids(sessions_dir) if alive(s) for p in process_tree(s)}
    with ScriptedOpenAIServer(script) as server:
        text = (example / "experiment.yaml").read_text()
        text = text.replace("http://127.0.0.1:8000/v1", server.base_url)
        path = example / "interrupted.yaml"
        path.write_text(text.replace("dir: runs", f"dir: {tmp_path / 'out'}"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandlot.cli", "experiment", "run", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # plain progress lines: stderr is not a terminal
                lines.append(line)
                if "turn 1" in line:
                    break
            # The cell is running in the kernel now (its first output would end the wait).
            deadline = time.monotonic() + 30
            busy = False
            while time.monotonic() < deadline and not busy:
                busy = any(s.status == "busy" for s in list_sessions())
                time.sleep(0.2)
            assert busy, "".join(lines)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, "".join(lines) + err
    assert "stopping the runs" in err and "the outputs so far are in" in err
    [batch] = (tmp_path / "out" / "seed000").iterdir()
    assert str(batch) in err.replace("\n", "")
    run = events(batch / "run-1")
    assert run[-1]["type"] == "run_end" and run[-1]["status"] == "interrupted"
    assert "interrupted" in out  # the summary table
    assert json.loads((batch / "run-1" / "notebook.ipynb").read_text())["cells"]
    # No session, sandbox or kernel of this run is left under the session server.
    assert not [s for s in list_sessions() if s.name.startswith("seed000-run-")]
    left = processes_left(sessions_dir, before)
    assert not left, f"left running: {left}"


def test_deploy_prints_the_session_the_mcp_config_and_the_prompt(
    sessions_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(
        "name: outside\ntask: Count the files.\nharness: {type: external}\n"
        "environment: {sandbox: {isolation: bubblewrap}}\nexecution: {type: filesystem}\n"
    )
    printed, session_id = deploy(path)
    try:
        assert '"mcpServers"' in printed and "--session" in printed
        assert "Count the files." in printed
        assert session_id in {s.session_id for s in list_sessions()}  # it outlived deploy
    finally:
        shutdown_session(session_id)


def test_the_rlm_harness_runs_the_engine_on_the_task_and_its_context(
    sessions_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "context.txt").write_text("alpha\nbeta\nthe needle is 42\ngamma\n")
    script = in_order(
        "```repl\nprint([l for l in context.splitlines() if 'needle' in l])\n```", "FINAL(42)"
    )
    with ScriptedOpenAIServer(script) as server:
        path = tmp_path / "rlm.yaml"
        path.write_text(
            "name: rlm-run\ntask: What is the needle?\n"
            "environment: {sandbox: {isolation: bubblewrap, memory_mb: 512}}\n"
            f"harness: {{type: rlm, context: context.txt, lm: {{model: root, base_url: "
            f'"{server.base_url}", max_retries: 0}}, rlm: {{max_iterations: 3}}}}\n'
        )
        result = run_experiment(load_config(path))
    [run] = result.runs
    assert (run.status, run.answer, run.turns) == ("answered", "42", 2), run
    assert "the needle is 42" in server.requests[1].body["messages"][-1]["content"]
    kinds = [e["type"] for e in events(Path(run.run_dir))]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "code" in kinds
    assert not (Path(run.run_dir) / "notebook.ipynb").exists()  # no session: stage 2 skipped


def test_an_mcp_client_attaches_to_a_deployed_notebook_with_the_printed_config(
    sessions_dir: Path, tmp_path: Path
) -> None:
    """The seed's workflow: deploy, paste the printed block into the agent, and work."""
    from mcp import Client, StdioServerParameters
    from mcp.types import TextContent

    path = tmp_path / "notebook.yaml"
    path.write_text(
        "name: outside-nb\ntask: Say what answer holds.\nharness: {type: external}\n"
        "execution: {type: notebook, init_code: 'answer = 6 * 7'}\n"
    )
    printed, session_id = deploy(path)
    block = printed.split("# Claude Code:", 1)[1].split("\n", 1)[1].split("\n\n# ", 1)[0]
    entry = json.loads(block)["mcpServers"]["sandlot"]
    notebook = Path(printed.split("# Notebook: ", 1)[1].split("\n", 1)[0])

    async def work() -> str:
        params = StdioServerParameters(
            command=entry["command"], args=entry["args"], env={**os.environ, **entry["env"]}
        )
        async with Client(params) as client:
            await client.call_tool("attach_to_session", {"session_id": session_id})
            result = await client.call_tool(
                "execute_code", {"session_id": session_id, "code": "answer"}
            )
            assert not result.is_error
            block = result.content[0]
            assert isinstance(block, TextContent)
            return block.text

    try:
        assert "value:\n42" in asyncio.run(work())
        cells = json.loads(notebook.read_text())["cells"]
        assert [c["source"] for c in cells if c["cell_type"] == "code"][-1] == "answer"
    finally:
        shutdown_session(session_id)


def test_at_a_terminal_the_live_view_shows_the_run_and_a_second_ctrl_c_kills(
    sessions_dir: Path, tmp_path: Path
) -> None:
    """The live table on a terminal; two Ctrl-Cs kill at once, and still nothing is left."""
    script = in_order(
        ScriptedReply.calls(("execute_code", {"code": "import time\ntime.sleep(120)"})),
        "not reached",
    )
    before = {p for s in server_pids(sessions_dir) if alive(s) for p in process_tree(s)}
    with ScriptedOpenAIServer(script) as server:
        path = tmp_path / "live.yaml"
        path.write_text(
            f"name: live\ntask: Wait.\nexecution: {{type: notebook}}\noutputs: {{dir: out}}\n"
            f"harness: {{type: single_agent, lm: {{model: m, base_url: '{server.base_url}'}}}}\n"
        )
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandlot.cli", "experiment", "run", str(path)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
        )
        os.close(slave)
        seen = b""
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                b"tool calls" in seen and any(s.status == "busy" for s in list_sessions())
            ):
                if select.select([master], [], [], 0.2)[0]:
                    with contextlib.suppress(OSError):
                        seen += os.read(master, 65536)
            assert b"tool calls" in seen and b"run-1" in seen, seen.decode(errors="replace")
            assert b"live: " in seen  # the table's title: the experiment and its stage
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)  # the first is still stopping the runs
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
            with contextlib.suppress(OSError):
                while select.select([master], [], [], 0.5)[0]:
                    chunk = os.read(master, 65536)
                    if not chunk:
                        break
                    seen += chunk
            # 130 from the kill, or death by the signal itself when the first Ctrl-C had
            # already stopped everything and the process was exiting.
            assert code in (130, -signal.SIGINT), seen.decode(errors="replace")[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
    assert b"sandlot: stopping the runs" in seen
    if code == 130:
        assert b"sandlot: killed" in seen, seen.decode(errors="replace")[-2000:]
    # The session belonged to the killed process's connection: the server ends it.
    left = processes_left(sessions_dir, before)
    assert not left, f"left running: {left}"
    assert not [s for s in list_sessions() if s.name.startswith("live-run-")]
