"""Serving: functions served from a sandbox (`serve`), libraries for sessions, `@expose`."""

from ..driver.exposed import expose, models
from .library import Library, McpServerSpec, RemoteError, RemoteLibrary, ServeError

__all__ = [
    "Library",
    "McpServerSpec",
    "RemoteError",
    "RemoteLibrary",
    "ServeError",
    "expose",
    "models",
]
