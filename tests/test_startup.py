"""``import sandlot`` and ``sandlot --help`` import only what they use.

Claude Code starts ``sandlot mcp`` for every conversation and a program may
import sandlot for one name: neither should pay for notebooks, YAML or the
command line's other subcommands.
"""

from __future__ import annotations

import ast
import errno
import importlib
import importlib.util
import inspect
import json
import marshal
import os
import py_compile
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import forked, strict, wait_settled

import sandlot
from sandlot.backends import envs
from sandlot.backends import local as local_backend
from sandlot.backends import template as templates
from sandlot.cli import SUBCOMMANDS
from sandlot.driver.server import readable_by

# Extras and layers that a bare import, or the listing of the commands, must not load.
HEAVY = (
    "nbformat",
    "nbclient",
    "jsonschema",
    "jupyter_client",
    "yaml",
    "mcp",
    "dspy",
    "openai",
    "ray",
    "modal",
    "sandlot.notebook",
    "sandlot.experiment",
    "sandlot.rlm",
    "sandlot.mcp",
)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    report = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_sandlot_loads_no_module_of_its_own_nor_any_dependency() -> None:
    loaded = _modules_after("import sandlot")
    assert {m for m in loaded if m.startswith("sandlot")} == {"sandlot"}
    for heavy in (*HEAVY, "pydantic", "typer", "rich"):
        assert heavy not in loaded


def test_a_public_name_loads_its_own_layer_and_no_extra() -> None:
    loaded = _modules_after("from sandlot import Sandbox, SandboxConfig")
    assert {"sandlot.sync", "sandlot.config", "pydantic"} <= loaded
    for heavy in (*HEAVY, "typer", "rich"):
        assert heavy not in loaded


def test_every_public_name_resolves_to_its_module_s_object() -> None:
    for name in sandlot.__all__:
        value = getattr(sandlot, name)
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name
    assert set(sandlot.__all__) <= set(dir(sandlot))
    assert sandlot.backends is importlib.import_module("sandlot.backends")  # submodules too


def test_sandlot_help_lists_every_command_and_imports_none() -> None:
    code = (
        "import sys\n"
        "from sandlot.cli import main\n"
        "sys.argv = ['sandlot', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(code)
    done = subprocess.run(
        [sys.executable, "-m", "sandlot.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    for subcommand in SUBCOMMANDS:
        assert f"│ {subcommand.name} " in done.stdout
        assert subcommand.help.replace("\\[", "[") in done.stdout  # as Rich shows it
    assert "pip install 'sandlot[modal]'" in done.stdout  # an extra's name, not markup
    for heavy in (*HEAVY, "pydantic", "sandlot.config", "sandlot.sync", "sandlot.sandbox"):
        assert heavy not in loaded
    assert not {m for m in loaded if m.startswith("sandlot.cli.")} - {"sandlot.cli.lazy"}


def test_each_stub_s_help_line_is_its_command_s() -> None:
    """The line ``sandlot --help`` shows for a command is what the command's help begins with."""
    for subcommand in SUBCOMMANDS:
        command = subcommand.command()
        first = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        assert subcommand.help == first.strip(), subcommand.name


# What the driver imports only when a request needs it (issue 22: time to first run_code),
# and what no part of it uses: each module the template holds is memory whose page tables
# every fork copies (pathlib and what it imports were 0.6 MB of the template's 8.6).
DRIVER_LAZY = ("inspect", "secrets", "tarfile")
DRIVER_NEVER = ("pathlib", "urllib.parse", "ipaddress")


@pytest.mark.parametrize("modules", [DRIVER_LAZY, DRIVER_NEVER], ids=["lazy", "never"])
def test_a_fresh_sandbox_s_driver_has_not_imported_what_it_does_not_need_yet(
    sb: sandlot.Sandbox, modules: tuple[str, ...]
) -> None:
    probe = f"import sys\nsorted(m for m in {modules!r} if m in sys.modules)"
    assert sb.run_code(probe).value == "[]"


# What a cold-started driver (no template: a host that is not root, a sandbox with mounts
# or volumes, SANDLOT_TEMPLATES=0) loads only once a request needs it (its channel is read
# and written as a descriptor: no socket module), about a third of its imports' time; a
# template holds them for every fork but its first beforehand.
COLD_LAZY = ("ctypes", "selectors", "shutil", "socket", "subprocess", "tempfile", "typing")
TEMPLATE_HOLDS = ["ctypes", "selectors", "socket"]  # what the template itself runs on
LAZY_PROBE = f"import sys\nsorted(m for m in {COLD_LAZY!r} if m in sys.modules)"
# The collector: on for the sandbox's code; where forked, the template's objects frozen
# (gc.freeze), so that no collection in the sandbox walks them (and copies their pages).
GC_PROBE = "import gc\n(gc.isenabled(), gc.get_freeze_count(), len(gc.get_objects()))"


def _requests_load_what_they_need(box: sandlot.Sandbox) -> list[str]:
    """Run a command and file requests in ``box``; the modules of COLD_LAZY it has after."""
    assert box.exec("echo", "ran").stdout == "ran\n"
    box.files.write("made/here.txt", "written")
    assert box.files.read_text("made/here.txt") == "written"
    assert [f.name for f in box.files.list("made")] == ["here.txt"]  # no temporary left
    box.files.remove("made", recursive=True)
    assert not box.files.exists("made")
    return list(ast.literal_eval(box.run_code(LAZY_PROBE).value or ""))


def test_a_cold_driver_loads_what_commands_and_files_need_when_they_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(templates.ENV_VAR, "0")
    with sandlot.Sandbox(strict()) as box:
        assert box.info["started"] == "cold"
        assert box.run_code(LAZY_PROBE).value == "[]"
        # Each request loaded what it needed; the driver's parent is bubblewrap's PID 1.
        assert _requests_load_what_they_need(box) == ["selectors", "shutil", "subprocess"]
        enabled, frozen, _ = ast.literal_eval(box.run_code(GC_PROBE).value or "")
        assert enabled and frozen == 0


def test_a_template_s_first_sandbox_loads_as_a_cold_one_and_the_next_find_it_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new template forks its first sandbox before it loads what commands and files need
    (that sandbox's start is the template's: it loads them itself), then loads them once
    for every later fork; both find the template's objects frozen and the collector on."""
    monkeypatch.setenv(templates.ENV_VAR, "1")
    locale = "C.UTF-8@sandlot-first-fork"  # a key of its own: this test's template is new
    config = strict(env={"LC_MESSAGES": locale})
    try:
        for first in (True, False):
            if not first:
                (template,) = [t for k, t in local_backend._templates.items() if locale in str(k)]
                wait_settled(template)
            with sandlot.Sandbox(config) as box:
                forked(box)
                before = ast.literal_eval(box.run_code(LAZY_PROBE).value or "")
                assert before == (TEMPLATE_HOLDS if first else list(COLD_LAZY))
                enabled, frozen, tracked = ast.literal_eval(box.run_code(GC_PROBE).value or "")
                assert enabled and frozen > 5000 and tracked < frozen // 4, (frozen, tracked)
                loaded = sorted([*TEMPLATE_HOLDS, "shutil", "subprocess"])  # as a cold one
                assert _requests_load_what_they_need(box) == (loaded if first else list(COLD_LAZY))
    finally:
        assert local_backend.end_templates(lambda key: ("LC_MESSAGES", locale) in key[2]) == 1


def test_a_driver_tells_whether_a_user_it_drops_to_could_read_a_directory() -> None:
    """Where the sandbox user could not read the standard library (an interpreter in root's
    home, no bubblewrap), a driver loads before its drop what it would load on demand."""
    nobody = 65534
    with tempfile.TemporaryDirectory() as top:  # /tmp: others search it (pytest's do not)
        outer = Path(top, "outer")
        inner = outer / "lib"
        inner.mkdir(parents=True)
        Path(top).chmod(0o755)
        outer.chmod(0o711)  # searched, not listed
        inner.chmod(0o755)
        assert readable_by(str(inner), nobody, nobody)
        inner.chmod(0o751)  # others may search it but not list it
        assert not readable_by(str(inner), nobody, nobody)
        os.chown(inner, 0, nobody)
        inner.chmod(0o750)  # the user's group may
        assert readable_by(str(inner), nobody, nobody)
        outer.chmod(0o700)  # a directory on the way that others cannot search
        assert not readable_by(str(inner), nobody, nobody)
        assert readable_by(str(inner), os.getuid(), os.getgid())
        assert not readable_by(str(outer / "missing"), nobody, nobody)


BYTECODE_PROBE = """
import importlib.util, os, struct, sys
server = sys.modules["sandlot_driver.server"]
with open(server.__cached__, "rb") as f:
    head = f.read(16)
flags, mtime, size = struct.unpack("<III", head[4:16])
st = os.stat(server.__file__)
try:
    open(os.path.join(os.path.dirname(server.__file__), "planted.py"), "w")
    wrote = True
except OSError:
    wrote = False
(head[:4] == importlib.util.MAGIC_NUMBER, flags, mtime == int(st.st_mtime) & 0xFFFFFFFF,
 size == st.st_size & 0xFFFFFFFF, wrote)
"""


@pytest.mark.parametrize("templates_on", ["0", "1"], ids=["cold", "template"])
def test_a_sandbox_s_driver_comes_with_its_bytecode_and_cannot_change_it(
    monkeypatch: pytest.MonkeyPatch, templates_on: str
) -> None:
    """The driver a sandbox binds is a copy with its bytecode compiled (whatever sandlot's own
    directory holds: this test suite runs with PYTHONDONTWRITEBYTECODE), read-only."""
    monkeypatch.setenv(templates.ENV_VAR, templates_on)
    with sandlot.Sandbox(strict()) as box:
        assert box.info["started"] == ("template" if templates_on == "1" else "cold")
        # Magic number, timestamp-checked (flags 0), for the source's time and size; not writable.
        assert box.run_code(BYTECODE_PROBE).value == "(True, 0, True, True, False)"


def test_the_driver_copy_follows_its_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed source gives a new copy, compiled again; the old one stays for the processes
    that bound it."""
    source = tmp_path / "driver"
    shutil.copytree(envs.DRIVER_SRC, source, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(envs, "DRIVER_SRC", source)
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))
    python = envs.base_python()
    first = envs.compiled_driver(python)
    assert envs.ready_driver(python) == first
    tag = sys.implementation.cache_tag
    assert (first / "__pycache__" / f"server.{tag}.pyc").is_file()
    assert (first / "shim").is_dir() and not (source / "__pycache__").exists()
    with open(source / "codec.py", "a") as f:
        f.write("# changed\n")
    second = envs.compiled_driver(python)
    assert second != first and first.is_dir()
    assert (second / "codec.py").read_text().endswith("# changed\n")
    assert (second / "__pycache__" / f"codec.{tag}.pyc").is_file()
    assert envs.ready_driver(python) == second


def _pyc_of(package: Path, module: str) -> Path:
    return package / "__pycache__" / f"{module}.{sys.implementation.cache_tag}.pyc"


INSTALLED_AS = {  # how the install compiled a module, where not checked by time
    "kernel": py_compile.PycInvalidationMode.CHECKED_HASH,  # pip's with SOURCE_DATE_EPOCH set
    "snapshot": py_compile.PycInvalidationMode.UNCHECKED_HASH,  # an import takes it unchecked
}


def _installed(tmp_path: Path) -> Path:
    """A copy of the driver's sources with the bytecode an install by pip writes beside them."""
    source = tmp_path / "driver"
    shutil.copytree(envs.DRIVER_SRC, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "fileops.py").chmod(0o444)  # as a read-only install has it
    for path in source.rglob("*.py"):
        py_compile.compile(
            str(path),
            cfile=str(_pyc_of(path.parent, path.stem)),
            doraise=True,
            invalidation_mode=INSTALLED_AS.get(path.stem, py_compile.PycInvalidationMode.TIMESTAMP),
        )
    return source


def test_the_driver_copy_takes_the_bytecode_sandlot_s_directory_holds_where_it_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytecode that sandlot's own directory holds (as an install by pip writes it) is copied
    with the sources where an import of the copy would use it (checked by time or by hash),
    and compiled anew where it would not (stale, taken unchecked, another version's, or no
    code after its header) or where others could have put it there (a link, a file others
    may write). The copy serves a sandbox, whose tracebacks still leave the driver's frames
    out."""
    source = _installed(tmp_path)
    with open(source / "codec.py", "a") as f:
        f.write("# changed after its bytecode was written\n")
    other = bytearray(_pyc_of(source, "protocol").read_bytes())
    other[:2] = (int.from_bytes(other[:2], "little") - 1).to_bytes(2, "little")
    _pyc_of(source, "protocol").write_bytes(other)  # the magic number of another version
    not_code = _pyc_of(source, "server").read_bytes()[:16] + marshal.dumps(("not", "code"))
    _pyc_of(source, "server").write_bytes(not_code)
    _pyc_of(source, "places").chmod(0o664)  # others could have written it: not trusted
    linked = _pyc_of(source, "procs")
    linked.rename(tmp_path / linked.name)
    linked.symlink_to(tmp_path / linked.name)  # valid, but a link to somewhere else
    monkeypatch.setattr(envs, "DRIVER_SRC", source)
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))
    copy = envs.compiled_driver(envs.base_python())

    for module in ("repl", "template", "fileops", "kernel"):  # taken as they were
        assert _pyc_of(copy, module).read_bytes() == _pyc_of(source, module).read_bytes()
    shim = copy / "shim" / "sandlot"
    assert (
        _pyc_of(shim, "__init__").read_bytes()
        == _pyc_of(source / shim.relative_to(copy), "__init__").read_bytes()
    )
    compiled_anew = ("codec", "protocol", "server", "snapshot", "places", "procs")
    for module in compiled_anew:  # compiled for the copy instead
        pyc = _pyc_of(copy, module).read_bytes()
        st = (copy / f"{module}.py").stat()
        assert pyc[:16] == importlib.util.MAGIC_NUMBER + struct.pack(
            "<3I", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size
        )
        assert marshal.loads(pyc[16:]).co_filename == str(copy / f"{module}.py")
    mask = os.umask(0)
    os.umask(mask)
    compiled = stat.S_IMODE(_pyc_of(copy, "codec").stat().st_mode)
    copied = stat.S_IMODE(_pyc_of(copy, "fileops").stat().st_mode)
    assert (compiled, copied) == (0o644 & ~mask, 0o644 & ~mask)  # py_compile's, owner-writable
    assert list(copy.rglob("*.pyc.*")) == []

    monkeypatch.setenv(templates.ENV_VAR, "0")  # a cold start binds this copy as it is
    with sandlot.Sandbox(strict()) as box:
        assert box.info["started"] == "cold"
        assert box.run_code(BYTECODE_PROBE).value == "(True, 0, True, True, False)"
        where = box.run_code(
            "import sandlot_driver.repl as r; r.user_traceback.__code__.co_filename"
        ).value
        failed = box.run_code("def f():\n    1/0\nf()").error
    assert where == repr("/.sandlot/sandlot_driver/repl.py")  # an import puts its own path
    assert failed is not None and failed.traceback.startswith(
        'Traceback (most recent call last):\n  File "<cell-'
    )


def test_a_copy_of_the_installed_bytecode_cut_short_is_never_left_for_an_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy that fails as it is put in place (a full disk) leaves no bytecode an import of
    the driver would fail on: the module is compiled as the sandbox starts, which it does."""
    monkeypatch.setattr(envs, "DRIVER_SRC", _installed(tmp_path))
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))

    def full(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full)
        copy = envs.compiled_driver(envs.base_python())
    assert "No space left on device" in caplog.text
    assert list(copy.rglob("*.pyc*")) == []  # the first copy failed: none, and no partial one
    monkeypatch.setenv(templates.ENV_VAR, "0")
    with sandlot.Sandbox(strict()) as box:
        assert box.run_code("import sandlot_driver.repl; 1+1").value == "2"


def test_an_environment_made_in_the_host_links_the_interpreter_s_real_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's base interpreter reached through a linked directory (uv's Pythons are): the
    empty environment the host makes links its real path, the one a sandbox binds."""
    python = envs.base_python()
    link = tmp_path / "linked-python"
    link.symlink_to(Path(python).parent.parent, target_is_directory=True)
    monkeypatch.setattr(sys, "_base_executable", str(link / "bin" / Path(python).name))
    assert envs.base_python() == python  # so the host makes it itself
    target = tmp_path / "env"
    envs._build_empty(python, target)
    links = [os.readlink(p) for p in (target / "bin").iterdir() if p.is_symlink()]
    assert [to for to in links if os.path.isabs(to)] == [python]
    config = dict(line.split(" = ", 1) for line in (target / "pyvenv.cfg").read_text().splitlines())
    assert config["home"] == str(Path(python).parent)


def _another_interpreter() -> tuple[str, str]:
    """An installed CPython that is not the host's base interpreter, and its cache tag."""
    base = envs.base_python()
    for name in ("python3.12", "python3.13", "python3.10", "/usr/bin/python3"):
        if shutil.which(name) is None:
            continue
        said = subprocess.run(  # a system interpreter (a pyenv shim runs the real one)
            [name, "-I", "-c", "import sys; print(sys.executable, sys.implementation.cache_tag)"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if len(said) == 2 and envs.real_interpreter(said[0]) != base:
            return said[0], said[1]
    pytest.fail("this test needs a CPython besides the host's (python3.10 to 3.13)")


def test_another_interpreter_makes_its_own_environment_and_driver_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's base interpreter makes an empty environment and the driver's bytecode in
    the host process; for another interpreter, that interpreter makes them (its own venv
    and compileall: bytecode of its own version), and its sandboxes run on it."""
    python, tag = _another_interpreter()
    monkeypatch.setenv("SANDLOT_CACHE", str(tmp_path / "cache"))
    backend = local_backend.LocalBackend(python=python)
    with sandlot.Sandbox(strict(), backend=backend) as box:
        ran = box.run_code("import sys; sys.implementation.cache_tag, sys.base_prefix").value
    (driver,) = (tmp_path / "cache" / "drivers").glob("*/sandlot_driver")
    assert sorted(p.name for p in (driver / "__pycache__").glob("server.*.pyc")) == [
        f"server.{tag}.pyc"
    ]
    (env,) = (tmp_path / "cache" / "envs").glob("*/pyvenv.cfg")
    home = dict(line.split(" = ", 1) for line in env.read_text().splitlines())["home"]
    assert ran == repr((tag, str(Path(home).parent)))
    assert envs.real_interpreter(str(env.parent / "bin" / "python")) == envs.real_interpreter(
        python
    )


@pytest.mark.parametrize("templates_on", ["0", "1"], ids=["cold", "template"])
def test_the_sandbox_s_code_runs_with_garbage_collection_on(
    monkeypatch: pytest.MonkeyPatch, templates_on: str
) -> None:
    """Drivers and templates import with the collector off (``places.GC_OFF``, 2 ms of a
    cold driver's imports); the sandbox's code finds it on, as in any interpreter."""
    monkeypatch.setenv(templates.ENV_VAR, templates_on)
    with sandlot.Sandbox(strict()) as box:
        assert box.info["started"] == ("template" if templates_on == "1" else "cold")
        assert box.run_code("import gc\ngc.isenabled()").value == "True"
