"""The model functions the serving sandbox exposes to the agent as the library ``model_tools``.

This file runs inside the serving sandbox only, imported once by ``Sandbox.serve``. Before
its code runs, sandlot loads the models of ``SandboxConfig.models`` and defines them in this
module's globals: ``model`` (the transformers model, already on its device and in eval mode)
and ``tokenizer`` (its tokenizer). They are not assigned here, hence the ``noqa: F821`` where
they are used; ``from sandlot import models`` then ``models.get("model")`` reaches them too.

Each ``@expose`` function becomes callable from the host and from agent sessions. Values that
cross: JSON values, bytes, numpy arrays and torch tensors (a tensor arrives as a numpy array).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sandlot import expose


def _embed(text: str) -> torch.Tensor:
    """Mean of the last hidden state over the tokens of ``text`` (1-D, on the model's device)."""
    inputs = tokenizer(text, return_tensors="pt", truncation=True)  # noqa: F821 (injected)
    inputs = {name: value.to(model.device) for name, value in inputs.items()}  # noqa: F821
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)  # noqa: F821 (injected)
    return outputs.hidden_states[-1].mean(dim=1).squeeze(0)


@expose
def get_model_info() -> dict[str, Any]:
    """Basic facts about the served model: layers, hidden size, vocabulary, device and dtype."""
    config = model.config  # noqa: F821 (injected by sandlot)
    return {
        "model_type": config.model_type,
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),  # noqa: F821
        "device": str(model.device),  # noqa: F821 (injected by sandlot)
        "dtype": str(model.dtype),  # noqa: F821 (injected by sandlot)
    }


@expose
def get_embedding(text: str) -> dict[str, Any]:
    """Embed ``text``: the mean of the model's last hidden state over its tokens.

    Returns ``{"text": text, "embedding": tensor}``; the tensor (shape ``(hidden_size,)``)
    arrives on the caller's side as a numpy array.
    """
    return {"text": text, "embedding": _embed(text).float().cpu()}


@expose(concurrent=True)
def compare_embeddings(text1: str, text2: str) -> dict[str, Any]:
    """Cosine similarity of the embeddings of ``text1`` and ``text2`` (a float in [-1, 1])."""
    a, b = _embed(text1).float(), _embed(text2).float()
    similarity = F.cosine_similarity(a, b, dim=0).item()
    return {"text1": text1, "text2": text2, "cosine_similarity": round(float(similarity), 6)}
