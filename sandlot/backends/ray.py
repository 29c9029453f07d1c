"""The Ray backend: each sandbox is a Ray actor that runs a local sandbox on its node.

``backend="ray"`` (or ``RayBackend(address=..., resources=...)``) makes every
sandbox an *owned* Ray actor: not detached, so when the host process that
created it dies, Ray ends the actor and its sandbox with it. On its node the
actor starts the driver exactly as :class:`~sandlot.backends.local.LocalBackend`
does (bubblewrap, cgroup, seccomp, the sandbox user) and relays the driver's
bytes: the host sends with one actor call per batch, in order, and reads the
driver's output through one streaming-generator call. Everything above the
byte stream stays on the host, so host functions called from a sandbox on
another node run in the host process that owns it (an API key never leaves it).

The actor asks Ray for the config's resources: ``num_cpus`` (``cpus``, else
1), ``memory`` (``memory_mb``), ``num_gpus`` (``gpu``), plus the backend's own
``resources`` (a custom resource such as ``{"sandbox": 1}`` caps the sandboxes
of the whole cluster at what its nodes advertise). Actors are spread over the
nodes (``scheduling_strategy="SPREAD"``) and never restarted (``max_restarts=0``):
a restarted sandbox would have lost its state, so a lost node or a killed
actor ends the sandbox with :class:`~sandlot.errors.SandboxDied`, cause
``"node_lost"`` or ``"killed"``, as soon as Ray detects it. Pools then replace
the sandbox and retry the item once.

Ray is an extra: ``pip install 'sandlot[ray]'``. The nodes need sandlot (and
bubblewrap) installed in the Python environment their workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from functools import cache
from typing import Any

from ..config import SandboxConfig
from ..errors import ConfigError, DeathCause, SandboxDied
from ..secrets import secret_values
from .stream import QueuedSink, Valve

READ_CHUNK = 1 << 20  # most bytes of driver output the actor yields at once
OUTPUT_AHEAD = 8  # chunks the actor may yield before the host has taken them
SEND_CHUNK = 4 << 20  # most bytes the host sends in one actor call
KILL_GRACE = 5.0  # seconds kill() gives the actor to end its sandbox before ray.kill
PLACE_TRIES = 3  # placements of a sandbox whose node dies before it starts
FINISH_TIMEOUT = 10.0  # seconds the host waits for the actor's account of the end


def _ray() -> Any:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "backend='ray' needs Ray, which is not installed: pip install 'sandlot[ray]'"
        ) from None
    return ray


class SandboxActor:
    """The actor on a Ray node that holds one local sandbox (Ray wraps it with ``ray.remote``).

    Every method is a coroutine (an async actor), so sends, the output stream
    and a kill run concurrently on the actor's event loop.
    """

    def __init__(self) -> None:
        self.launch: Any = None

    async def start(self, config: SandboxConfig, init: dict[str, Any]) -> dict[str, Any]:
        """Start the driver on this node under the local backend's isolation."""
        import ray

        from .local import LocalBackend

        gpu_ids = ray.get_gpu_ids()
        if config.gpu is not None and gpu_ids:  # the devices Ray gave this actor
            config = config.model_copy(update={"gpu": ",".join(str(g) for g in gpu_ids)})
        self.launch = await LocalBackend().launch(config, init)
        ctx = ray.get_runtime_context()
        return {
            "workdir": self.launch.workdir,
            "node_id": ctx.get_node_id(),
            "pid": os.getpid(),  # the actor's process
            "sandbox_pid": self.launch.proc.pid,  # the sandbox's first process on its node
        }

    async def send(self, data: bytes) -> None:
        """Write bytes to the driver."""
        self.launch.writer.write(data)
        await self.launch.writer.drain()

    async def output(self) -> AsyncIterator[bytes]:
        """The driver's bytes as they come, until it closes its end."""
        while True:
            data = await self.launch.reader.read(READ_CHUNK)
            if not data:
                return
            yield data

    async def finish(self) -> tuple[DeathCause, str, int]:
        """Wait for the driver to exit; return its death cause, detail and exit status."""
        try:
            code = await asyncio.wait_for(self.launch.wait(), FINISH_TIMEOUT)
        except TimeoutError:
            self.launch.kill()
            code = await self.launch.wait()
        cause, detail = self.launch.death_cause()
        return cause, detail, code

    async def log_tail(self) -> str:
        """The driver's last words outside the channel."""
        return str(self.launch.log_tail())

    async def kill(self) -> None:
        """Kill the sandbox (the actor stays, to clean up)."""
        if self.launch is not None:
            self.launch.kill()

    async def cleanup(self) -> None:
        """Release what the sandbox held on this node: cgroup, directories."""
        if self.launch is not None:
            await self.launch.cleanup()


@cache
def _actor_class() -> Any:
    return _ray().remote(SandboxActor)


def _host_resolved(config: SandboxConfig) -> SandboxConfig:
    """``config`` as a node can use it: its secrets read here, on the host.

    The env file and the named host variables exist on the host, not on the
    node: their values travel with the config (to the sandbox that is to have
    them, over Ray's channels) as environment variables.
    """
    values = secret_values(config)
    if not values:
        return config
    return config.model_copy(
        update={"env": {**config.env, **values}, "env_file": None, "secrets": []}
    )


def actor_options(config: SandboxConfig, resources: Mapping[str, float]) -> dict[str, Any]:
    """The Ray options of a sandbox's actor: what it asks of a node, and how it lives."""
    options: dict[str, Any] = {
        "num_cpus": config.cpus if config.cpus is not None else 1,
        "max_restarts": 0,
        "max_task_retries": 0,
        "scheduling_strategy": "SPREAD",
    }
    if config.memory_mb is not None:
        options["memory"] = config.memory_mb << 20
    custom = dict(resources)
    gpu = config.gpu
    if isinstance(gpu, int):
        options["num_gpus"] = gpu
    elif isinstance(gpu, str):
        parts = [p.strip() for p in gpu.split(",")]
        if gpu.strip() == "all":
            raise ConfigError("gpu='all' means nothing on a Ray cluster: give a count (gpu=1)")
        if all(p.isdigit() for p in parts):  # device indices: as many GPUs, wherever Ray has them
            options["num_gpus"] = len(parts)
        else:  # a model name: one GPU of that type (Ray's accelerator_type resource)
            options["num_gpus"] = 1
            custom[f"accelerator_type:{gpu.strip()}"] = 0.001
    if custom:
        options["resources"] = custom
    return options


def _lost(exc: BaseException) -> tuple[DeathCause, str]:
    """The death cause a Ray error about the actor means."""
    ray = _ray()
    text = str(exc).strip()
    if isinstance(exc, ray.exceptions.ActorUnavailableError | ray.exceptions.NodeDiedError):
        return "node_lost", f"its Ray node became unreachable: {text}"
    lowered = text.lower()
    if "node" in lowered and ("died" in lowered or "dead" in lowered):
        return "node_lost", f"its Ray node died: {text}"
    if isinstance(exc, ray.exceptions.RayActorError):
        return "killed", f"its Ray actor died: {text}"
    return "node_lost", f"the connection to its Ray actor failed: {type(exc).__name__}: {text}"


class RayLaunch:
    """A sandbox's driver running in a Ray actor, as the host sees it."""

    def __init__(self, actor: Any, info: dict[str, Any]) -> None:
        self.actor = actor
        self.info = info  # workdir, node_id and the actor's pid
        self.reader = asyncio.StreamReader(limit=1 << 20)
        self._valve = Valve()
        self.reader.set_transport(self._valve)
        # One actor call per batch of at most SEND_CHUNK bytes, in order.
        self.writer = QueuedSink(actor.send.remote, SEND_CHUNK)
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._cause: tuple[DeathCause, str] = ("crashed", "the driver ended")
        self._log = ""
        self._actor_killed = False
        self._pump = asyncio.ensure_future(self._read())
        self._reaper: asyncio.TimerHandle | None = None

    @property
    def workdir(self) -> str:
        """The workdir as the code inside sees it."""
        return str(self.info["workdir"])

    @property
    def node_id(self) -> str:
        """The Ray node the sandbox runs on."""
        return str(self.info["node_id"])

    async def _read(self) -> None:
        code = -1
        try:
            # The actor produces at most OUTPUT_AHEAD chunks the host has not taken, and
            # the host takes one only while the reader has room (the valve).
            stream = self.actor.output.options(
                num_returns="streaming", _generator_backpressure_num_objects=OUTPUT_AHEAD
            ).remote()
            async for ref in stream:
                await self._valve.open.wait()
                self.reader.feed_data(await ref)
            cause, detail, code = await asyncio.wait_for(
                self.actor.finish.remote(), FINISH_TIMEOUT + 5
            )
            self._cause = (cause, detail)
            with contextlib.suppress(Exception):
                self._log = await asyncio.wait_for(self.actor.log_tail.remote(), 5)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._cause = _lost(exc)
            self._kill_actor()  # unreachable now, perhaps not for good: make sure it ends
        finally:
            self.reader.feed_eof()
            if not self.exited.done():
                self.exited.set_result(code)
            if self._reaper is not None:
                self._reaper.cancel()

    def _kill_actor(self) -> None:
        if not self._actor_killed:
            self._actor_killed = True
            with contextlib.suppress(Exception):
                _ray().kill(self.actor, no_restart=True)

    async def wait(self) -> int:
        """Wait until the driver has ended and its end is known; return its exit status."""
        return await asyncio.shield(self.exited)

    def kill(self) -> None:
        """Ask the actor to kill the sandbox; if it does not end soon, kill the actor."""
        if self.exited.done():
            return
        with contextlib.suppress(Exception):
            self.actor.kill.remote()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(KILL_GRACE, self._kill_actor)

    def death_cause(self) -> tuple[DeathCause, str]:
        """Why the sandbox ended: the driver's end on its node, or the actor's or node's loss."""
        return self._cause

    def log_tail(self) -> str:
        """The last lines the driver wrote outside the channel."""
        return self._log

    async def cleanup(self) -> None:
        """Let the actor release its node's resources, then end the actor."""
        self.writer.close()
        await self.writer.wait_closed()
        if not self._actor_killed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.actor.cleanup.remote(), FINISH_TIMEOUT + 5)
        self._kill_actor()
        if not self._pump.done():
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        if self._reaper is not None:
            self._reaper.cancel()


class RayBackend:
    """Runs each sandbox as a Ray actor owned by this process, somewhere on a Ray cluster.

    - ``address``: the cluster to join (its GCS, ``"host:port"``, or ``"auto"``);
      when None, ``$RAY_ADDRESS``, else a local cluster that Ray starts. Ignored
      when this process is already connected (``ray.init`` was called). Ray
      Client addresses (``"ray://..."``) are refused: Ray Client cannot carry
      the streaming call that brings a sandbox's output back.
    - ``resources``: custom resources every sandbox's actor asks for, such as
      ``{"sandbox": 1}``: nodes that advertise them take sandboxes, and what
      they advertise caps how many run at once on the whole cluster.
    - ``init_options``: further keyword arguments for ``ray.init``.
    - ``autoscaling``: when False (the default), a sandbox that asks for more
      than any node of the cluster has (a GPU on a cluster without one, a
      custom resource no node advertises) is a ConfigError at once, not an
      actor that waits forever; True lets it wait for nodes an autoscaler adds.
    """

    def __init__(
        self,
        address: str | None = None,
        resources: Mapping[str, float] | None = None,
        *,
        init_options: Mapping[str, Any] | None = None,
        autoscaling: bool = False,
    ) -> None:
        if (address or "").startswith("ray://"):
            raise ConfigError(
                f"RayBackend(address={address!r}): Ray Client (ray://) cannot stream a "
                "sandbox's output; run the host process on a node of the cluster and give "
                "the cluster's GCS address (host:port) or 'auto'"
            )
        self.ray = _ray()
        self.address = address
        self.resources = dict(resources or {})
        self.init_options = dict(init_options or {})
        self.autoscaling = autoscaling

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        self.ray.init(address=address, **{"include_dashboard": False, **self.init_options})

    def _check_placeable(self, options: dict[str, Any]) -> None:
        """Refuse a sandbox no node of the cluster could ever hold (it would wait forever)."""
        wanted: dict[str, float] = dict(options.get("resources") or {})
        for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
            if options.get(key):
                wanted[name] = float(options[key])
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        if any(all(have.get(k, 0) >= v for k, v in wanted.items()) for have in nodes):
            return
        raise ConfigError(
            f"no node of the Ray cluster has what this sandbox asks for ({wanted}); "
            "ask for less, add such a node, or give RayBackend(autoscaling=True) to wait "
            "for one"
        )

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> RayLaunch:
        """Start a sandbox's actor, its driver on the actor's node, and connect to it.

        An actor whose node dies before its sandbox started is placed again
        (nothing was lost yet), up to :data:`PLACE_TRIES` times in all.
        """
        options = actor_options(config, self.resources)
        config = _host_resolved(config)
        await asyncio.to_thread(self._connect)  # ray.init blocks: not on the event loop
        if not self.autoscaling:
            self._check_placeable(options)
        lost: tuple[DeathCause, str] = ("node_lost", "")
        for _ in range(PLACE_TRIES):
            actor = _actor_class().options(**options).remote()
            try:
                info = await actor.start.remote(config, init)
            except self.ray.exceptions.RayActorError as exc:
                with contextlib.suppress(Exception):
                    self.ray.kill(actor, no_restart=True)
                lost = _lost(exc)
                if lost[0] != "node_lost":
                    break
                continue
            except BaseException:
                with contextlib.suppress(Exception):
                    self.ray.kill(actor, no_restart=True)
                raise
            return RayLaunch(actor, info)
        raise SandboxDied(lost[0], f"while starting: {lost[1]}")
