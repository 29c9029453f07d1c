"""Attacks on the bytecode a machine's first start copies from sandlot's own directory.

The driver's copy in the cache takes the ``.pyc`` files an install wrote beside the
driver's sources instead of compiling them (``envs._compile_here``). Each template
imports that copy outside the seccomp filter, with the capabilities of its namespaces
(as root where the host is root), and it imports modules the host itself never does
(``template``, ``server``): a ``.pyc`` of those that someone else put there would run
so in every template without the host ever loading it. So the
attack: a ``__pycache__`` others may write (an install made under a loose umask, a
directory shared with other users), and in it bytecode forged to pass every check an
import makes (the magic number, the source's time and size in its header), with code of
the attacker's. The copy must compile over it, and the sandbox run the real module.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import struct
import sys
from pathlib import Path

import pytest
from conftest import strict

import sandlot
from sandlot.backends import envs
from sandlot.backends import template as templates

FORGED = "FORGED_BY_ANOTHER_USER = True\n"


def _pyc(package: Path, module: str) -> Path:
    return package / "__pycache__" / f"{module}.{sys.implementation.cache_tag}.pyc"


def _forge(source: Path, pyc: Path, tmp: Path) -> bytes:
    """Bytecode of the attacker's code with a header that matches ``source`` as it is."""
    planted = tmp / "planted.py"
    planted.write_text(source.read_text() + FORGED)
    py_compile.compile(str(planted), cfile=str(pyc), doraise=True)
    st = source.stat()
    data = pyc.read_bytes()
    forged = data[:8] + struct.pack("<2I", int(st.st_mtime) & 0xFFFFFFFF, st.st_size) + data[16:]
    pyc.write_bytes(forged)
    return forged


@pytest.mark.parametrize("how", ["world-writable __pycache__", "link to the attacker's file"])
def test_forged_bytecode_beside_the_driver_s_sources_is_compiled_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    source = tmp_path / "driver"
    shutil.copytree(envs.DRIVER_SRC, source, ignore=shutil.ignore_patterns("__pycache__"))
    for path in source.rglob("*.py"):
        py_compile.compile(str(path), cfile=str(_pyc(path.parent, path.stem)), doraise=True)
    target = _pyc(source, "places")
    if how == "world-writable __pycache__":
        target.parent.chmod(0o777)
        target.unlink()  # as another user could, and write their own
        forged = _forge(source / "places.py", target, tmp_path)
    else:
        elsewhere = tmp_path / "attacker" / target.name
        elsewhere.parent.mkdir()
        forged = _forge(source / "places.py", elsewhere, tmp_path)
        target.unlink()
        target.symlink_to(elsewhere)
    assert target.read_bytes() == forged
    # The forgery passes every check an import makes: only where it lies gives it away.
    assert forged[:4] == importlib.util.MAGIC_NUMBER
    monkeypatch.setattr(envs, "DRIVER_SRC", source)
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))
    copy = envs.compiled_driver(envs.base_python())
    assert _pyc(copy, "places").read_bytes() != forged
    held, modules = envs.installed_bytecode()
    if how == "world-writable __pycache__":  # none of that directory's, only the shim's
        assert held == len(list((source / "shim").rglob("*.py"))) < modules
    else:
        assert held == modules - 1  # the rest of the install's bytecode is taken
    monkeypatch.setenv(templates.ENV_VAR, "0")  # a cold start binds this copy as it is
    with sandlot.Sandbox(strict()) as box:
        ran = box.run_code(
            "import sandlot_driver.places as p; hasattr(p, 'FORGED_BY_ANOTHER_USER')"
        ).value
    assert ran == "False"
    assert os.path.islink(target) == (how != "world-writable __pycache__")
