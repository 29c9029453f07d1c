"""A LOCAL STAND-IN for Modal's Sandbox API. It is not Modal and reaches no service.

Modal's service cannot be reached from the machines these tests run on, so
ModalBackend's own logic (the config turned into ``Sandbox.create`` arguments,
frames parsed from chunks, the stdin drain rule, lifetimes, cleanup by tag) is
tested against these classes, which have the names, signatures and async
behaviour of modal 1.6's objects that ModalBackend uses:

- ``StandInModalSandbox``: ``create.aio`` (records its arguments), ``exec.aio``
  (runs the command as a real local subprocess: the real bootstrap and driver),
  ``terminate`` (blocking and ``.aio``), ``poll.aio``, ``get_tags.aio``,
  ``list.aio(tags=...)`` (an async generator), ``object_id``;
- ``StandInContainerProcess``: ``stdin`` whose ``write`` only buffers and raises
  ``BufferError`` past the cap (as modal's does) until ``drain.aio()`` sends,
  ``write_eof``; ``stdout``/``stderr`` that yield bytes in chunks of random
  sizes (Modal gives no frame boundaries); ``wait.aio``, ``poll.aio``, ``returncode``;
- ``StandInApp.lookup.aio``, ``StandInImage``, ``StandInSecret.from_dict``,
  ``StandInVolume.from_name(...).with_mount_options(...)``, which record.

What it does not do: build images, run the sandbox's entrypoint (it would
watch this machine's /tmp), enforce ``block_network``, GPUs or memory. Secrets
given at create are in the environment of each exec, as Modal puts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import random
import signal
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any, ClassVar

EXEC_STDIN_CAP = 16 << 20  # modal.io_streams.TASK_COMMAND_ROUTER_MAX_BUFFER_SIZE


class _Twin:
    """A method with modal's two faces: ``m(...)`` blocks, ``m.aio(...)`` is the async one."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.aio = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aio(*args, **kwargs))


class twin:
    """Decorator: an async method (or, with ``on_class``, a class-level one) as a _Twin."""

    def __init__(self, fn: Callable[..., Any], on_class: bool = False) -> None:
        self.fn = fn
        self.on_class = on_class

    def __get__(self, obj: Any, owner: type) -> _Twin:
        return _Twin(functools.partial(self.fn, owner if self.on_class or obj is None else obj))


def class_twin(fn: Callable[..., Any]) -> twin:
    return twin(fn, on_class=True)


class StandInStreamWriter:
    """modal's StreamWriter: ``write`` buffers (``BufferError`` past ``cap``), ``drain`` sends."""

    def __init__(self, pipe: asyncio.StreamWriter, cap: int) -> None:
        self.pipe = pipe
        self.cap = cap
        self.buffer = bytearray()
        self.closed = False
        self.most_buffered = 0  # the largest buffer a drain sent, for the tests

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if self.closed:
            raise ValueError("Stdin is closed. Cannot write to it.")
        if isinstance(data, str):
            data = data.encode()
        if len(self.buffer) + len(data) > self.cap:
            raise BufferError("Buffer size exceed limit. Call drain to flush the buffer.")
        self.buffer.extend(data)

    def write_eof(self) -> None:
        self.closed = True

    @twin
    async def drain(self) -> None:
        self.most_buffered = max(self.most_buffered, len(self.buffer))
        data = bytes(self.buffer)
        self.buffer.clear()
        if data:
            self.pipe.write(data)
            await self.pipe.drain()
        if self.closed and not self.pipe.is_closing():
            self.pipe.close()


class StandInStreamReader:
    """modal's StreamReader with ``text=False``: iterate to get bytes, in chunks of any size."""

    def __init__(self, stream: asyncio.StreamReader, seed: int) -> None:
        self.stream = stream
        self.random = random.Random(seed)
        self.sizes: list[int] = []  # the chunk sizes handed out, for the tests

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self.stream.read(self.random.choice((1, 7, 100, 4096, 65536))):
            self.sizes.append(len(data))
            yield data


class StandInContainerProcess:
    """modal.container_process.ContainerProcess[bytes], over a local subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process, cap: int) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.stdin = StandInStreamWriter(proc.stdin, cap)
        self.stdout = StandInStreamReader(proc.stdout, seed=proc.pid)
        self.stderr = StandInStreamReader(proc.stderr, seed=proc.pid + 1)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @twin
    async def wait(self) -> int:
        return await self.proc.wait()

    @twin
    async def poll(self) -> int | None:
        return self.proc.returncode


class StandInApp:
    """modal.App, as ``App.lookup`` returns it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.app_id = f"ap-standin-{name}"

    @class_twin
    async def lookup(cls, name: str, *, create_if_missing: bool = False, **_: Any) -> StandInApp:
        return cls(name)


class StandInImage:
    """modal.Image: records what would be built."""

    def __init__(self, layers: tuple[tuple[Any, ...], ...]) -> None:
        self.layers = layers

    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> StandInImage:
        return StandInImage((("debian_slim", python_version),))

    def uv_pip_install(self, *packages: str, **_: Any) -> StandInImage:
        return StandInImage((*self.layers, ("uv_pip_install", *packages)))

    def pip_install_from_requirements(self, path: str, *_: Any, **__: Any) -> StandInImage:
        return StandInImage((*self.layers, ("pip_install_from_requirements", path)))


class StandInSecret:
    """modal.Secret.from_dict: holds the values (Modal would hold them in its service)."""

    def __init__(self, env: dict[str, str | None]) -> None:
        self.env = env

    @staticmethod
    def from_dict(env_dict: dict[str, str | None]) -> StandInSecret:
        return StandInSecret(dict(env_dict))


class StandInVolume:
    """modal.Volume.from_name(...).with_mount_options(...): records the name and options."""

    def __init__(self, name: str, read_only: bool | None = None) -> None:
        self.name = name
        self.read_only = read_only

    @staticmethod
    def from_name(name: str, *, create_if_missing: bool = False, **_: Any) -> StandInVolume:
        return StandInVolume(name)

    def with_mount_options(self, *, read_only: bool | None = None, **_: Any) -> StandInVolume:
        return StandInVolume(self.name, read_only)


class StandInModalSandbox:
    """modal.Sandbox: ``create`` records, ``exec`` runs locally, ``terminate`` kills."""

    running: ClassVar[dict[str, StandInModalSandbox]] = {}
    stdin_cap: ClassVar[int] = EXEC_STDIN_CAP
    ids = itertools.count(1)

    def __init__(self, entrypoint: tuple[str, ...], options: dict[str, Any]) -> None:
        self.object_id = f"sb-standin-{next(self.ids)}"
        self.entrypoint = entrypoint
        self.options = options
        self.tags: dict[str, str] = dict(options.get("tags") or {})
        self.processes: list[StandInContainerProcess] = []
        self.returncode: int | None = None

    @class_twin
    async def create(cls, *args: str, app: StandInApp | None = None, **options: Any) -> Any:
        if app is None:
            raise ValueError("an App is required to create a Sandbox from outside a container")
        sb = cls(args, {"app": app, **options})
        cls.running[sb.object_id] = sb
        return sb

    @class_twin
    async def list(
        cls, *, app_id: str | None = None, tags: dict[str, str] | None = None, **_: Any
    ) -> AsyncIterator[StandInModalSandbox]:
        for sb in list(cls.running.values()):
            if all(sb.tags.get(k) == v for k, v in (tags or {}).items()):
                yield sb

    @twin
    async def exec(self, *args: str, text: bool = True, **_: Any) -> StandInContainerProcess:
        if self.returncode is not None:
            raise RuntimeError(f"{self.object_id} has terminated")
        assert not text, "the stand-in speaks bytes only (exec(..., text=False))"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for secret in self.options.get("secrets") or []:
            env.update({k: v for k, v in secret.env.items() if v is not None})
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        process = StandInContainerProcess(proc, self.stdin_cap)
        self.processes.append(process)
        return process

    @twin
    async def terminate(self, *, wait: bool = False) -> int | None:
        """End every exec as a container's end would: SIGTERM, then SIGKILL after 2 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.proc.wait() for p in self.processes)), 2)
        if self.returncode is None:
            self.returncode = 137
        self.running.pop(self.object_id, None)
        return self.returncode if wait else None

    @twin
    async def poll(self) -> int | None:
        return self.returncode

    @twin
    async def get_tags(self) -> dict[str, str]:
        return dict(self.tags)


API = SimpleNamespace(
    App=StandInApp,
    Sandbox=StandInModalSandbox,
    Image=StandInImage,
    Secret=StandInSecret,
    Volume=StandInVolume,
)
