"""Attacks on ``sandlot mcp --http``: only a loopback listener, and only with the token.

Whoever reaches the HTTP endpoint can run code as the user, so each test tries
a way in: no token, a wrong one, a prefix or extension of the right one, two
Authorization headers, another scheme, a page on another origin or a
rebound DNS name carrying the right token, and listening on a public address.
The server is the real one (uvicorn on 127.0.0.1), run in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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
