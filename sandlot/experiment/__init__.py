"""Experiments: one YAML file from environment to agent, in three stages.

``load_config(path)`` reads and checks the file (errors name the field, the
file and the line). Then, each usable alone:

1. ``setup_environment(config) -> EnvironmentHandle``: the backend, GPUs,
   packages, models and files, checked and built.
2. ``setup_execution(env, config) -> ExecutionHandle`` (``NotebookHandle``): a
   warm session in notebook, filesystem or mcp mode, attachable by id.
3. ``run_harness(env, execution, config, run_dir) -> RunResult``: the
   single-agent or RLM harness, its transcript appended as it happens.

``run_experiment(config)`` does all three for ``harness.runs`` runs side by
side; ``sandlot experiment deploy|run|view`` is the command line. Needs the
``notebook`` and ``rlm`` extras. See ``docs/experiments.md``.
"""

from .config import (
    EnvironmentConfig,
    ExecutionConfig,
    ExperimentConfig,
    ExternalHarness,
    HarnessConfig,
    LimitsConfig,
    OutputsConfig,
    RLMHarness,
    SingleAgentHarness,
    load_config,
)
from .outputs import RunResult
from .runner import (
    ExperimentResult,
    adeploy_experiment,
    arun_experiment,
    arun_harness,
    attach_text,
    run_experiment,
    run_harness,
)
from .stages import (
    EnvironmentHandle,
    ExecutionHandle,
    NotebookHandle,
    asetup_environment,
    asetup_execution,
    setup_environment,
    setup_execution,
)

__all__ = [
    "EnvironmentConfig",
    "EnvironmentHandle",
    "ExecutionConfig",
    "ExecutionHandle",
    "ExperimentConfig",
    "ExperimentResult",
    "ExternalHarness",
    "HarnessConfig",
    "LimitsConfig",
    "NotebookHandle",
    "OutputsConfig",
    "RLMHarness",
    "RunResult",
    "SingleAgentHarness",
    "adeploy_experiment",
    "arun_experiment",
    "arun_harness",
    "asetup_environment",
    "asetup_execution",
    "attach_text",
    "load_config",
    "run_experiment",
    "run_harness",
    "setup_environment",
    "setup_execution",
]
