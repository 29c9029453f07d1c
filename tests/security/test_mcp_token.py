"""No secret on a command line: ``sandlot mcp --http`` reads its token from a file or a variable.

Every local user can read every process's ``/proc/PID/cmdline``, so a token
given there is the local users' token too. ``--token-file`` and
``$SANDLOT_MCP_TOKEN`` keep it out of the command line; ``--token`` still works
and says so on stderr. Each test runs the real command (its own process, on
127.0.0.1) and reads its command line the way another user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from sandlot.errors import ConfigError

pytestmark = pytest.mark.timeout(60)
TOKEN = "tok-3b1f0c9e-only-in-the-file"
HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SANDLOT_MCP_TOKEN"}
    return {**env, **extra}


@contextmanager
def _server(args: list[str], env: dict[str, str]) -> Iterator[tuple[int, str, list[str]]]:
    """``sandlot mcp --http --port 0 ARGS``: its PID, its URL, and its stderr lines up to it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandlot.cli", "mcp", "--http", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not lines or "MCP server at" not in lines[-1]:
            line = proc.stderr.readline()
            assert line, f"the server ended: {''.join(lines)}"
            lines.append(line)
        found = re.search(r"MCP server at (\S+?)[;\s]", lines[-1])
        assert found, lines
        yield proc.pid, found.group(1), lines
    finally:
        proc.terminate()
        proc.wait(10)


def _status(url: str, token: str | None) -> int:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx2.post(url, json=HELLO, headers={**ACCEPT, **auth}, timeout=10)
    return response.status_code


@pytest.mark.parametrize("how", ["--token-file", "SANDLOT_MCP_TOKEN"])
def test_the_token_stays_off_the_command_line(how: str, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    args, env = (
        ([how, str(secret)], _env()) if how == "--token-file" else ([], _env(**{how: TOKEN}))
    )
    with _server(args, env) as (pid, url, lines):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"mcp" in cmdline and TOKEN.encode() not in cmdline
        assert not any("warning" in line for line in lines), lines
        assert TOKEN not in "".join(lines)
        assert _status(url, None) == 401
        assert _status(url, "wrong") == 401
        assert _status(url, TOKEN) == 200


def test_a_token_given_as_an_argument_works_and_is_warned_about() -> None:
    with _server(["--token", TOKEN], _env()) as (_, url, lines):
        warning = "".join(lines[:-1])
        assert "--token" in warning and "/proc/PID/cmdline" in warning
        assert "--token-file" in warning
        assert _status(url, TOKEN) == 200


def test_print_config_with_a_token_file_writes_no_token(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandlot.cli",
            "mcp",
            "--print-config",
            "--http",
            *("--token-file", str(secret)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr
    assert TOKEN not in out.stdout
    assert "Bearer ${SANDLOT_MCP_TOKEN}" in out.stdout
    assert f"--token-file {secret}" in out.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [("", "1 to 1024 printable"), ("two words", "no spaces"), ("x" * 5000, "1 to 1024")],
)
def test_a_bad_token_file_is_refused_with_what_to_do(
    tmp_path: Path, content: str, problem: str
) -> None:
    from sandlot.mcp import given_token  # here: the other tests run against any version

    secret = tmp_path / "token"
    secret.write_text(content)
    with pytest.raises(ConfigError, match=f"--token-file .*{problem}"):
        given_token(None, secret)
    with pytest.raises(ConfigError, match="one way"):
        given_token(TOKEN, secret)
