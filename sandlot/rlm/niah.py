"""Needle in a haystack: the seed's test of an RLM, and stand-ins for LMs that are not there.

``make_haystack`` writes N lines of filler words with one line that holds the
magic number. With a real LM, ``RLM.completion(haystack, NIAH_QUERY)`` should
find it. Where no LM can be reached (tests, benchmarks of the engine itself),
two stand-ins take the LMs' places, named as what they are:

- ``ScriptedRootLM`` plays the root LM from a fixed script (a policy function of
  the conversation so far). ``niah_policy`` is the script for this test: chunk the
  context, ask the sub-LM about every chunk in one batched call, answer.
- ``StandInSubLM`` plays the sub-LM: after a set latency it answers by a rule
  (here: the magic number if the prompt holds one, else ``NONE``).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .lm_protocol import Completion, Message

NIAH_QUERY = (
    "Somewhere in the context is a line that says 'The magic number is N'. What is N? "
    "Answer with the number only."
)
NIAH_CHUNK_CHARS = 50_000
_WORDS = [
    *("amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "islet"),
    *("juniper", "kelp", "lagoon", "meadow", "nectar", "onyx", "prairie", "quartz", "river"),
    *("sierra", "tundra", "umber", "valley", "willow", "xenon", "yarrow", "zephyr", "anchor"),
    *("beacon", "canyon", "dune", "estuary", "fern", "glacier", "heath", "inlet", "jetty"),
    *("knoll", "ledge", "marsh"),
]
_MAGIC = re.compile(r"The magic number is (\d+)")


def make_haystack(lines: int, seed: int = 0) -> tuple[str, str]:
    """A haystack of ``lines`` lines with one magic-number line; and that number."""
    if lines < 1:
        raise ValueError(f"a haystack needs at least one line (got {lines})")
    rng = random.Random(seed)
    needle = str(rng.randrange(1_000_000, 9_999_999))
    where = rng.randrange(lines)
    words = _WORDS
    out = []
    for i in range(lines):
        if i == where:
            out.append(f"The magic number is {needle}")
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randrange(4, 10))))
    return "\n".join(out) + "\n", needle


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # the usual four characters per token, as a stand-in count


@dataclass
class StandInSubLM:
    """A sub-LM stand-in: answers after ``latency`` seconds by ``rule`` (not a model).

    The default rule answers the magic number when the prompt holds one, else
    ``NONE``. Token counts are a quarter of the characters.
    """

    latency: float = 0.2
    model: str = "stand-in-sub-lm"
    rule: Callable[[str], str] | None = None

    async def acomplete(self, messages: Sequence[Message]) -> Completion:
        """Answer the last message after the set latency."""
        prompt = messages[-1]["content"]
        await asyncio.sleep(self.latency)
        if self.rule is not None:
            text = self.rule(prompt)
        else:
            found = _MAGIC.search(prompt)
            text = found.group(1) if found else "NONE"
        return Completion(text, self.model, _tokens(prompt), _tokens(text))


Policy = Callable[[Sequence[Message]], str]


@dataclass
class ScriptedRootLM:
    """A root-LM stand-in that replies from a script: ``policy(messages) -> reply``.

    Not a model: it is how tests and benchmarks drive the engine where no LM can
    be reached. ``latency`` seconds pass before each reply.
    """

    policy: Policy
    model: str = "scripted-root-lm"
    latency: float = 0.0

    async def acomplete(self, messages: Sequence[Message]) -> Completion:
        """Reply from the script."""
        if self.latency:
            await asyncio.sleep(self.latency)
        text = self.policy(messages)
        prompt = sum(_tokens(m["content"]) for m in messages)
        return Completion(text, self.model, prompt, _tokens(text))


NIAH_CHUNK_CODE = """\
chunks, start = [], 0
while start < len(context):
    end = context.rfind("\\n", start, start + {chunk}) + 1 or min(start + {chunk}, len(context))
    chunks.append(context[start:end])
    start = end
prompts = [
    "Find the line 'The magic number is N' in the text below. Reply with N only, "
    "or NONE if the text has no such line.\\n\\n" + chunk
    for chunk in chunks
]
answers = llm_query_batched(prompts)
found = sorted({{a.strip() for a in answers if a.strip().isdigit()}})
print(f"{{len(chunks)}} chunks; candidates: {{found}}")
"""

NIAH_FINISH = """\
```repl
magic = found[0] if len(found) == 1 else None
print(magic)
```
FINAL_VAR(magic)
"""


def niah_policy(chunk_chars: int = NIAH_CHUNK_CHARS) -> Policy:
    """The scripted root LM's policy for NIAH: one batched pass over all chunks, then answer."""

    def policy(messages: Sequence[Message]) -> str:
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if turns == 0:
            code = NIAH_CHUNK_CODE.format(chunk=chunk_chars)
            return f"I will read every chunk with the sub-LM in one batch.\n```repl\n{code}```"
        return NIAH_FINISH

    return policy
