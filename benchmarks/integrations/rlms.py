"""rlms: time per ``RLM`` iteration with ``environment="sandlot"`` beside rlms's ``LocalREPL``.

Both sides run rlms's own loop (:class:`peers.RlmsLoop`: a scripted root LM, an
instant stand-in sub-LM behind rlms's ``LMHandler``). Each iteration's code block
slices the context, asks the sub-LM about the slice (``llm_query``) and prints the
answer; the step is the time from one root-LM turn to the next: rlms's prompt
building, the block's run and the sub-LM round trip. The sandbox's start is before
the first turn and not counted. ``LocalREPL`` runs the block with ``exec`` in the
host process itself: no isolation, so its figure is a floor.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from peers import RlmsLoop

import sandlot.integrations.rlms  # registers environment="sandlot"
from sandlot.rlm.niah import StandInSubLM

FRAMEWORK = "rlms (RLM library)"
DEFAULT = "LocalREPL (exec in the host process, unisolated)"

STEP = "part = context[{i} * 64:({i} + 1) * 64]\nprint({i}, llm_query('about: ' + part)[:20])"
DONE = "answer['content'] = 'done'\nanswer['ready'] = True"


def steps(side: str, count: int) -> list[float]:
    """Seconds per RLM iteration for ``count`` iterations of one ``completion``."""
    turns: list[float] = []

    def root(messages: Sequence[Any]) -> str:
        turns.append(time.perf_counter())
        i = len(turns) - 1
        code = DONE if i == count else STEP.format(i=i)
        return f"```repl\n{code}\n```"

    if side == "sandlot":
        kwargs: dict[str, Any] = {"config": sandlot.SandboxConfig(isolation="bubblewrap")}
        loop = RlmsLoop(
            root,
            StandInSubLM(latency=0),
            1,
            environment="sandlot",
            environment_kwargs=kwargs,
            max_iterations=count + 1,
        )
    elif side == "default":
        loop = RlmsLoop(root, StandInSubLM(latency=0), 1, max_iterations=count + 1)
    else:
        raise ValueError(f"side must be 'sandlot' or 'default', not {side!r}")
    answer = loop.completion("lorem ipsum " * 2000, "what is it about?")
    if answer != "done" or len(turns) != count + 1:
        raise RuntimeError(f"{side}: the loop ended early ({len(turns)} turns, {answer!r})")
    return [later - earlier for earlier, later in itertools.pairwise(turns)]
