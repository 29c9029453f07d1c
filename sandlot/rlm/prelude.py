"""The code an RLM run puts in its sandbox's REPL before the root LM's first turn.

It loads ``context`` from the file the host wrote, and defines the finishing
conventions (``answer``, ``SUBMIT``, ``FINAL``, ``FINAL_VAR``) and ``SHOW_VARS``.
``llm_query`` and the other sub-call functions are host tools, registered on the
sandbox, so they need no code here. Everything runs on the sandbox's standard
library only.
"""

from __future__ import annotations

import json

from ..resources import package_text

# Raised (as a BaseException, so ``except Exception`` in the LM's code cannot swallow
# it) to end a code block once the answer is submitted; the engine knows its name.
SUBMITTED = "RLMSubmitted"

PRELUDE = package_text("sandlot.rlm", "in_sandbox/prelude.py")


def load_context_code(path: str, kind: str) -> str:
    """REPL code that reads the context file the host wrote into ``context``."""
    return f"_rlm_load_context({json.dumps(path)}, {json.dumps(kind)})"


def final_var_code(name: str) -> str:
    """REPL code that submits variable ``name`` (a ``FINAL_VAR`` line in the reply)."""
    return f"FINAL_VAR({json.dumps(name)})"
