"""An echoing sub-LM behind rlms's own LM handler, for the rlms environment tests.

``echo`` and ``handler`` are fixtures (module-scoped where they are used);
``tests/conftest.py`` makes them visible to every test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rlm.clients.base_lm import BaseLM
from rlm.core.lm_handler import LMHandler
from rlm.core.types import ModelUsageSummary, UsageSummary


class EchoLM(BaseLM):  # type: ignore[misc]
    """The sub-LM behind the environment tests' LMHandler: answers ``SUB:<prompt>``.

    (rlms's own OpenAI client cannot serve two ``llm_query_batched`` calls on one
    handler: its async client stays bound to the event loop of the first batch.)
    """

    def __init__(self) -> None:
        super().__init__(model_name="echo")
        self.prompts: list[str] = []

    def completion(self, prompt: Any) -> str:
        self.prompts.append(prompt)
        return f"SUB:{prompt}"

    async def acompletion(self, prompt: Any) -> str:
        return self.completion(prompt)

    def get_usage_summary(self) -> UsageSummary:
        return UsageSummary(model_usage_summaries={})

    def get_last_usage(self) -> ModelUsageSummary:
        return ModelUsageSummary(total_calls=1, total_input_tokens=0, total_output_tokens=0)


@pytest.fixture(scope="module")
def echo() -> EchoLM:
    return EchoLM()


@pytest.fixture(scope="module")
def handler(echo: EchoLM) -> Iterator[tuple[str, int]]:
    """rlms's LMHandler (its socket server), answering with ``echo``."""
    lm_handler = LMHandler(echo)
    address = lm_handler.start()
    yield address
    lm_handler.stop()
