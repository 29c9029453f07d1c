"""An experiment as one YAML file: what it is made of, checked strictly, errors with their line.

The file has five parts besides ``name`` and ``task``: ``environment`` (where it
runs: backend, GPU, packages, models, files), ``execution`` (how the agent works
in it: a notebook, a filesystem, or only the served functions), ``harness`` (the
agent: a tool-calling LM, the RLM engine, or one from outside), and ``outputs``
(where the records go). Every part is a strict config: an unknown or misspelt
field is an error naming the field, the file and the line.

Relative paths in a file are relative to the file's directory; in Python, to the
working directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..config import ModelConfig, SandboxConfig, VolumeMount, _Strict
from ..errors import ConfigError
from ..rlm.engine import RLMConfig
from ..rlm.lm import LMConfig
from ..yamlfile import line_of, read_yaml_file

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}\Z")
MAX_FILE_BYTES = 1 << 20  # an experiment file, a task file, a context file is read whole


class EnvironmentConfig(_Strict):
    """Stage 1: where the experiment runs and what it has there."""

    backend: str | None = Field(
        None, description="Where sandboxes run: 'local' (default, $SANDLOT_BACKEND) or 'ray'."
    )
    gpu: int | str | None = Field(
        None, description="GPUs for the sandbox that holds the models: a count, 'all', '0,1'."
    )
    python_packages: list[str] = Field(
        default_factory=list, description="Requirements installed into the sandboxes."
    )
    models: list[ModelConfig] = Field(
        default_factory=list, description="Models loaded before the agent starts."
    )
    local_files: list[str] = Field(
        default_factory=list,
        description="Host files the sandboxes see read-only at /inputs/<file name>.",
    )
    local_dirs: list[str] = Field(
        default_factory=list,
        description="Host directories the sandboxes see read-only at /inputs/<directory name>.",
    )
    volumes: dict[str, VolumeMount] = Field(
        default_factory=dict, description="Named volumes by path: {'/data': 'cache'}."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set.")
    secrets: list[str] = Field(
        default_factory=list, description="Host environment variables passed in by name."
    )
    sandbox: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other SandboxConfig field (memory_mb, timeout, cpus, network, ...).",
    )

    @field_validator("volumes", mode="before")
    @classmethod
    def _volume_shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {t: {"name": s} if isinstance(s, str) else s for t, s in v.items()}
        return v

    @field_validator("local_files", "local_dirs")
    @classmethod
    def _inputs(cls, v: list[str]) -> list[str]:
        return [str(Path(p).expanduser().resolve()) for p in v]

    @model_validator(mode="after")
    def _whole(self) -> EnvironmentConfig:
        named = set(type(self).model_fields) - {"sandbox", "backend", "local_files", "local_dirs"}
        for key in self.sandbox:
            if key in named:
                raise ValueError(f"sandbox.{key}: set {key} at the environment level instead")
        names = [Path(p).name for p in [*self.local_files, *self.local_dirs]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"local_files and local_dirs share names {twice}: /inputs/ holds one")
        self.sandbox_config()  # the parts must make one valid SandboxConfig
        return self

    def sandbox_config(self, *, models: bool = True) -> SandboxConfig:
        """The sandboxes' config: the models and GPU only when ``models``."""
        from ..config import Mount

        mounts = [
            Mount(source=path, target=f"/inputs/{Path(path).name}")
            for path in [*self.local_files, *self.local_dirs]
        ]
        extra = dict(self.sandbox)
        mounts += [Mount(**m) if isinstance(m, dict) else m for m in extra.pop("mounts", [])]
        return SandboxConfig(
            **extra,
            python_packages=list(self.python_packages),
            models=list(self.models) if models else [],
            gpu=self.gpu if models else None,
            mounts=mounts,
            volumes=dict(self.volumes),
            env=dict(self.env),
            secrets=list(self.secrets),
        )


class ExecutionConfig(_Strict):
    """Stage 2: how the agent works in the environment."""

    type: Literal["notebook", "filesystem", "mcp"] = Field(
        "notebook",
        description="notebook (cells in a warm kernel), filesystem (a shell and files) or mcp "
        "(only the served functions).",
    )
    skills: list[str] = Field(
        default_factory=list, description="Skill files or directories (Markdown with Python)."
    )
    interfaces: list[str] = Field(
        default_factory=list,
        description="Interface files whose @expose functions are served, each importable "
        "as a module named after the file (model_tools.py -> model_tools).",
    )
    libraries: list[str] = Field(
        default_factory=list, description="Local .py files or packages the session imports."
    )
    init_code: list[str] = Field(
        default_factory=list, description="Code run in the kernel before the agent starts."
    )
    models_in: Literal["auto", "kernel", "served"] = Field(
        "auto",
        description="Where the environment's models load: in the kernel, or in the sandbox "
        "that serves the interfaces (auto: served when there are interfaces).",
    )
    cell_timeout: float | None = Field(None, gt=0, description="Default timeout of a cell (s).")
    idle_timeout: float = Field(
        3600.0, gt=0, description="A deployed session ends after this long unused (s)."
    )

    @field_validator("init_code", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("skills", "interfaces", "libraries")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        return [str(Path(p).expanduser().resolve()) for p in v]

    def models_served(self) -> bool:
        """Whether the models load in the serving sandbox rather than the kernel."""
        if self.models_in == "auto":
            return bool(self.interfaces)
        return self.models_in == "served"


class LimitsConfig(_Strict):
    """When the single agent stops, whatever it is doing (None: no limit)."""

    max_turns: int = Field(30, ge=1, description="LM calls.")
    max_tool_calls: int | None = Field(None, ge=1, description="Tool calls in all.")
    max_tokens: int | None = Field(None, ge=1, description="Prompt and completion tokens.")
    max_cost: float | None = Field(None, gt=0, description="Cost as the endpoint reports it.")
    max_time: float = Field(1800.0, gt=0, description="Wall-clock seconds of the harness.")


HarnessType = Literal["single_agent", "rlm", "external"]


class HarnessConfig(_Strict):
    """Stage 3: the agent that works on the task; one subclass per ``type``.

    ``harness:`` in a file is one of :class:`SingleAgentHarness` (the default),
    :class:`RLMHarness` or :class:`ExternalHarness`, told apart by ``type``;
    each holds only the fields its kind reads.
    """

    type: HarnessType = Field(description="single_agent, rlm or external.")
    runs: int = Field(1, ge=1, le=1000, description="Runs of the experiment, side by side.")
    max_parallel: int = Field(1, ge=1, description="Runs at once.")

    # Whether its runs need stage 2 (an execution session made for each run).
    needs_session: ClassVar[bool] = False


class _AgentHarness(HarnessConfig):
    """A harness whose agent sandlot runs: it needs an LM."""

    lm: LMConfig = Field(description="The LM (the root LM for rlm).")

    @model_validator(mode="before")
    @classmethod
    def _needs_lm(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lm") is None:
            kind = data.get("type", "single_agent")
            raise ValueError(f"harness type {kind!r} needs an lm: {{model: ..., base_url: ...}}")
        return data


class SingleAgentHarness(_AgentHarness):
    """An LM with tools on the execution session (``type: single_agent``)."""

    type: Literal["single_agent"] = "single_agent"
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    system_prompt: str | None = Field(None, description="Replaces the default system prompt.")
    tool_output_chars: int = Field(
        12_000, ge=500, description="The most of one tool result the LM sees."
    )
    images: bool = Field(
        False,
        description="Show the LM the images its cells display (bounded in bytes and pixels, in "
        "a message after the tool results); needs a model that reads images.",
    )

    needs_session: ClassVar[bool] = True


class RLMHarness(_AgentHarness):
    """The RLM engine, in sandboxes of the environment's config (``type: rlm``)."""

    type: Literal["rlm"] = "rlm"
    sub_lm: LMConfig | None = Field(None, description="The sub-LM (default: lm).")
    rlm: RLMConfig = Field(default_factory=RLMConfig, description="The engine's limits.")
    context: str | None = Field(
        None, description="The context, or a file (a .txt, .md or .json) holding it."
    )


class ExternalHarness(HarnessConfig):
    """Stages 1-2 only: an agent attaches from outside (``type: external``)."""

    type: Literal["external"] = "external"

    @field_validator("runs")
    @classmethod
    def _one_run(cls, v: int) -> int:
        if v > 1:
            raise ValueError("runs > 1 needs a harness that runs (single_agent or rlm)")
        return v


HARNESS_KINDS: dict[str, type[HarnessConfig]] = {
    "single_agent": SingleAgentHarness,
    "rlm": RLMHarness,
    "external": ExternalHarness,
}


def _harness_kind(value: Any) -> str | None:
    """The class name of the harness ``value`` is (None for an unknown ``type``)."""
    if isinstance(value, HarnessConfig):
        return type(value).__name__
    kind = value.get("type", "single_agent") if isinstance(value, dict) else "single_agent"
    cls = HARNESS_KINDS.get(kind) if isinstance(kind, str) else None
    return cls.__name__ if cls is not None else None


Harness = Annotated[
    Annotated[SingleAgentHarness, Tag("SingleAgentHarness")]
    | Annotated[RLMHarness, Tag("RLMHarness")]
    | Annotated[ExternalHarness, Tag("ExternalHarness")],
    Discriminator(
        _harness_kind,
        custom_error_type="harness_type",
        custom_error_message="Input should be 'single_agent', 'rlm' or 'external'",
        custom_error_context={"field": "type"},
    ),
]


class OutputsConfig(_Strict):
    """Where a run's records go: ``<dir>/<name>/<stamp>/run-<k>/``."""

    dir: str = Field("runs", description="The outputs directory.")

    @field_validator("dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return str(Path(v).expanduser().resolve())


class ExperimentConfig(_Strict):
    """One experiment: a name, a task, and its three stages (see ``docs/experiments.md``)."""

    name: str = Field(description="Letters, digits, '.', '_' and '-': it names directories.")
    description: str | None = None
    task: str = Field(description="What the agent is asked: text, or a .md file holding it.")
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    harness: Harness = Field(description="Stage 3: the agent (type, lm, limits, runs).")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("use 1 to 80 letters, digits, '.', '_' or '-' (it names directories)")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if "\n" not in v and v.strip().endswith(".md"):
            return _read_text(v.strip(), "task")
        if not v.strip():
            raise ValueError("the task is empty")
        return v

    @field_validator("harness")
    @classmethod
    def _context(cls, v: HarnessConfig) -> HarnessConfig:
        ctx = v.context if isinstance(v, RLMHarness) else None
        if ctx is not None and "\n" not in ctx and ctx.endswith((".txt", ".md", ".json")):
            v.context = _read_text(ctx, "context")
        return v


def _read_text(path: str, what: str) -> str:
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{what} file {path} is over {MAX_FILE_BYTES} bytes")
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc}") from None


# -- loading a file -----------------------------------------------------------------

# Fields that hold host paths, by where they are: relative ones are taken from the file's folder.
_PATH_LISTS = {
    ("environment", "local_files"),
    ("environment", "local_dirs"),
    ("execution", "skills"),
    ("execution", "interfaces"),
    ("execution", "libraries"),
}


def _anchor(data: Any, base: Path) -> Any:
    """``data`` with the relative host paths it names made relative to ``base``."""
    if not isinstance(data, dict):
        return data

    def fix(value: Any, must_exist: bool = False) -> Any:
        if not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
            return value
        anchored = base / value
        return str(anchored) if anchored.exists() or not must_exist else value

    out = dict(data)
    task = out.get("task")
    if isinstance(task, str) and "\n" not in task and task.strip().endswith(".md"):
        out["task"] = fix(task.strip())
    for part, field in _PATH_LISTS:
        section = out.get(part)
        if isinstance(section, dict) and isinstance(section.get(field), list):
            out[part] = section = dict(section)
            section[field] = [fix(p) for p in section[field]]
    env = out.get("environment")
    if isinstance(env, dict) and isinstance(env.get("models"), list):
        out["environment"] = env = dict(env)
        env["models"] = [
            {**m, **{k: fix(m[k], must_exist=True) for k in ("name", "adapter") if k in m}}
            if isinstance(m, dict)
            else m
            for m in env["models"]
        ]
    harness = out.get("harness")
    if isinstance(harness, dict) and isinstance(harness.get("context"), str):
        ctx = harness["context"]
        if "\n" not in ctx and ctx.endswith((".txt", ".md", ".json")):
            out["harness"] = {**harness, "context": fix(ctx)}
    outputs = out.get("outputs")
    if isinstance(outputs, dict) and isinstance(outputs.get("dir"), str):
        out["outputs"] = {**outputs, "dir": fix(outputs["dir"])}
    elif outputs is None:
        out["outputs"] = {"dir": str(base / "runs")}
    return out


_CLASS_NAMES = {
    "ExperimentConfig",
    "EnvironmentConfig",
    "ExecutionConfig",
    "HarnessConfig",
    "SingleAgentHarness",
    "RLMHarness",
    "ExternalHarness",
    "LimitsConfig",
    "OutputsConfig",
    "LMConfig",
    "RLMConfig",
    "ModelConfig",
    "SandboxConfig",
    "VolumeMount",
}


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and check an experiment file.

    Raises ``ConfigError`` whose message has one ``FILE:LINE: field: problem`` line
    per problem (and ``problems`` as ``(FILE:LINE: field, problem)`` pairs): for
    malformed YAML, an unknown or misspelt field, a wrong value or type, a missing
    field, a file it names that cannot be read.
    """
    file = Path(path)
    root, data = read_yaml_file(file, MAX_FILE_BYTES, "the experiment file")
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            f"{file}:1: an experiment file is a mapping (name: ..., task: ...), not {kind}"
        )
    try:
        return ExperimentConfig(**_anchor(data, file.resolve().parent))
    except ConfigError as exc:
        located = []
        for where, message in exc.problems or [("", str(exc))]:
            # A nested model's own check is reported under its class name: not a field.
            loc = ".".join(p for p in where.split(".") if p and p not in _CLASS_NAMES)
            line = line_of(root, loc.split(".") if loc else [])
            located.append((f"{file}:{line or 1}: {loc}", message))
        error = ConfigError(
            f"{file}: invalid experiment:\n  " + "\n  ".join(f"{w}: {m}" for w, m in located)
        )
        error.problems = located
        raise error from None
