"""Serving: functions served from a sandbox (`serve`), libraries for sessions, `@expose`."""

from ..driver.exposed import expose, models
from ..errors import RemoteError, ServeError
from .library import Library, McpServerSpec, RemoteLibrary

__all__ = [
    "Library",
    "McpServerSpec",
    "RemoteError",
    "RemoteLibrary",
    "ServeError",
    "expose",
    "models",
]
