"""The ``sandlot`` sandbox type for Inspect AI: each sample's tools run in a sandlot sandbox.

``pip install 'sandlot[inspect]'`` registers it through Inspect's ``inspect_ai``
entry point, so ``Task(..., sandbox="sandlot")``, ``sandbox=("sandlot",
"sandlot.yaml")`` and ``inspect eval task.py --sandbox sandlot`` work with
nothing else set up: no daemon, no image, no cluster.

How Inspect drives it, and what this provider does at each step:

- ``task_init``: a pool of sandboxes for the task and config, with ``warm``
  of them started ahead, so a sample's sandbox is a queue pop and not a cold
  start on its critical path.
- ``sample_init``: borrows a fresh sandbox from the pool (never one another
  sample used); Inspect then writes the sample's ``files`` and runs its
  ``setup`` script through :meth:`exec` and :meth:`write_file`.
- ``exec``/``read_file``/``write_file``: Inspect's contract (its errors, its
  output and file size limits, ``cwd`` relative to the working directory).
- ``sample_cleanup``: the sandbox is terminated, with every process it started.
- ``task_cleanup``: the pool is closed. ``cli_cleanup`` (``inspect sandbox
  cleanup sandlot``) removes what a killed eval process left behind.

The config is sandlot's :class:`~sandlot.SandboxConfig` (limits, packages,
files, secrets, volumes, network) plus ``backend`` (``local`` or ``ray``),
``ray`` (the cluster's options) and ``warm``, from a YAML file or an
:class:`InspectConfig`. docs/inspect.md shows it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, overload

from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxConnection,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUnavailableError,
    SandboxUserUnsupportedError,
    sandboxenv,
)
from pydantic import BaseModel, Field

from ..backends.base import Backend
from ..config import SandboxConfig, _Strict
from ..errors import ConfigError, FileTooLarge, SandboxDied
from ..pool import AsyncSandboxPool
from ..sandbox import AsyncSandbox
from ..secrets import Redactor
from ..yamlfile import line_of, read_yaml_file

#: Config files Inspect finds on its own next to a task (``sandbox="sandlot"``).
CONFIG_FILES = ("sandlot.yaml", "sandlot.yml")
MAX_CONFIG_BYTES = 1 << 20
#: Docker's formats, which sandlot does not read: named in the error that refuses them.
DOCKER_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


class RayOptions(_Strict):
    """Where ``backend: ray`` runs the sandboxes (``sandlot.backends.ray.RayBackend``'s options)."""

    address: str | None = Field(
        None, description="The cluster's GCS (host:port) or 'auto'; else $RAY_ADDRESS."
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each sample's sandbox asks for."
    )
    num_cpus: float = Field(0.25, ge=0, description="Ray CPUs a sandbox reserves (no cpus set).")


class InspectConfig(SandboxConfig):
    """A ``sandlot`` sandbox for Inspect: a :class:`~sandlot.SandboxConfig` and where it runs.

    Relative host paths in a config file (``requirements``, ``project``,
    ``env_file``, ``mounts``' sources) are relative to the file's directory.
    """

    backend: Literal["local", "ray"] = Field(
        "local", description="'local': this machine; 'ray': Ray actors on a cluster."
    )
    ray: RayOptions = Field(default_factory=RayOptions, description="Options of backend: ray.")
    warm: int = Field(
        2, ge=0, description="Sandboxes kept started ahead of the samples that will need them."
    )
    # Inspect's tools print whole files and long logs: room for its 10 MiB per stream.
    max_output_bytes: int = Field(
        (2 * 10 << 20) + 1, gt=0, description="Output kept per process, both streams."
    )

    def sandbox_config(self) -> SandboxConfig:
        """The part that makes each sandbox."""
        return SandboxConfig(**self.model_dump(exclude={"backend", "ray", "warm"}))

    def make_backend(self) -> Backend | None:
        """The backend ``backend`` names (None: sandlot's default, this machine)."""
        if self.backend == "local":
            return None
        from ..backends.ray import RayBackend

        return RayBackend(self.ray.address, self.ray.resources or None, num_cpus=self.ray.num_cpus)


def load_config(path: str | Path) -> InspectConfig:
    """Read and check a ``sandlot.yaml``: errors name the file, line and field.

    A Docker compose file or a ``services:`` list is refused with what to do
    instead: sandlot gives each sample one sandbox, its ``default`` one.
    """
    file = Path(path)
    if file.name in DOCKER_FILES or file.name == "Dockerfile":
        raise ConfigError(
            f"{file}: the sandlot sandbox reads its own config (sandlot.yaml), not Docker's "
            f"{file.name}; write the packages and limits the task needs there (docs/inspect.md)"
        )
    root, data = read_yaml_file(file, MAX_CONFIG_BYTES, "the sandlot config")
    if data is None:
        return InspectConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: a sandlot config is a mapping (memory_mb: ..., ...)")
    if "services" in data:
        names = list(data["services"]) if isinstance(data["services"], dict) else []
        raise ConfigError(
            f"{file}:{line_of(root, ['services'])}: services: sandlot gives each sample one "
            f"sandbox (the 'default' one), so multi-service samples ({', '.join(names) or '?'}) "
            "are not supported; put that service's settings at the top level, or run this task "
            "with Docker"
        )
    try:
        return InspectConfig(**_anchored(data, file.resolve().parent))
    except ConfigError as exc:
        lines = []
        for where, message in exc.problems or [("", str(exc))]:
            loc = [p for p in where.split(".") if p and p not in _CLASS_NAMES]
            lines.append(f"{file}:{line_of(root, loc) or 1}: {'.'.join(loc)}: {message}")
        raise ConfigError("invalid sandlot config:\n  " + "\n  ".join(lines)) from None


_CLASS_NAMES = {"InspectConfig", "SandboxConfig", "RayOptions", "Mount", "VolumeMount"}


def _anchored(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` with its relative host paths made relative to ``base`` (the file's directory)."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            return str(base / value)
        return value

    out = dict(data)
    for key in ("project", "env_file"):
        if key in out:
            out[key] = fix(out[key])
    if isinstance(out.get("requirements"), list):
        out["requirements"] = [fix(p) for p in out["requirements"]]
    if isinstance(out.get("mounts"), list):
        out["mounts"] = [
            {**m, "source": fix(m.get("source"))} if isinstance(m, dict) else m
            for m in out["mounts"]
        ]
    return out


def resolve_config(config: SandboxEnvironmentConfigType | None) -> InspectConfig:
    """Inspect's ``config`` for this type: None, a file name, or a model."""
    if config is None:
        found = next((Path(f) for f in CONFIG_FILES if Path(f).is_file()), None)
        return load_config(found) if found is not None else InspectConfig()
    if isinstance(config, str):
        return load_config(config)
    if isinstance(config, InspectConfig):
        return config
    if isinstance(config, SandboxConfig):
        return InspectConfig(**config.model_dump())
    raise ConfigError(
        f"the sandlot sandbox takes a sandlot.yaml file name or an InspectConfig, not a "
        f"{type(config).__name__}"
    )


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """A sandbox that ended under a call is Inspect's ``SandboxUnavailableError``, with why."""
    try:
        yield
    except SandboxDied as exc:
        raise SandboxUnavailableError(f"the sample's sandlot sandbox ended: {exc}") from exc


def _pool_key(config: SandboxEnvironmentConfigType | None) -> str:
    """Which pool serves ``config``: one per config in an eval process.

    Not per task name: Inspect starts and shuts down each sandbox config once
    per eval batch, calling ``task_init`` with ``"startup"`` and
    ``task_cleanup`` with ``"shutdown"``, while samples name their task.
    """
    return config.model_dump_json() if isinstance(config, BaseModel) else str(config)


@sandboxenv(name="sandlot")
class SandlotSandboxEnvironment(SandboxEnvironment):
    """One sample's sandbox: a sandlot sandbox borrowed from its task's pool."""

    _pools: dict[str, AsyncSandboxPool] = {}

    def __init__(self, sandbox: AsyncSandbox, lease: contextlib.AsyncExitStack) -> None:
        super().__init__()
        self.sandbox = sandbox
        self._lease = lease
        self._user: tuple[str, str] | None = None  # the sandbox's user: name and uid
        # The config's secret values never reach the eval log through a command's output.
        self._redactor = Redactor.for_config(sandbox.config)

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def config_files(cls) -> list[str]:
        """The config file names Inspect looks for beside a task."""
        return list(CONFIG_FILES)

    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        """An :class:`InspectConfig` from the dict Inspect serialised (in an eval log)."""
        return InspectConfig(**config)

    @classmethod
    def default_concurrency(cls) -> int | None:
        """Samples holding a sandbox at once when ``--max-sandboxes`` is not given."""
        return 4 * (os.cpu_count() or 1)

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None) -> None:
        """Check the config and start the task's pool, ``warm`` sandboxes ahead."""
        await cls._pool(task_name, config)

    @classmethod
    async def _pool(
        cls, task_name: str, config: SandboxEnvironmentConfigType | None
    ) -> AsyncSandboxPool:
        key = _pool_key(config)
        pool = cls._pools.get(key)
        if pool is None:
            settings = resolve_config(config)
            pool = AsyncSandboxPool(
                settings.sandbox_config(),
                size=1 << 16,  # Inspect's own limiter (--max-sandboxes) caps the samples
                warm=settings.warm,
                backend=settings.make_backend(),
            )
            cls._pools[key] = pool
            try:
                await pool.start()
            except BaseException:
                del cls._pools[key]  # the next sample tries again, and says why again
                raise
        return pool

    @classmethod
    async def sample_init(
        cls,
        task_name: str,
        config: SandboxEnvironmentConfigType | None,
        metadata: dict[str, str],
    ) -> dict[str, SandboxEnvironment]:
        """A fresh sandbox for the sample, its one (``default``) environment."""
        pool = await cls._pool(task_name, config)
        lease = contextlib.AsyncExitStack()
        sandbox = await lease.enter_async_context(pool.sandbox(clean=True))
        return {"default": cls(sandbox, lease)}

    @classmethod
    async def sample_cleanup(
        cls,
        task_name: str,
        config: SandboxEnvironmentConfigType | None,
        environments: dict[str, SandboxEnvironment],
        interrupted: bool,
    ) -> None:
        """Give the sample's sandbox back: it is terminated with all it started."""
        for environment in environments.values():
            if isinstance(environment, cls):
                await environment._lease.aclose()

    @classmethod
    async def task_cleanup(
        cls, task_name: str, config: SandboxEnvironmentConfigType | None, cleanup: bool
    ) -> None:
        """Close the task's pool (its warm sandboxes end; lent ones end as samples finish)."""
        pool = cls._pools.pop(_pool_key(config), None)
        if pool is not None:
            await pool.close()

    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        """``inspect sandbox cleanup sandlot``: what eval processes that died left on this host.

        Their sandboxes died with them (each dies with its host process); this
        removes their cgroups (killing anything left in them) and their
        working directories. ``id`` is not used: sandlot keeps no named
        sandboxes between processes.
        """
        from ..backends.local import sweep_leftovers

        await asyncio.to_thread(sweep_leftovers)

    # -- the contract ----------------------------------------------------------

    async def exec(
        self,
        cmd: list[str],
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: int | None = None,
        timeout_retry: bool = True,
        concurrency: bool = True,
    ) -> ExecResult[str]:
        """Run ``cmd`` in the sample's sandbox with Inspect's semantics and errors.

        ``user`` may name only the sandbox's own user; ``timeout_retry`` and
        ``concurrency`` do not apply (a sandlot command that ran past its
        timeout was killed, with its process group; sandboxes are not
        throttled beyond ``--max-sandboxes``).
        """
        limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
        kept: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        with _unavailable():
            await self._check_user(user)
            proc = self.sandbox.exec_stream(*cmd, stdin=input, cwd=cwd, env=env, timeout=timeout)
            try:
                async for chunk in proc:
                    into = kept[chunk.stream]
                    into += chunk.data
                    if len(into) > limit:
                        raise OutputLimitExceededError(
                            SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR,
                            self._text(into)[:limit],  # redacted first: no secret's first half
                        )
            finally:
                await proc.kill()
        result = proc.result
        assert result is not None
        if result.timed_out:
            raise TimeoutError(f"{shlex.join(cmd)[:200]} ran past its {timeout}s timeout")
        if result.spawn_error is not None and result.spawn_error.startswith("PermissionError"):
            raise PermissionError(f"cannot run {cmd[0]!r}: {result.spawn_error}")
        returncode = result.returncode
        if returncode < 0:  # killed by a signal: the shell's convention, as Docker reports it
            returncode = 128 - returncode
        stderr = self._text(kept["stderr"])
        if result.spawn_error is not None:
            stderr = self._text(bytearray(f"{cmd[0]}: {result.spawn_error}\n".encode()))
        return ExecResult(
            success=returncode == 0,
            returncode=returncode,
            stdout=self._text(kept["stdout"]),
            stderr=stderr,
        )

    def _text(self, data: bytearray) -> str:
        """Output as Inspect shows it: UTF-8 (bad bytes replaced), the config's secrets redacted."""
        text = bytes(data).decode("utf-8", "replace")
        return self._redactor.redact(text) if self._redactor else text

    async def write_file(self, file: str, contents: str | bytes) -> None:
        """Write ``file`` (parents made), refusing a file its user may not write, as ``open``."""
        with _unavailable():
            check = await self.sandbox.exec(
                "/bin/sh", "-c", 'test ! -e "$1" || test -d "$1" || test -w "$1"', "sh", file
            )
            if check.returncode == 1:
                raise PermissionError(f"write {file!r}: the file is not writable")
            await self.sandbox.files.write(file, contents)

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> str | bytes:
        """The file's bytes, or its UTF-8 text with line endings as they are.

        Text has the config's secrets redacted, as command output has (scorers and
        tools copy it into the eval log); bytes come back as they are.
        """
        try:
            with _unavailable():
                data = await self.sandbox.files.read(
                    file, max_bytes=SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
                )
        except FileTooLarge:
            raise OutputLimitExceededError(
                SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, None
            ) from None
        if not text:
            return data
        decoded = data.decode("utf-8")
        return self._redactor.redact(decoded) if self._redactor else decoded

    async def connection(self, *, user: str | None = None) -> SandboxConnection:
        """Not offered: a sandlot sandbox has no port another process could attach a shell to."""
        raise NotImplementedError(
            "the sandlot sandbox is reachable only from the eval process that started it; "
            "use `inspect eval ... --no-sandbox-cleanup` and sandlot's own tools to inspect it"
        )

    def default_polling_interval(self) -> float:
        """How often Inspect polls a long-running ``exec_remote`` command."""
        return 0.2

    async def _check_user(self, user: str | None) -> None:
        """Refuse a ``user`` other than the sandbox's own (every command runs as that one)."""
        if user is None:
            return
        if self._user is None:
            said = (await self.sandbox.exec("/bin/sh", "-c", "id -un; id -u")).stdout.split()
            said += ["?", "?"]  # what a sandbox that lies about itself leaves out
            self._user = (said[0][:100], said[1][:20])
        name, uid_text = self._user
        if user not in self._user:
            raise SandboxUserUnsupportedError(
                f"the sandlot sandbox runs every command as {name!r} (uid {uid_text}); "
                f"it cannot run one as {user!r}"
            )
