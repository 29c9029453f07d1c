"""MCP servers over notebook sessions: what ``sandlot mcp`` runs.

:func:`build_server` makes the server for a mode (notebook, filesystem, mcp);
run it over stdio with :func:`serve_stdio` or over loopback HTTP with a bearer
token with :func:`serve_http`. :func:`render_config` prints what to paste into
Claude Code's and Cursor's configuration. Needs the ``notebook`` extra.
"""

from .clients import find_session, render_config
from .http import DEFAULT_PORT, check_loopback, given_token, new_token, serve_http, server_url
from .images import ImageLimits, image_content
from .render import RenderLimits, render_execution
from .server import build_server
from .stdio import serve_stdio

__all__ = [
    "DEFAULT_PORT",
    "ImageLimits",
    "RenderLimits",
    "build_server",
    "check_loopback",
    "find_session",
    "given_token",
    "image_content",
    "new_token",
    "render_config",
    "render_execution",
    "serve_http",
    "serve_stdio",
    "server_url",
]
