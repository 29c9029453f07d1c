"""Functions served from a sandbox: stubs, values, errors, concurrency, restarts, walls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict

import sandlot

HERE = Path(__file__).resolve().parent / "interfaces"
TOY = sandlot.ModelConfig(name="toy", load_code="model = {'layers': 3}\ntokenizer = str.split")


@pytest.fixture(scope="module")
def served() -> Iterator[sandlot.RemoteLibrary]:
    with sandlot.Sandbox(strict(models=[TOY])) as server:
        lib = server.serve(HERE / "calc.py", name="calc")
        assert isinstance(lib, sandlot.RemoteLibrary)
        yield lib


@pytest.fixture(scope="module")
def session(served: sandlot.RemoteLibrary) -> Iterator[sandlot.Session]:
    ws = sandlot.Workspace(libraries=[served])
    with sandlot.create_local_session(workspace=ws, name="calc-user", config=strict()) as s:
        yield s


def test_host_calls_served_functions_and_state_persists(served: sandlot.RemoteLibrary) -> None:
    before = served.calls()
    assert served.add(1) == 3 and served.add(1, b=5) == 6
    assert served.calls() == before + 2
    assert served.model_info() == {
        "global": {"layers": 3},
        "registry": {"layers": 3},
        "tokens": ["a", "b", "c"],
    }
    with pytest.raises(AttributeError, match="serves no function 'hidden'"):
        served.hidden()


def test_stub_module_keeps_awkward_signatures(session: sandlot.Session) -> None:
    r = session.run_code(
        "import calc, inspect\n"
        "sig = inspect.signature(calc.awkward)\n"
        "[(p.name, p.kind.name) for p in sig.parameters.values()]"
    )
    assert r.error is None, r.error
    assert r.value == repr(
        [
            ("x", "POSITIONAL_ONLY"),
            ("y", "POSITIONAL_OR_KEYWORD"),
            ("rest", "VAR_POSITIONAL"),
            ("flag", "KEYWORD_ONLY"),
            ("sentinel", "KEYWORD_ONLY"),
            ("extra", "VAR_KEYWORD"),
        ]
    )
    r = session.run_code("print(sig)\nprint(calc.awkward.__doc__.strip())\ncalc.add(40)")
    assert "(x: 'Local', /, y: 'list[int] | None' = None, *rest: 'float'" in r.stdout
    assert "Take every kind of parameter" in r.stdout and r.value == "42"
    got = session.run_code("calc.awkward(1, [2], 3.5, 4.5, flag='b', k='v')").value
    assert got == repr(
        {
            "x": 1,
            "y": [2],
            "rest": [3.5, 4.5],
            "flag": "b",
            "sentinel_is_default": True,
            "extra": {"k": "v"},
        }
    )
    assert "'sentinel_is_default': True" in (session.run_code("calc.awkward('q')").value or "")


def test_errors_cross_with_the_remote_traceback(
    served: sandlot.RemoteLibrary, session: sandlot.Session
) -> None:
    with pytest.raises(sandlot.RemoteError) as info:
        served.fail("host")
    assert info.value.name == "ValueError"
    assert 'raise ValueError(f"failed on purpose: {message}")' in info.value.remote_traceback
    assert "sandlot_driver" not in info.value.remote_traceback
    r = session.run_code(
        "try:\n    calc.fail('session')\nexcept ToolError as e:\n    caught = str(e)\ncaught"
    )
    assert r.value is not None and "failed on purpose: session" in r.value
    assert "raise ValueError" in r.value
    with pytest.raises(sandlot.RemoteError, match=r"unsendable\(\) return value.*_thread.lock"):
        served.unsendable()
    with pytest.raises(TypeError, match=r"calc.echo\(\) argument.*set"):
        served.echo({1, 2})


def test_bytes_and_nested_values_cross(
    served: sandlot.RemoteLibrary, session: sandlot.Session
) -> None:
    value = {"blob": bytes(range(256)), "nested": [1, 2.5, None, True, {"$b": "not a tag"}]}
    assert served.echo(value) == value
    r = session.run_code("calc.echo({'b': b'\\x00\\xff', 't': (1, 2)})")
    assert r.value == repr({"b": b"\x00\xff", "t": [1, 2]})


def test_numpy_arrays_cross_compactly() -> None:
    cfg = strict(python_packages=["numpy"])
    with sandlot.Sandbox(cfg) as server:
        lib = server.serve(HERE / "calc.py", name="calc")
        assert isinstance(lib, sandlot.RemoteLibrary)
        with sandlot.create_local_session(
            workspace=sandlot.Workspace(libraries=[lib]), config=cfg
        ) as s:
            r = s.run_code(
                "import numpy as np, calc\n"
                "a = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
                "b = calc.echo({'a': a, 'i': np.int64(7)})\n"
                "(type(b['a']).__name__, b['a'].dtype.name, b['a'].shape,"
                " bool((b['a'] == a).all()), b['i'])"
            )
            assert r.error is None, r.error
            assert r.value == "('ndarray', 'float32', (3, 4), True, 7)"
        with sandlot.create_local_session(
            workspace=sandlot.Workspace(libraries=[lib]), config=strict()
        ) as no_numpy:
            r = no_numpy.run_code("import calc\ncalc.arange(3)")
            assert r.error is not None and r.error.name == "NumpyMissing"  # a TypeError
            assert "numpy is not installed here" in r.error.value
        try:
            import numpy  # noqa: F401
        except ImportError:  # the host has no numpy either: the same clear error
            with pytest.raises(TypeError, match="numpy is not installed here"):
                lib.arange(4)
        else:
            assert lib.arange(4).tolist() == [0, 1, 2, 3]


def test_concurrent_calls_from_several_sessions(served: sandlot.RemoteLibrary) -> None:
    ws = sandlot.Workspace(libraries=[served])
    sessions = [
        sandlot.create_local_session(workspace=ws, name=f"s{i}", config=strict()) for i in range(3)
    ]
    try:
        peaks: dict[str, list[int]] = {"serial_slow": [], "parallel_slow": []}
        for fn in peaks:
            served.reset_peak()
            results: list[str | None] = []

            def call(s: sandlot.Session, fn: str = fn, results: list[str | None] = results) -> None:
                results.append(s.run_code(f"import calc\ncalc.{fn}()").value)

            threads = [threading.Thread(target=call, args=(s,)) for s in sessions for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(results) == 6 and all(v is not None and v.isdigit() for v in results)
            peaks[fn] = [int(v) for v in results if v]
        assert max(peaks["serial_slow"]) == 1  # one at a time, though six callers came at once
        assert max(peaks["parallel_slow"]) > 1
    finally:
        for s in sessions:
            s.terminate()


def test_a_dead_server_gives_a_clear_error_and_can_be_restarted() -> None:
    with sandlot.Sandbox(strict()) as server:
        lib = server.serve(HERE / "calc.py", name="calc")
        assert isinstance(lib, sandlot.RemoteLibrary)
        with sandlot.create_local_session(
            workspace=sandlot.Workspace(libraries=[lib]), config=strict()
        ) as s:
            assert s.run_code("import calc\ncalc.add(1)").value == "3"
            server.terminate()
            with pytest.raises(sandlot.SandboxDied, match=r"calc.restart\(\)"):
                lib.add(1)
            r = s.run_code("calc.add(1)")
            assert r.error is not None and "calc.restart()" in r.error.value
            lib.restart()
            assert lib.sandbox.is_alive and lib.add(2) == 4
            assert s.run_code("calc.add(5)").value == "7"  # the session follows the new server
        lib.terminate()  # the library owns the sandbox its restart made
        assert not lib.sandbox.is_alive


def test_the_session_reaches_the_server_only_through_exposed_functions(
    served: sandlot.RemoteLibrary, session: sandlot.Session
) -> None:
    sandlot.Sandbox.wrapping(served.sandbox).files.write("server-only.txt", "secret")
    r = session.run_code(
        "from sandlot_driver.server import call_host\n"
        "import os\n"
        "try:\n    call_host('calc.hidden', (), {})\n    hidden = 'reached'\n"
        "except ToolError as e:\n    hidden = str(e)\n"
        "(hidden, os.path.exists('server-only.txt'), os.path.exists('.sandlot/serve/calc.py'))"
    )
    assert r.value is not None
    assert "unknown tool 'calc.hidden'" in r.value
    assert r.value.endswith("False, False)")


def test_prompt_mcp_and_serve_errors() -> None:
    with sandlot.Sandbox(strict(models=[TOY])) as server:
        prompt = server.serve(HERE / "calc.py", expose_as="prompt", name="calc")
        assert isinstance(prompt, str)
        assert "calc.add(a: int, b: int = 2) -> int\n    Add two numbers." in prompt
        assert "sentinel=..." in prompt and "hidden" not in prompt
        spec = server.serve(HERE / "calc.py", expose_as="mcp", name="calc2")
        assert isinstance(spec, sandlot.McpServerSpec)
        tools = {t["name"]: t for t in spec.tools}
        assert tools["calc2_add"]["inputSchema"] == {
            "type": "object",
            "description": "Add two numbers.",
            "required": ["a"],
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}},
        }
        assert tools["calc2_awkward"]["inputSchema"]["properties"]["flag"] == {
            "enum": ["a", "b"],
            "default": "a",
        }
        assert spec.call_tool("calc2_add", {"a": 5}) == 7
        with pytest.raises(sandlot.ServeError, match="SyntaxError"):
            server.serve(HERE / "broken.txt")
        with pytest.raises(sandlot.ServeError, match="defines no @expose function"):
            server.serve(HERE / "empty.py")
        with pytest.raises(sandlot.ConfigError, match="expose_as"):
            server.serve(HERE / "calc.py", expose_as="rpc")  # type: ignore[arg-type]
        assert server.run_code("1 + 1").value == "2"  # a failed serve leaves it usable


def test_local_libraries_from_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    pkg = tmp_path / "textkit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .core import words\n")
    (pkg / "core.py").write_text("def words(s):\n    return len(s.split())\n")
    ws = sandlot.Workspace(
        libraries=[
            sandlot.Library.from_file(tmp_path / "helpers.py"),
            sandlot.Library.from_directory(pkg),
        ]
    )
    out = tmp_path / "ws"
    with sandlot.create_local_session(workspace=ws, workspace_dir=out, config=strict()) as s:
        r = s.run_code("import helpers, textkit\n(helpers.shout('hi'), textkit.words('a b c'))")
        assert r.value == "('HI!', 3)"
    assert (out / "helpers.py").exists() and (out / "textkit" / "core.py").exists()
    with pytest.raises(sandlot.ConfigError, match=r"not a \.py file"):
        sandlot.Library.from_file(tmp_path / "nope.py")
    with pytest.raises(sandlot.ConfigError, match="more than one library named helpers"):
        sandlot.Workspace(libraries=[sandlot.Library.from_file(tmp_path / "helpers.py")] * 2)


def test_expose_imported_on_the_host_is_the_decorator() -> None:
    # The serving package once shadowed the decorator: sandlot.expose was a module.
    from sandlot import expose

    @expose
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    assert callable(expose) and not isinstance(expose, type(sandlot))
    assert double(21) == 42
    assert sandlot.expose is expose
