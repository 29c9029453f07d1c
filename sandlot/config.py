"""What a sandbox is made of: ``SandboxConfig``, ``ModelConfig``, ``Mount``.

Configs are pydantic models that reject unknown fields. Any invalid input raises
:class:`sandlot.ConfigError` naming the field, what was wrong, and (for a
misspelt field) the name that was probably meant.
"""

from __future__ import annotations

import difflib
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

# True while a config written by another process (a session server's client) is
# validated: its host paths were made absolute there, against that process's working
# directory, and one that is still relative is refused, never read against this one's.
_written_elsewhere: ContextVar[bool] = ContextVar("sandlot_written_elsewhere", default=False)

# Paths inside a sandbox a volume may not cover: the system, and what sandlot mounts itself.
_RESERVED = (
    *("/usr/", "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/etc/", "/proc/", "/dev/"),
    "/sys/",
    "/.sandlot/",
)


def sandbox_path(path: str) -> str:
    """``path`` inside the sandbox in one spelling: ``.``, ``..``, repeated and trailing ``/`` gone.

    ``os.path.normpath`` keeps a leading ``//`` (POSIX leaves its meaning open); it
    is folded too, so ``//data/./x/`` and ``/data/x`` are one path.
    """
    _no_nul(path)
    return "/" + os.path.normpath(path).lstrip("/")


def _no_nul(path: str) -> None:
    """Refuse a NUL byte in a path: no file's name holds one, and bubblewrap's arguments
    travel NUL-separated (one would split an argument in two)."""
    if "\0" in path:
        raise ValueError(f"{path!r} holds a NUL byte, which no path may")


def path_within(path: str, parent: str) -> bool:
    """True when sandbox path ``path`` is ``parent`` or lies below it (both in one spelling)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _problems(model: type[BaseModel], exc: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) for each error, nested configs' errors flattened."""
    known = list(model.model_fields)
    found = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, ConfigError) and inner.problems:
            found += [(f"{where}.{loc}", msg) for loc, msg in inner.problems]
            continue
        msg = err["msg"].removeprefix("Value error, ")
        tag = err.get("ctx", {}).get("field")
        if tag is not None:  # a union's kind is unknown: the error is its tag field's
            given = err["input"].get(tag) if isinstance(err["input"], dict) else err["input"]
            found.append((f"{where}.{tag}", f"{msg} (got {given!r})"))
            continue
        if err["type"] == "extra_forbidden":
            field = str(err["loc"][-1])
            close = difflib.get_close_matches(field, known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
            )
            msg = f"unknown field{hint}"
        elif "input" in err and err["type"] != "missing" and err["loc"]:
            # (not for the whole config: it would show env values)
            msg += f" (got {err['input']!r})"
        found.append((where, msg))
    return found


def _config_error(model: type[BaseModel], exc: ValidationError) -> ConfigError:
    problems = [
        (f"{model.__name__}.{loc}" if loc else model.__name__, msg)
        for loc, msg in _problems(model, exc)
    ]
    error = ConfigError(
        "invalid configuration:\n  " + "\n  ".join(f"{loc}: {msg}" for loc, msg in problems)
    )
    error.problems = [(loc.split(".", 1)[1] if "." in loc else loc, msg) for loc, msg in problems]
    return error


def is_written_elsewhere() -> bool:
    """Whether the config being validated now came from another process (``from_elsewhere``)."""
    return _written_elsewhere.get()


def host_path(value: str, *, follow_links: bool = True) -> str:
    """``value`` as an absolute host path, made so where the config is written.

    A relative path is read against this process's working directory (links
    resolved unless ``follow_links`` is False). In a config another process
    wrote (:meth:`_Strict.from_elsewhere`) it is refused instead: the working
    directory that gives it a meaning is the writer's, not this process's.
    """
    _no_nul(value)
    if is_written_elsewhere():
        if not os.path.isabs(value):
            raise ValueError(
                f"{value!r} is a relative path; a config sent from another process carries "
                "absolute host paths, made so where it was written"
            )
        return value
    expanded = os.path.expanduser(value)
    return str(Path(expanded).resolve()) if follow_links else os.path.abspath(expanded)


class _Strict(BaseModel):
    """Base for configs: unknown fields are errors, and errors are ConfigError."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(type(self), exc) from None

    def __setattr__(self, name: str, value: Any) -> None:
        """Assign with validation; a refused value leaves the config as it was.

        (pydantic keeps the new value in place when a model validator refuses it.)
        """
        before = dict(self.__dict__)
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            object.__setattr__(self, "__dict__", before)
            raise _config_error(type(self), exc) from None

    @classmethod
    def from_elsewhere(cls, data: Any) -> Self:
        """``data`` (a config another process wrote and sent) validated; relative paths refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        token = _written_elsewhere.set(True)
        try:
            return cls(**data)
        finally:
            _written_elsewhere.reset(token)


class Mount(_Strict):
    """A host path visible inside the sandbox, read-only unless ``writable``."""

    source: str = Field(description="Path on the host.")
    target: str = Field(description="Absolute path inside the sandbox.")
    writable: bool = False

    @field_validator("source")
    @classmethod
    def _absolute_source(cls, v: str) -> str:
        return host_path(v)

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path inside the sandbox, such as /data")
        return sandbox_path(v)


VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def check_volume_name(name: str) -> str:
    """``name`` if it can name a volume (letters, digits, ``.``, ``_``, ``-``; 63 at most)."""
    if not VOLUME_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a volume name: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class VolumeMount(_Strict):
    """A named volume seen at a path inside the sandbox (see :mod:`sandlot.volumes`)."""

    name: str = Field(description="The volume's name ('sandlot volume list' shows them).")
    read_only: bool = Field(False, description="Mount it read-only.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_volume_name(v)


class ModelConfig(_Strict):
    """A transformers model to load inside a sandbox before its code runs."""

    name: str = Field(description="Hub id or local path of the model.")
    var_name: str = Field("model", description="Variable name the model is reachable by.")
    dtype: str = Field("auto", description="torch dtype name, or 'auto'.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    adapter: str | None = Field(None, description="PEFT adapter id or path applied on top.")
    tokenizer: bool = Field(True, description="Load the matching tokenizer too.")
    revision: str | None = None
    load_code: str | None = Field(None, description="Custom Python that loads the model.")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", "adapter")
    @classmethod
    def _local_path(cls, v: str | None) -> str | None:
        """A name that is a path on this host becomes absolute (the sandbox mounts it there).

        Only where the config is written: elsewhere a relative name is a hub id.
        """
        if v and not is_written_elsewhere() and os.path.exists(v):
            return host_path(v)
        return v

    @field_validator("var_name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError("must be a Python identifier")
        return v


# Fields SandboxConfig once had that name host paths: LocalBackend's options now.
MOVED_TO_LOCAL = ("workdir", "python")


class SandboxConfig(_Strict):
    """Everything that makes one sandbox, whatever runs it: limits, environment, packages,
    models, GPUs, mounts, volumes (what only one backend understands, such as a host
    directory behind the workdir, is that backend's option: ``LocalBackend(workdir=...)``).

    Sizes are per sandbox as a whole (a cgroup), except ``max_file_bytes``,
    ``max_cpu_seconds`` and ``max_open_files``, which bind each process.
    """

    python_packages: list[str] = Field(
        default_factory=list,
        description="Requirements installed with uv into a cached virtual environment.",
    )
    requirements: list[str] = Field(
        default_factory=list,
        description="Requirements files (pip's format) whose packages are installed too.",
    )
    index_url: str | None = Field(
        None,
        description=(
            "The package index uv installs from instead of its default. A requirements "
            "file or a project may not name one: only the user chooses where packages "
            "come from."
        ),
    )
    find_links: list[str] = Field(
        default_factory=list,
        description="Directories or pages of wheels uv may install from too (as for index_url).",
    )
    project: str | None = Field(
        None,
        description=(
            "A Python project directory (pyproject.toml, uv.lock or requirements files): its "
            "dependencies are installed as 'uv sync' would, and its own code is importable "
            "from the workdir, where 'sandlot exec --project' uploads it."
        ),
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set.")
    secrets: list[str] = Field(
        default_factory=list,
        description="Names of host environment variables passed in; nothing else leaks.",
    )
    # The named secrets' values when they come from elsewhere than this process's
    # environment: a session server gets them from the client that starts a session.
    # Never serialized, never shown.
    _secret_values: dict[str, str] | None = PrivateAttr(default=None)
    env_file: str | None = Field(
        None,
        description=(
            "A .env file whose entries are passed in as secrets: read when the sandbox "
            "starts, never stored in the config, redacted where sandlot shows output."
        ),
    )
    timeout: float | None = Field(3600.0, gt=0, description="Lifetime in seconds.")
    idle_timeout: float | None = Field(None, gt=0, description="Terminate after this idle time.")
    memory_mb: int | None = Field(2048, gt=0, description="Memory limit of the whole sandbox.")
    cpus: float | None = Field(None, gt=0, description="CPU share (1.5 = one and a half cores).")
    max_processes: int = Field(256, gt=1, description="Processes and threads at once.")
    max_output_bytes: int = Field(
        1 << 20,
        gt=0,
        description=(
            "Output kept per cell (at most 96 MiB) or process; the rest is dropped. "
            "Streamed process output is not held, so it may be larger."
        ),
    )
    max_file_bytes: int | None = Field(1 << 31, gt=0, description="Largest file a process writes.")
    disk_mb: int | None = Field(
        4096,
        gt=0,
        description=(
            "What the sandbox may add to its workdir (and to each writable volume) on the "
            "host disk; None: no limit."
        ),
    )
    max_cpu_seconds: int | None = Field(None, gt=0, description="CPU seconds per process.")
    max_open_files: int = Field(1024, gt=16, description="Open file descriptors per process.")
    network: bool = Field(False, description="Allow network access (off: not even loopback).")
    mounts: list[Mount] = Field(default_factory=list)
    volumes: dict[str, VolumeMount] = Field(
        default_factory=dict,
        description=(
            "Named volumes by path inside the sandbox: {'/data': 'cache'}, or "
            "{'/data': {'name': 'cache', 'read_only': True}}. They outlive sandboxes."
        ),
    )
    gpu: int | str | None = Field(
        None, description="GPUs to pass through: a count, 'all', indices '0,1', or a name."
    )
    models: list[ModelConfig] = Field(default_factory=list)
    isolation: Literal["auto", "bubblewrap", "none"] = Field(
        "auto", description="'auto' uses bubblewrap when it works and says what is missing if not."
    )
    interrupt_grace: float = Field(
        2.0, gt=0, description="Seconds code gets to stop after an interrupt before a kill."
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        """Fields only the local backend understands live in its options now."""
        if isinstance(data, dict):
            for name in MOVED_TO_LOCAL:
                if name in data:
                    raise ValueError(
                        f"{name!r} is a host path only the local backend understands: pass "
                        f"backend=LocalBackend({name}=...) (sandlot.backends.local) instead"
                    )
        return data

    @field_validator("mounts", mode="before")
    @classmethod
    def _mount_shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return [{"source": src, "target": dst} for src, dst in v.items()]
        return v

    @field_validator("volumes", mode="before")
    @classmethod
    def _volume_shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                target: {"name": spec} if isinstance(spec, str) else spec
                for target, spec in v.items()
            }
        return v

    @field_validator("volumes")
    @classmethod
    def _volume_targets(cls, v: dict[str, VolumeMount]) -> dict[str, VolumeMount]:
        out: dict[str, VolumeMount] = {}
        for target, spec in v.items():
            path = sandbox_path(target) if target.startswith("/") else ""
            if not path or path in ("/", "/workspace") or (path + "/").startswith(_RESERVED):
                raise ValueError(
                    f"{target!r} cannot hold a volume: give an absolute path such as /data, "
                    "outside the system directories and not the workdir itself"
                )
            if path in out:
                raise ValueError(f"two volumes at {path!r}")
            out[path] = spec
        return out

    @model_validator(mode="after")
    def _mount_points_apart(self) -> SandboxConfig:
        self.check_mount_points()
        return self

    def mount_points(self) -> list[tuple[str, str]]:
        """(path inside the sandbox, what is mounted there in words) for each mount and volume."""
        places = [
            (
                sandbox_path(m.target),
                f"the {'writable' if m.writable else 'read-only'} mount of {m.source!r} "
                f"at {m.target!r}",
            )
            for m in self.mounts
        ]
        places += [
            (
                sandbox_path(path),
                f"the {'read-only' if v.read_only else 'writable'} volume {v.name!r} at {path!r}",
            )
            for path, v in self.volumes.items()
        ]
        return places

    def check_mount_points(self) -> None:
        """Raise :class:`ConfigError` if a mount or volume lies at, or inside, another's path.

        bubblewrap runs as root and makes each mount point by path, following
        links. A point inside another mount or volume would be made in a host
        directory a sandbox can write (this one, or any other that mounts it
        writable: a volume is shared, a host directory may be mounted writable
        elsewhere), where a link planted earlier steers it onto the host.
        Backends call this again at start: a list or dict changed in place was
        never validated.
        """
        places = self.mount_points()
        for i, (inner, inner_what) in enumerate(places):
            for outer, outer_what in places[:i] + places[i + 1 :]:
                if inner == outer:
                    raise ConfigError(
                        f"{outer_what} and {inner_what} are at the same path: give each its own"
                    )
                if path_within(inner, outer):
                    raise ConfigError(
                        f"{inner_what} lies inside {outer_what}: bubblewrap would make its "
                        "mount point in a directory a sandbox can write, where a planted link "
                        "steers it onto the host; put the two side by side (such as /data "
                        "and /cache)"
                    )

    @field_validator("env_file", "project")
    @classmethod
    def _host_path(cls, v: str | None) -> str | None:
        return None if v is None else host_path(v)

    @field_validator("requirements")
    @classmethod
    def _host_paths(cls, v: list[str]) -> list[str]:
        return [host_path(p) for p in v]

    @field_validator("find_links")
    @classmethod
    def _links(cls, v: list[str]) -> list[str]:
        """Local directories made absolute (uv runs in a project's directory); URLs as given."""
        return [loc if "://" in loc else host_path(loc) for loc in v]

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("a GPU count must be at least 1 (use None for no GPU)")
        if isinstance(v, str) and not v.strip():
            raise ValueError("name a GPU ('A100'), indices ('0,1'), 'all', or use None")
        return v

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or "=" in name:
                raise ValueError(f"{name!r} is not an environment variable name")
        return v
