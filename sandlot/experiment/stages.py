"""The first two stages of an experiment: the environment, then the execution interface.

``setup_environment(config)`` checks everything the experiment needs on this
host (the backend, the GPUs, the files, the secrets, the models' paths, the
skills) and builds the sandboxes' Python environments, so that nothing fails
late and stage 2 starts from a warm cache. ``setup_execution(env, config)``
starts the notebook session (or the filesystem or mcp one) an agent works in:
the models loaded, skills defined, interfaces served, init code run. Each is
usable alone; the harness (stage 3) takes what they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import backends
from ..backends import envs, gpus
from ..config import SandboxConfig
from ..errors import ConfigError
from ..notebook import AsyncNotebookSession, astart_session, load_skills
from ..notebook.session import with_kernel
from ..secrets import Redactor, all_secret_values
from ..serving.library import Library
from ..sink import Sink
from ..sync import blocking_twin
from ..workspace import Workspace
from .config import ExperimentConfig


@dataclass
class EnvironmentHandle:
    """Stage 1's result: the checked configuration of the sandboxes an experiment uses.

    ``session_config`` is the agent's sandbox (the kernel in notebook mode);
    ``serve_config`` the sandbox that serves the interfaces (None without any).
    The models and the GPU go to the kernel, or to the serving sandbox when the
    execution serves them there.
    """

    config: ExperimentConfig
    backend: str | None
    session_config: SandboxConfig
    serve_config: SandboxConfig | None
    gpus: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @functools.cached_property
    def sink(self) -> Sink:
        """What the runs keep passes this: the secrets the sandboxes get, redacted.

        Made once: every run of the experiment reads the same secrets.
        """
        return Sink(Redactor(all_secret_values(self.session_config, self.serve_config)))

    def describe(self) -> str:
        """One line on what was set up."""
        env = self.config.environment
        parts = [f"backend {self.backend or 'local'}"]
        if self.gpus:
            parts.append(f"GPUs {self.gpus}")
        if env.python_packages:
            parts.append(f"{len(env.python_packages)} package(s)")
        if env.models:
            where = "served" if self.config.execution.models_served() else "in the kernel"
            parts.append(f"{len(env.models)} model(s) {where}")
        files = len(env.local_files) + len(env.local_dirs)
        if files:
            parts.append(f"{files} input(s) at /inputs")
        return ", ".join(parts) + f" ({self.seconds:.1f} s)"


@dataclass
class ExecutionHandle:
    """Stage 2's result: a live session an agent works in, attachable by ``session_id``."""

    session: AsyncNotebookSession
    mode: str
    seconds: float = 0.0

    @property
    def session_id(self) -> str:
        """The id any process (an MCP server, another agent) attaches by."""
        return self.session.session_id

    @property
    def notebook_path(self) -> str | None:
        """The ``.ipynb`` the session writes (notebook mode)."""
        return self.session.notebook_path

    @property
    def kernel_id(self) -> str | None:
        """The kernel's id (notebook mode)."""
        return self.session.info.kernel_id

    @property
    def status(self) -> str:
        """The session's status when it was started or last refreshed (``idle``, ``busy``...)."""
        return self.session.info.status

    @property
    def prompt(self) -> str:
        """What the session holds (models, skills, libraries), in words for an agent."""
        return self.session.prompt

    @property
    def functions(self) -> list[dict[str, Any]]:
        """The served functions as tools: name, description, input schema."""
        return list(self.session.info.functions)

    async def aclose(self, *, shutdown: bool = True) -> None:
        """End the session (``shutdown``) or only detach from it; the notebook file stays."""
        with contextlib.suppress(Exception):
            if shutdown:
                await self.session.shutdown()
            else:
                await self.session.close()

    close = blocking_twin(aclose)


NotebookHandle = ExecutionHandle
"""The seed's name for stage 2's result (in notebook mode, as in every mode)."""


def _looks_local(name: str) -> bool:
    """Whether a model's name is a host path rather than a hub id (``org/name`` at most)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _check_paths(config: ExperimentConfig) -> None:
    env, execution = config.environment, config.execution
    problems: list[str] = []
    for where, paths, fits, kind in (
        ("environment.local_files", env.local_files, Path.is_file, "a file"),
        ("environment.local_dirs", env.local_dirs, Path.is_dir, "a directory"),
        ("execution.interfaces", execution.interfaces, Path.is_file, "a file"),
        ("execution.libraries", execution.libraries, Path.exists, "a file or directory"),
    ):
        for p in paths:
            if not fits(Path(p)):
                wrong = f"is not {kind}" if Path(p).exists() else "does not exist"
                problems.append(f"{where}: {p} {wrong}")
    # A local model's files are read in stage 2, by the sandbox (its load_code too, through
    # config["name"]): a path that is missing here fails there, so it fails now.
    for i, model in enumerate(env.models):
        for field_name, value in (("name", model.name), ("adapter", model.adapter)):
            if value and _looks_local(value) and not Path(value).expanduser().exists():
                problems.append(
                    f"environment.models.{i}.{field_name}: {value} does not exist on this "
                    "host; make it first, or name a hub id"
                )
    missing = [name for name in env.secrets if name not in os.environ]
    if missing:
        problems.append(f"environment.secrets {missing} are not set in this environment")
    if problems:
        raise ConfigError("the environment is not ready:\n  " + "\n  ".join(problems))


def setup_environment(config: ExperimentConfig) -> EnvironmentHandle:
    """Stage 1: check the host has what ``config`` needs and build the Python environments.

    Raises ``ConfigError`` naming what is missing: an unknown backend, GPUs this
    machine lacks, input files, interfaces, libraries or model paths that do not
    exist, secrets that are not set, a skill that does not parse (file and line).
    """
    started = time.monotonic()
    env, execution = config.environment, config.execution
    if env.backend is not None and env.backend not in backends.names():
        raise ConfigError(
            f"environment.backend {env.backend!r} is unknown; backends: {backends.names()}"
        )
    _check_paths(config)
    if execution.skills:
        load_skills(execution.skills)  # a bad skill fails now, with its file and line
    served = execution.models_served() and bool(execution.interfaces)
    session_config = env.sandbox_config(models=not served)
    serve_config = env.sandbox_config(models=True) if execution.interfaces else None
    found = gpus.select(env.gpu) if env.gpu is not None and env.backend in (None, "local") else []
    if env.backend in (None, "local"):
        kernel = with_kernel(session_config) if execution.type == "notebook" else session_config
        python = envs.base_python()
        for sandbox in [kernel, *([serve_config] if serve_config else [])]:
            envs.ensure_env(python, envs.spec_for(sandbox, "/workspace"))
    return EnvironmentHandle(
        config=config,
        backend=env.backend,
        session_config=session_config,
        serve_config=serve_config,
        gpus=found,
        seconds=time.monotonic() - started,
    )


async def asetup_execution(
    env: EnvironmentHandle,
    config: ExperimentConfig | None = None,
    *,
    notebook: str | Path | None = None,
    name: str | None = None,
    persist: bool = False,
) -> ExecutionHandle:
    """Stage 2: start the session the agent works in, warm, and return a handle on it.

    ``notebook`` is the ``.ipynb`` written as cells run (default: one under
    ``./notebooks``). ``persist`` lets the session outlive this process until it
    idles ``execution.idle_timeout`` seconds or is shut down (what ``deploy``
    does); otherwise it ends with the handle.
    """
    config = config or env.config
    execution = config.execution
    started = time.monotonic()
    libraries = [
        Library.from_directory(p) if Path(p).is_dir() else Library.from_file(p)
        for p in execution.libraries
    ]
    session = await astart_session(
        env.session_config,
        Workspace(libraries=list(libraries)) if libraries else None,
        notebook,
        name or config.name,
        skills=execution.skills,
        init_code=execution.init_code,
        mode=execution.type,
        persist=persist,
        idle_timeout=execution.idle_timeout,
        backend=env.backend,
        serve=execution.interfaces,
        serve_config=env.serve_config,
        cell_timeout=execution.cell_timeout,
    )
    return ExecutionHandle(session, execution.type, time.monotonic() - started)


setup_execution = blocking_twin(asetup_execution)


async def asetup_environment(config: ExperimentConfig) -> EnvironmentHandle:
    """:func:`setup_environment` on a worker thread (it builds environments: it blocks)."""
    return await asyncio.to_thread(setup_environment, config)
