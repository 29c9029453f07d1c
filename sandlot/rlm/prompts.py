"""What the root LM is told: the system prompt, its force-parallel variant, the turn prompts.

Written for sandlot. The conventions it teaches (```repl blocks, ``llm_query``,
``FINAL``/``FINAL_VAR``, ``answer``, ``SUBMIT``) are the ones RLM users already
know from the paper's library and from DSPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SYSTEM_PROMPT = """\
You answer a query about a context that is too large to read at once. The context \
is not in this conversation: it is the variable `context` in a Python REPL that you \
control. You work in turns. In each turn, write Python in one or more fenced blocks \
marked ```repl (or ```python); they run in order in the same persistent interpreter, \
and you are shown what they print (long output is cut in the middle, so print what \
matters, not everything). Variables, imports and functions persist between turns.

The REPL gives you:
- `context`: the data ({context_desc}).
- `llm_query(prompt, model=None) -> str`: ask a sub-LM one question. It reads about \
{sub_chars} characters well, so hand it chunks, not the whole context. It sees only \
the prompt you pass, so put the chunk and the question in it.
- `llm_query_batched(prompts, model=None) -> list[str]` (also `parallel_llm_query`): \
ask many prompts at once; up to {parallelism} run concurrently. Answers come back in \
the order of the prompts; a prompt that failed gives a string starting with "Error:" \
and does not sink the others. Prefer this to a loop of `llm_query`.
- `rlm_query(prompt, model=None, fork=False) -> str` and \
`rlm_query_batched(prompts, model=None, fork=False)`: like the two above, but each \
prompt goes to a recursive LM with its own REPL, for sub-tasks that themselves need \
code. With `fork=True` each child's REPL starts as a copy of yours at the call \
(`context` and the variables you made) and the prompt is its task: name your \
variables in it (`"count the errors in chunks[3]"`) instead of pasting data.{depth_note}
- `SHOW_VARS()`: the variables you have made so far.{tools_desc}

Work like this: look at the context's shape and a few samples with code; narrow down \
with code (slicing, searching, regular expressions) where you can; send only the \
pieces that need reading or judgement to sub-LMs; keep intermediate results in \
variables; check your answer before you give it.

Finish in one of these ways:
- Write `FINAL(your answer)` on its own line, outside any code block, when the \
answer is short text.
- Write `FINAL_VAR(name)` on its own line, outside any code block, to answer with \
the value of REPL variable `name` (make it in an earlier turn, or in a code block of \
the same turn).
- In code: `SUBMIT(value)`, or set `answer["content"] = value` and \
`answer["ready"] = True`.
Do not finish until you have looked at the data: never guess.
"""

FORCE_PARALLEL = """
Required strategy for this run: split `context` into chunks of at most {sub_chars} \
characters, build one prompt per chunk, and send them all in ONE call to \
`llm_query_batched`. Do not call `llm_query` in a loop and do not answer from a \
regular-expression search alone: every chunk must be read by a sub-LM. Then combine \
the answers with code (and one more batched call if they disagree) and finish.
"""

FIRST_TURN = """\
Query: {query}

The context is in the REPL as `context` ({context_desc}). You have not looked at it \
yet. Start by writing code to explore it."""

FORKED_TURN = """\
Query: {query}

Your REPL is a copy of your parent's, made when it gave you this task: `context` \
({context_desc}) and the parent's variables{variables} are here. What you change is \
yours alone. Start by writing code.{skipped}"""

NEXT_TURN = "Turn {iteration} of {max_iterations}. Continue, or finish if you have the answer."

NO_CODE = (
    "Your reply had no ```repl code block and no FINAL(...)/FINAL_VAR(...) line. Write "
    "code in a ```repl block to keep working, or finish with FINAL(...)."
)

LAST_CHANCE = (
    "You have reached the limit of this run ({reason}). Give your best answer now, "
    "from what you have found so far, as FINAL(answer). Write no more code."
)

BUDGET_SPENT = (
    "The sub-LM budget of this run is spent ({detail}); further llm_query calls fail. "
    "Finish in this turn with what you have."
)


def forked_turn(
    query: str, context_desc: str, variables: Sequence[str], skipped: Sequence[str]
) -> str:
    """The first user message of a child run forked from its parent's REPL."""
    shown = ", ".join(f"`{name}`" for name in variables[:40])
    if len(variables) > 40:
        shown += f" and {len(variables) - 40} more (`SHOW_VARS()` lists them)"
    left = ""
    if skipped:
        left = "\nThe copy could not hold these parent variables: " + "; ".join(skipped[:20])
    return FORKED_TURN.format(
        query=query,
        context_desc=context_desc,
        variables=f" ({shown})" if shown else "",
        skipped=left,
    )


def describe_context(context: Any, total_chars: int) -> str:
    """A one-line description of the context: its type, size and, for lists, item sizes."""
    if isinstance(context, str):
        return f"a str of {total_chars:,} characters"
    if isinstance(context, dict):
        keys = list(context)
        shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
        return f"a dict with {len(keys):,} keys ({shown}); {total_chars:,} characters as JSON"
    if isinstance(context, list):
        sizes = [len(item) if isinstance(item, str | list | dict) else 1 for item in context]
        shown = ", ".join(f"{s:,}" for s in sizes[:10]) + (", ..." if len(sizes) > 10 else "")
        return (
            f"a list of {len(context):,} items (lengths {shown}); "
            f"{total_chars:,} characters as JSON"
        )
    return f"a {type(context).__name__}; {total_chars:,} characters as JSON"


def system_prompt(
    template: str,
    *,
    context_desc: str,
    parallelism: int,
    sub_chars: int,
    depth: int,
    max_depth: int,
    tools: dict[str, str],
    force_parallel: bool,
) -> str:
    """The root LM's system prompt for one run, from ``template`` (``SYSTEM_PROMPT``'s fields)."""
    if depth < max_depth:
        depth_note = f" (This run is at depth {depth}; children may go to depth {max_depth}.)"
    else:
        depth_note = (
            " At this depth they are answered by a plain sub-LM call, and `fork=True` is refused."
        )
    tools_desc = ""
    if tools:
        lines = [
            f"\n- `{name}`: {doc or 'a function the host provides.'}" for name, doc in tools.items()
        ]
        tools_desc = "\nFunctions the user provides:" + "".join(lines)
    text = template.format(
        context_desc=context_desc,
        sub_chars=f"{sub_chars:,}",
        parallelism=parallelism,
        depth_note=depth_note,
        tools_desc=tools_desc,
    )
    if force_parallel:
        text += FORCE_PARALLEL.format(sub_chars=f"{sub_chars:,}")
    return text
