"""A tiny BERT-style model with random weights, made locally so the example needs no download.

Two halves live here:

- :func:`make_tiny_model` runs where ``torch``, ``transformers`` and ``tokenizers`` are
  installed: it builds the model (fixed seed) and a matching fast tokenizer over a small
  word-level vocabulary, and writes both with ``save_pretrained`` so that
  ``AutoModel.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained(out_dir)``
  load them offline.
- :func:`build_model_in_sandbox` runs on the host, which has none of those packages: it
  starts a sandlot sandbox that has them, mounts the output directory writable, uploads
  this file and runs it there.

Usage::

    uv run python examples/scoped_simple/make_tiny_model.py --sandbox ./tiny-model   # host
    python make_tiny_model.py /out                                                   # inside
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

#: The packages the sandboxes of this example install (a CPU torch wheel is served locally).
PYTHON_PACKAGES = ["torch==2.13.0", "transformers", "numpy"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS_TEXT = """
hello world there hi hey goodbye bye thanks please yes no maybe the a an and or but not
is are was were be been am i you he she it we they me him her us them my your our their
this that these those what who where when why how which model text word sentence token
embedding vector layer hidden size small tiny large big good bad new old first last one
two three four five cat dog bird fish tree sun moon red green blue day night time
water fire earth air
"""
WORDS = _WORDS_TEXT.split()
SEED = 0


def tiny_vocab() -> dict[str, int]:
    """The vocabulary: special tokens first (``[PAD]`` is 0), then about 95 lowercase words."""
    tokens = SPECIAL_TOKENS + [w for i, w in enumerate(WORDS) if w not in WORDS[:i]]
    return {token: index for index, token in enumerate(tokens)}


def make_tiny_model(out_dir: Path, *, seed: int = SEED) -> Path:
    """Write a random-weight BERT model and its fast tokenizer to ``out_dir``; return it.

    The model has 2 layers, hidden size 32, 2 attention heads and a vocabulary of
    about 100 tokens. Weights come from ``torch.manual_seed(seed)``, so the same seed
    gives the same model. Needs ``torch``, ``transformers`` and ``tokenizers``.
    """
    import torch
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()

    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for path in out_dir.iterdir():  # readable by whoever loads it (safetensors is written 0600)
        path.chmod(0o644)
    return out_dir


def check_tiny_model(model_dir: Path, text: str = "hello world") -> str:
    """Load ``model_dir`` back the way sandlot does and describe one embedding of ``text``.

    Uses ``AutoModel.from_pretrained(path, dtype=...)`` and ``AutoTokenizer.from_pretrained``,
    offline; returns a line with the classes, token ids and the embedding's shape.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    embedding = hidden.mean(dim=1).squeeze(0)
    ids = inputs["input_ids"][0].tolist()
    return (
        f"loaded {type(model).__name__} + {type(tokenizer).__name__}: {text!r} -> ids {ids} "
        f"({tokenizer.convert_ids_to_tokens(ids)}), embedding shape {tuple(embedding.shape)}, "
        f"dtype {embedding.dtype}, first {[round(v, 4) for v in embedding[:3].tolist()]}"
    )


def build_model_in_sandbox(out_dir: Path, *, check: bool = False, timeout: float = 900.0) -> Path:
    """Run :func:`make_tiny_model` inside a sandlot sandbox, writing into ``out_dir`` on the host.

    The host needs only sandlot: the sandbox installs :data:`PYTHON_PACKAGES` (cached after
    the first time) and sees ``out_dir`` as a writable mount at ``/out``. With ``check`` the
    sandbox also loads the model back (:func:`check_tiny_model`) and the line is printed.
    Returns the absolute ``out_dir``; raises ``RuntimeError`` with the sandbox's output if
    the script fails.
    """
    import sandlot

    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # When the host runs as root the sandbox runs as nobody, who must be able to write here.
    os.chmod(out_dir, 0o777)
    config = sandlot.SandboxConfig(
        python_packages=PYTHON_PACKAGES,
        memory_mb=4096,
        timeout=timeout,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/tmp/hf"},
        mounts=[sandlot.Mount(source=str(out_dir), target="/out", writable=True)],
    )
    with sandlot.Sandbox(config) as sb:
        sb.files.write("make_tiny_model.py", Path(__file__).read_bytes())
        argv = ["python", "make_tiny_model.py", "/out", *(["--check"] if check else [])]
        done = sb.exec(*argv, timeout=timeout)
    if done.returncode != 0 or done.timed_out:
        raise RuntimeError(
            f"make_tiny_model.py failed in the sandbox (exit {done.returncode}"
            f"{', timed out' if done.timed_out else ''}):\n{done.stdout}{done.stderr}"
        )
    if check:
        print("\n".join(ln for ln in done.stdout.splitlines() if ln.startswith("loaded ")))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command line: write the tiny model to a directory, here or (``--sandbox``) in a sandbox."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="build it in a sandlot sandbox with torch/transformers (run from the host)",
    )
    parser.add_argument(
        "--check", action="store_true", help="load it back with AutoModel/AutoTokenizer"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.sandbox:
        out = build_model_in_sandbox(args.out_dir, check=args.check)
    else:
        out = make_tiny_model(args.out_dir)
        if args.check:
            print(check_tiny_model(out))
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"tiny model written to {out} in {time.perf_counter() - started:.1f}s: {files}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
