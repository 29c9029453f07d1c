"""``import sandlot`` imports only what it uses.

Claude Code starts ``sandlot mcp`` for every conversation and a program may
import sandlot for one name: neither should pay for notebooks, YAML or the
command line's other subcommands.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import sandlot

# Extras and layers that a bare import, or the listing of the commands, must not load.
HEAVY = (
    "nbformat",
    "nbclient",
    "jsonschema",
    "jupyter_client",
    "yaml",
    "mcp",
    "dspy",
    "openai",
    "ray",
    "modal",
    "sandlot.notebook",
    "sandlot.experiment",
    "sandlot.rlm",
    "sandlot.mcp",
)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    report = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_sandlot_loads_no_module_of_its_own_nor_any_dependency() -> None:
    loaded = _modules_after("import sandlot")
    assert {m for m in loaded if m.startswith("sandlot")} == {"sandlot"}
    for heavy in (*HEAVY, "pydantic", "typer", "rich"):
        assert heavy not in loaded


def test_a_public_name_loads_its_own_layer_and_no_extra() -> None:
    loaded = _modules_after("from sandlot import Sandbox, SandboxConfig")
    assert {"sandlot.sync", "sandlot.config", "pydantic"} <= loaded
    for heavy in (*HEAVY, "typer", "rich"):
        assert heavy not in loaded


def test_every_public_name_resolves_to_its_module_s_object() -> None:
    for name in sandlot.__all__:
        value = getattr(sandlot, name)
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name
    assert set(sandlot.__all__) <= set(dir(sandlot))
    assert sandlot.backends is importlib.import_module("sandlot.backends")  # submodules too
