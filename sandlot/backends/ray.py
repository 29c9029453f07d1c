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
the backend's ``num_cpus``, a quarter of a CPU: a sandbox mostly waits on LMs),
``memory`` (``memory_mb``), ``num_gpus`` (``gpu``), plus the backend's own
``resources`` (a custom resource such as ``{"sandbox": 1}`` caps the sandboxes
of the whole cluster at what its nodes advertise). A start that Ray cannot
place yet says what it waits for (what it asks, what is free, which actors
hold the rest) after a few seconds and then every half minute, and gives up
at the backend's ``start_timeout``. Actors are spread over the
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
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from functools import cache
from typing import Any

from ..config import SandboxConfig
from ..errors import ConfigError, DeathCause, SandboxDied
from ..secrets import secret_values
from ..tasks import TaskScope
from .kit.flow import QueuedSink, Valve

READ_CHUNK = 1 << 20  # most bytes of driver output the actor yields at once
OUTPUT_AHEAD = 8  # chunks the actor may yield before the host has taken them
SEND_CHUNK = 4 << 20  # most bytes the host sends in one actor call
KILL_GRACE = 5.0  # seconds kill() gives the actor to end its sandbox before ray.kill
PLACE_TRIES = 3  # placements of a sandbox whose node dies before it starts
FINISH_TIMEOUT = 10.0  # seconds the host waits for the actor's account of the end
DEFAULT_NUM_CPUS = 0.25  # Ray CPUs a sandbox reserves when its config sets no cpus
PLACE_NOTICE = 5.0  # seconds a start waits for Ray to place its actor before it says why
PLACE_NOTICE_EVERY = 30.0  # seconds between further notices while it still waits

log = logging.getLogger("sandlot.backends.ray")


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

    async def ready(self) -> None:
        """Answers once Ray has placed the actor on a node and made it."""

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


def actor_options(
    config: SandboxConfig, resources: Mapping[str, float], num_cpus: float = DEFAULT_NUM_CPUS
) -> dict[str, Any]:
    """The Ray options of a sandbox's actor: what it asks of a node, and how it lives.

    ``num_cpus`` is the reservation when the config sets no ``cpus``.
    """
    options: dict[str, Any] = {
        "num_cpus": config.cpus if config.cpus is not None else num_cpus,
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


def _wanted(options: Mapping[str, Any]) -> dict[str, float]:
    """What an actor with ``options`` asks of one node, by Ray's resource names."""
    wanted: dict[str, float] = dict(options.get("resources") or {})
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        if options.get(key):
            wanted[name] = float(options[key])
    return wanted


def _amounts(resources: Mapping[str, float]) -> str:
    """Resources in words: ``CPU 0.25, memory 2 GiB``."""
    return ", ".join(
        f"{name} {amount / (1 << 30):.3g} GiB" if name == "memory" else f"{name} {amount:g}"
        for name, amount in resources.items()
    )


def _holders(ray: Any) -> str:
    """The cluster's live and waiting actors by class (from the GCS: no dashboard needed)."""
    try:
        actors = ray._private.state.actors().values()
    except Exception:  # a private API: without it the notice says less
        return "the cluster's actors could not be listed"
    live: dict[str, int] = {}
    waiting = 0
    for actor in actors:
        if actor.get("State") == "ALIVE":
            name = str(actor.get("ActorClassName", "?"))
            live[name] = live.get(name, 0) + 1
        elif actor.get("State") == "PENDING_CREATION":
            waiting += 1
    held = ", ".join(f"{n} {name}" for name, n in sorted(live.items(), key=lambda x: -x[1]))
    return (
        f"held by {sum(live.values())} live actor(s) ({held or 'none'}; a SandboxActor is a "
        f"sandbox); {waiting} actor(s) waiting to be placed or started, this one included"
    )


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
        self._tasks = TaskScope("a Ray sandbox")
        self._pump = self._tasks.spawn(self._read())
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
        await self._tasks.close()
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
    - ``num_cpus``: the Ray CPUs a sandbox reserves when its config sets no
      ``cpus`` (default 0.25: four sandboxes per CPU, for sandboxes that mostly
      wait on LMs). ``SandboxConfig(cpus=...)`` reserves and caps instead.
    - ``start_timeout``: seconds a start may wait for Ray to place the sandbox
      (None: as long as it takes). When it passes, the start raises
      ``SandboxDied("failed_to_start")`` naming what the sandbox asks, what is
      free and what holds the rest, and the waiting actor is removed. Either
      way, a start that waits says so in the ``sandlot.backends.ray`` log
      after :data:`PLACE_NOTICE` seconds, then every :data:`PLACE_NOTICE_EVERY`.
    """

    def __init__(
        self,
        address: str | None = None,
        resources: Mapping[str, float] | None = None,
        *,
        init_options: Mapping[str, Any] | None = None,
        autoscaling: bool = False,
        num_cpus: float = DEFAULT_NUM_CPUS,
        start_timeout: float | None = None,
    ) -> None:
        if (address or "").startswith("ray://"):
            raise ConfigError(
                f"RayBackend(address={address!r}): Ray Client (ray://) cannot stream a "
                "sandbox's output; run the host process on a node of the cluster and give "
                "the cluster's GCS address (host:port) or 'auto'"
            )
        if num_cpus < 0:
            raise ConfigError(f"RayBackend(num_cpus={num_cpus!r}): give 0 or more CPUs")
        if start_timeout is not None and start_timeout <= 0:
            raise ConfigError(
                f"RayBackend(start_timeout={start_timeout!r}): give seconds above 0, or None"
            )
        self.ray = _ray()
        self.address = address
        self.resources = dict(resources or {})
        self.init_options = dict(init_options or {})
        self.autoscaling = autoscaling
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        self.ray.init(address=address, **{"include_dashboard": False, **self.init_options})

    def _check_placeable(self, options: dict[str, Any]) -> None:
        """Refuse a sandbox no node of the cluster could ever hold (it would wait forever)."""
        wanted = _wanted(options)
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        if any(all(have.get(k, 0) >= v for k, v in wanted.items()) for have in nodes):
            return
        raise ConfigError(
            f"no node of the Ray cluster has what this sandbox asks for ({wanted}); "
            "ask for less, add such a node, or give RayBackend(autoscaling=True) to wait "
            "for one"
        )

    def _waiting_for(self, wanted: dict[str, float]) -> str:
        """What a start that Ray has not placed yet waits for, in words."""
        free = self.ray.available_resources()
        total = self.ray.cluster_resources()
        short = [name for name, amount in wanted.items() if free.get(name, 0) < amount]
        why = (
            f"short of {', '.join(short)}"
            if short
            else "all of it is free on the cluster, but perhaps not on one node, or Ray is "
            "still starting the actor's worker"
        )
        return (
            f"it asks for {_amounts(wanted)}; free now on the cluster: "
            f"{_amounts({n: free.get(n, 0.0) for n in wanted})} "
            f"(of {_amounts({n: total.get(n, 0.0) for n in wanted})}): {why}; "
            f"{_holders(self.ray)}"
        )

    async def _placed(self, actor: Any, wanted: dict[str, float]) -> None:
        """Wait until Ray has placed ``actor``, saying what it waits for; honour start_timeout."""
        ready = asyncio.wrap_future(actor.ready.remote().future())  # a future, not a task
        began = time.monotonic()
        notice = PLACE_NOTICE
        try:
            while True:
                waited = time.monotonic() - began
                pause = notice - waited
                if self.start_timeout is not None:
                    pause = min(pause, self.start_timeout - waited)
                done, _ = await asyncio.wait({ready}, timeout=max(pause, 0))
                if done:
                    ready.result()
                    return
                waited = time.monotonic() - began
                what = await asyncio.to_thread(self._waiting_for, wanted)
                if self.start_timeout is not None and waited >= self.start_timeout:
                    raise SandboxDied(
                        "failed_to_start",
                        f"Ray did not place the sandbox within RayBackend(start_timeout="
                        f"{self.start_timeout:g}) seconds: {what}",
                    )
                if waited >= notice:
                    log.warning(
                        "a Ray sandbox has waited %.1f s for a place: %s. It starts when "
                        "enough is free; reserve less (SandboxConfig(cpus=...) or memory_mb, "
                        "RayBackend(num_cpus=...)), add a node, or bound the wait with "
                        "RayBackend(start_timeout=...)",
                        waited,
                        what,
                    )
                    notice += PLACE_NOTICE_EVERY
        finally:
            ready.cancel()

    async def launch(self, config: SandboxConfig, init: dict[str, Any]) -> RayLaunch:
        """Start a sandbox's actor, its driver on the actor's node, and connect to it.

        A start that Ray cannot place yet waits, saying what for, until
        ``start_timeout``. An actor whose node dies before its sandbox started
        is placed again (nothing was lost yet), up to :data:`PLACE_TRIES` times
        in all.
        """
        options = actor_options(config, self.resources, self.num_cpus)
        config = _host_resolved(config)
        await asyncio.to_thread(self._connect)  # ray.init blocks: not on the event loop
        if not self.autoscaling:
            self._check_placeable(options)
        lost: tuple[DeathCause, str] = ("node_lost", "")
        for _ in range(PLACE_TRIES):
            actor = _actor_class().options(**options).remote()
            try:
                await self._placed(actor, _wanted(options))
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
