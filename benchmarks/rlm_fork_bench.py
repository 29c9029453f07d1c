"""NIAH with child RLMs: each child gets its chunk in the prompt, or forks the parent's REPL.

    uv run python benchmarks/rlm_fork_bench.py                 # 10^4 and 10^5 lines, 3 rounds
    uv run python benchmarks/rlm_fork_bench.py --runs 1 --lines 2000

The root LM (scripted) cuts ``context`` into 50,000-character chunks and hands
each to a child RLM with ``rlm_query_batched``, in one of two ways:

- **prompt** (before forks): the chunk goes in the child's prompt, which is the
  child's ``context``; a fresh sandbox from the pool is written the context
  and runs the prelude.
- **fork**: the prompt is ``"chunks[i]"`` and ``fork=True``: the parent's REPL
  (``context``, ``chunks``) is snapshotted once while its code waits, and
  every child's fresh sandbox loads that copy.

Each child's root LM (scripted too) asks the sub-LM about its chunk once and
submits the answer. Every LM call, the children's root turns included, takes
``--latency`` seconds. Beside them, the flat way with no children: one
``llm_query_batched`` over the chunks. Rounds interleave the three; the table
gives p50 wall time and the engine's time beyond it (wall minus what the LM
calls alone take at ``pool_size`` at once).

Then a prepared parent: the question needs an index of the context's words.
With ``fork`` the parent builds it once and eight children each read one
word's count from their copy; with ``prompt`` each child is sent the whole
context (with its word) and builds the index itself.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

import sandlot
from sandlot.rlm import RLM, Message
from sandlot.rlm.niah import (
    NIAH_CHUNK_CHARS,
    NIAH_QUERY,
    ScriptedRootLM,
    StandInSubLM,
    make_haystack,
    niah_policy,
)

console = Console(width=130)
ASK = "Find the line 'The magic number is N' in the text below. Reply N only, or NONE.\n\n"
CHUNKS = (
    "chunks, start = [], 0\n"
    "while start < len(context):\n"
    "    end = context.rfind('\\n', start, start + {chunk}) + 1 or len(context)\n"
    "    chunks.append(context[start:end])\n"
    "    start = end\n"
)
PARENT = {
    "prompt": CHUNKS + f"answers = rlm_query_batched([{ASK!r} + c for c in chunks])\n",
    "fork": CHUNKS
    + "answers = rlm_query_batched([f'chunks[{{i}}]' for i in range(len(chunks))], fork=True)\n",
}
FINISH = (
    "found = sorted({a.strip() for a in answers if a.strip().isdigit()})\n"
    "magic = found[0] if len(found) == 1 else None\n"
)


def parent_policy(way: str, chunk: int) -> Callable[[Sequence[Message]], str]:
    """The root LM: chunk, hand the chunks to children one way or the other, answer."""

    def policy(messages: Sequence[Message]) -> str:
        if not any(m["role"] == "assistant" for m in messages):
            return "```repl\n" + PARENT[way].format(chunk=chunk) + FINISH + "```\n"
        return "FINAL_VAR(magic)\n"

    return policy


def child_lm(latency: float) -> ScriptedRootLM:
    """The children's root LM and the sub-LM in one: a child's turn by script, a plain
    prompt by the stand-in's rule (the magic number if the prompt holds it)."""

    def policy(messages: Sequence[Message]) -> str:
        if messages[0]["role"] != "system":
            prompt = messages[-1]["content"]
            found = [w for w in prompt.split() if w.isdigit() and len(w) == 7]
            return found[0] if "The magic number is" in prompt and found else "NONE"
        first = messages[1]["content"]
        if first.startswith("Query: chunks["):
            part = first.split("\n", 1)[0].removeprefix("Query: ")
            return f"```repl\nSUBMIT(llm_query({ASK!r} + {part}))\n```"
        return "```repl\nSUBMIT(llm_query(context))\n```"

    return ScriptedRootLM(policy, model="child-lm", latency=latency)


INDEX = (
    "def build_index(text):\n"
    "    index = {}\n"
    "    for n, line in enumerate(text.splitlines()):\n"
    "        for word in set(line.split()):\n"
    "            index.setdefault(word, []).append(n)\n"
    "    return index\n"
)
WORDS = ["amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor"]
INDEX_PARENT = {
    "prompt": "answers = rlm_query_batched([w + '\\n' + context for w in {words}])\n",
    "fork": INDEX
    + "index = build_index(context)\n"
    + "answers = rlm_query_batched([f'len(index[{w!r}])' for w in {words}], fork=True)\n",
}


def index_policy(way: str) -> Callable[[Sequence[Message]], str]:
    """The root LM of the index workload: ask a child per word how many lines hold it."""

    def policy(messages: Sequence[Message]) -> str:
        if not any(m["role"] == "assistant" for m in messages):
            return "```repl\n" + INDEX_PARENT[way].replace("{words}", repr(WORDS)) + "```\n"
        return "FINAL_VAR(answers)\n"

    return policy


def index_child_lm(latency: float) -> ScriptedRootLM:
    """A child of the index workload: reads the count from the forked index, or builds the
    index from the context it was sent."""

    def policy(messages: Sequence[Message]) -> str:
        first = messages[1]["content"]
        if first.startswith("Query: len(index["):
            return "```repl\nSUBMIT(str(" + first.split("\n", 1)[0][7:] + "))\n```"
        code = "word, _, text = context.partition('\\n')\nSUBMIT(str(len(build_index(text)[word])))"
        return "```repl\n" + INDEX + code + "\n```"

    return ScriptedRootLM(policy, model="child-lm", latency=latency)


def index_run(way: str, text: str, latency: float, pool: int, expected: list[str]) -> float:
    """Seconds for one completion of the index workload; checks the counts."""
    root = ScriptedRootLM(index_policy(way), latency=latency)
    rlm = RLM(root, index_child_lm(latency), pool_size=pool, max_depth=1)
    start = time.perf_counter()
    result = rlm.completion(text, "How many lines hold each word?")
    took = time.perf_counter() - start
    assert result.answer == expected, (way, result.answer, result.error)
    return took


def one_run(way: str, text: str, needle: str, latency: float, pool: int) -> float:
    """Seconds for one completion; checks the answer."""
    if way == "flat":
        root = ScriptedRootLM(niah_policy(NIAH_CHUNK_CHARS), latency=latency)
        rlm = RLM(root, StandInSubLM(latency), pool_size=pool, max_depth=0)
    else:
        root = ScriptedRootLM(parent_policy(way, NIAH_CHUNK_CHARS), latency=latency)
        rlm = RLM(root, child_lm(latency), pool_size=pool, max_depth=1, max_llm_calls=10_000)
    start = time.perf_counter()
    result = rlm.completion(text, NIAH_QUERY)
    took = time.perf_counter() - start
    assert str(result.answer) == needle, (way, result.answer, result.error)
    return took


def main() -> None:
    """Interleave the three ways over each haystack; print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per LM call")
    parser.add_argument("--pool", type=int, default=4, help="RLM pool_size")
    args = parser.parse_args()
    console.print(
        f"[bold]RLM children, prompt vs fork[/] on {platform.node()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, sandlot {sandlot.__version__}, "
        f"{args.runs} rounds, LM calls {args.latency * 1000:.0f} ms, pool_size {args.pool}"
    )
    ways = ["flat", "prompt", "fork"]
    rows = []
    for lines in args.lines:
        text, needle = make_haystack(lines, seed=lines)
        chunks = math.ceil(len(text) / NIAH_CHUNK_CHARS)
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for i in range(args.runs):
            order = ways[i % len(ways) :] + ways[: i % len(ways)]
            for way in order:
                samples[way].append(one_run(way, text, needle, args.latency, args.pool))
        rounds = math.ceil(chunks / args.pool)
        # LM time alone: flat = root turn, sub-LM rounds, finish; children add their root turn.
        ideal = {"flat": (2 + rounds) * args.latency, "prompt": (2 + 2 * rounds) * args.latency}
        ideal["fork"] = ideal["prompt"]
        p50 = {way: statistics.median(samples[way]) for way in ways}
        rows.append(
            [
                f"{lines:,} lines ({len(text) / 1e6:.1f} MB, {chunks} chunks)",
                *(f"{p50[w] * 1000:.0f} ({(p50[w] - ideal[w]) * 1000:.0f})" for w in ways),
                f"{p50['fork'] / p50['prompt']:.2f}",
            ]
        )
    index_rows = []
    for lines in args.lines:
        text, _ = make_haystack(lines, seed=lines)
        expected = [str(sum(w in line.split() for line in text.splitlines())) for w in WORDS]
        samples = {way: [] for way in ways[1:]}
        for i in range(args.runs):
            for way in ways[1:] if i % 2 == 0 else ways[:0:-1]:
                samples[way].append(index_run(way, text, args.latency, args.pool, expected))
        p50 = {way: statistics.median(samples[way]) for way in samples}
        index_rows.append(
            [
                f"{lines:,} lines ({len(text) / 1e6:.1f} MB), {len(WORDS)} children",
                f"{p50['prompt'] * 1000:.0f}",
                f"{p50['fork'] * 1000:.0f}",
                f"{p50['fork'] / p50['prompt']:.2f}",
            ]
        )
    table = Table(
        title="NIAH p50 wall ms (engine time beyond the LM calls in brackets)",
        title_justify="left",
    )
    for column in ["haystack", "flat llm_query_batched", "children: prompt", "children: fork"]:
        table.add_column(column, justify="right" if column != "haystack" else "left")
    table.add_column("fork / prompt", justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    table = Table(
        title="A prepared parent: children count lines per word from the parent's index "
        "(fork) or from the whole context they are sent (prompt); p50 wall ms",
        title_justify="left",
    )
    for column in ["haystack", "children: prompt", "children: fork", "fork / prompt"]:
        table.add_column(column, justify="right" if column != "haystack" else "left")
    for row in index_rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
