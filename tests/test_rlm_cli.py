"""The RLM through the real client path and the command line.

``OpenAICompatibleLM`` talks to an OpenAI-compatible server on loopback whose
replies are scripted (the LM is not under test; the client, the engine, the
router and the sandbox are). The commands run as a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import strict
from openai_server import ScriptedOpenAIServer, ScriptedReply

from sandlot.rlm import RLM, OpenAICompatibleLM
from sandlot.rlm.niah import make_haystack
from sandlot.rlm.trajectory import read_trajectory

KEY = "sk-host-only-secret"

ROOT_CODE = """\
import os, urllib.request
print("key in sandbox:", any("sk-host" in v for v in os.environ.values()))
try:
    urllib.request.urlopen(BASE_URL, timeout=2)
    print("network: open")
except OSError as exc:
    print("network: closed")
words = context.split()
answers = llm_query_batched([f"count:{w}" for w in words])
print("sub answers:", answers)
"""


def scripted(base_url: str) -> Any:
    """Root turns for model 'root', rule answers for model 'sub'."""

    def answer(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if body["model"] == "sub":
            return str(len(messages[-1]["content"].removeprefix("count:")))
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if turns == 0:
            code = ROOT_CODE.replace("BASE_URL", repr(base_url))
            return f"Exploring.\n```repl\n{code}```"
        return "```repl\ntotal = sum(int(a) for a in answers)\n```\nFINAL_VAR(total)"

    return answer


def test_the_real_client_path_keeps_the_key_and_network_on_the_host(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(latency=0.05) as server:
        base_url = server.base_url
        server.reply = scripted(base_url)  # the root's code tries to reach this very server
        root = OpenAICompatibleLM("root", base_url, KEY, backoff=0.01)
        rlm = RLM(root, root.with_model("sub"), sandbox=strict(), trajectory=tmp_path / "t.jsonl")
        result = rlm.completion("alpha be gamma", "How many letters?")
        bodies = [r.body for r in server.requests]
        headers = [r.headers for r in server.requests]
    assert result.finished and result.answer == 12
    second_root_turn = [b for b in bodies if b["model"] == "root"][1]
    told = second_root_turn["messages"][-1]["content"]
    assert "key in sandbox: False" in told and "network: closed" in told
    assert "sub answers: ['5', '2', '5']" in told
    assert sorted(b["model"] for b in bodies) == ["root", "root", "sub", "sub", "sub"]
    assert all(h["authorization"] == f"Bearer {KEY}" for h in headers)
    usage = result.usage.models
    assert usage["root"].calls == 2 and usage["sub"].calls == 3
    assert usage["sub"].prompt_tokens > 0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_niah_command_with_stand_ins_then_view(tmp_path: Path) -> None:
    trajectory = tmp_path / "niah.jsonl"
    done = run_cli(
        "rlm", "niah", "--lines", "5000", "--stand-in", "--sub-latency", "0.01",
        "--pool-size", "4", "--trajectory", str(trajectory),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, needle = make_haystack(5000)
    assert f"Result:   {needle}" in done.stdout and "Match:    True" in done.stdout
    assert "finished after 2 turns" in done.stderr and "stand-in-sub-lm" in done.stderr
    events = list(read_trajectory(trajectory))
    assert events[-1]["type"] == "run_end" and events[-1]["answer"] == needle
    view = run_cli("rlm", "view", str(trajectory))
    assert view.returncode == 0, view.stderr
    assert Path(view.stdout.strip()).read_text().count(needle) >= 1


def test_ask_command_against_a_loopback_server(tmp_path: Path) -> None:
    context = tmp_path / "doc.txt"
    context.write_text("one three five")
    with ScriptedOpenAIServer() as server:
        server.reply = scripted(server.base_url)
        done = run_cli(
            "rlm", "ask", "--context", str(context), "--query", "letters?",
            "--model", "root", "--sub-model", "sub", "--base-url", server.base_url,
            "--api-key-env", "TEST_RLM_KEY", env={"TEST_RLM_KEY": KEY + "x"},
        )  # fmt: skip
        assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}x"}
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12"
    assert "finished after 2 turns" in done.stderr


def test_ask_command_says_what_is_wrong(tmp_path: Path) -> None:
    done = run_cli("rlm", "ask", "--context", str(tmp_path / "missing.txt"), "--query", "q")
    assert done.returncode == 2 and "cannot read the context file" in done.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = run_cli("rlm", "ask", "--context", str(bad), "--query", "q")
    assert done.returncode == 2 and "not valid JSON" in done.stderr
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"k": 1}))
    # An endpoint that refuses the key: the run stops with the reason, exit status 1.
    with ScriptedOpenAIServer(lambda body: ScriptedReply.error(401, "bad key")) as server:
        done = run_cli(
            "rlm", "ask", "--context", str(data), "--query", "q", "--base-url", server.base_url,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "stopped (lm_error)" in done.stderr and "API key" in done.stderr
