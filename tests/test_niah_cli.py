"""``sandlot rlm niah`` (and ``ask``) as the seed's users type them: its flags, --mode, --env-file.

The commands run as a user runs them, in a subprocess. The real-LM path talks to
an OpenAI-compatible server on loopback whose replies are scripted; the key
reaches the client only through the ``--env-file`` and is checked in the
``Authorization`` header the server received, and nowhere else.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from openai_server import ScriptedOpenAIServer, ScriptedReply

from sandlot.rlm.niah import make_haystack, niah_policy
from sandlot.rlm.trajectory import read_trajectory

KEY = "sk-from-the-env-file-only-7f3a"
SEED_FLAGS = ("--mode", "local", "--force-parallel", "--pool-size", "4", "--num-lines", "3000")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sandlot ARGS`` with no LM settings inherited from this environment."""
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def one_line(text: str) -> str:
    """``text`` with rich's line wrapping undone."""
    return " ".join(text.split())


def test_the_seeds_flags_with_stand_ins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"# the seed's .env\nexport OPENAI_API_KEY='{KEY}'\n")
    trajectory = tmp_path / "niah.jsonl"
    done = run_cli(
        "rlm", "niah", *SEED_FLAGS, "--stand-in", "--sub-latency", "0.01",
        "--env-file", str(env_file), "--trajectory", str(trajectory),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, needle = make_haystack(3000)
    assert f"Result:   {needle}" in done.stdout and f"Expected: {needle}" in done.stdout
    assert "Match:    True" in done.stdout
    assert "finished after 2 turns" in done.stderr
    events = list(read_trajectory(trajectory))
    assert events[-1]["answer"] == needle
    assert all(KEY not in text for text in (done.stdout, done.stderr, trajectory.read_text()))


def test_modes_that_do_not_exist_fail_with_one_clear_line() -> None:
    for mode in ("kubernetes", "docker"):
        done = run_cli("rlm", "niah", "--mode", mode, "--stand-in", "--num-lines", "10")
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr
        assert f"--mode '{mode}'" in lines[0]
        assert "modes that exist now: local, modal, ray, ssh" in lines[0]
        assert done.stdout == ""


def test_a_malformed_or_missing_env_file_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text(f"OPENAI_API_KEY={KEY}\nthis line leaks {KEY}\n")
    for command in ("niah", "ask"):
        extra = ("--stand-in",) if command == "niah" else ("--context", str(bad), "--query", "q")
        done = run_cli("rlm", command, *extra, "--env-file", str(bad))
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert f"{bad}:2: expected KEY=VALUE" in one_line(done.stderr)
        assert KEY not in done.stderr + done.stdout
    done = run_cli("rlm", "niah", "--stand-in", "--env-file", str(tmp_path / "nope.env"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def niah_server_script(body: dict[str, Any]) -> str | ScriptedReply:
    """Model 'root' plays the NIAH policy; model 'sub' finds the needle, and leaks the key."""
    messages = body["messages"]
    if body["model"] == "root":
        return niah_policy()(messages)
    found = re.search(r"The magic number is (\d+)", messages[-1]["content"])
    if found:
        return found.group(1)
    # A careless server echoing the key it was sent: the run must not keep or show it.
    return f"NONE (request authorised with {KEY})"


def test_the_real_lm_path_takes_key_and_url_only_from_the_env_file(tmp_path: Path) -> None:
    trajectory = tmp_path / "niah.jsonl"
    env_file = tmp_path / ".env"
    with ScriptedOpenAIServer(niah_server_script) as server:
        env_file.write_text(f'OPENAI_API_KEY="{KEY}"\nOPENAI_BASE_URL={server.base_url}\n')
        done = run_cli(
            "rlm", "niah", *SEED_FLAGS, "--model", "root", "--recursive-model", "sub",
            "--max-iterations", "10", "--env-file", str(env_file), "--trajectory", str(trajectory),
        )  # fmt: skip
        requests = list(server.requests)
    assert done.returncode == 0, done.stderr
    _, needle = make_haystack(3000)
    assert f"Result:   {needle}" in done.stdout and "Match:    True" in done.stdout
    models = [r.body["model"] for r in requests]
    assert models.count("root") == 2 and models.count("sub") >= 3
    assert {r.headers["authorization"] for r in requests} == {f"Bearer {KEY}"}
    on_disk = trajectory.read_text()
    assert "[redacted OPENAI_API_KEY]" in on_disk  # the sub-LM's leak, caught
    assert KEY not in on_disk and KEY not in done.stdout and KEY not in done.stderr
    # Nor did the key reach the root LM's prompts.
    assert all(KEY not in json.dumps(r.body) for r in requests)


def test_the_key_is_redacted_from_an_lm_error(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\n")
    refuse = ScriptedReply.error(401, f"Incorrect API key provided: {KEY}")
    with ScriptedOpenAIServer(lambda body: refuse) as server:
        done = run_cli(
            "rlm", "niah", "--num-lines", "100", "--model", "root", "--base-url", server.base_url,
            "--env-file", str(env_file),
        )  # fmt: skip
        assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert done.returncode == 1
    assert "stopped (lm_error)" in done.stderr and "Match:    False" in done.stdout
    assert "Incorrect API key provided: [redacted OPENAI_API_KEY]" in one_line(done.stderr)
    assert KEY not in done.stderr and KEY not in done.stdout


def test_ask_takes_the_key_from_the_environment_first_then_the_env_file(tmp_path: Path) -> None:
    context = tmp_path / "doc.txt"
    context.write_text("alpha beta")
    env_file = tmp_path / ".env"
    with ScriptedOpenAIServer(lambda body: "FINAL(done)") as server:
        # The file's URL leads nowhere: --base-url wins over it.
        env_file.write_text(f"TEST_KEY=file-{KEY}\nOPENAI_BASE_URL=http://127.0.0.1:9/v1\n")
        common = ("rlm", "ask", "--context", str(context), "--query", "q", "--model", "root")
        args = (*common, "--base-url", server.base_url, "--api-key-env", "TEST_KEY")
        from_env = run_cli(*args, "--env-file", str(env_file), env={"TEST_KEY": f"env-{KEY}"})
        from_file = run_cli(*args, "--env-file", str(env_file))
        seen = [r.headers["authorization"] for r in server.requests]
    assert from_env.returncode == 0 and from_file.returncode == 0, from_file.stderr
    assert from_env.stdout.strip() == "done" and from_file.stdout.strip() == "done"
    assert seen == [f"Bearer env-{KEY}", f"Bearer file-{KEY}"]
    # No key at all, and no server named: one line that says where to put it.
    done = run_cli(*common, "--api-key-env", "TEST_KEY")
    assert done.returncode == 2
    assert "no API key: set TEST_KEY in the environment or in --env-file" in done.stderr
