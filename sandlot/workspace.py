"""Workspaces and local sessions: a sandbox whose workdir holds the libraries it imports.

``create_local_session(workspace=Workspace(libraries=[...]), workspace_dir="./ws")``
installs each library into the workspace (local code as files, served libraries
as generated modules), routes the served ones through this host, and starts a
sandbox whose REPL can ``import`` them all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import BackendSpec, resolve
from .backends.local import LocalBackend
from .config import SandboxConfig
from .errors import ConfigError
from .serving.library import Library, RemoteLibrary
from .sync import Sandbox


@dataclass
class Workspace:
    """What a session's workdir starts with: libraries to import."""

    libraries: list[Library | RemoteLibrary] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [lib.name for lib in self.libraries]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"Workspace: more than one library named {', '.join(twice)}")

    def install(self, directory: Path) -> list[Path]:
        """Write every library into ``directory``; return the paths written."""
        directory.mkdir(parents=True, exist_ok=True)
        return [lib.install(directory) for lib in self.libraries]


class Session(Sandbox):
    """A sandbox whose workdir is a workspace; ``name`` identifies it."""

    def __init__(
        self,
        name: str,
        workspace: Workspace,
        config: SandboxConfig | None = None,
        *,
        backend: BackendSpec = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(config, backend=backend, tools=tools)
        self.name = name
        self.workspace = workspace
        for lib in workspace.libraries:
            if isinstance(lib, RemoteLibrary):
                for function in lib.functions:
                    self._async.router.add_route(f"{lib.name}.{function}", lib.route(function))

    def start(self) -> Session:
        """Start the sandbox and install the workspace's libraries in its workdir."""
        super().start()
        with tempfile.TemporaryDirectory(prefix="sandlot-workspace-") as staging:
            self.workspace.install(Path(staging))
            self.upload(staging, ".")
        return self


def create_local_session(
    workspace: Workspace | None = None,
    workspace_dir: str | Path | None = None,
    name: str = "session",
    config: SandboxConfig | None = None,
    *,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    backend: BackendSpec = None,
) -> Session:
    """Start a session with ``workspace`` installed in its workdir.

    ``workspace_dir`` is the host directory behind the workdir (kept after the
    session ends); without it the session gets a temporary one. ``backend``
    says where the session's sandbox runs (see :mod:`sandlot.backends`).
    """
    config = config if config is not None else SandboxConfig()
    if workspace_dir is not None:
        # A host directory behind the workdir: the local backend's option.
        local = resolve(backend)
        if not isinstance(local, LocalBackend):
            raise ConfigError(
                "workspace_dir is a host directory: it needs the local backend "
                "(leave backend unset, or give backend='local')"
            )
        folder = Path(workspace_dir).expanduser().resolve()
        if local.workdir is not None and local.workdir != str(folder):
            raise ConfigError(
                f"workspace_dir {str(folder)!r} and the backend's workdir {local.workdir!r} "
                "differ; give one of them"
            )
        folder.mkdir(parents=True, exist_ok=True)
        backend = LocalBackend(workdir=folder, python=local.python, stdio=local.stdio)
    session = Session(name, workspace or Workspace(), config, tools=tools, backend=backend)
    return session.start()
