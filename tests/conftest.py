"""Shared fixtures: real sandboxes under bubblewrap (the suite requires it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import sandlot


def strict(**fields: object) -> sandlot.SandboxConfig:
    """A config that refuses to run without bubblewrap, so no test passes unisolated."""
    return sandlot.SandboxConfig(isolation="bubblewrap", **fields)  # type: ignore[arg-type]


@pytest.fixture
def sb() -> Iterator[sandlot.Sandbox]:
    """A started sandbox, terminated after the test."""
    with sandlot.Sandbox(strict(memory_mb=1024)) as box:
        yield box
