"""The seeds' workflows, timed end to end beside what their users run today.

    uv run python benchmarks/workflows.py suite [--runs 10]   # seed 001: a project's test suite
    uv run --extra bench python benchmarks/workflows.py dspy [--runs 10]   # seed 003: dspy.RLM

``suite`` makes a small project (a package, one dependency, pytest in its dev
group, 20 tests) and runs its suite four ways, each a fresh process as a user
types it:

- bare: ``python -m pytest`` in a virtual environment made beforehand (no
  isolation, no environment to find: the floor);
- uv: ``uv run --isolated --no-project --with ... python -m pytest`` (uv's
  cached ephemeral environment, no isolation);
- sandlot: ``sandlot exec --upload P --project -- python -m pytest`` with the
  environment already cached (a sandbox, the project uploaded, the suite run);
- sandlot, first run: the same with an empty sandlot cache (uv's own package
  cache warm), once: what building the environment costs.

``dspy`` runs seed 003's first task, ``dspy.RLM`` computing Fibonacci numbers
(two planner turns, then ``SUBMIT``), with the scripted stand-in planner of
``examples/rlm_dspy.ipynb`` (no model: the figures are the interpreters' and
DSPy's own costs), on each interpreter ``dspy.RLM`` can take: DSPy's default
``PythonInterpreter`` (Pyodide in Deno), ``SandlotInterpreter``, and, where this
DSPy has it, ``LocalInterpreter`` (no isolation). Every call makes a fresh
interpreter, as ``dspy.RLM`` does.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import console, ms, pct, table

from sandlot.backends import envs

TESTS = 20
PYTEST = [
    "python",
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
]  # the suite, as each way runs it


def make_project(root: Path) -> Path:
    """A project like the seed's: a src package, a dependency, pytest in the dev group."""
    (root / "src" / "benchproj").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "benchproj"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["iniconfig>=2"]\n[dependency-groups]\ndev = ["pytest>=8"]\n'
    )
    (root / "src" / "benchproj" / "__init__.py").write_text(
        "import iniconfig\n\ndef square(x):\n    return x * x\n"
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_square.py").write_text(
        "import pytest, benchproj\n\n"
        f"@pytest.mark.parametrize('x', range({TESTS}))\n"
        "def test_square(x):\n    assert benchproj.square(x) == x * x\n"
    )
    return root


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Seconds ``argv`` took; its output is checked for the suite's result."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    took = time.perf_counter() - start
    if done.returncode != 0 or f"{TESTS} passed" not in done.stdout:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took


def suite(runs: int) -> None:
    """Seed 001: a project's test suite, bare, with uv, and in a sandlot sandbox."""
    uv = envs.find_uv()
    with tempfile.TemporaryDirectory(prefix="sandlot-bench-") as tmp:
        work = Path(tmp)
        project = make_project(work / "proj")
        venv = work / "venv"
        subprocess.run([uv, "venv", "-q", str(venv)], check=True)
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "-q",
                "--python",
                str(venv / "bin" / "python"),
                "iniconfig",
                "pytest",
                "-e",
                str(project),
            ],
            check=True,
        )
        cli = [
            sys.executable,
            "-m",
            "sandlot.cli",
            "exec",
            "--upload",
            str(project),
            "--project",
            "--",
            *PYTEST,
        ]
        cache = {"SANDLOT_CACHE": str(work / "cache")}
        first = run(cli, work, cache)
        ways = {
            "bare pytest (prebuilt venv, not isolated)": (
                [str(venv / "bin" / "python"), *PYTEST[1:]],
                {},
            ),
            "uv run --isolated --with (not isolated)": (
                [
                    uv,
                    "run",
                    "--isolated",
                    "--no-project",
                    "--with",
                    "iniconfig",
                    "--with",
                    "pytest",
                    "--with-editable",
                    str(project),
                    *PYTEST,
                ],
                {},
            ),
            "sandlot exec --project (environment cached)": (cli, cache),
        }
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for argv, env in ways.values():
            run(argv, project, env)  # warm once: uv's cache, the page cache
        for _ in range(runs):  # interleaved, so drift on a shared machine hits all alike
            for name, (argv, env) in ways.items():
                samples[name].append(run(argv, project, env))
        shutil.rmtree(work / "cache", ignore_errors=True)
    floor = statistics.median(samples["bare pytest (prebuilt venv, not isolated)"])
    rows = []
    for name, walls in samples.items():
        p50 = statistics.median(walls)
        rows.append([name, ms(p50), ms(pct(walls, 0.95)), f"{p50 / floor:.2f}x"])
    rows.append(
        [
            "sandlot exec --project, first run (builds the environment)",
            ms(first),
            "-",
            f"{first / floor:.2f}x",
        ]
    )
    console.print(
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {runs} runs each, {TESTS} tests"
    )
    table(
        f"Seed 001: a project's test suite end to end (ms, {runs} runs)",
        ["environment", "p50", "p95", "p50 vs bare"],
        rows,
    )


def dspy_rlm(runs: int) -> None:
    """Seed 003: dspy.RLM end to end on each interpreter, with a scripted planner."""
    import dspy

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from rlm_dspy_standin import scripted_stand_in_lm

    from sandlot import SandboxConfig
    from sandlot.integrations.dspy import SandlotInterpreter

    class Fibonacci(dspy.Signature):
        """Compute the first n Fibonacci numbers, starting 0, 1."""

        n: int = dspy.InputField()
        numbers: list[int] = dspy.OutputField(desc="the first n Fibonacci numbers")

    import peers

    problem = peers.DspyPythonInterpreter.available()  # fetches Pyodide once, if need be
    if problem is not None:
        raise SystemExit(f"DSPy's PythonInterpreter cannot run here: {problem}")
    factories: dict[str, Any] = {
        "DSPy PythonInterpreter (Deno/Pyodide, the default)": peers.deno_python_interpreter,
        "sandlot SandlotInterpreter": SandlotInterpreter.factory(
            config=SandboxConfig(isolation="bubblewrap")
        ),
    }
    if peers.DspyLocalInterpreter.available() is None:
        from dspy.primitives.local_interpreter import LocalInterpreter

        factories["DSPy LocalInterpreter (not isolated)"] = LocalInterpreter
    dspy.configure(lm=scripted_stand_in_lm())
    expected = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    samples: dict[str, list[float]] = {name: [] for name in factories}
    for round_ in range(runs + 1):  # round 0 warms caches (Deno's Pyodide, sandlot's env)
        for name, factory in factories.items():
            rlm = dspy.RLM(Fibonacci, max_iters=8, interpreter_factory=factory)
            start = time.perf_counter()
            got = rlm(n=12)
            took = time.perf_counter() - start
            if list(got.numbers) != expected:
                raise SystemExit(f"{name}: got {got.numbers!r}")
            if round_:
                samples[name].append(took)
    base = statistics.median(samples["DSPy PythonInterpreter (Deno/Pyodide, the default)"])
    rows = []
    for name, walls in samples.items():
        p50 = statistics.median(walls)
        rows.append([name, ms(p50), ms(pct(walls, 0.95)), f"{base / p50:.1f}x"])
    console.print(
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, dspy {dspy.__version__}; {runs} runs each"
    )
    table(
        f"Seed 003: dspy.RLM Fibonacci end to end, scripted planner (ms, {runs} runs)",
        ["environment", "p50", "p95", "faster than default"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("suite", help="seed 001: a project's test suite")
    p.add_argument("--runs", type=int, default=10)
    p = sub.add_parser("dspy", help="seed 003: dspy.RLM on each interpreter")
    p.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if args.what == "suite":
        suite(args.runs)
    else:
        dspy_rlm(args.runs)


if __name__ == "__main__":
    main()
