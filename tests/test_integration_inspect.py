"""The ``sandlot`` sandbox type against Inspect AI's own provider checks and its eval loop.

Inspect ships its conformance checks for sandbox providers in
``inspect_ai.util._sandbox.self_check``; every one runs here against a real
sandlot sandbox. ``test_exec_as_user`` is the one that cannot pass: it is checked to
fail the way docs/inspect.md says (see ``EXPECTED_TO_FAIL``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from inspect_ai.util import SandboxEnvironment, SandboxUserUnsupportedError
from inspect_ai.util._sandbox import self_check

from sandlot.integrations.inspect_ai import SandlotSandboxEnvironment

pytestmark = pytest.mark.anyio

#: Checks sandlot fails by design, and why (docs/inspect.md says the same).
EXPECTED_TO_FAIL = {
    "test_exec_as_user": (
        "every command in a sandlot sandbox runs as its one unprivileged user: no root to "
        "run adduser as, and /etc is the host's, read-only"
    ),
}

TASK = "sandlot_self_check"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def one_sample() -> AsyncIterator[dict[str, SandboxEnvironment]]:
    await SandlotSandboxEnvironment.task_init(TASK, None)
    environments = await SandlotSandboxEnvironment.sample_init(TASK, None, {})
    yield environments
    await SandlotSandboxEnvironment.sample_cleanup(TASK, None, environments, False)
    await SandlotSandboxEnvironment.task_cleanup(TASK, None, True)


CHECKS = [getattr(self_check, name) for name in self_check.__all__]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_inspect_self_check(check: object, one_sample: dict[str, SandboxEnvironment]) -> None:
    if check.__name__ in EXPECTED_TO_FAIL:  # type: ignore[attr-defined]
        # adduser as root is refused with Inspect's error for an unsupported user.
        with pytest.raises(SandboxUserUnsupportedError, match="cannot run one as 'root'"):
            await check(one_sample["default"])  # type: ignore[operator]
        return
    await check(one_sample["default"])  # type: ignore[operator]
