"""The model functions served to the agent's notebook as the module ``model_tools``.

This file runs in the serving sandbox only. Before it runs, sandlot loads the
experiment's model (``environment.models`` with its ``load_code``) and defines
``model`` here: a dict of numpy arrays and the config (see make_tiny_model.py).
Values cross as JSON, so the notebook needs no numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sandlot import expose


def _embed(text: str) -> np.ndarray:
    """Mean over the words of ``text`` of the last layer's hidden state."""
    index = {word: i for i, word in enumerate(model["vocab"])}  # noqa: F821 (injected)
    ids = [index.get(word, 0) for word in text.lower().split()] or [0]
    hidden = model["embeddings"][ids]  # noqa: F821 (injected)
    for w, b in model["layers"]:  # noqa: F821 (injected)
        hidden = hidden + np.tanh(hidden @ w + b)
    return hidden.mean(axis=0)


@expose
def get_model_info() -> dict[str, Any]:
    """Basic facts about the served model: type, layers, hidden size, vocabulary, parameters."""
    config = model["config"]  # noqa: F821 (injected by sandlot)
    params = model["embeddings"].size + sum(w.size + b.size for w, b in model["layers"])  # noqa: F821
    return {
        "model_type": config["model_type"],
        "num_layers": config["num_hidden_layers"],
        "hidden_size": config["hidden_size"],
        "vocab_size": config["vocab_size"],
        "num_parameters": int(params),
    }


@expose
def get_embedding(text: str) -> dict[str, Any]:
    """Embed ``text``: the mean of the last hidden state over its words, as a list of floats."""
    return {"text": text, "embedding": [round(float(x), 6) for x in _embed(text)]}
