"""The blocking API is generated from the async one, and cannot drift from it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import sandlot
from sandlot.notebook import AsyncNotebookSession, NotebookSession
from sandlot.sandbox import AsyncProcess
from sandlot.sync import Files, Process, Sandbox, SandboxPool, blocking, blocking_twin, mirror

# Public members of an async class its blocking twin leaves out, each with why.
NOT_MIRRORED = {
    "loop": "the event loop the sandbox runs on: the portal's, no use to a blocking caller",
    "loop_thread": "that loop's thread, likewise",
    "link": "the sandbox's requests for the layers above it (files, serving): see sandlot.link",
}


def _public(obj: Any) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def _pairs() -> list[tuple[Any, type]]:
    async_sandbox = sandlot.AsyncSandbox()
    process = AsyncProcess.__new__(AsyncProcess)
    session = AsyncNotebookSession.__new__(AsyncNotebookSession)
    return [
        (async_sandbox, Sandbox),
        (sandlot.AsyncSandboxPool(), SandboxPool),
        (async_sandbox.files, Files),
        (process, Process),
        (session, NotebookSession),
    ]


@pytest.mark.parametrize(("inner", "twin"), _pairs(), ids=lambda x: type(x).__name__)
def test_every_public_member_of_an_async_class_has_its_blocking_twin(
    inner: Any, twin: type
) -> None:
    instance_members = set(vars(inner)) if hasattr(inner, "__dict__") else set()
    wanted = (_public(type(inner)) | {m for m in instance_members if not m.startswith("_")}) - set(
        NOT_MIRRORED
    )
    missing = sorted(name for name in wanted if not hasattr(twin, name) and name != "files")
    assert not missing, f"{twin.__name__} lacks {missing}: add blocking()/mirror() entries"


@pytest.mark.parametrize("twin", [Sandbox, SandboxPool, Files, Process, NotebookSession])
def test_blocking_methods_have_the_async_signature_and_docstring(twin: type) -> None:
    checked = 0
    for name, function in vars(twin).items():
        member = getattr(function, "__blocking__", None)
        if isinstance(member, blocking):
            source = member.method
            assert member.__doc__ == source.__doc__ and source.__doc__, name
            params = list(inspect.signature(source).parameters.values())[1:]
            assert list(member.signature.parameters.values()) == params, name
            assert inspect.iscoroutinefunction(source), name
            assert inspect.signature(function) == inspect.signature(source), name
            checked += 1
        elif isinstance(function, mirror) and function.__doc__ is not None:
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize(
    ("written", "source"),
    [
        (Sandbox.__init__, sandlot.AsyncSandbox.__init__),
        (Sandbox.exec_stream, sandlot.AsyncSandbox.exec_stream),
        (SandboxPool.__init__, sandlot.AsyncSandboxPool.__init__),
        (sandlot.AsyncSandbox.exec, sandlot.AsyncSandbox.exec_stream),
    ],
    ids=lambda f: f.__qualname__,
)
def test_hand_written_members_take_the_async_parameters(written: Any, source: Any) -> None:
    """same_parameters: a method written out by hand shows the async one's parameters."""
    assert inspect.signature(written).parameters == inspect.signature(source).parameters


def test_the_twins_work_on_a_real_sandbox() -> None:
    with Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")) as sb:
        assert sb.started and sb.is_alive and sb.info["pid"] == 2
        assert sb.run_code("6 * 7").value == "42"
        assert inspect.signature(sb.run_code) == inspect.signature(
            sandlot.AsyncSandbox.run_code
        ).replace(
            parameters=list(inspect.signature(sandlot.AsyncSandbox.run_code).parameters.values())[
                1:
            ]
        )
        sb.files.write("t.txt", "x")
        assert sb.files.exists("t.txt")
        proc = sb.exec_stream("echo", "hi")
        assert b"".join(c.data for c in proc) == b"hi\n"
        assert proc.returncode == 0 and proc.result is not None
    assert not sb.is_alive
    other = Sandbox(sandlot.SandboxConfig(isolation="bubblewrap")).start()
    Sandbox.terminate(other)  # called on the class, as an unbound method
    assert not other.is_alive
    with SandboxPool(sandlot.SandboxConfig(isolation="bubblewrap"), size=2, warm=1) as pool:
        assert (pool.size, pool.warm, pool.reuse) == (2, 1, False)
        pool.wait_warm()
        assert pool.stats()["idle"] >= 1


def test_mirrored_attributes_are_read_only_and_help_shows_signatures() -> None:
    import pydoc

    sb = Sandbox(sandlot.SandboxConfig(isolation="bubblewrap"))
    with pytest.raises(AttributeError, match="cannot be set"):
        sb.config = sandlot.SandboxConfig()  # type: ignore[misc]
    text = pydoc.render_doc(Sandbox, renderer=pydoc.plaintext)
    assert "run_code(self, code: 'str', *, timeout: 'float | None' = None" in text


def _generated_twins() -> list[tuple[Any, Any]]:
    from sandlot import notebook
    from sandlot.experiment import runner, stages
    from sandlot.rlm.engine import RLM

    return [
        (runner.run_harness, runner.arun_harness),
        (runner.run_experiment, runner.arun_experiment),
        (stages.setup_execution, stages.asetup_execution),
        (stages.ExecutionHandle.close, stages.ExecutionHandle.aclose),
        (notebook.start_session, notebook.astart_session),
        (notebook.attach, notebook.aattach),
        (notebook.list_sessions, notebook.alist_sessions),
        (notebook.shutdown_session, notebook.ashutdown_session),
        (RLM.start, RLM.astart),
        (RLM.close, RLM.aclose),
        (RLM.completion, RLM.acompletion),
    ]


@pytest.mark.parametrize(("twin", "source"), _generated_twins(), ids=lambda f: f.__qualname__)
def test_blocking_functions_are_generated_from_the_async_ones(twin: Any, source: Any) -> None:
    """blocking_twin: the async one's signature (return type aside) and docstring, its name."""
    assert inspect.iscoroutinefunction(source) and not inspect.iscoroutinefunction(twin)
    assert twin.__wrapped__ is source and twin.__doc__ == source.__doc__ and source.__doc__
    assert "a" + twin.__name__ == source.__name__
    assert twin.__qualname__.rpartition(".")[0] == source.__qualname__.rpartition(".")[0]
    mine, theirs = inspect.signature(twin), inspect.signature(source)
    assert mine.parameters == theirs.parameters
    wraps = {"start_session", "attach"}  # the async handle becomes its blocking twin
    assert mine.return_annotation == (
        "NotebookSession" if twin.__name__ in wraps else theirs.return_annotation
    )


def test_a_generated_method_binds_its_object() -> None:
    from sandlot.rlm.engine import RLM
    from sandlot.rlm.niah import ScriptedRootLM, StandInSubLM

    rlm = RLM(ScriptedRootLM(lambda _: "FINAL(x)"), StandInSubLM(0.0))
    assert rlm.start() is rlm  # astart returns the RLM itself, waited on the portal
    rlm.close()
    with pytest.raises(ValueError, match="starts with 'a'"):
        blocking_twin(Sandbox.start)  # type: ignore[arg-type]
