"""examples/rlm_dspy.ipynb, executed headlessly as CI runs it: a fresh kernel on this
project's Python, no model configured (so the scripted stand-in LM plays the planner),
real sandboxes, and the volume under a temporary SANDLOT_VOLUMES."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "rlm_dspy.ipynb"
KERNEL = "sandlot-notebook-test"
# In the notebook's .env: it must be reported as set, and never shown.
FAKE_KEY = "sk-notebook-test-5f1d0c9e7a3b"

pytestmark = pytest.mark.timeout(300)


@dataclass
class Run:
    notebook: nbformat.NotebookNode
    volumes: Path

    def out(self, cell_id: str) -> str:
        """Everything the code cell ``cell_id`` printed, stdout and stderr."""
        (cell,) = [c for c in self.notebook.cells if c.get("id") == cell_id]
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("notebook")
    # A kernel spec of our own, first on JUPYTER_PATH, so that the kernel is this
    # project's interpreter whatever kernels the machine has installed.
    spec = tmp / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "sandlot (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    env_file = tmp / "notebook.env"
    env_file.write_text(f"# the key is fake\nDSPY_LLM_API_KEY={FAKE_KEY}\n")
    volumes = tmp / "volumes"

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:  # the kernel inherits this environment
        for name in ("DSPY_LM_MODEL", "DSPY_LM_API_BASE", "DSPY_LLM_API_KEY", "DSPY_LM_MAX_TOKENS"):
            mp.delenv(name, raising=False)
        mp.setenv("RLM_DSPY_ENV_FILE", str(env_file))
        mp.setenv("SANDLOT_VOLUMES", str(volumes))
        mp.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "runtime"))
        mp.setenv("IPYTHONDIR", str(tmp / "ipython"))
        mp.setenv("DSPY_CACHEDIR", str(tmp / "dspy-cache"))
        client = NotebookClient(
            notebook,
            timeout=120,
            kernel_name=KERNEL,
            resources={"metadata": {"path": str(EXAMPLES)}},  # the kernel's cwd
        )
        client.execute()  # raises CellExecutionError, with the cell's traceback, if a cell fails
    yield Run(notebook, volumes)


def test_every_code_cell_ran_without_error_using_the_scripted_stand_in(run: Run) -> None:
    code = [cell for cell in run.notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 9
    for cell in code:
        assert cell.execution_count is not None, cell.id
        assert [o for o in cell.outputs if o.output_type == "error"] == [], cell.id
        assert run.out(cell.id).strip(), f"cell {cell.id} printed nothing"
    assert "SCRIPTED STAND-IN" in run.out("config")
    assert "the scripted stand-in answered 16 planner turns and 7 sub-LM prompts" in run.out(
        "calls"
    )


def test_secrets_are_checked_and_never_shown(run: Run) -> None:
    out = run.out("secrets")
    assert re.search(r"DSPY_LM_MODEL +not set", out)
    assert re.search(r"DSPY_LLM_API_KEY +set in .*notebook\.env", out)
    assert "Authorization: Bearer [redacted DSPY_LLM_API_KEY]" in out
    everything = nbformat.writes(run.notebook)  # every output of every cell
    assert FAKE_KEY not in everything


def test_the_sandbox_is_isolated_and_mounts_the_volume(run: Run) -> None:
    out = run.out("sandbox")
    assert f"on the host at {run.volumes / 'rlm-volume-dspy'}, mounted at /data" in out
    assert "cwd /workspace" in out
    assert "/data mounted: True | network: blocked" in out


def test_basic_code_generation(run: Run) -> None:
    out = run.out("basic")
    assert "numbers: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]" in out
    assert "iterations: 2" in out


def test_long_document_analysis(run: Run) -> None:
    size = re.search(r"^([\d,]+) characters, [\d,]+ lines, 21 sections$", run.out("document"), re.M)
    assert size is not None
    assert 75_000 <= int(size.group(1).replace(",", "")) <= 90_000
    out = run.out("analysis")
    modules = "['Reader', 'Tokenizer', 'Embedder', 'Ranker', 'Summarizer', 'Router', "
    assert f"modules:    {modules}'Deduplicator', 'Writer']" in out
    assert "optimizers: ['GridTuner', 'BanditTuner', 'AnnealTuner']" in out
    assert (
        "principles: Quarry's design rests on Declare, then compile; Every stage is "
        "replaceable; Measure before you tune." in out
    )


def test_the_cache_written_to_the_volume_is_read_back_by_a_fresh_sandbox(run: Run) -> None:
    out = run.out("volume")
    written = re.search(r"first sandbox: cached 21 sections in /data/(handbook-[0-9a-f]{12})", out)
    assert written is not None, out
    # The second run's sandbox got only the path: the handbook came from the volume.
    assert "handbook passed in: False" in out
    assert "cache holds: ['handbook.txt', 'index.json']" in out
    assert "21 sections in the cached index" in out
    assert "second sandbox, from the cache: ['Operations log', 'Module: " in out
    cached = run.volumes / "rlm-volume-dspy" / written.group(1)
    handbook = (cached / "handbook.txt").read_text()
    assert f"cached handbook: {len(handbook)} characters" in out
    assert handbook.startswith("# Quarry handbook") and "## Operations log" in handbook
    index = json.loads((cached / "index.json").read_text())
    assert len(index) == 21 and index[-1]["title"] == "Operations log"
    assert f"    handbook.txt  {len(handbook):,} bytes" in out  # the host's view, via Volume.ls
    assert sorted(p.name for p in cached.iterdir()) == ["handbook.txt", "index.json"]


def test_parallel_sub_queries_with_llm_query_batched(run: Run) -> None:
    out = run.out("batched")
    assert "6 endpoints:" in out
    for route, purpose in [
        ("GET /v1/pipelines", "Lists the pipelines of a project with their last run."),
        ("POST /v1/runs/{id}/cancel", "Cancels a run that has not finished."),
        ("DELETE /v1/cache", "Empties the shared result cache."),
    ]:
        assert re.search(rf"^  {re.escape(route)} +{re.escape(purpose)}$", out, re.M), route


def test_the_custom_tool_searches_the_host_copy(run: Run) -> None:
    out = run.out("tool")
    assert "error codes: ['QRY-1042', 'QRY-2210', 'QRY-3307', 'QRY-4415', 'QRY-5001']" in out
    assert "most common: QRY-2210" in out


def test_trajectory_inspection(run: Run) -> None:
    out = run.out("trajectory")
    steps = re.findall(r"^── Step (\d+) ", out, re.M)
    assert steps == ["1", "2", "3"]
    assert "llm_query(" in out and "SUBMIT(modules=modules" in out
    assert "output:\n    82554 characters\n    21 sections" in out
    assert "3 steps; final reasoning: " in out


def test_the_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
