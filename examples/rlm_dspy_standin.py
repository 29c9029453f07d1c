"""A scripted stand-in for the LM of ``examples/rlm_dspy.ipynb``: no model, fixed answers.

The notebook uses it when no model is configured (``DSPY_LM_MODEL`` unset, as in
CI), so that every cell runs for real: ``dspy.RLM``, its prompts and DSPy's
``ChatAdapter`` parsing, the sandboxes, the volume, the host tools. Only the
model's words are fixed in advance.

It plays two parts, told apart by the request:

- the **planner** (a request with a system message: ``dspy.RLM``'s action
  prompt). It recognises the notebook's task by the fields its ``SUBMIT`` takes
  (``SUBMIT(modules, optimizers, principles)`` in the prompt) and the iteration
  (``[[ ## iteration ## ]] 2/8``), and answers with the turn written for that
  step below, in the ``[[ ## reasoning ## ]]`` / ``[[ ## code ## ]]`` format that
  DSPy's adapter parses. It does not read the REPL's output: a real planner
  would, and would adapt.
- the **sub-LM** (a bare prompt: ``llm_query`` and ``llm_query_batched``). It
  answers the two kinds of prompt the scripts send by copying the facts they
  contain, and any other prompt with a placeholder.

With ``DSPY_LM_MODEL`` set, the notebook uses that model instead and none of
this runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

__all__ = ["SCRIPTS", "StandInEngine", "Turn", "scripted_stand_in_lm"]


@dataclass(frozen=True)
class Turn:
    """One planner answer: its reasoning and the code it asks the REPL to run."""

    reasoning: str
    code: str


# The planner's turns, by the fields the task's SUBMIT takes (one task per demonstration).
SCRIPTS: dict[str, list[Turn]] = {
    # Basic code generation.
    "numbers": [
        Turn(
            "I need the first n Fibonacci numbers. I will compute them iteratively and print "
            "them before submitting.",
            "numbers = [0, 1]\n"
            "while len(numbers) < n:\n"
            "    numbers.append(numbers[-1] + numbers[-2])\n"
            "numbers = numbers[:n]\n"
            "print(len(numbers), numbers)",
        ),
        Turn(
            "The output shows n numbers starting 0, 1, each the sum of the two before. Submit.",
            "SUBMIT(numbers=numbers)",
        ),
    ],
    # Long document analysis.
    "modules, optimizers, principles": [
        Turn(
            "The handbook is long; I will not print it. First its size and its section headings.",
            "print(len(docs), 'characters')\n"
            "headings = [line for line in docs.splitlines() if line.startswith('## ')]\n"
            "print(len(headings), 'sections')\n"
            "for heading in headings[:6]:\n"
            "    print(heading)",
        ),
        Turn(
            "Headings name their kind ('## Module: X', '## Optimizer: Y', '## Principle: Z'). "
            "Names come from the headings; for the principles, which need reading, I hand just "
            "their sections to the sub-LM.",
            "def named(kind):\n"
            "    return [h.split(': ', 1)[1] for h in headings if h.startswith(f'## {kind}: ')]\n"
            "modules, optimizers = named('Module'), named('Optimizer')\n"
            "sections = docs.split('\\n## ')\n"
            "principle_text = '\\n\\n'.join(\n"
            "    '## ' + s[:1500] for s in sections if s.startswith('Principle: ')\n"
            ")\n"
            "principles = llm_query(\n"
            "    'Summarize these design principles in one sentence:\\n\\n' + principle_text\n"
            ")\n"
            "print('modules:', modules)\n"
            "print('optimizers:', optimizers)\n"
            "print('principles:', principles)",
        ),
        Turn(
            "Eight modules, three optimizers and a one-sentence summary: what was asked. Submit.",
            "SUBMIT(modules=modules, optimizers=optimizers, principles=principles)",
        ),
    ],
    # Volume caching, first run: write the cache.
    "cache_path, sections": [
        Turn(
            "I will store the handbook and an index of its sections in the volume at /data, "
            "under a name derived from its content, writing each file under a temporary name "
            "and renaming it into place so that a reader never sees half a file.",
            "import hashlib, json, os\n"
            "digest = hashlib.sha256(docs.encode()).hexdigest()[:12]\n"
            "cache_dir = f'/data/handbook-{digest}'\n"
            "os.makedirs(cache_dir, exist_ok=True)\n"
            "parts = docs.split('\\n## ')[1:]\n"
            "index = [{'title': p.splitlines()[0], 'chars': len(p) + 4} for p in parts]\n"
            "for name, text in [('handbook.txt', docs), ('index.json', json.dumps(index))]:\n"
            "    temporary = f'{cache_dir}/.{name}.partial'\n"
            "    with open(temporary, 'w') as f:\n"
            "        f.write(text)\n"
            "    os.replace(temporary, f'{cache_dir}/{name}')\n"
            "print('cached in', cache_dir, sorted(os.listdir(cache_dir)))\n"
            "print(len(index), 'sections indexed')",
        ),
        Turn("The files are in place. Submit where they are.", "SUBMIT(cache_dir, len(index))"),
    ],
    # Volume caching, second run: a fresh sandbox reads the cache back.
    "longest": [
        Turn(
            "This is a fresh sandbox: the handbook was not passed in. It should be in the "
            "cache that the earlier run wrote to the volume.",
            "import json, os\n"
            "print('handbook passed in:', 'docs' in globals())\n"
            "print('cache holds:', sorted(os.listdir(cache_path)))\n"
            "with open(f'{cache_path}/index.json') as f:\n"
            "    index = json.load(f)\n"
            "print(len(index), 'sections in the cached index')",
        ),
        Turn(
            "The index is there. The longest sections, by characters:",
            "ranked = sorted(index, key=lambda s: s['chars'], reverse=True)[:3]\n"
            "for s in ranked:\n"
            "    print(s['chars'], s['title'])\n"
            "with open(f'{cache_path}/handbook.txt') as f:\n"
            "    print('cached handbook:', len(f.read()), 'characters')",
        ),
        Turn(
            "Three sections, read from the cache alone. Submit their titles.",
            "SUBMIT(longest=[s['title'] for s in ranked])",
        ),
    ],
    # Parallel processing with llm_query_batched.
    "endpoints": [
        Turn(
            "The API reference is spread over '## Endpoint:' sections. Find them first.",
            "endpoint_sections = ['## ' + s for s in docs.split('\\n## ') "
            "if s.startswith('Endpoint: ')]\n"
            "print(len(endpoint_sections), 'endpoint sections')\n"
            "for s in endpoint_sections:\n"
            "    print(s.splitlines()[0])",
        ),
        Turn(
            "One question per endpoint, all independent: ask them in one batch, which the "
            "host runs concurrently.",
            "prompts = [\n"
            "    'In one line, what does this API endpoint do?\\n\\n' + s[:2000]\n"
            "    for s in endpoint_sections\n"
            "]\n"
            "answers = llm_query_batched(prompts)\n"
            "endpoints = {\n"
            "    s.splitlines()[0].removeprefix('## Endpoint: '): a.strip()\n"
            "    for s, a in zip(endpoint_sections, answers)\n"
            "}\n"
            "for route, what in endpoints.items():\n"
            "    print(f'{route}: {what}')",
        ),
        Turn("Every endpoint has a one-line description. Submit.", "SUBMIT(endpoints=endpoints)"),
    ],
    # A custom tool.
    "error_codes, most_common": [
        Turn(
            "The handbook is not in this sandbox; the host's search_handbook tool searches it. "
            "Error codes look like QRY- and four digits.",
            "hits = search_handbook(r'QRY-\\d{4}', max_matches=1000)\n"
            "print(len(hits), 'matches; the first three:')\n"
            "for hit in hits[:3]:\n"
            "    print(hit)",
        ),
        Turn(
            "Count the codes.",
            "from collections import Counter\n"
            "counts = Counter(hit['match'] for hit in hits)\n"
            "print(counts.most_common())",
        ),
        Turn(
            "Five distinct codes; the most frequent is first in the list above. Submit.",
            "SUBMIT(error_codes=sorted(counts), most_common=counts.most_common(1)[0][0])",
        ),
    ],
}


def _principles(prompt: str) -> str:
    names = re.findall(r"^## Principle: (.+)$", prompt, flags=re.MULTILINE)
    return "Quarry's design rests on " + "; ".join(names) + "."


def _endpoint(prompt: str) -> str:
    purpose = re.search(r"^Purpose: (.+)$", prompt, flags=re.MULTILINE)
    return purpose.group(1) if purpose else "(no purpose line in the section)"


# The sub-LM's answers, by how the prompt begins.
SUB_ANSWERS: dict[str, Callable[[str], str]] = {
    "Summarize these design principles": _principles,
    "In one line, what does this API endpoint do?": _endpoint,
}

_TASK = re.compile(r"`SUBMIT\(([^)]*)\)`")
_ITERATION = re.compile(r"\[\[ ## iteration ## \]\]\s*(\d+)/")


class StandInEngine:
    """A DSPy LM engine (``complete(Request) -> Response``) that answers from the scripts.

    Stateless but for its counters, so the threads of ``llm_query_batched`` may share it.
    """

    def __init__(self) -> None:
        self.planner_turns = 0
        self.sub_prompts = 0
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Response:
        system = request.system
        if system is not None and not isinstance(system, str):
            system = "".join(part.text for part in system)
        last = request.messages[-1].text or ""
        text = self._sub_answer(last) if system is None else self._planner_turn(system, last)
        usage = Usage(input_tokens=0, output_tokens=0, total_tokens=0)
        return Response(
            id=None,
            model="scripted-stand-in",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=usage,
        )

    def _planner_turn(self, system: str, last: str) -> str:
        task = _TASK.search(system)
        iteration = _ITERATION.search(last)
        if task is None or iteration is None:
            raise RuntimeError(
                "the scripted stand-in LM only plays dspy.RLM's planner for this notebook's "
                "tasks; set DSPY_LM_MODEL to use a real model"
            )
        turns = SCRIPTS.get(task.group(1))
        if turns is None:
            raise RuntimeError(
                f"the scripted stand-in LM has no script for a task that submits "
                f"({task.group(1)}); it knows {sorted(SCRIPTS)}. Set DSPY_LM_MODEL to use a "
                "real model"
            )
        step = int(iteration.group(1))
        if step > len(turns):
            raise RuntimeError(
                f"the scripted stand-in LM has {len(turns)} turns for ({task.group(1)}), "
                f"and was asked for turn {step}"
            )
        with self._lock:
            self.planner_turns += 1
        turn = turns[step - 1]
        return (
            f"[[ ## reasoning ## ]]\n{turn.reasoning}\n\n"
            f"[[ ## code ## ]]\n```python\n{turn.code}\n```\n\n"
            "[[ ## completed ## ]]"
        )

    def _sub_answer(self, prompt: str) -> str:
        with self._lock:
            self.sub_prompts += 1
        for start, answer in SUB_ANSWERS.items():
            if prompt.startswith(start):
                return answer(prompt)
        return f"(scripted stand-in sub-LM: no answer written for {prompt[:60]!r})"


def scripted_stand_in_lm() -> Any:
    """A ``dspy.LM`` backed by :class:`StandInEngine` (its ``engine`` attribute), uncached."""
    return dspy.LM("standin/scripted-planner", engine=StandInEngine(), cache=False)
