"""One concept, one type: a name importable from two places is the same object."""

from __future__ import annotations

import sandlot
from sandlot import errors, notebook
from sandlot.experiment import agent
from sandlot.mcp import sessions
from sandlot.notebook import client, execution, kernel


def test_a_cell_error_and_a_run_code_error_are_one_class() -> None:
    assert notebook.ExecutionError is sandlot.ExecutionError
    error = sandlot.ExecutionError("ValueError", "bad", "tb")
    assert execution.Execution.from_dict(execution.Execution(error=error).to_dict()).error == error


def test_tool_failures_and_output_callbacks_have_one_definition() -> None:
    assert agent.ToolFailure is sessions.ToolFailure is errors.ToolFailure
    assert client.OnOutput is kernel.OnOutput is execution.OnOutput
