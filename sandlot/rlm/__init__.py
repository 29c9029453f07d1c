"""Recursive Language Models on sandlot: an LM explores a long context by writing code.

The context is a variable in a sandboxed REPL; the root LM writes code that
inspects it and calls sub-LMs (``llm_query``) on the pieces that matter, and
finishes with an answer. Sub-LM calls travel sandbox -> host router -> LM client,
so the sandbox needs no network and never sees an API key.

``RLM(root_lm, sub_lm, ...).completion(context, query)`` runs one; any object
with a ``model`` name and ``acomplete(messages)`` (or ``complete``) is an LM, and
``OpenAICompatibleLM`` talks to any OpenAI-compatible server.
"""

from .engine import RLM, RLMConfig, RLMResult
from .lm import LMConfig, OpenAICompatibleLM
from .lm_protocol import (
    LM,
    AsyncLM,
    Completion,
    LMError,
    Message,
    ModelUsage,
    SyncLM,
    ToolCall,
    Usage,
)

__all__ = [
    "LM",
    "RLM",
    "AsyncLM",
    "Completion",
    "LMConfig",
    "LMError",
    "Message",
    "ModelUsage",
    "OpenAICompatibleLM",
    "RLMConfig",
    "RLMResult",
    "SyncLM",
    "ToolCall",
    "Usage",
]
