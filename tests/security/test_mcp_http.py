"""Attacks on ``sandlot mcp --http``: only a loopback listener, and only with the token.

Whoever reaches the HTTP endpoint can run code as the user, so each test tries
a way in: no token, a wrong one, a prefix or extension of the right one, two
Authorization headers, another scheme, a page on another origin or a
rebound DNS name carrying the right token, and listening on a public address.
The server is the real one (uvicorn on 127.0.0.1), run in this process.

The token itself stays off the command line, which every local user can read
(``/proc/PID/cmdline``): ``--token-file`` and ``$SANDLOT_MCP_TOKEN`` keep it
there, and ``--token`` still works but says so on stderr. Those tests run the
real command in its own process and read its command line as another user would.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from sandlot.errors import ConfigError
from sandlot.mcp import build_server, check_loopback, serve_http

pytestmark = pytest.mark.anyio
TOKEN = "the-right-token-0123456789"
HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The URL of a real server on 127.0.0.1 (a free port), stopped after the test."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_http(build_server(), "127.0.0.1", 0, TOKEN, ready.set_result))
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _post(url: str, headers: list[tuple[str, str]]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as client:
        return await client.post(url, json=HELLO, headers=[*ACCEPT.items(), *headers])


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Authorization", "Bearer wrong")],
        [("Authorization", "Bearer")],
        [("Authorization", TOKEN)],
        [("Authorization", f"Basic {TOKEN}")],
        [("Authorization", f"Bearer {TOKEN[:-1]}")],
        [("Authorization", f"Bearer {TOKEN}x")],
        [("Authorization", f"Bearer  {TOKEN}")],
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer wrong")],
        [("X-Authorization", f"Bearer {TOKEN}")],
    ],
)
async def test_requests_without_the_exact_token_get_401(
    url: str, headers: list[tuple[str, str]]
) -> None:
    response = await _post(url, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text


async def test_the_right_token_is_let_in(url: str) -> None:
    for scheme in ("Bearer", "bearer"):
        response = await _post(url, [("Authorization", f"{scheme} {TOKEN}")])
        assert response.status_code == 200, response.text


async def test_other_paths_need_the_token_too(url: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(url.replace("/mcp", "/anything"))
    assert response.status_code == 401


async def test_rebound_host_and_foreign_origin_are_refused_even_with_the_token(url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    auth = ("Authorization", f"Bearer {TOKEN}")
    rebound = await _post(url, [auth, ("Host", f"attacker.example:{port}")])
    assert rebound.status_code == 421
    foreign = await _post(url, [auth, ("Origin", "http://attacker.example")])
    assert foreign.status_code == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""])
def test_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        check_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_addresses_are_accepted(host: str) -> None:
    check_loopback(host)


# -- the token's way in: a file or the environment, not argv --------------------------


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
    command = ["mcp", "--print-config", "--http", "--token-file", str(secret)]
    out = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *command],
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
