"""The Modal backend: each sandbox a ``modal.Sandbox``, its driver on one exec stream.

``backend="modal"`` (or ``ModalBackend(app_name=..., owner=...)``) creates a
Modal Sandbox from the config and runs the driver's bootstrap in it
with ``sb.exec("python3", "-I", "-c", BOOTSTRAP, text=False)``: frames travel
as bytes over the process's stdin and stdout (Modal's stdout arrives in chunks
of any size; the host parses frames across them), and host calls come back on
the same stream. The host never buffers more than :data:`MAX_WRITE` bytes of
stdin before ``drain()`` (Modal caps the buffer at 2 MiB, 16 MiB for exec, and
raises ``BufferError`` past it), so big frames go in pieces. Files travel
through the channel in 1 MiB frames like everywhere else: that is the
driver's one file path on every backend, and it keeps to the same caps.

From the config: an image (``debian_slim`` or ``ModalBackend(image=...)``) with
``python_packages`` installed by ``uv_pip_install`` and ``requirements`` files
by ``pip_install_from_requirements``; ``gpu`` (a Modal GPU string such as
``"A100"`` or ``"H100:2"``, or a count of ``gpu_type``); ``cpus`` and
``memory_mb``; ``block_network`` unless ``network=True``; volumes as
``modal.Volume.from_name(name, create_if_missing=True)``; secrets as one
``modal.Secret.from_dict`` of the named host variables (read here, on the
host); the lifetime as Modal's ``timeout``; and tags that mark the sandbox as
sandlot's and its owner's (``sandlot``, ``sandlot-owner``).

Modal sandboxes do not die with their client, so three things end them: the
driver ends itself at end of input, or when the host has not pinged for
``owner_timeout`` seconds, and the sandbox's entrypoint (:data:`KEEPER`)
exits once the driver's directory is gone, which ends the sandbox; the owner
terminates its sandboxes when they end and at exit (:func:`sandlot.exits.at_exit`); and
``sandlot modal cleanup`` finds leftovers by tag and terminates them.

The Modal service is reached through ``api`` (the ``modal`` module unless a
stand-in is given, as the tests do): ``App``, ``Sandbox``, ``Image``,
``Secret`` and ``Volume``. Modal is an extra: ``pip install 'sandlot[modal]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import math
import os
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..config import SandboxConfig
from ..errors import ConfigError, DeathCause
from ..exits import at_exit
from ..secrets import secret_values
from ..tasks import TaskScope
from .kit import remote
from .kit.bootstrap import BOOTSTRAP, OWNER_TIMEOUT
from .kit.remote import FINISH_TIMEOUT, SEND_CHUNK, StreamLaunch, check_config, start_over

if TYPE_CHECKING:
    import modal
    from modal.container_process import ContainerProcess

APP_NAME = "sandlot"
KIND_TAG = "sandlot"  # every sandbox sandlot makes carries it
OWNER_TAG = "sandlot-owner"  # whose it is: user@machine, or ModalBackend(owner=...)
MAX_WRITE = SEND_CHUNK  # stdin bytes buffered before each drain: half Modal's smallest cap (2 MiB)
MAX_LIFETIME = 24 * 3600  # Modal's longest sandbox timeout
START_TIMEOUT = 300.0  # seconds for the image to be ready and the far side to say hello
# The sandbox's entrypoint: wait (5 minutes at most) for the driver's directory, then live
# while it exists. The far side removes it when the driver ends, so the sandbox ends too.
KEEPER = (
    "i=0; while [ $i -lt 300 ] && ! ls -d /tmp/sandlot-stream-* >/dev/null 2>&1; "
    "do sleep 1; i=$((i+1)); done; "
    "while ls -d /tmp/sandlot-stream-* >/dev/null 2>&1; do sleep 2; done"
)


def _modal() -> Any:
    """The ``modal`` module, or a ConfigError that says how to install it."""
    try:
        import modal
    except ImportError:
        raise ConfigError(
            "backend='modal' needs Modal, which is not installed: pip install 'sandlot[modal]'"
        ) from None
    return modal


def default_owner() -> str:
    """Who owns the sandboxes this process makes: ``user@machine``."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def owner_tags(owner: str | None) -> dict[str, str]:
    """The tags of sandlot's sandboxes (of ``owner``'s only, unless None)."""
    return {KIND_TAG: "1"} if owner is None else {KIND_TAG: "1", OWNER_TAG: owner}


_live: dict[str, modal.Sandbox] = {}  # this process's sandboxes, by id, for the exit hook


def _terminate_live() -> None:
    """At exit: terminate what this process still owns (they would outlive it on Modal)."""
    for sandbox in list(_live.values()):
        with contextlib.suppress(Exception):
            sandbox.terminate()
    _live.clear()


at_exit(_terminate_live, "backends")


class ModalProcess:
    """The driver's exec in a Modal sandbox, as the stream layer's :class:`RemoteProcess`."""

    max_write = MAX_WRITE

    def __init__(self, sandbox: modal.Sandbox, proc: ContainerProcess[bytes]) -> None:
        self.sandbox = sandbox
        self.proc = proc
        self.ending: asyncio.Task[None] | None = None
        self.tasks = TaskScope("a Modal sandbox")

    async def send(self, data: bytes) -> None:
        """Buffer ``data`` (at most the cap) in Modal's stdin and drain it."""
        self.proc.stdin.write(data)
        await self.proc.stdin.drain.aio()

    async def send_eof(self) -> None:
        """End the driver's input."""
        self.proc.stdin.write_eof()
        await self.proc.stdin.drain.aio()

    async def output(self) -> AsyncIterator[bytes]:
        """The exec's stdout, as Modal delivers it."""
        async for data in self.proc.stdout:
            yield data

    async def errors(self) -> AsyncIterator[bytes]:
        """The exec's stderr, as Modal delivers it."""
        async for data in self.proc.stderr:
            yield data

    async def wait(self) -> int:
        """Wait for the exec to end; its exit status."""
        return await self.proc.wait.aio()

    def kill(self) -> None:
        """Terminate the whole sandbox (it ends every process in it)."""
        if self.ending is None:
            self.ending = self.tasks.spawn(self._terminate(), awaited=True)  # by release()

    async def _terminate(self) -> None:
        with contextlib.suppress(Exception):
            await self.sandbox.terminate.aio()
        _live.pop(self.sandbox.object_id, None)

    def lost(
        self, code: int | None, error: BaseException | None, log: str
    ) -> tuple[DeathCause, str]:
        """Why the stream ended: the exec's status, or the error from Modal's client."""
        where, tail = f"Modal sandbox {self.sandbox.object_id}", log.strip()
        if error is not None:
            return "connection_lost", f"the stream to {where} failed: {error!r}. {tail}".strip()
        if code is None or code < 0:
            return "connection_lost", f"the stream to {where} ended without an exit status"
        return remote.driver_exit(f"the driver in {where}", code, tail)

    async def release(self) -> None:
        """Terminate the sandbox if that has not happened yet, and wait for it."""
        self.kill()
        assert self.ending is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.ending), FINISH_TIMEOUT)


class ModalBackend:
    """Runs each sandbox as a Modal Sandbox of app ``app_name``, owned by this process.

    - ``owner``: the owner tag (``user@machine`` when None): ``sandlot modal
      cleanup`` ends an owner's leftovers;
    - ``image``: the base ``modal.Image`` (``debian_slim`` of ``python_version``
      when None); the config's packages are installed on top;
    - ``gpu_type``: the GPU type a count (``gpu=2``) asks for;
    - ``region``, ``cloud``: where Modal places the sandboxes;
    - ``owner_timeout``: seconds without a ping from this host after which the
      driver ends itself (and with it the sandbox);
    - ``api``: what stands for the ``modal`` module (its ``App``, ``Sandbox``,
      ``Image``, ``Secret``, ``Volume``); the tests give a local stand-in.
    """

    def __init__(
        self,
        *,
        app_name: str = APP_NAME,
        owner: str | None = None,
        image: modal.Image | None = None,
        python_version: str | None = None,
        gpu_type: str = "any",
        region: str | None = None,
        cloud: str | None = None,
        owner_timeout: float = OWNER_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
        api: Any = None,
    ) -> None:
        api = api if api is not None else _modal()
        self.App: type[modal.App] = api.App
        self.Sandbox: type[modal.Sandbox] = api.Sandbox
        self.Image: type[modal.Image] = api.Image
        self.Secret: type[modal.Secret] = api.Secret
        self.Volume: type[modal.Volume] = api.Volume
        self.app_name = app_name
        self.owner = owner or default_owner()
        self.image = image
        self.python_version = python_version
        self.gpu_type = gpu_type
        self.region = region
        self.cloud = cloud
        self.owner_timeout = owner_timeout
        self.start_timeout = start_timeout

    def image_for(self, config: SandboxConfig) -> modal.Image:
        """The sandbox's image: the base, with the config's packages installed."""
        image = self.image or self.Image.debian_slim(python_version=self.python_version)
        if config.python_packages:
            image = image.uv_pip_install(*config.python_packages)
        for path in config.requirements:
            image = image.pip_install_from_requirements(path)
        return image

    def gpu_for(self, config: SandboxConfig) -> str | None:
        """The config's ``gpu`` as Modal names it (``"A100"``, ``"any:2"``)."""
        gpu = config.gpu
        if gpu is None:
            return None
        if isinstance(gpu, int):
            return f"{self.gpu_type}:{gpu}" if gpu > 1 else self.gpu_type
        if gpu.strip() == "all" or all(p.strip().isdigit() for p in gpu.split(",")):
            raise ConfigError(
                f"gpu={gpu!r} names devices of one machine; on Modal give a count (gpu=2) "
                "or a type ('A100', 'H100:2')"
            )
        return gpu.strip()

    def tags(self) -> dict[str, str]:
        """The tags every sandbox of this backend carries."""
        return {**owner_tags(self.owner), "sandlot-pid": str(os.getpid())}

    async def create(self, config: SandboxConfig) -> modal.Sandbox:
        """Create the Modal sandbox for ``config`` (its container starts in the background)."""
        if config.isolation == "bubblewrap":
            raise ConfigError(
                "isolation='bubblewrap' cannot be had on Modal: its sandboxes are walled in by "
                "Modal's container runtime (gVisor), not bubblewrap; use isolation='auto'"
            )
        check_config(config, "Modal", packages_ok=True)
        values = secret_values(config)
        timeout = MAX_LIFETIME if config.timeout is None else math.ceil(config.timeout) + 60
        try:
            app = await self.App.lookup.aio(self.app_name, create_if_missing=True)
        except _modal().exception.AuthError as exc:
            raise ConfigError(
                f"backend='modal' cannot reach Modal: {str(exc).splitlines()[0]} Run 'modal "
                "setup', or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"
            ) from None
        return await self.Sandbox.create.aio(
            "sh",
            "-c",
            KEEPER,
            app=app,
            image=self.image_for(config),
            tags=self.tags(),
            secrets=[self.Secret.from_dict(dict(values))] if values else None,
            timeout=min(timeout, MAX_LIFETIME),
            gpu=self.gpu_for(config),
            cpu=config.cpus,
            memory=config.memory_mb,
            block_network=not config.network,
            volumes={
                target: self.Volume.from_name(spec.name, create_if_missing=True).with_mount_options(
                    read_only=spec.read_only
                )
                for target, spec in config.volumes.items()
            },
            region=self.region,
            cloud=self.cloud,
        )

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> StreamLaunch:
        """Create a sandbox, start the driver in it, and connect to it."""
        sandbox = await self.create(config)
        _live[sandbox.object_id] = sandbox
        try:
            proc = await sandbox.exec.aio("python3", "-I", "-c", BOOTSTRAP, text=False)
            return await start_over(
                ModalProcess(sandbox, proc),
                config,
                init,
                where=f"Modal sandbox {sandbox.object_id}",
                walls="container",
                owner_timeout=self.owner_timeout,
                start_timeout=self.start_timeout,
                secrets_held=True,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await sandbox.terminate.aio()
            _live.pop(sandbox.object_id, None)
            raise


async def find_sandboxes(
    owner: str | None, api: Any = None
) -> list[tuple[modal.Sandbox, dict[str, str]]]:
    """Running sandboxes tagged as sandlot's (``owner``'s only, unless None), with their tags."""
    sandbox_type: type[modal.Sandbox] = (api if api is not None else _modal()).Sandbox
    found = [sb async for sb in sandbox_type.list.aio(tags=owner_tags(owner))]
    tags = await asyncio.gather(*(sb.get_tags.aio() for sb in found))
    return list(zip(found, tags, strict=True))


async def terminate_sandboxes(sandboxes: list[modal.Sandbox]) -> None:
    """Terminate each of ``sandboxes``."""
    await asyncio.gather(*(sb.terminate.aio() for sb in sandboxes))
