"""Experiment files: strict schema, errors with file and line, paths relative to the file."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sandlot import AsyncSandboxPool, ConfigError, PoolConfig, SandboxPool
from sandlot.experiment import (
    ExternalHarness,
    HarnessConfig,
    RLMHarness,
    SingleAgentHarness,
    load_config,
)
from sandlot.rlm import RLM, LMConfig, OpenAICompatibleLM, RLMConfig

GOOD = """\
name: probe
task: task.md
environment:
  python_packages: [numpy]
  local_files: [data.txt]
  models:
    - name: ./weights
      load_code: "model = 1"
execution:
  type: notebook
  interfaces: [tools.py]
  skills: [skills/]
harness:
  type: single_agent
  lm: {model: m, base_url: "http://127.0.0.1:9/v1"}
  limits: {max_turns: 3, max_cost: 0.5}
  runs: 2
  max_parallel: 2
"""


def write(folder: Path, text: str, name: str = "experiment.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_a_good_file_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "task.md").write_text("Find the **needle**.\n")
    (tmp_path / "data.txt").write_text("x")
    (tmp_path / "weights").mkdir()
    config = load_config(write(tmp_path, GOOD))
    assert config.task == "Find the **needle**.\n"
    assert config.environment.local_files == [str(tmp_path / "data.txt")]
    assert config.environment.models[0].name == str(tmp_path / "weights")
    assert config.execution.interfaces == [str(tmp_path / "tools.py")]
    assert config.execution.models_served()  # auto: interfaces hold the models
    assert config.outputs.dir == str(tmp_path / "runs")
    assert (config.harness.runs, config.harness.max_parallel) == (2, 2)
    sandbox = config.environment.sandbox_config()
    assert [m.target for m in sandbox.mounts] == ["/inputs/data.txt"]
    assert not config.environment.sandbox_config(models=False).models


def test_errors_name_the_field_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: probe\n"
        "task: inline text\n"
        "environment:\n"
        "  gpuu: 1\n"  # line 4: misspelt
        "execution:\n"
        "  type: notebok\n"  # line 6: not a mode
        "harness:\n"
        "  type: single_agent\n"
        "  lm:\n"
        "    model: m\n"
        "    max_retries: -1\n",  # line 11: out of range
    )
    found = dict(problems(path))
    assert found[f"{path}:4: environment.gpuu"] == "unknown field; did you mean 'gpu'?"
    assert "'notebook', 'filesystem' or 'mcp'" in found[f"{path}:6: execution.type"]
    assert "greater than or equal to 0" in found[f"{path}:11: harness.lm.max_retries"]
    with pytest.raises(ConfigError, match=rf"{path}:4: environment.gpuu: unknown field"):
        load_config(path)


def test_unknown_harness_type_and_missing_fields_point_at_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "name: probe\ntask: t\nharness:\n  type: swarm\n")
    [(where, message)] = problems(path)
    assert where == f"{path}:4: harness.type"
    assert "'single_agent', 'rlm' or 'external'" in message
    path = write(tmp_path, "task: t\nharness:\n  type: external\n", "no-name.yaml")
    assert problems(path) == [(f"{path}:1: name", "Field required")]
    path = write(tmp_path, "name: p\ntask: t\nharness:\n  type: rlm\n", "no-lm.yaml")
    [(where, message)] = problems(path)
    assert where == f"{path}:3: harness" and "needs an lm" in message


def test_each_harness_kind_is_its_own_type_with_only_its_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\ntask: t\nharness:\n  lm: {model: m}\n")
    assert type(load_config(path).harness) is SingleAgentHarness  # the default kind
    text = "name: p\ntask: t\nharness:\n  type: rlm\n  lm: {model: m}\n  context: hi\n"
    harness = load_config(write(tmp_path, text, "rlm.yaml")).harness
    assert isinstance(harness, RLMHarness) and harness.context == "hi"
    path = write(tmp_path, "name: p\ntask: t\nharness: {type: external}\n", "ext.yaml")
    assert isinstance(load_config(path).harness, ExternalHarness)
    kinds = (SingleAgentHarness, RLMHarness, ExternalHarness)
    assert all(issubclass(kind, HarnessConfig) for kind in kinds)
    # A field of another kind is an unknown field, at its own line.
    text = "name: p\ntask: t\nharness:\n  lm: {model: m}\n  context: hi\n"
    [(where, message)] = problems(write(tmp_path, text, "mixed.yaml"))
    assert where == f"{tmp_path / 'mixed.yaml'}:5: harness.context"
    assert message.startswith("unknown field")
    text = "name: p\ntask: t\nharness:\n  type: external\n  runs: 2\n"
    [(where, message)] = problems(write(tmp_path, text, "ext-runs.yaml"))
    assert where == f"{tmp_path / 'ext-runs.yaml'}:5: harness.runs" and "runs > 1" in message


def test_malformed_yaml_and_other_files_are_clear_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "name: probe\ntask: [unclosed\nharness: {}\n")
    [(where, message)] = problems(path)
    assert where.startswith(f"{path}:") and message.startswith("not valid YAML")
    path = write(tmp_path, "- a list\n", "list.yaml")
    with pytest.raises(ConfigError, match=rf"{path}:1: an experiment file is a mapping"):
        load_config(path)
    path = write(tmp_path, "name: probe\ntask: missing.md\nharness: {type: external}\n", "mt.yaml")
    [(where, message)] = problems(path)
    assert where == f"{path}:2: task" and "cannot read the task file" in message
    path = write(tmp_path, "name: ../escape\ntask: t\nharness: {type: external}\n", "n.yaml")
    assert problems(path)[0][0] == f"{path}:1: name"
    with pytest.raises(ConfigError, match="cannot read the experiment file"):
        load_config(tmp_path / "nope.yaml")


def test_sandbox_fields_go_through_and_may_not_repeat_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: p\ntask: t\nharness: {type: external}\n"
        "environment:\n  sandbox:\n    memory_mb: 512\n    network: true\n",
    )
    config = load_config(path)
    sandbox = config.environment.sandbox_config()
    assert (sandbox.memory_mb, sandbox.network) == (512, True)
    path = write(
        tmp_path,
        "name: p\ntask: t\nharness: {type: external}\n"
        "environment:\n  sandbox:\n    gpu: 1\n    memroy_mb: 5\n",
        "twice.yaml",
    )
    text = " ".join(m for _, m in problems(path))
    assert "set gpu at the environment level" in text


@pytest.mark.parametrize(
    ("config", "target"),
    [
        (RLMConfig, RLM.__init__),
        (PoolConfig, AsyncSandboxPool.__init__),
        (PoolConfig, SandboxPool.__init__),
        (LMConfig, OpenAICompatibleLM.__init__),
    ],
)
def test_config_objects_say_what_the_keyword_arguments_say(config: type, target: object) -> None:
    """Every field of the config object is a keyword argument with the same default."""
    params = inspect.signature(target).parameters  # type: ignore[arg-type]
    fields = {n: f for n, f in config.model_fields.items() if n != "api_key_env"}
    for name, field in fields.items():
        assert name in params, f"{config.__name__}.{name} is no argument of {target}"
        if not field.is_required():
            assert params[name].default == field.get_default(call_default_factory=True), name


def test_config_objects_build_what_they_describe() -> None:
    rlm = RLM.from_config(
        OpenAICompatibleLM("m", "http://127.0.0.1:9/v1"),
        config=RLMConfig(max_iterations=3, pool_size=2),
    )
    assert (rlm.max_iterations, rlm.pool_size, rlm.max_time) == (3, 2, 600.0)
    pool = AsyncSandboxPool.from_config(None, PoolConfig(size=3, warm=1))
    assert (pool.size, pool.warm, pool.reuse) == (3, 1, False)
    with pytest.raises(ConfigError, match=r"RLMConfig\.max_iterations"):
        RLMConfig(max_iterations=0)
