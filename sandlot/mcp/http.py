"""The MCP server over streamable HTTP: loopback only, and a bearer token on every request.

Whoever can call these tools can run code as this user (in sandboxes, but
with the user's session server, notebooks and served models), so the HTTP
transport is never left open: it listens on a loopback address only (reach it
from elsewhere through an SSH tunnel, which brings its own authentication),
and every request must carry ``Authorization: Bearer <token>``, compared in
constant time. A loopback port is still reachable by every local user and by
web pages the user opens (DNS rebinding), hence the token and the SDK's Host
and Origin checks both.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError
from ..tasks import TaskScope

PATH = "/mcp"
DEFAULT_PORT = 8765
LOOPBACK_NAMES = ("localhost",)
TOKEN_ENV = "SANDLOT_MCP_TOKEN"
MAX_TOKEN = 1024  # characters


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def given_token(argument: str | None, file: Path | None) -> tuple[str | None, str]:
    """The token the user chose, and how it came: ``--token-file``, ``--token`` or the variable.

    ``(None, "")`` when there is none. A command line is readable by every
    local user (``/proc/PID/cmdline``), so a file or ``$SANDLOT_MCP_TOKEN`` is
    the way to give one; ``--token`` still works, and the caller warns.
    """
    if argument is not None and file is not None:
        raise ConfigError("give the token one way: --token-file FILE, not also --token")
    if file is not None:
        try:
            with open(file, "rb") as fh:
                raw = fh.read(MAX_TOKEN + 2)  # a token and its newline; more is not a token file
            token = raw.decode().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {str(file)!r}: cannot read it ({exc})") from None
        return _checked(token, f"--token-file {str(file)!r}"), "--token-file"
    if argument is not None:
        return _checked(argument, "--token"), "--token"
    env = os.environ.get(TOKEN_ENV)
    if env is not None:
        return _checked(env.strip(), f"${TOKEN_ENV}"), f"${TOKEN_ENV}"
    return None, ""


def _checked(token: str, where: str) -> str:
    if not 0 < len(token) <= MAX_TOKEN or not (token.isascii() and token.isprintable()):
        raise ConfigError(
            f"{where}: a token is one line of 1 to {MAX_TOKEN} printable ASCII characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)"
        )
    if " " in token:
        raise ConfigError(f"{where}: a token holds no spaces")
    return token


def check_loopback(host: str) -> None:
    """Refuse to listen anywhere but a loopback address."""
    if host in LOOPBACK_NAMES:
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ConfigError(
            f"sandlot mcp listens on loopback addresses only (127.0.0.1, ::1, localhost), not "
            f"{host!r}: its tools run code as you. To reach it from another machine, forward "
            "the port over SSH (ssh -L PORT:127.0.0.1:PORT this-host)"
        )


def server_url(host: str, port: int) -> str:
    """The endpoint's URL (IPv6 literals in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{PATH}"


class BearerAuth:
    """ASGI middleware: an HTTP request without the right bearer token gets 401 and no further.

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware`` so that the MCP
    transport's streamed (SSE) responses pass through untouched.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ConfigError("the HTTP server's token must not be empty")
        self.app = app
        self.token = token.encode()

    def _authorized(self, scope: Scope) -> bool:
        """Exactly one Authorization header, scheme Bearer (any case), and the token."""
        values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "unauthorized: send 'Authorization: Bearer <token>'"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="sandlot"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def http_app(server: MCPServer[None], host: str, port: int, token: str) -> ASGIApp:
    """The server's streamable HTTP app behind the token check and Host/Origin checks."""
    names = {host, *LOOPBACK_NAMES, "127.0.0.1", "[::1]"}
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{n}:{port}" for n in sorted(names)],
        allowed_origins=[f"http://{n}:{port}" for n in sorted(names)],
    )
    app = server.streamable_http_app(streamable_http_path=PATH, transport_security=security)
    return BearerAuth(app, token)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0 picks a free port)."""
    check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def serve_http(
    server: MCPServer[None],
    host: str,
    port: int,
    token: str,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted or cancelled; ``on_ready`` gets the URL once the port is bound.

    Cancelling stops the server the way Ctrl-C does: open requests finish and
    the lifespan closes (the server's session handles are detached).
    """
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    app = http_app(server, host, bound_port, token)
    web = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    if on_ready is not None:
        on_ready(server_url(host, bound_port))
    with sock:
        async with TaskScope("serving MCP over HTTP") as scope:  # a second cancel ends it hard
            serving = scope.spawn(web.serve(sockets=[sock]), awaited=True)
            try:
                await asyncio.shield(serving)
            except asyncio.CancelledError:
                web.should_exit = True
                await serving
                raise
