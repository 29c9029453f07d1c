"""YAML aliases: a few hundred bytes that stand for gigabytes are refused, at their line.

Nine levels of aliases, each naming the one before ten times, in an experiment
file's ``harness.lm.extra_body``: the run used to write that config out as JSON
and used up a 3 GiB memory limit. Every YAML file sandlot reads (experiment
files, skills' front matter) goes through one loader that refuses an alias as it
meets it, before any value is built.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from sandlot.errors import ConfigError
from sandlot.experiment import load_config
from sandlot.notebook.skills import SkillError, parse_skill


def _laughs(levels: int) -> list[str]:
    """The lines of ``extra_body`` (indented under it): each level is ten of the one before."""
    lines = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels + 1):
        refs = ", ".join([f"*l{k - 1}"] * 10)
        lines.append(f"    l{k}: &l{k} [{refs}]")
    return lines


def test_a_billion_laughs_experiment_is_refused_at_the_alias_line(tmp_path: Path) -> None:
    head = [
        "name: laughs",
        "task: say hi",
        "harness:",
        "  lm:",
        "    model: m",
        "    base_url: http://127.0.0.1:9/v1",
        "    extra_body:",
    ]
    lines = [*head, *(f"  {line}" for line in _laughs(9))]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1000
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1
    assert peak < 8 << 20, f"{peak} bytes at the peak"
    first_alias = len(head) + 2  # the line of l1, the first that names *l0
    [(where, message)] = caught.value.problems or []
    assert where == f"{path}:{first_alias}"
    assert "alias (*l0)" in message and "write the value out" in message


def test_an_anchor_without_an_alias_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "anchor.yaml"
    path.write_text("name: plain\ntask: &t say hi\nharness: {type: external}\n")
    assert load_config(path).task == "say hi"


def test_a_skill_whose_front_matter_has_an_alias_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "skill.md"
    code = "```python\ndef x() -> int:\n    return 1\n```\n"
    path.write_text("---\nname: &n x\ndescription: *n\n---\n# x\n" + code)
    with pytest.raises(SkillError) as caught:
        parse_skill(path)
    assert caught.value.line == 3 and "alias (*n)" in str(caught.value)
