"""SandlotBackend: LangChain's standard sandbox tests, and Deep Agents' own agent loop,
on real sandlot sandboxes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import strict
from deepagents.backends.protocol import SandboxBackendProtocol
from langchain_tests.integration_tests import SandboxIntegrationTests

from sandlot.integrations.deepagents import SandlotBackend

CONFIG = strict(memory_mb=1024)

# langchain-tests 1.1.9 was written against an older Deep Agents: these tests ask for
# what deepagents 0.7.32 (the version locked here) defines otherwise. deepagents' own
# BaseSandbox fails the same seven. The tests below the class assert 0.7.32's contract.
RELATIVE_GLOB = (
    "langchain-tests wants glob paths relative to the search root; deepagents 0.7.32's "
    "protocol says FileInfo.path is always absolute (its permission rules match absolute "
    "paths only, so a relative one would bypass every deny rule)"
)
GLOB_DIRS = (
    "langchain-tests wants glob to list directories; deepagents 0.7.32 returns regular "
    "files only (and absolute paths)"
)
WRITE_REPLACES = (
    "langchain-tests wants write() to refuse an existing file; deepagents 0.7.32's write "
    "creates or replaces (its write_file tool tells the model so)"
)


class TestSandlotBackendStandard(SandboxIntegrationTests):
    """LangChain's standard tests for a sandbox provider, on one sandbox for the class."""

    # Its async tests carry no mark of their own; the mark is moot on the sync ones.
    pytestmark = [
        pytest.mark.asyncio,
        pytest.mark.filterwarnings(
            "ignore:.*marked with '@pytest.mark.asyncio':pytest.PytestWarning"
        ),
    ]

    @pytest.fixture(scope="class")
    def sandbox(self) -> Iterator[SandboxBackendProtocol]:
        with SandlotBackend(CONFIG) as backend:
            yield backend

    @pytest.mark.xfail(strict=True, reason=RELATIVE_GLOB)
    def test_glob(self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str) -> None:
        super().test_glob(sandbox_backend, sandbox_test_root)

    @pytest.mark.xfail(strict=True, reason=RELATIVE_GLOB)
    def test_glob_basic_pattern(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        super().test_glob_basic_pattern(sandbox_backend, sandbox_test_root)

    @pytest.mark.xfail(strict=True, reason=RELATIVE_GLOB)
    def test_glob_hidden_files_explicitly(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        super().test_glob_hidden_files_explicitly(sandbox_backend, sandbox_test_root)

    @pytest.mark.xfail(strict=True, reason=RELATIVE_GLOB)
    def test_glob_with_character_class(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        super().test_glob_with_character_class(sandbox_backend, sandbox_test_root)

    @pytest.mark.xfail(strict=True, reason=RELATIVE_GLOB)
    def test_glob_with_question_mark(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        super().test_glob_with_question_mark(sandbox_backend, sandbox_test_root)

    @pytest.mark.xfail(strict=True, reason=GLOB_DIRS)
    def test_glob_with_directories(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        super().test_glob_with_directories(sandbox_backend, sandbox_test_root)

    @pytest.mark.xfail(strict=True, reason=WRITE_REPLACES)
    def test_write_existing_file_fails(
        self, sandbox_backend: SandboxBackendProtocol, sandbox_test_root: str
    ) -> None:
        super().test_write_existing_file_fails(sandbox_backend, sandbox_test_root)
