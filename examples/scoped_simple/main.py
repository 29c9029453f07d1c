"""Scoped Simple (RPC pattern): the agent runs locally, model functions run in a sandbox.

A serving sandbox loads a model once and serves the ``@expose`` functions of
``interface.py`` as the library ``model_tools``. A local agent session gets that library
next to ``helpers.py`` (plain local code) and uses both from one cell of Python.

No model is downloaded: a tiny BERT with random weights is made first, in a sandbox that
has torch and transformers (see ``make_tiny_model.py``), and the serving sandbox loads it
from disk with sandlot's ordinary model loading.

Run it with ``uv run python examples/scoped_simple/main.py`` (``--gpu`` to put the model on
a GPU, ``--help`` for the rest).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from sandlot import (
    Library,
    ModelConfig,
    RemoteLibrary,
    Sandbox,
    SandboxConfig,
    Workspace,
    create_local_session,
)

EXAMPLE_DIR = Path(__file__).resolve().parent
SESSION_NAME = "minimal-example"

#: The agent's own sandbox needs no torch, but numpy: an embedding tensor arrives as an array.
SESSION_CONFIG = SandboxConfig(python_packages=["numpy"], memory_mb=1024)

#: The agent's work: what an LLM agent would write for the task, as one cell of Python.
AGENT_CODE = """\
import model_tools
import helpers

info = model_tools.get_model_info()
print(helpers.format_result(info, "Model info"))

embedding = model_tools.get_embedding("hello world")
assert tuple(embedding["embedding"].shape) == (info["hidden_size"],), embedding
print()
print(helpers.format_result(embedding, "Embedding of 'hello world'"))

similarity = model_tools.compare_embeddings("hello world", "hello there")
assert -1.0 <= similarity["cosine_similarity"] <= 1.0, similarity
print()
print(helpers.format_result(similarity, "Similarity"))

report = "\\n\\n".join(
    helpers.format_result(data, title)
    for data, title in [(info, "Model info"), (embedding, "Embedding"), (similarity, "Similarity")]
)
with open("results.md", "w") as fh:
    fh.write(report + "\\n")
"""


def _sibling(name: str) -> ModuleType:
    """Import ``name.py`` from this example's directory (works however main.py is loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name}.py from {EXAMPLE_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def step(message: str) -> None:
    """Print one progress line and flush it, so it shows before a slow call."""
    print(f"→ {message}", flush=True)


def ensure_model(model_dir: Path) -> Path:
    """The tiny model in ``model_dir``, built there (in a sandbox) unless already present."""
    if (model_dir / "config.json").exists() and (model_dir / "model.safetensors").exists():
        step(f"Using the tiny model in {model_dir}")
        return model_dir.resolve()
    step("Building a tiny random-weight BERT in a sandbox...")
    started = time.perf_counter()
    built: Path = _sibling("make_tiny_model").build_model_in_sandbox(model_dir)
    print(f"  built in {time.perf_counter() - started:.1f}s", flush=True)
    return built


def serving_config(model_dir: Path, use_gpu: bool) -> SandboxConfig:
    """The serving sandbox: the model, the packages to run it, and (``use_gpu``) one GPU."""
    packages: list[str] = _sibling("make_tiny_model").PYTHON_PACKAGES
    return SandboxConfig(
        models=[ModelConfig(name=str(model_dir), device="cuda" if use_gpu else "cpu")],
        python_packages=packages,
        memory_mb=4096,
        gpu=1 if use_gpu else None,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


def check_model_info(info: Any, use_gpu: bool) -> None:
    """Raise ``RuntimeError`` unless ``info`` describes the tiny model on the asked device."""
    if not isinstance(info, dict):
        raise RuntimeError(f"get_model_info returned {type(info).__name__}, not a dict")
    expected = {"num_layers": 2, "hidden_size": 32}
    wrong = {k: info.get(k) for k, v in expected.items() if info.get(k) != v}
    device = str(info.get("device", ""))
    if wrong or device.startswith("cuda") != use_gpu:
        raise RuntimeError(f"unexpected model info {info} (expected {expected}, gpu={use_gpu})")


def run(model_dir: Path, workspace_dir: Path, use_gpu: bool) -> str:
    """Serve the model, run the agent's cell in a local session; return what the cell printed."""
    model_dir = ensure_model(model_dir)
    step("Starting Scoped sandbox...")
    started = time.perf_counter()
    gpu = Sandbox(serving_config(model_dir, use_gpu))
    session = None
    try:
        gpu.start()
        print(f"  started in {time.perf_counter() - started:.1f}s", flush=True)
        step(f"Loading model {model_dir.name} ({'cuda' if use_gpu else 'cpu'})...")
        started = time.perf_counter()
        model_tools = gpu.serve(
            str(EXAMPLE_DIR / "interface.py"), expose_as="library", name="model_tools"
        )
        if not isinstance(model_tools, RemoteLibrary):  # expose_as="library" returns one
            raise RuntimeError(f"serve returned {type(model_tools).__name__}, not a library")
        step("Serving interface.py as model_tools")
        info = model_tools.get_model_info()  # callable from the host right away
        check_model_info(info, use_gpu)
        print(
            f"  loaded and served in {time.perf_counter() - started:.1f}s; from the host: "
            f"{info['num_layers']} layers, hidden size {info['hidden_size']}, "
            f"vocabulary {info['vocab_size']}, {info['device']}, {info['dtype']}",
            flush=True,
        )

        workspace = Workspace(
            libraries=[Library.from_file(str(EXAMPLE_DIR / "helpers.py")), model_tools]
        )
        session = create_local_session(
            workspace=workspace,
            workspace_dir=str(workspace_dir),
            name=SESSION_NAME,
            config=SESSION_CONFIG,
        )
        step("Local session ready")
        step("Agent running...")
        started = time.perf_counter()
        result = session.run_code(AGENT_CODE, timeout=300)
        if result.error is not None:
            raise RuntimeError(
                f"the agent's code failed: {result.error.name}: {result.error.value}\n"
                f"{result.error.traceback}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        print(result.stdout.rstrip(), flush=True)
        print(f"  agent finished in {time.perf_counter() - started:.1f}s", flush=True)
        return str(result.stdout)
    finally:
        if session is not None:
            session.terminate()
        gpu.terminate()


def main(argv: list[str] | None = None) -> int:
    """Run the example; 0 on success, 1 (with the reason on stderr) on failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gpu", action="store_true", help="give the serving sandbox one GPU and load on cuda"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="where the tiny model is (or is to be built); a temporary directory if omitted",
    )
    parser.add_argument(
        "--workspace-dir",
        type=Path,
        default=EXAMPLE_DIR / "workspace",
        help="the agent session's workspace (default: workspace/ beside this file)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="sandlot-tiny-model-") as tmp:
            model_dir = args.model_dir or Path(tmp) / "tiny-bert"
            run(model_dir, args.workspace_dir, args.gpu)
    except Exception as exc:  # any failure: say what it was and exit non-zero
        print(f"✗ scoped_simple failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"✓ Session: {SESSION_NAME} ({time.perf_counter() - started:.1f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
