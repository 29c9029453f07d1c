"""What a sample's sandbox sends back to Inspect is held to Inspect's bounds and redacted.

The eval log keeps every command's output, and logs are shared: a secret the
config passes in must not reach it, a flood of output must end as Inspect's
error without filling the host's memory, and a link the sample planted must
not hand the scorer a file the sample could not name itself.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from inspect_ai.util import OutputLimitExceededError, SandboxEnvironment
from inspect_ai.util._sandbox.limits import override_max_read_file_size

from sandlot.integrations.inspect_ai import InspectConfig, SandlotSandboxEnvironment

SECRET = "s3cr3t-value-for-the-inspect-test"


def _sample(check: object) -> None:
    """Run ``await check(env)`` in one sample's sandbox of a one-off task."""
    config = InspectConfig(secrets=["SANDLOT_INSPECT_SECRET"], warm=0)

    async def run() -> None:
        await SandlotSandboxEnvironment.task_init("attacks", config)
        envs = await SandlotSandboxEnvironment.sample_init("attacks", config, {})
        try:
            await check(envs["default"])  # type: ignore[operator]
        finally:
            await SandlotSandboxEnvironment.sample_cleanup("attacks", config, envs, False)
            await SandlotSandboxEnvironment.task_cleanup("shutdown", config, True)

    asyncio.run(run())


@pytest.fixture(autouse=True)
def secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDLOT_INSPECT_SECRET", SECRET)


def test_a_secret_printed_by_a_command_never_reaches_the_log() -> None:
    async def check(env: SandboxEnvironment) -> None:
        done = await env.exec(
            ["sh", "-c", 'echo "$SANDLOT_INSPECT_SECRET"; echo "x$SANDLOT_INSPECT_SECRET" >&2']
        )
        assert done.success
        assert SECRET not in done.stdout + done.stderr
        assert "[redacted SANDLOT_INSPECT_SECRET]" in done.stdout
        # The command itself had the value: only what comes back is redacted.
        same = await env.exec(["sh", "-c", f'test "$SANDLOT_INSPECT_SECRET" = {SECRET}'])
        assert same.success

    _sample(check)


def test_an_output_flood_ends_as_inspects_error_and_the_sandbox_goes_on() -> None:
    async def check(env: SandboxEnvironment) -> None:
        started = time.monotonic()
        with pytest.raises(OutputLimitExceededError) as caught:
            await env.exec(["sh", "-c", "yes $SANDLOT_INSPECT_SECRET"], timeout=60)
        assert time.monotonic() - started < 30  # stopped at the limit, not at the timeout
        kept = caught.value.truncated_output or ""
        assert 0 < len(kept) <= 10 << 20 and SECRET not in kept
        # The flood was killed with its process group; the sample's sandbox works on.
        left = await env.exec(["sh", "-c", "ps -e -o comm= | grep -c '^yes$' || true"])
        assert left.stdout.strip() == "0"
        assert (await env.exec(["echo", "ok"])).stdout == "ok\n"

    _sample(check)


def test_a_planted_link_or_an_oversized_file_is_not_read() -> None:
    async def check(env: SandboxEnvironment) -> None:
        await env.exec(["ln", "-s", "/etc/hostname", "linked.txt"])
        with pytest.raises(OSError, match="link"):
            await env.read_file("linked.txt")
        await env.write_file("big.bin", os.urandom(4096))
        with override_max_read_file_size(1024), pytest.raises(OutputLimitExceededError):
            await env.read_file("big.bin", text=False)

    _sample(check)
