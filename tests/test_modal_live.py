"""ModalBackend against Modal's real service: run only where Modal credentials are present.

Skipped (and so not counted as passing) unless ``MODAL_TOKEN_ID`` and
``MODAL_TOKEN_SECRET`` are set. To run them::

    MODAL_TOKEN_ID=ak-... MODAL_TOKEN_SECRET=as-... uv run pytest tests/test_modal_live.py -v

They create sandboxes in app ``sandlot-tests`` (billed to that workspace) and
terminate them; ``sandlot modal cleanup --owner sandlot-live-tests`` ends any
that a crashed run left.
"""

from __future__ import annotations

import asyncio
import os

import pytest

import sandlot
from sandlot.backends import modal as modal_backend
from sandlot.backends.modal import ModalBackend

pytestmark = [
    pytest.mark.skipif(
        not (os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET")),
        reason="needs Modal credentials (MODAL_TOKEN_ID, MODAL_TOKEN_SECRET)",
    ),
    pytest.mark.timeout(600),
]

OWNER = "sandlot-live-tests"


def backend() -> ModalBackend:
    return ModalBackend(app_name="sandlot-tests", owner=OWNER)


def test_a_modal_sandbox_runs_code_host_calls_files_and_processes() -> None:
    config = sandlot.SandboxConfig(python_packages=["rich"], timeout=600)
    with sandlot.Sandbox(config, backend=backend(), tools={"double": lambda x: 2 * x}) as sb:
        assert sb.run_code("import rich\nx = 21\ndouble(x)").value == "42"
        assert sb.run_code("x + 1").value == "22"
        blob = os.urandom(5 << 20)  # more than Modal's 2 MiB stdin buffer
        sb.files.write("blob.bin", blob)
        assert sb.files.read("blob.bin") == blob
        assert sb.exec("sh", "-c", "echo hi").stdout == "hi\n"
        reach = sb.run_code(
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 443), 5)\n"
            "    print('reached')\nexcept OSError:\n    print('blocked')"
        )
        assert reach.stdout.strip() == "blocked"  # block_network
    left = asyncio.run(modal_backend.find_sandboxes(OWNER))
    assert left == [], [sb.object_id for sb, _ in left]


def test_a_terminated_modal_sandbox_ends_the_sandlot_sandbox() -> None:
    with sandlot.Sandbox(sandlot.SandboxConfig(timeout=300), backend=backend()) as sb:
        sb.run_code("x = 1")
        (found,) = asyncio.run(modal_backend.find_sandboxes(OWNER))
        asyncio.run(found[0].terminate.aio())
        with pytest.raises(sandlot.SandboxDied):
            sb.run_code("import time; time.sleep(60)", timeout=120)
