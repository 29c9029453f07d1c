"""A tiny model made locally, with the standard library only: no download, no GPU.

The model is a word-level embedding table and two residual tanh layers, its
weights drawn from a fixed seed and written as JSON (``config.json`` and
``weights.json``). ``model_tools.py`` serves it; the experiment loads it with
``LOAD_CODE`` (see ``experiment.yaml``), which builds numpy arrays from the JSON.

Usage: ``uv run python examples/experiments/seed000/make_tiny_model.py [OUT_DIR]``
(default: ``tiny-model/`` beside this file).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

_WORDS_TEXT = """
hello world there hi the a an and or not is are was be model text word token embedding
vector layer hidden small tiny large good bad new old one two three cat dog sun moon
"""
WORDS = _WORDS_TEXT.split()
HIDDEN = 16
LAYERS = 2
SEED = 0


def make_tiny_model(out_dir: Path, *, seed: int = SEED) -> Path:
    """Write the model's config and weights into ``out_dir``; return it."""
    rng = random.Random(seed)
    vocab = ["[UNK]", *dict.fromkeys(WORDS)]

    def matrix(rows: int, cols: int, scale: float) -> list[list[float]]:
        return [[round(rng.gauss(0.0, scale), 6) for _ in range(cols)] for _ in range(rows)]

    weights = {
        "embeddings": matrix(len(vocab), HIDDEN, 1.0),
        "layers": [
            {"w": matrix(HIDDEN, HIDDEN, HIDDEN**-0.5), "b": [0.0] * HIDDEN} for _ in range(LAYERS)
        ],
    }
    config = {
        "model_type": "tiny-residual-mlp",
        "num_hidden_layers": LAYERS,
        "hidden_size": HIDDEN,
        "vocab_size": len(vocab),
        "vocab": vocab,
        "seed": seed,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=1))
    (out_dir / "weights.json").write_text(json.dumps(weights))
    return out_dir


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "tiny-model"
    print(f"tiny model written to {make_tiny_model(target)}")
