"""What clients and the session server say to each other, declared once for both sides.

The session server (:mod:`sandlot.notebook.server`) and its clients
(:mod:`sandlot.notebook.client`) speak JSON lines over a Unix socket:

- a request is ``{"id": n, "op": OP, ...}``, the fields of OP's model in
  :data:`OPERATIONS`;
- its reply is ``{"id": n, "ok": true, "result": ...}``, the result shaped as
  the operation's reply type, or ``{"id": n, "ok": false, "error": {...}}``
  (:class:`Failure`);
- while a cell the client waits on prints, ``{"id": n, "event": "output",
  "output": {...}}`` lines come first.

Each side checks every line from the other against these models before it
reads a field: a client may be hostile input to the server (any process of the
user can connect), and a malformed request gets an error reply, never a crash.
An error crosses as its type, message and (for :class:`~sandlot.errors.SandboxDied`)
cause, and the client raises it again as the same class when the class is one
of :data:`REBUILT`; any other name becomes a :class:`SessionError` quoting it.
No name the peer sends is ever imported.

This module is all a client needs of the session side: it imports no server
code and no nbformat.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import SandboxConfig, _Strict, host_path, is_written_elsewhere
from ..errors import CallTimeout, ConfigError, DeathCause, SandboxDied, SandboxError
from .execution import Execution

MAX_LINE = 64 << 20  # the longest line either side reads
SOCKET_NAME = "server.sock"
SUSPENDED = "suspended"  # the folder, in the server's, of suspended sessions' snapshots
Mode = Literal["notebook", "filesystem", "mcp"]


def sessions_dir() -> Path:
    """This user's session directory: the socket, the lock and the server's log."""
    configured = os.environ.get("SANDLOT_SESSIONS_DIR")
    if configured:
        folder = Path(configured).expanduser().absolute()
    else:
        from ..backends.local import _state_root

        folder = _state_root() / "sessions"
    try:
        st = folder.lstat()  # every connection asks: made once, checked each time
    except FileNotFoundError:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"{folder} must be a directory of yours closed to others (mode 0700): it holds the "
            "socket that controls your sessions"
        )
    return folder


# -- errors ----------------------------------------------------------------------------


class SessionError(SandboxError):
    """A session operation failed; the message says why and what to do."""


class KernelDied(SessionError):
    """The kernel process ended; the message holds its last words."""


# -- what a session is -----------------------------------------------------------------


def check_mode(mode: str) -> Mode:
    """``mode`` if it names an execution mode; ConfigError otherwise."""
    if mode not in ("notebook", "filesystem", "mcp"):
        raise ConfigError(f"unknown session mode {mode!r}: use 'notebook', 'filesystem' or 'mcp'")
    return mode  # type: ignore[return-value]


class SessionSpec(_Strict):
    """What a notebook session is made of (sent by a client to the session server)."""

    config: SandboxConfig = Field(default_factory=SandboxConfig)
    mode: Mode = "notebook"
    name: str | None = None
    backend: str | None = None
    notebook: str | None = Field(None, description="An existing or new .ipynb to write to.")
    notebook_dir: str | None = Field(
        None,
        validate_default=True,
        description="Where a new notebook goes (default: ./notebooks of the process that writes "
        "the spec).",
    )
    on_existing: Literal["continue", "rerun"] = "continue"
    skills: list[str] = Field(default_factory=list)
    init_code: list[str] = Field(default_factory=list)
    libraries: list[str] = Field(
        default_factory=list, description="Local .py files or package directories to import."
    )
    serve: list[str] = Field(
        default_factory=list, description="Interface files whose @expose functions are served."
    )
    serve_config: SandboxConfig | None = Field(
        None, description="The serving sandbox's config (default: the session's)."
    )
    persist: bool = False
    idle_timeout: float | None = Field(3600.0, gt=0)
    cell_timeout: float | None = Field(None, gt=0, description="Default timeout of each cell.")

    # Host paths are made absolute by the client, against its own working directory: the
    # session server is shared by every client of the user and its own directory is that
    # of whichever process started it. It validates with from_elsewhere, refusing any path
    # still relative.

    @field_validator("notebook")
    @classmethod
    def _absolute_unresolved(cls, v: str | None) -> str | None:
        """Absolute, with a link at the path left as it is: the notebook refuses it."""
        return None if v is None else host_path(v, follow_links=False)

    @field_validator("notebook_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is None:
            if is_written_elsewhere():
                return None  # needed only for a new notebook: see the model validator
            v = "notebooks"
        return host_path(v)

    @field_validator("skills", "libraries", "serve")
    @classmethod
    def _absolute_all(cls, v: list[str]) -> list[str]:
        return [host_path(p) for p in v]

    @model_validator(mode="after")
    def _says_where_a_new_notebook_goes(self) -> SessionSpec:
        if self.mode == "notebook" and self.notebook is None and self.notebook_dir is None:
            raise ValueError(
                "give notebook_dir or notebook (absolute): the session server has no directory "
                "of its own to put a new notebook in"
            )
        return self


@dataclass
class SessionInfo:
    """A session as clients see it."""

    session_id: str
    kernel_id: str | None
    name: str
    mode: str
    notebook_path: str | None
    status: str
    persist: bool
    idle_timeout: float | None
    created: float
    last_activity: float
    prompt: str
    functions: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


@dataclass
class Variable:
    """A name in the kernel's namespace: its type and a short repr."""

    name: str
    type: str
    repr: str


# -- requests --------------------------------------------------------------------------

R = TypeVar("R")


class _Message(BaseModel):
    """A line of the wire: strict types, no unknown field, never changed once made."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Request(_Message, Generic[R]):
    """A request; ``R`` is its reply's type, declared once as ``class Op(Request[Reply])``.

    ``op`` is the operation's name on the wire; ``reply`` checks (client) and
    encodes (server) the result.
    """

    op: ClassVar[str]
    reply: ClassVar[TypeAdapter[Any]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "op" in cls.__dict__:  # an operation, not one of the bases below
            base = cls.__bases__[0]
            assert issubclass(base, BaseModel)
            args = base.__pydantic_generic_metadata__["args"]
            if len(args) != 1:
                raise TypeError(f"{cls.__name__} must name its reply: {cls.__name__}(Base[Reply])")
            cls.reply = TypeAdapter(args[0])


class OnSession(Request[R], Generic[R]):
    """A request about one session, by id."""

    session_id: str


class SessionMethod(OnSession[R], Generic[R]):
    """A request the server answers by calling the session's method named ``op``.

    The request's fields but ``session_id`` are its keyword arguments (see
    :class:`sandlot.notebook.session.OwnedSession`); what it returns is the reply.
    """


class Ping(Request[int]):
    """Whether the server runs; the reply is its process id."""

    op = "ping"


class Start(Request[SessionInfo]):
    """Start a session.

    ``spec`` is a :class:`SessionSpec` as JSON: the server validates it with
    ``SessionSpec.from_elsewhere``, which refuses relative host paths.
    ``secrets`` are the values of the secrets the spec names, read by the client.
    """

    op = "start"
    spec: dict[str, Any]
    secrets: dict[str, str] = {}


class ListSessions(Request[list[SessionInfo]]):
    """Every session the server holds."""

    op = "list"


class Info(OnSession[SessionInfo]):
    """The session's state now (it counts as activity: attaching asks this)."""

    op = "info"


class Shutdown(OnSession[None]):
    """End the session for every client."""

    op = "shutdown"


class Execute(OnSession[Execution]):
    """Run ``code`` as a new cell, or in place of code cell ``cell_index``, and follow it.

    ``wait``: reply after that many seconds with what came so far. ``stream``:
    send each output as an ``output`` event meanwhile.
    """

    op = "execute"
    code: str
    cell_index: int | None = None
    timeout: float | None = None
    wait: float | None = None
    stream: bool = False


class Wait(OnSession[Execution]):
    """Follow the latest cell (see :class:`Execute` for ``wait`` and ``stream``)."""

    op = "wait"
    wait: float | None = None
    stream: bool = False


class AddMarkdown(SessionMethod[int]):
    """Add a markdown cell; the reply is its position."""

    op = "add_markdown"
    text: str


class Variables(SessionMethod[list[Variable]]):
    """The kernel's variables."""

    op = "variables"


class Interrupt(SessionMethod[None]):
    """Interrupt the running cell."""

    op = "interrupt"


class Restart(SessionMethod[None]):
    """A fresh kernel, warmed up again."""

    op = "restart"


class Exec(SessionMethod[dict[str, Any]]):
    """Run a shell command in the workspace (filesystem mode)."""

    op = "exec"
    command: str
    timeout: float | None = None


class ReadFile(SessionMethod[str]):
    """A file's text."""

    op = "read_file"
    path: str


class WriteFile(SessionMethod[int]):
    """Write a file; the reply is its size."""

    op = "write_file"
    path: str
    content: str


class ListFiles(SessionMethod[list[dict[str, Any]]]):
    """A directory's entries: name, type, size."""

    op = "list_files"
    path: str = "."


class CallFunction(SessionMethod[Any]):
    """Call a served function by its tool name (mcp mode)."""

    op = "call_function"
    name: str
    arguments: dict[str, Any] = {}


def _table(*operations: type[Request[Any]]) -> dict[str, type[Request[Any]]]:
    table = {operation.op: operation for operation in operations}
    assert len(table) == len(operations), "two operations with one name"
    return table


# Every operation of the session wire, by its name on the wire.
OPERATIONS: dict[str, type[Request[Any]]] = _table(
    Ping,
    Start,
    ListSessions,
    Info,
    Shutdown,
    Execute,
    Wait,
    AddMarkdown,
    Variables,
    Interrupt,
    Restart,
    Exec,
    ReadFile,
    WriteFile,
    ListFiles,
    CallFunction,
)


class BadRequest(SessionError):
    """A request line that is not one of :data:`OPERATIONS` with the right fields.

    ``request_id`` is the line's id when it had a valid one (its reply carries it).
    """

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def _problems(exc: ValidationError) -> str:
    """A validation error's problems, one per field, without the values sent."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors()[:20]
    )


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 1 << 53


def encode_request(request_id: int, request: Request[Any]) -> bytes:
    """The line that sends ``request``: its id and operation, then its fields."""
    fields = request.model_dump_json().encode()  # pydantic writes it in one pass
    head = b'{"id":%d,"op":%s' % (request_id, json.dumps(request.op).encode())
    return head + (b"}" if fields == b"{}" else b"," + fields[1:]) + b"\n"


def decode_request(line: bytes) -> tuple[int, Request[Any]]:
    """A request line's id and request, checked; :class:`BadRequest` if it is neither."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        raise BadRequest("bad request: not a line of JSON") from None
    if not isinstance(item, dict) or not _is_id(item.get("id")):
        raise BadRequest("bad request: not an object with an integer 'id'")
    request_id: int = item.pop("id")
    op = item.pop("op", None)
    operation = OPERATIONS.get(op) if isinstance(op, str) else None
    if operation is None:
        raise BadRequest(
            f"unknown operation {op!r}; the operations: {', '.join(OPERATIONS)}", request_id
        )
    try:
        return request_id, operation.model_validate(item)
    except ValidationError as exc:
        raise BadRequest(f"bad {op!r} request: {_problems(exc)}", request_id) from None


# -- replies ---------------------------------------------------------------------------


class ErrorInfo(_Message):
    """An exception as it crosses: its class's name, its message, and what it carries.

    ``cause`` and ``detail`` are :class:`~sandlot.errors.SandboxDied`'s.
    """

    type: str = Field(max_length=200)
    message: str
    cause: str | None = None
    detail: str | None = None


class Done(_Message):
    """The reply to request ``id``: its result."""

    id: int = Field(ge=0, le=1 << 53)
    ok: Literal[True]
    result: Any = None


class Failure(_Message):
    """The reply to request ``id``: the error it raised."""

    id: int | None = Field(ge=0, le=1 << 53)
    ok: Literal[False]
    error: ErrorInfo


class Output(_Message):
    """An output of the cell request ``id`` follows, as it comes."""

    id: int = Field(ge=0, le=1 << 53)
    event: Literal["output"]
    output: dict[str, Any]


def _reply_kind(line: Any) -> str | None:
    """Which of the three a line says it is, so that only that model checks it."""
    if not isinstance(line, dict):
        return None
    if "event" in line:
        return "output"
    return "done" if line.get("ok") is True else "failure"


_REPLY: TypeAdapter[Done | Failure | Output] = TypeAdapter(
    Annotated[
        Annotated[Done, Tag("done")]
        | Annotated[Failure, Tag("failure")]
        | Annotated[Output, Tag("output")],
        Discriminator(_reply_kind),
    ]
)


def decode_reply(line: bytes) -> Done | Failure | Output:
    """A line from the server, checked; ValueError if it has no shape of the wire."""
    try:
        item = json.loads(line)  # the standard library reads long strings faster than pydantic
    except RecursionError:
        raise ValueError("a line nested too deep") from None
    try:
        return _REPLY.validate_python(item)
    except ValidationError as exc:
        raise ValueError(f"a line that is no reply: {_problems(exc)}") from None


def done(request_id: int, request: Request[Any], result: Any) -> dict[str, Any]:
    """The reply carrying ``result``, encoded as ``request``'s reply type says."""
    return {"id": request_id, "ok": True, "result": request.reply.dump_python(result, mode="json")}


def output(request_id: int, out: dict[str, Any]) -> dict[str, Any]:
    """The event carrying one output of a cell."""
    return {"id": request_id, "event": "output", "output": out}


def failure(request_id: int | None, exc: BaseException) -> dict[str, Any]:
    """The reply carrying ``exc`` as :class:`ErrorInfo`."""
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
    if isinstance(exc, SandboxDied):
        error |= {"cause": exc.cause, "detail": exc.detail}
    return {"id": request_id, "ok": False, "error": error}


def _sandbox_died(error: ErrorInfo) -> SandboxError | None:
    if error.cause not in get_args(DeathCause):
        return None
    return SandboxDied(error.cause, error.detail or "")  # type: ignore[arg-type]


# The error classes a client raises again, by name: only sandlot's own, each built here.
# A SkillError comes back as its base, ConfigError: its message holds its path and line.
REBUILT: dict[str, Callable[[ErrorInfo], SandboxError | None]] = {
    "SessionError": lambda e: SessionError(e.message),
    "BadRequest": lambda e: BadRequest(e.message),
    "KernelDied": lambda e: KernelDied(e.message),
    "ConfigError": lambda e: ConfigError(e.message),
    "SkillError": lambda e: ConfigError(e.message),
    "CallTimeout": lambda e: CallTimeout(e.message),
    "SandboxDied": _sandbox_died,
}


def rebuild(error: ErrorInfo) -> SandboxError:
    """The exception ``error`` describes: its own class if :data:`REBUILT` has it.

    Any other name (or a ``SandboxDied`` with an unknown cause) is a
    :class:`SessionError` whose message starts with that name.
    """
    make = REBUILT.get(error.type)
    rebuilt = make(error) if make is not None else None
    return rebuilt if rebuilt is not None else SessionError(f"{error.type}: {error.message}")
