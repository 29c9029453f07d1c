"""The RLM library (``rlms``) with its code running in sandlot sandboxes.

    pip install 'sandlot[rlms]'
    export OPENAI_API_KEY=...    # for a local OpenAI-compatible server (vLLM, Ollama,
    # llama.cpp, LiteLLM) any value, with OPENAI_BASE_URL=http://localhost:8000/v1
    python examples/integrations/rlms.py --model gpt-5-mini

The root LM reads a long document through the REPL: the document is ``context``
inside a bubblewrap sandbox (no network, 1 GiB of memory), and the LM's code asks
sub-LMs about pieces of it with ``llm_query``, a host call that rlms's own LM
handler answers on the host. ``--questions 3`` runs three RLMs at once, each on a
sandbox borrowed from one warm pool.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

from rlm import RLM

import sandlot
import sandlot.integrations.rlms  # registers RLM(environment="sandlot")

QUESTIONS = [
    "What is the vault code?",
    "Who holds the spare key?",
    "When is the vault audited?",
]


def document() -> str:
    """A long, dull document with three facts in it."""
    filler = [f"Ledger line {i}: nothing of note was recorded today." for i in range(4000)]
    filler[1234] = "Memo: the vault code is 4471."
    filler[2345] = "Memo: the spare key is held by Ada Marsh."
    filler[3456] = "Memo: the vault is audited on the first Monday of March."
    return "\n".join(filler)


def make_rlm(model: str, base_url: str | None, environment_kwargs: dict[str, object]) -> RLM:
    """An RLM whose REPL is a sandlot sandbox."""
    return RLM(
        backend="openai",
        backend_kwargs={"model_name": model, "base_url": base_url},
        environment="sandlot",
        environment_kwargs=environment_kwargs,
        max_iterations=10,
    )


def main(model: str, base_url: str | None = None, questions: int = 1) -> list[str]:
    """Ask the first ``questions`` questions about the document; their answers."""
    config = sandlot.SandboxConfig(memory_mb=1024, timeout=900)
    context = document()
    if questions == 1:
        rlm = make_rlm(model, base_url, {"config": config, "timeout": 120})
        return [rlm.completion(context, root_prompt=QUESTIONS[0]).response]
    # Many RLMs at once: each completion borrows a started sandbox from the pool.
    # An RLM keeps per-run state, so each thread makes its own.
    with sandlot.SandboxPool(config, size=questions, warm=questions) as pool:

        def ask(question: str) -> str:
            rlm = make_rlm(model, base_url, {"pool": pool, "timeout": 120})
            return str(rlm.completion(context, root_prompt=question).response)

        with ThreadPoolExecutor(questions) as threads:
            return list(threads.map(ask, QUESTIONS[:questions]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("RLMS_MODEL", "gpt-5-mini"))
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--questions", type=int, choices=(1, 2, 3), default=1)
    args = parser.parse_args()
    for question, answer in zip(
        QUESTIONS, main(args.model, args.base_url, args.questions), strict=False
    ):
        print(f"{question} {answer}")
