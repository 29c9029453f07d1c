"""Attacks through a served library: the serving sandbox describes its functions to the host.

Those descriptions become the source of a module that another sandbox (an agent's
session) imports. A serving sandbox that forges them must not get code of its
choosing to run there, nor break the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import strict

import sandlot

INTERFACE = '''
from sandlot import expose

@expose
def add(a: int, b: int = 2) -> int:
    """Add."""
    return a + b
'''


def _forge(server: sandlot.Sandbox, change: str) -> None:
    """Make the driver describe served functions with ``change`` applied to the spec."""
    server.run_code(
        "import sandlot_driver.exposed as _exposed\n"  # what the driver's serve() calls
        "_real = _exposed.describe\n"
        "def _forged(fn):\n"
        "    spec = _real(fn)\n"
        f"    {change}\n"
        "    return spec\n"
        "_exposed.describe = _forged"
    )


@pytest.mark.parametrize(
    "change",
    [
        # A default marked exact is pasted as source: it must be a literal.
        "spec['params'][1]['default'] = \"__import__('os').system('touch /workspace/pwned')\"",
        "spec['name'] = 'add(): pass\\nimport os; os.system(\"touch /workspace/pwned\")\\ndef x'",
        "spec['params'][0]['name'] = 'a=__import__(\"os\").system(\"touch pwned\")'",
        "spec['params'][0]['kind'] = 'SOMETHING'",
        "spec['params'] = 'not a list'",
    ],
)
def test_a_forged_description_is_refused_and_kills_the_server(change: str, tmp_path: Path) -> None:
    """The host refuses a description that would put code into the session's module."""
    (tmp_path / "iface.py").write_text(INTERFACE)
    with sandlot.Sandbox(strict()) as server:
        _forge(server, change)
        with pytest.raises(sandlot.SandboxDied) as info:
            server.serve(tmp_path / "iface.py", name="lib")
        assert info.value.cause == "protocol"
        assert not server.is_alive


def test_a_forged_annotation_stays_text_in_the_session(tmp_path: Path) -> None:
    """Annotation text is written as a string literal: importing the module runs none of it."""
    (tmp_path / "iface.py").write_text(INTERFACE)
    evil = "__import__('os').system('touch /workspace/pwned') or int"
    with sandlot.Sandbox(strict()) as server:
        _forge(server, f"spec['params'][0]['annotation'] = {evil!r}; spec['returns'] = {evil!r}")
        lib = server.serve(tmp_path / "iface.py", name="lib")
        assert isinstance(lib, sandlot.RemoteLibrary)
        ws = sandlot.Workspace(libraries=[lib])
        with sandlot.create_local_session(workspace=ws, config=strict()) as session:
            r = session.run_code(
                "import lib, os, typing\n"
                "(lib.add(40), lib.add.__annotations__['a'], os.path.exists('/workspace/pwned'))"
            )
            assert r.error is None, r.error
            assert r.value == f"(42, {evil!r}, False)"
