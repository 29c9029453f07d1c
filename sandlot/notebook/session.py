"""A session as its owner (the session server) holds it: sandbox, kernel, notebook file.

:class:`~sandlot.notebook.wire.SessionSpec` is everything a client asks for, as
plain data (it crosses a socket); :class:`OwnedSession` makes it real. In
notebook mode the sandbox runs a Jupyter kernel that is warm before the session
is handed out: models loaded, skills defined, workspace libraries (served ones
included) importable, init code run. Every cell an agent runs is written to
the session's ``.ipynb`` as it runs. Filesystem mode has no kernel, only files
and commands; mcp mode has only the served functions.

What a session gives back (a cell's outputs, in the reply and in the notebook
file; a command's output; a file read; a variable's repr; a served function's
result; an error) passes the session's :class:`~sandlot.sink.Sink`, made with
the secrets its sandboxes get: a secret value shows as ``[redacted NAME]``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import backends, snapshots
from ..config import SandboxConfig
from ..driver import protocol
from ..errors import ConfigError
from ..results import RestoreResult, SnapshotResult
from ..sandbox import AsyncSandbox
from ..secrets import Redactor, all_secret_values
from ..serving.library import Library, RemoteLibrary, serve_interface
from ..sink import Sink
from ..tasks import TaskScope
from .document import NotebookFile
from .execution import Collector, Execution, ExecutionError
from .kernel import KernelConnection, now_iso
from .skills import Skill, load_skills, loader_code, skills_prompt
from .wire import Mode, SessionError, SessionInfo, SessionSpec, Variable

MAX_VARIABLES_JSON = 1 << 20
# Where a kernel's state and the report on it pass, in the sandbox, on suspend and resume.
STATE_FILE = "/tmp/.sandlot-kernel-state"
REPORT_FILE = "/tmp/.sandlot-kernel-state.json"
MAX_KERNEL_STATE = 1 << 30  # the host holds a kernel's state in memory while it writes it
EMPTY_STATE = {"captured": [], "skipped": [], "modules": [], "tools": [], "cells": 0, "unlisted": 0}
SAVE_INTERVAL = 0.5  # seconds between notebook writes while a cell prints
RECORD_FORMAT = 1  # of the record beside a suspended session's snapshot, for the next server


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _default_notebook(spec: SessionSpec, name: str) -> Path:
    assert spec.notebook_dir is not None  # SessionSpec makes sure
    folder = Path(spec.notebook_dir)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60] or "session"
    path = folder / f"{stamp}_{safe}.ipynb"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{stamp}_{safe}_{n}.ipynb"
    return path


VARIABLES_CODE = """
def _sandlot_variables():
    import json, types
    shell = get_ipython()
    hidden = shell.user_ns_hidden
    found = []
    for name, value in list(shell.user_ns.items()):
        if name.startswith("_") or name in hidden or isinstance(value, types.ModuleType):
            continue
        try:
            text = repr(value)
        except Exception as exc:
            text = f"<repr failed: {type(exc).__name__}>"
        found.append({"name": name, "type": type(value).__name__, "repr": text[:200]})
    print(json.dumps(found[:1000]))
_sandlot_variables()
del _sandlot_variables
"""


class OwnedSession:
    """One session: its sandbox(es), its kernel and its notebook."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.session_id = uuid.uuid4().hex
        self.name = spec.name or f"session-{self.session_id[:8]}"
        self.created = self.last_activity = time.time()
        self.status = "starting"
        self.sandbox: AsyncSandbox | None = None
        self.servers: list[AsyncSandbox] = []
        self.libraries: list[RemoteLibrary] = []
        self.kernel: KernelConnection | None = None
        self.notebook: NotebookFile | None = None
        self.skills: list[Skill] = []
        self.prompt = ""
        self.current: asyncio.Task[Execution] | None = None
        self.cells = TaskScope("a notebook session")  # the running cell
        self.collector: Collector | None = None
        # Queues of clients streaming a cell's outputs, each with the cell (task) it follows.
        self.listeners: dict[asyncio.Queue[dict[str, Any]], asyncio.Task[Execution]] = {}
        self.lock = asyncio.Lock()  # one cell (or edit) at a time
        self.sink = Sink(Redactor(all_secret_values(spec.config, spec.serve_config)))
        self.suspended: Path | None = None  # the snapshot of a suspended session

    # -- start -----------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything; on failure end what was made and raise with the reason."""
        try:
            await self._start()
        except BaseException:
            await self.shutdown()
            raise
        self.status = "idle"
        self.touch()  # its idle time counts from when it is ready, not from when it was asked

    async def _start(self) -> None:
        spec = self.spec
        self.servers, self.libraries = [], []
        self.skills = load_skills(spec.skills) if spec.skills else []
        backend = backends.resolve(spec.backend)
        config = spec.config
        # A backend that installs nothing (SSH) runs the kernel with the far side's own
        # ipykernel; the kernel's start says so when that Python has none.
        if spec.mode == "notebook" and getattr(backend, "installs_packages", True):
            config = with_kernel(config)
        self.sandbox = AsyncSandbox(config, backend=backend)
        await self.sandbox.start()
        await self._install_libraries()
        if spec.mode == "notebook":
            await self._start_kernel()
            if self.notebook is None:  # a resumed session has its notebook open already
                await self._open_notebook()
        self.prompt = self._prompt()

    async def _install_libraries(self) -> None:
        assert self.sandbox is not None
        for path in self.spec.serve:
            server = AsyncSandbox(
                self.spec.serve_config or self.spec.config, backend=self.spec.backend
            )
            self.servers.append(server)
            await server.start()
            lib = await serve_interface(server, path, "library")
            assert isinstance(lib, RemoteLibrary)
            self.libraries.append(lib)
            for function in lib.functions:
                self.sandbox.router.add_route(f"{lib.name}.{function}", lib.route(function))
        local = [
            Library.from_directory(p) if Path(p).is_dir() else Library.from_file(p)
            for p in self.spec.libraries
        ]
        if not local and not self.libraries:
            return
        with tempfile.TemporaryDirectory(prefix="sandlot-session-") as staging:
            for item in local:
                item.install(Path(staging))
            for served in self.libraries:
                served.install(Path(staging))
            await self.sandbox.files.upload(staging, ".")

    async def _start_kernel(self) -> None:
        assert self.sandbox is not None
        self.kernel = KernelConnection(self.sandbox)
        await self.kernel.start()
        await self._warm()

    async def _warm(self) -> None:
        """Load models and skills and run the init code, silently; any failure is raised."""
        steps: list[tuple[str, str]] = []
        for model in self.spec.config.models:
            cfg = json.dumps(model.model_dump(mode="json"))
            steps.append(
                (
                    f"loading model {model.name!r}",
                    "from sandlot_driver.exposed import load_model as _sandlot_load\n"
                    f"globals().update(_sandlot_load(__import__('json').loads({cfg!r})))\n"
                    "del _sandlot_load",
                )
            )
        steps += [
            (f"loading skill {s.name!r} ({s.path})", loader_code(s))
            for s in self.skills
            if s.preload
        ]
        steps += [
            (f"running init code #{i + 1}", code) for i, code in enumerate(self.spec.init_code)
        ]
        assert self.kernel is not None
        for what, code in steps:
            ex = await self.kernel.execute(code, silent=True, timeout=self.spec.cell_timeout)
            if ex.error is not None:
                raise SessionError(
                    self.sink.text(
                        f"the session's kernel failed {what}: {ex.error.name}: {ex.error.value}\n"
                        f"{ex.error.traceback[-3000:]}"
                    )
                )

    async def _open_notebook(self) -> None:
        spec = self.spec
        path = Path(spec.notebook) if spec.notebook else _default_notebook(spec, self.name)
        if path.exists():
            self.notebook = NotebookFile.open(path)
            if spec.on_existing == "rerun":
                for index, source in enumerate(self.notebook.code_sources()):
                    self.notebook.replace_code(index, source)
                    await self._run_cell(index, source, spec.cell_timeout, None)
        else:
            self.notebook = NotebookFile.create(path, name=self.name)
            self.notebook.save()

    def _prompt(self) -> str:
        parts = []
        names = [m.var_name for m in self.spec.config.models]
        if names and self.spec.mode == "notebook":
            listed = ", ".join(f"`{n}`" for n in names)
            parts.append(
                f"## Pre-loaded models\nThe kernel already holds {listed} (and their tokenizers "
                "where loaded). Do not load them again."
            )
        if self.skills:
            parts.append(skills_prompt(self.skills))
        parts += [lib.prompt() for lib in self.libraries]
        local = [Path(p).stem for p in self.spec.libraries]
        if local:
            parts.append("Local libraries you can import: " + ", ".join(f"`{n}`" for n in local))
        return "\n\n".join(p.strip() for p in parts if p.strip())

    # -- what clients see ------------------------------------------------------------

    def info(self) -> SessionInfo:
        """The session's description."""
        return SessionInfo(
            session_id=self.session_id,
            kernel_id=self.kernel.kernel_id if self.kernel else None,
            name=self.name,
            mode=self.spec.mode,
            notebook_path=str(self.notebook.path) if self.notebook else self.spec.notebook,
            status=self.kernel.status if self.kernel and self.status == "idle" else self.status,
            persist=self.spec.persist,
            idle_timeout=self.spec.idle_timeout,
            created=self.created,
            last_activity=self.last_activity,
            prompt=self.prompt,
            functions=self.functions(),
        )

    def functions(self) -> list[dict[str, Any]]:
        """The served functions as MCP tools: name, description, input schema."""
        tools = []
        for lib in self.libraries:
            tools += lib.mcp().tools
        return tools

    def touch(self) -> None:
        self.last_activity = time.time()

    def busy(self) -> bool:
        return self.current is not None and not self.current.done()

    def _require(self, *modes: Mode) -> None:
        if self.spec.mode not in modes:
            raise SessionError(
                f"session {self.session_id} is in {self.spec.mode} mode; this needs "
                f"{' or '.join(modes)} mode"
            )

    # -- cells -----------------------------------------------------------------------

    async def _run_cell(
        self, index: int, code: str, timeout: float | None, collector: Collector | None
    ) -> Execution:
        assert self.kernel is not None and self.notebook is not None
        notebook = self.notebook
        assert self.sandbox is not None
        collector = collector or Collector(self.sandbox.config.max_output_bytes, sink=self.sink)
        started = now_iso()

        async def on_output(output: dict[str, Any]) -> None:
            if output["output_type"] == "clear_output":
                notebook.clear_outputs(index, wait=output.get("wait") is True)
            else:
                try:
                    notebook.add_output(index, output)
                except ValueError:  # one nbformat refuses: the file stays valid without it
                    return
            notebook.save_if_due(SAVE_INTERVAL)
            cell = asyncio.current_task()
            for queue, follows in list(self.listeners.items()):
                if follows is cell:  # a client still draining an earlier cell gets none of this
                    queue.put_nowait(output)

        ex = await self.kernel.execute(
            code,
            timeout=timeout,
            max_output_bytes=self.sandbox.config.max_output_bytes,
            on_output=on_output,
            collector=collector,
        )
        if ex.restarted and ex.timed_out:  # the timeout cost a fresh kernel: warm it up again
            try:
                await self._warm()
            except Exception as exc:
                ex.error = ExecutionError(
                    "SessionError",
                    f"{ex.error.value if ex.error else ''}; warming the new kernel up failed: "
                    f"{exc}",
                    "",
                )
        status = "ok"
        if ex.timed_out:
            status = "timeout"
        elif ex.error is not None:
            status = "interrupted" if ex.error.name == "KeyboardInterrupt" else "error"
        notebook.finish(
            index,
            execution_count=ex.execution_count,
            status=status,
            started=started,
            finished=now_iso(),
        )
        notebook.save()
        ex.cell_index = index
        return ex

    async def start_cell(self, code: str, timeout: float | None, edit: int | None) -> None:
        """Queue ``code`` (a new cell, or code cell ``edit`` replaced) and start it running."""
        self._require("notebook")
        assert self.notebook is not None
        if self.busy():
            raise SessionError(
                "a cell is still running in this session: wait for it (wait_for_cell), or "
                "interrupt it"
            )
        if edit is None:
            index = self.notebook.append_code(code)
        else:
            try:
                index = self.notebook.replace_code(edit, code)
            except IndexError as exc:
                raise SessionError(str(exc)) from None
        self.notebook.save_if_due(SAVE_INTERVAL)  # the cell is saved with its outputs at its end
        assert self.sandbox is not None
        self.collector = Collector(self.sandbox.config.max_output_bytes, sink=self.sink)
        self.collector.execution.cell_index = index
        timeout = timeout if timeout is not None else self.spec.cell_timeout
        self.current = self.cells.spawn(
            self._run_cell(index, code, timeout, self.collector), awaited=True
        )
        self.touch()

    async def wait(self, wait: float | None) -> Execution:
        """The running cell's result when it ends, or what it has so far after ``wait`` s."""
        task = self.current
        if task is None:
            raise SessionError("no cell has run in this session yet")
        try:
            ex = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            assert self.collector is not None
            snapshot = copy.deepcopy(self.collector.execution)
            snapshot.done = False
            return snapshot
        self.touch()
        return ex

    async def add_markdown(self, text: str) -> int:
        self._require("notebook")
        assert self.notebook is not None
        position = self.notebook.append_markdown(text)
        self.notebook.save()
        self.touch()
        return position

    async def variables(self) -> list[Variable]:
        self._require("notebook")
        assert self.kernel is not None
        if self.busy():
            raise SessionError("a cell is running; list variables when it ends, or interrupt it")
        ex = await self.kernel.execute(
            VARIABLES_CODE, silent=True, max_output_bytes=MAX_VARIABLES_JSON
        )
        if ex.error is not None:
            raise SessionError(f"could not list the variables: {ex.error.name}: {ex.error.value}")
        try:
            found = json.loads(ex.stdout)
        except ValueError:
            raise SessionError("the kernel's list of variables was not JSON") from None
        out = []
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict) and all(
                isinstance(item.get(k), str) for k in ("name", "type", "repr")
            ):
                fields = [item[k][:200] for k in ("name", "type", "repr")]
                out.append(Variable(*self.sink.data(fields)))
        self.touch()
        return out

    async def interrupt(self) -> None:
        self._require("notebook")
        assert self.kernel is not None
        self.kernel.interrupt()
        self.touch()

    async def restart(self) -> None:
        """A fresh kernel, warmed up again (models, skills, init code)."""
        self._require("notebook")
        assert self.kernel is not None
        if self.current is not None and not self.current.done():
            self.kernel.interrupt()
        await self.kernel.restart()
        await self._warm()
        self.touch()

    # -- filesystem and mcp modes ----------------------------------------------------

    async def exec(self, command: str, timeout: float | None) -> dict[str, Any]:
        self._require("filesystem")
        assert self.sandbox is not None
        result = await self.sandbox.exec("/bin/sh", "-c", command, timeout=timeout)
        self.touch()
        shown: dict[str, Any] = self.sink.data(asdict(result))
        return shown

    async def read_file(self, path: str) -> str:
        self._require("filesystem", "notebook")  # a notebook's kernel has a workspace too
        assert self.sandbox is not None
        data = await self.sandbox.files.read(path)
        self.touch()
        return self.sink.text(data.decode("utf-8", "replace"))

    async def write_file(self, path: str, content: str) -> int:
        self._require("filesystem", "notebook")
        assert self.sandbox is not None
        parent = os.path.dirname(path)
        if parent:
            await self.sandbox.files.mkdir(parent)
        size = await self.sandbox.files.write(path, content)
        self.touch()
        return size

    async def list_files(self, path: str) -> list[dict[str, Any]]:
        self._require("filesystem", "notebook")
        assert self.sandbox is not None
        entries = await self.sandbox.files.list(path)
        self.touch()
        return [{"name": self.sink.text(e.name), "type": e.type, "size": e.size} for e in entries]

    async def call_function(self, name: str, arguments: dict[str, Any]) -> Any:
        self._require("mcp")
        for lib in self.libraries:
            spec = lib.mcp()
            if any(t["name"] == name for t in spec.tools):
                result = await spec.acall_tool(name, arguments)
                self.touch()
                return self.sink.data(json_safe(result))
        known = [t["name"] for t in self.functions()]
        raise SessionError(f"no served function {name!r} in this session; functions: {known}")

    # -- suspend and resume --------------------------------------------------------------

    async def suspend(self, path: Path) -> SnapshotResult:
        """Write the kernel's variables and the workdir to snapshot ``path``; end the sandboxes.

        The session stays, ``suspended``; its next use resumes it. If the
        snapshot cannot be written the session runs on as it was, and the error
        says why.
        """
        self._require("notebook", "filesystem")
        assert self.sandbox is not None
        async with self.lock:
            state = b""
            report: dict[str, Any] = dict(EMPTY_STATE)
            if self.kernel is not None:
                state, report = await self._kernel_state("capture_shell", "save_state")
            path.parent.mkdir(parents=True, exist_ok=True)
            spool = snapshots.Spool(path.parent)
            try:
                spool.write(state)
                result = await snapshots.write(
                    self.sandbox, path, report, spool, snapshots.DEFAULT_MAX_BYTES
                )
            finally:
                spool.close()
            try:
                if self.adoptable():
                    record = json.dumps(self.record()).encode()
                    _write_private(path.with_suffix(".json"), record)
                await self._end_sandboxes()
            except BaseException:  # not suspended after all: it runs on, and nothing is left
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
                raise
            self.suspended = path
            self.status = "suspended"
        return result

    def adoptable(self) -> bool:
        """Whether a later session server may take this session up when it is suspended.

        A persistent one whose sandboxes get no named secrets: their values came
        from the client that started it and are written nowhere.
        """
        spec = self.spec
        named = [*spec.config.secrets, *(spec.serve_config.secrets if spec.serve_config else [])]
        return spec.persist and not named and spec.mode != "mcp"

    def record(self) -> dict[str, Any]:
        """What a later server needs to take this suspended session up (no secret values)."""
        spec = self.spec.model_dump(mode="json")
        if self.notebook is not None:  # the same file goes on, as it was
            spec |= {"notebook": str(self.notebook.path), "on_existing": "continue"}
        return {
            "format": RECORD_FORMAT,
            "session_id": self.session_id,
            "name": self.name,
            "created": self.created,
            "spec": spec,
        }

    @classmethod
    def adopt(cls, record_path: Path) -> OwnedSession:
        """The suspended session a stopped server left at ``record_path`` (``ID.json``).

        Raises ``SessionError`` saying why when the record or its snapshot is
        not usable; the files are then left where they are.
        """
        try:
            record = json.loads(record_path.read_bytes())
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                raise ValueError(f"not a format {RECORD_FORMAT} session record")
            sid, name, created = record["session_id"], record["name"], record["created"]
            if sid != record_path.stem or not (isinstance(sid, str) and sid.isalnum()):
                raise ValueError("its session id is not its file's name")
            if not isinstance(name, str) or not isinstance(created, int | float):
                raise ValueError("its name or creation time is not of the right type")
            spec = SessionSpec.from_elsewhere(record["spec"])
            snap = record_path.with_suffix(".snap")
            if not snap.is_file():
                raise ValueError(f"its snapshot {snap.name} is missing")
            session = cls(spec)
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            raise SessionError(f"{record_path}: cannot take this session up: {exc}") from None
        session.session_id, session.name, session.created = sid, name, float(created)
        session.suspended, session.status = snap, "suspended"
        return session

    async def resume(self) -> RestoreResult | None:
        """Start a suspended session again from its snapshot; a running one is left as it is.

        The sandboxes start as the first time (models, skills, init code), then
        the snapshot's files and variables come back, and the snapshot file is
        removed. If that fails the session stays suspended, its snapshot kept.
        """
        async with self.lock:
            path = self.suspended
            if path is None:
                return None
            self.status = "resuming"
            try:
                snap = await asyncio.to_thread(snapshots.check, path)
                await self._start()
                assert self.sandbox is not None
                files = await snapshots.send_workdir(self.sandbox, snap)
                reply: dict[str, Any] = {"restored": [], "failed": [], "unlisted": 0}
                if self.kernel is not None:
                    state = await asyncio.to_thread(snapshots.read_state, snap)
                    _, reply = await self._kernel_state("restore_shell", "load_state", state)
                result = snapshots.restored(snap, reply, files, ())
            except BaseException:
                await self._end_sandboxes()
                self.status = "suspended"
                raise
            self.suspended = None
            self.status = "idle"
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            self.touch()
            return result

    async def _kernel_state(
        self, step: str, reply: str, state: bytes | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """Run ``sandlot_driver.snapshot.<step>`` in the kernel; its state and checked report.

        The state and the report pass through files in the sandbox's ``/tmp``;
        the report is the sandbox's word, checked as the driver's reply would be.
        """
        assert self.sandbox is not None and self.kernel is not None
        files = self.sandbox.files
        if state is not None:
            await files.write(STATE_FILE, state)
        code = (
            f"__import__('sandlot_driver.snapshot').snapshot.{step}("
            f"get_ipython(), {STATE_FILE!r}, {REPORT_FILE!r})"
        )
        ex = await self.kernel.execute(code, silent=True, timeout=self.spec.cell_timeout)
        if ex.error is not None:
            raise SessionError(
                self.sink.text(f"the kernel could not {step}: {ex.error.name}: {ex.error.value}")
            )
        try:
            report = json.loads(await files.read(REPORT_FILE, max_bytes=MAX_VARIABLES_JSON))
            protocol.check(report, protocol.REPLIES[reply], f"the kernel's {step} report")
        except (ValueError, protocol.ProtocolError) as exc:
            raise SessionError(f"the kernel's {step} report is unusable: {exc}") from None
        taken = b""
        if state is None:
            taken = await files.read(STATE_FILE, max_bytes=MAX_KERNEL_STATE)
        await files.remove(STATE_FILE)
        return taken, report

    # -- end ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """End the kernel and every sandbox; the notebook file stays (a snapshot does not)."""
        self.status = "dead"
        if self.suspended is not None:
            self.suspended.unlink(missing_ok=True)
            self.suspended.with_suffix(".json").unlink(missing_ok=True)
            self.suspended = None
        await self._end_sandboxes()

    async def _end_sandboxes(self) -> None:
        await self.cells.close()
        if self.kernel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.kernel.shutdown(), 10)
        if self.notebook is not None:
            with contextlib.suppress(OSError):
                self.notebook.save()
        for sandbox in [self.sandbox, *self.servers]:
            if sandbox is not None:
                with contextlib.suppress(Exception):
                    await sandbox.terminate()
        self.kernel, self.sandbox = None, None


def with_kernel(config: SandboxConfig) -> SandboxConfig:
    """``config`` with ``ipykernel`` among its packages (added when it does not name it)."""
    if any(
        p.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() == "ipykernel"
        for p in config.python_packages
    ):
        return config
    return config.model_copy(update={"python_packages": [*config.python_packages, "ipykernel"]})


def json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it over the session socket.

    Bytes become ``{"type": "bytes", "size": n, "base64": ...}`` (nothing lost);
    arrays and tensors their ``tolist()``; tuples lists; anything else its repr.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return {"type": "bytes", "size": len(raw), "base64": base64.b64encode(raw).decode()}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays, torch tensors
    if callable(tolist):
        return json_safe(tolist())
    return repr(value)
