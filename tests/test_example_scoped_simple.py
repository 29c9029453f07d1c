"""The scoped-simple example end to end: a tiny transformers model served to a session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scoped_simple"


def test_scoped_simple_example_runs_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import main as example  # the example's own entry point, as a user runs it
    finally:
        sys.path.remove(str(EXAMPLE))
    code = example.main(
        ["--model-dir", str(tmp_path / "model"), "--workspace-dir", str(tmp_path / "workspace")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "→ Serving interface.py as model_tools" in out
    assert "- **num_layers**: 2" in out and "- **hidden_size**: 32" in out
    assert "array(shape=(32,), dtype=float32" in out
    similarity = float(out.split("**cosine_similarity**:")[1].split()[0])
    assert -1.0 <= similarity <= 1.0
    assert "✓ Session: minimal-example" in out
    assert (tmp_path / "workspace" / "model_tools.py").exists()
    assert (tmp_path / "workspace" / "helpers.py").exists()
