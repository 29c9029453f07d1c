"""``SandlotSandboxClient``: the OpenAI Agents SDK's sandbox client on sandlot sandboxes.

The SDK's ``SandboxAgent`` runs its shell (``exec_command``) and file tools
(``apply_patch``, ``view_image``) through a sandbox session that a sandbox client
creates, resumes and deletes (``agents.sandbox``). Its built-in
``UnixLocalSandboxClient`` runs those commands as the agent's own user on the
host, with no OS confinement on Linux; this client runs them in a sandlot
sandbox instead: a separate process tree under bubblewrap, with its own
``/workspace`` and ``/tmp``, no network unless the config grants it, and the
memory, process, CPU and disk ceilings of its :class:`~sandlot.SandboxConfig`::

    import sandlot
    from agents import Runner, RunConfig
    from agents.sandbox import SandboxAgent, SandboxRunConfig
    from sandlot.integrations.openai_agents import SandlotSandboxClient

    client = SandlotSandboxClient(sandlot.SandboxConfig(memory_mb=1024))
    agent = SandboxAgent(name="coder", model=..., instructions="...")
    result = await Runner.run(agent, "task", run_config=RunConfig(
        sandbox=SandboxRunConfig(client=client)))

How the SDK's contract maps onto a sandbox:

- ``create`` / ``resume`` make a session; its ``start`` starts the sandbox (or
  borrows one from an :class:`~sandlot.AsyncSandboxPool`), then the SDK
  materialises the manifest, or restores the workspace snapshot on a resume.
  The sandbox's settings always come from the client, never from a session state
  (which a user may keep on disk and load again), so a state cannot grant itself
  a mount or the network.
- ``exec`` runs a process in the sandbox; a timeout kills its process group and
  raises the SDK's ``ExecTimeoutError`` (the shell tool tells the model so and the
  run goes on); a sandbox that died raises ``ExecTransportError``.
- ``read`` / ``write`` use sandlot's files API; ``ls``, ``mkdir``, ``rm`` and
  ``mv`` are the SDK's own, done with ``exec`` in the sandbox.
- ``persist_workspace`` downloads the workspace through sandlot's checked
  download (a strict tar reader on the host that creates regular files and
  directories only, refuses absolute and ``..`` names and anything under a
  link, and caps bytes and members) into a fresh host directory, then archives
  that copy itself. The snapshot the SDK stores is therefore made by the host from
  files the host created: symbolic links and special files in the workspace are
  left out (and warned about), and a forged stream fails the persist without
  writing anything outside that directory.
- ``hydrate_workspace`` checks the archive with the SDK's own validator, as its
  Docker backend does, and unpacks it inside the sandbox (``tar -x``), so nothing
  in it is ever unpacked on the host.
- ``shutdown`` and ``delete`` end the sandbox (or give it back to its pool).

The sandbox lives on the event loop that started it: run the agent with
``Runner.run`` in one asyncio program (``Runner.run_sync`` works too; each call
starts and ends its own sandboxes). docs/integrations.md lists the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Literal

from ..backends import BackendSpec
from ..config import SandboxConfig
from ..errors import DownloadRefused, SandboxDied, SandboxError
from ..pool import AsyncSandboxPool
from ..sandbox import AsyncSandbox
from ..secrets import Redactor

try:
    from agents.sandbox.errors import (
        ExecTimeoutError,
        ExecTransportError,
        WorkspaceArchiveReadError,
        WorkspaceArchiveWriteError,
        WorkspaceReadNotFoundError,
        WorkspaceStartError,
    )
    from agents.sandbox.manifest import Manifest
    from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
    from agents.sandbox.session.dependencies import Dependencies
    from agents.sandbox.session.manager import Instrumentation
    from agents.sandbox.session.sandbox_client import BaseSandboxClient
    from agents.sandbox.session.sandbox_session import SandboxSession
    from agents.sandbox.session.sandbox_session_state import SandboxSessionState
    from agents.sandbox.session.workspace_payloads import coerce_write_payload
    from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot
    from agents.sandbox.types import ExecResult, User
    from agents.sandbox.util.tar_utils import (
        UnsafeTarMemberError,
        should_skip_tar_member,
        validate_tarfile,
    )
    from agents.sandbox.workspace_paths import sandbox_path_str
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sandlot.integrations.openai_agents needs the OpenAI Agents SDK ({exc}); "
        "install it with: pip install 'sandlot[openai-agents]'"
    ) from exc

__all__ = ["SandlotSandboxClient", "SandlotSandboxSession", "SandlotSandboxSessionState"]

#: The client's ``backend_id``: how a saved ``RunState`` names the client that resumes it.
BACKEND_ID = "sandlot"
#: What one snapshot of a workspace may hold, on the host, by default.
DEFAULT_MAX_WORKSPACE_BYTES = 1 << 30
DEFAULT_MAX_WORKSPACE_MEMBERS = 100_000
# Where an archive to hydrate waits inside the sandbox (its private /tmp) while it is unpacked.
_STAGING_DIR = "/tmp/.sandlot-openai-agents"
# A snapshot this size or smaller stays in memory; a larger one spills to a host temp file.
_SPOOL_IN_MEMORY = 16 << 20
NO_ACCOUNTS = (
    "a sandlot sandbox runs everything as its one unprivileged user, so manifest users and "
    "groups (and SandboxAgent(run_as=...)) are not supported; leave them out"
)

Opener = Callable[[contextlib.AsyncExitStack], Awaitable[AsyncSandbox]]


class SandlotSandboxSessionState(SandboxSessionState):
    """The serialisable state of a sandlot session (what a ``RunState`` keeps to resume).

    It holds the SDK's fields only: the sandbox's config is the client's, so a
    state read back from disk cannot change what the sandbox may reach.
    """

    type: Literal["sandlot"] = "sandlot"


class SandlotSandboxSession(BaseSandboxSession):
    """One SDK sandbox session on one sandlot sandbox.

    Made by :class:`SandlotSandboxClient`; the SDK wraps it in its
    ``SandboxSession``. :attr:`sandbox` is the live :class:`~sandlot.AsyncSandbox`,
    for tools of your own that want sandlot's API (``run_code``, ``files``) in the
    same sandbox the agent's shell uses.
    """

    state: SandlotSandboxSessionState

    def __init__(
        self,
        state: SandlotSandboxSessionState,
        *,
        open_sandbox: Opener,
        max_workspace_bytes: int,
        max_workspace_members: int,
    ) -> None:
        self.state = state
        self._open_sandbox = open_sandbox
        self._max_workspace_bytes = max_workspace_bytes
        self._max_workspace_members = max_workspace_members
        self._sandbox: AsyncSandbox | None = None
        self._lease: contextlib.AsyncExitStack | None = None
        self._redactor: Redactor | None = None

    @property
    def sandbox(self) -> AsyncSandbox:
        """The sandlot sandbox this session runs in (started by ``start()``)."""
        if self._sandbox is None:
            raise RuntimeError("this session has no sandbox: start() it first")
        return self._sandbox

    # -- lifetime --------------------------------------------------------------

    async def _ensure_backend_started(self) -> None:
        if self._sandbox is not None and self._sandbox.is_alive:
            return
        await self._release()
        lease = contextlib.AsyncExitStack()
        try:
            sandbox = await self._open_sandbox(lease)
            redactor = Redactor.for_config(sandbox.config)
        except BaseException:
            await lease.aclose()
            raise
        self._sandbox, self._lease, self._redactor = sandbox, lease, redactor
        default_root = Manifest.model_fields["root"].default
        if self.state.manifest.root == default_root and sandbox.workdir != default_root:
            self.state.manifest = self.state.manifest.model_copy(update={"root": sandbox.workdir})

    async def _prepare_backend_workspace(self) -> None:
        root = self._workspace_root_path()
        try:
            await self.sandbox.files.mkdir(root.as_posix())
        except SandboxError as exc:
            raise WorkspaceStartError(path=root, cause=exc) from exc

    async def _shutdown_backend(self) -> None:
        await self._release()

    async def _release(self) -> None:
        """End the sandbox, or give it back to its pool; safe to call more than once."""
        lease, self._lease, self._sandbox = self._lease, None, None
        if lease is not None:
            with contextlib.suppress(SandboxError):
                await lease.aclose()

    async def running(self) -> bool:
        return self._sandbox is not None and self._sandbox.is_alive

    def _should_compute_snapshot_fingerprint_on_persist(self) -> bool:
        # A fingerprint lets a resume reuse a workspace that survived; a sandlot sandbox
        # never outlives its session, so a resume always restores the snapshot.
        return False

    # -- users -----------------------------------------------------------------

    async def provision_manifest_accounts(self) -> None:
        if self.state.manifest.users or self.state.manifest.groups:
            raise ValueError(NO_ACCOUNTS)

    def _prepare_exec_command(
        self, *command: str | Path, shell: bool | list[str], user: str | User | None
    ) -> list[str]:
        _no_user(user)
        return super()._prepare_exec_command(*command, shell=shell, user=None)

    # -- processes -------------------------------------------------------------

    async def _exec_internal(
        self, *command: str | Path, timeout: float | None = None
    ) -> ExecResult:
        argv = [str(part) for part in command]
        sandbox = self._sandbox
        if sandbox is None or not sandbox.is_alive:
            raise ExecTransportError(
                command=argv, message="the sandlot sandbox is not running (start() it first)"
            )
        env = await self.state.manifest.environment.resolve()
        kept: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        try:
            process = sandbox.exec_stream(
                *argv, timeout=timeout, cwd=self._workspace_root_path().as_posix(), env=env
            )
            async for chunk in process:
                kept[chunk.stream].append(chunk.data)
        except SandboxDied as exc:
            raise ExecTransportError(
                command=argv,
                message=self._redact(
                    f"the sandlot sandbox died ({exc.cause}): {exc.detail or 'no detail'}".encode()
                ).decode("utf-8", "replace"),
                context={"cause": exc.cause},
                cause=exc,
                retryable=False,
            ) from exc
        except SandboxError as exc:
            raise ExecTransportError(command=argv, cause=exc) from exc
        result = process.result
        assert result is not None
        if result.timed_out:
            raise ExecTimeoutError(command=argv, timeout_s=timeout)
        return ExecResult(
            stdout=self._redact(b"".join(kept["stdout"])),
            stderr=self._redact(b"".join(kept["stderr"])),
            exit_code=result.returncode,
        )

    def _redact(self, data: bytes) -> bytes:
        """``data`` with the config's secret values replaced, as everything sandlot shows an LM."""
        redactor = self._redactor
        return redactor.redact_bytes(data) if redactor else data

    # -- files -----------------------------------------------------------------

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        _no_user(user)
        workspace_path = await self._validate_path_access(path)
        try:
            data = await self.sandbox.files.read(
                sandbox_path_str(workspace_path), max_bytes=self._max_workspace_bytes
            )
        except FileNotFoundError as exc:
            raise WorkspaceReadNotFoundError(path=workspace_path, cause=exc) from exc
        except (SandboxError, RuntimeError) as exc:
            raise WorkspaceArchiveReadError(path=workspace_path, cause=exc) from exc
        return io.BytesIO(data)

    async def write(self, path: Path, data: io.IOBase, *, user: str | User | None = None) -> None:
        _no_user(user)
        payload = coerce_write_payload(path=path, data=data)
        workspace_path = await self._validate_path_access(path, for_write=True)
        content = payload.stream.read()
        try:
            await self.sandbox.files.write(sandbox_path_str(workspace_path), content)
        except (SandboxError, RuntimeError) as exc:
            raise WorkspaceArchiveWriteError(path=workspace_path, cause=exc) from exc

    # -- snapshots -------------------------------------------------------------

    async def persist_workspace(self) -> io.IOBase:
        """The workspace as a tar of workspace-relative names, made on the host.

        The sandbox's tar stream goes through sandlot's checked download into a
        fresh host directory; the archive is then made from that copy, so it holds
        regular files and directories only, with the names the host gave them.
        """
        root = self._workspace_root_path()
        skip = self._persist_workspace_skip_relpaths()
        with tempfile.TemporaryDirectory(prefix="sandlot-openai-agents-") as scratch:
            copy = Path(scratch) / "workspace"
            try:
                await self.sandbox.files.download(
                    root.as_posix(),
                    copy,
                    max_bytes=self._max_workspace_bytes,
                    max_members=self._max_workspace_members,
                )
            except DownloadRefused as exc:
                raise WorkspaceArchiveReadError(
                    path=root, context={"reason": "refused_by_host", "detail": str(exc)}, cause=exc
                ) from exc
            except (SandboxError, RuntimeError) as exc:
                raise WorkspaceArchiveReadError(path=root, cause=exc) from exc
            if not copy.is_dir():
                raise WorkspaceArchiveReadError(
                    path=root, context={"reason": "workspace_root_not_a_directory"}
                )
            archive = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
            try:
                await asyncio.to_thread(_archive_tree, copy, archive, skip)
            except BaseException:
                archive.close()
                raise
        archive.seek(0)
        return archive

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        """Unpack a workspace tar under the root, inside the sandbox, after the SDK's checks."""
        root = self._workspace_root_path()
        limit = self._max_workspace_bytes
        if self._archive_limits is not None and self._archive_limits.max_input_bytes is not None:
            limit = min(limit, self._archive_limits.max_input_bytes)
        content = await asyncio.to_thread(_checked_archive, data, root, limit)
        staged = f"{_STAGING_DIR}/{uuid.uuid4().hex}.tar"
        command = ["tar", "-x", "-f", staged, "-C", root.as_posix()]
        try:
            await self.sandbox.files.write(staged, content)
            await self.sandbox.files.mkdir(root.as_posix())
            result = await self._exec_internal(*command)
        except (SandboxError, RuntimeError) as exc:
            raise WorkspaceArchiveWriteError(path=root, cause=exc) from exc
        finally:
            if self._sandbox is not None and self._sandbox.is_alive:
                with contextlib.suppress(SandboxError):
                    await self._sandbox.files.remove(staged)
        if not result.ok():
            raise WorkspaceArchiveWriteError(
                path=root,
                context={
                    "command": command,
                    "exit_code": result.exit_code,
                    "stderr": result.stderr.decode("utf-8", "replace")[-2000:],
                },
            )


def _no_user(user: str | User | None) -> None:
    if user is not None:
        raise ValueError(
            "a sandlot sandbox runs everything as its one unprivileged user; "
            "SandboxAgent(run_as=...) and user= are not supported"
        )


def _archive_tree(top: Path, out: IO[bytes], skip: set[Path]) -> None:
    """Write the tree under ``top`` (made by the host's checked download) as a tar of
    workspace-relative names, leaving out the SDK's skip paths."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        for here, dirs, files in os.walk(top):
            rel = Path(here).relative_to(top)
            for name in sorted(dirs):
                member = (rel / name).as_posix()
                if should_skip_tar_member(member, skip_rel_paths=skip, root_name=None):
                    dirs.remove(name)
                    continue
                tar.add(Path(here, name), arcname=member, recursive=False)
            dirs.sort()
            for name in sorted(files):
                member = (rel / name).as_posix()
                if not should_skip_tar_member(member, skip_rel_paths=skip, root_name=None):
                    tar.add(Path(here, name), arcname=member, recursive=False)


def _checked_archive(data: io.IOBase, root: Path, limit: int) -> bytes:
    """The bytes of a workspace tar, at most ``limit`` of them, checked by the SDK's validator."""
    content = bytearray()
    while chunk := data.read(1 << 20):
        if not isinstance(chunk, (bytes, bytearray)):
            raise WorkspaceArchiveWriteError(path=root, context={"reason": "non_bytes_tar_payload"})
        content += chunk
        if len(content) > limit:
            raise WorkspaceArchiveWriteError(
                path=root, context={"reason": "archive input size exceeds limit", "limit": limit}
            )
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
            validate_tarfile(tar, allow_external_symlink_targets=False)
    except UnsafeTarMemberError as exc:
        raise WorkspaceArchiveWriteError(
            path=root, context={"reason": exc.reason, "member": exc.member}, cause=exc
        ) from exc
    except (tarfile.TarError, OSError) as exc:
        raise WorkspaceArchiveWriteError(path=root, cause=exc) from exc
    return bytes(content)


class SandlotSandboxClient(BaseSandboxClient[None]):
    """The Agents SDK's sandbox client for sandlot: each session gets its own sandbox.

    ``config`` and ``backend`` are those of :class:`~sandlot.AsyncSandbox`
    (``backend="ray"`` puts each session's sandbox on a Ray cluster); or pass
    ``pool`` to borrow started sandboxes from an :class:`~sandlot.AsyncSandboxPool`
    (many agents at once; the pool's config applies). ``max_workspace_bytes`` and
    ``max_workspace_members`` bound what one workspace snapshot may bring to the
    host. ``instrumentation`` and ``dependencies`` are the SDK's, as for its own
    clients.
    """

    backend_id = BACKEND_ID
    supports_default_options = True

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        backend: BackendSpec = None,
        pool: AsyncSandboxPool | None = None,
        max_workspace_bytes: int = DEFAULT_MAX_WORKSPACE_BYTES,
        max_workspace_members: int = DEFAULT_MAX_WORKSPACE_MEMBERS,
        instrumentation: Instrumentation | None = None,
        dependencies: Dependencies | None = None,
    ) -> None:
        if pool is not None and (config is not None or backend is not None):
            raise ValueError(
                "pass either pool= (its sandboxes have the pool's config) or config=/backend=, "
                "not both"
            )
        if max_workspace_bytes < 1 or max_workspace_members < 1:
            raise ValueError("max_workspace_bytes and max_workspace_members must be positive")
        self.config = config if config is not None else SandboxConfig()
        self.backend = backend
        self.pool = pool
        self.max_workspace_bytes = max_workspace_bytes
        self.max_workspace_members = max_workspace_members
        self._instrumentation = (
            instrumentation if instrumentation is not None else Instrumentation()
        )
        self._dependencies = dependencies

    async def _open_sandbox(self, lease: contextlib.AsyncExitStack) -> AsyncSandbox:
        """A started sandbox whose end (or return to the pool) ``lease`` holds."""
        if self.pool is not None:
            return await lease.enter_async_context(self.pool.sandbox(clean=True))
        return await lease.enter_async_context(AsyncSandbox(self.config, backend=self.backend))

    def _session(self, state: SandlotSandboxSessionState) -> SandboxSession:
        _check_manifest(state.manifest)
        inner = SandlotSandboxSession(
            state,
            open_sandbox=self._open_sandbox,
            max_workspace_bytes=self.max_workspace_bytes,
            max_workspace_members=self.max_workspace_members,
        )
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: None = None,
    ) -> SandboxSession:
        """A new session; its sandbox starts when the session does (``start()``)."""
        if options is not None:
            raise TypeError(
                "SandlotSandboxClient takes no options; configure the sandbox with "
                "SandlotSandboxClient(config=..., backend=... or pool=...)"
            )
        manifest = self._validate_manifest_for_create(manifest or Manifest())
        session_id = uuid.uuid4()
        state = SandlotSandboxSessionState(
            session_id=session_id,
            manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
        )
        return self._session(state)

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        """A session for a saved state: a fresh sandbox, its workspace restored from the
        state's snapshot when ``start()`` runs (a sandlot sandbox never outlives its session,
        so there is none to reattach to)."""
        if not isinstance(state, SandlotSandboxSessionState):
            raise TypeError(
                f"SandlotSandboxClient.resume expects a SandlotSandboxSessionState, "
                f"not {type(state).__name__}"
            )
        state.assert_path_grants_rebound()
        state.workspace_root_ready = False
        return self._session(state)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """End the session's sandbox if it still runs; nothing of it stays on the host."""
        inner = session._inner
        if not isinstance(inner, SandlotSandboxSession):
            raise TypeError("SandlotSandboxClient.delete expects a session it created")
        await inner._release()
        return session

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, SandlotSandboxSessionState)


def _check_manifest(manifest: Manifest) -> None:
    """Refuse what a sandlot sandbox cannot honour, before anything starts."""
    grants: Sequence[str] = [g.path for g in manifest.extra_path_grants if g.host_path is not None]
    if grants:
        raise ValueError(
            f"a manifest path grant with host_path ({grants[0]!r}) would bind a host directory; "
            "give the sandbox host directories with SandboxConfig(mounts=[...]) instead"
        )
    if manifest.users or manifest.groups:
        raise ValueError(NO_ACCOUNTS)
