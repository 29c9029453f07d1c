"""Functions served from a sandbox (``@expose``, ``serve``) and libraries for sessions."""

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
