"""SandlotInterpreter: DSPy's CodeInterpreter on real sandboxes, driven by real dspy.RLM."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import dspy
import pytest
from conftest import strict
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.primitives.code_interpreter import (
    CodeExecutionError,
    CodeInterpreter,
    CodeInterpreterError,
    FinalOutput,
)

import sandlot
from sandlot.integrations.dspy import SandlotInterpreter

CONFIG = strict(memory_mb=1024)

# The root LM's code, by iteration: count the query in the context inside the
# sandbox, then ask the sub-LM (llm_query, a host call) and a user tool about it.
STEPS = {
    1: "import dspy\nn = context.count(query)\nprint(f'{n} matches in {len(context)} chars')",
    2: "verdict = llm_query(f'Is {n} a lot?')\nSUBMIT(answer=f'{n}|{verdict}|{shout(query)}')",
}


class ScriptedEngine:
    """A dspy LM engine: the RLM's action calls get ``steps`` (STEPS by default) in
    ChatAdapter's format, plain prompts (llm_query) get ``SUB:<prompt>``. Stateless, so
    threads may share it."""

    def __init__(self, steps: dict[int, str] | None = None) -> None:
        self.sub_prompts: list[str] = []
        self.steps = STEPS if steps is None else steps

    def complete(self, request: Any) -> Response:
        last = request.messages[-1].text
        if request.system is None:
            self.sub_prompts.append(last)
            text = f"SUB:{last}"
        else:
            match = re.search(r"\[\[ ## iteration ## \]\]\s*(\d+)/", last)
            assert match is not None, last
            text = (
                f"[[ ## reasoning ## ]]\nstep {match.group(1)}\n\n"
                f"[[ ## code ## ]]\n```python\n{self.steps[int(match.group(1))]}\n```\n\n"
                "[[ ## completed ## ]]"
            )
        usage = Usage(input_tokens=0, output_tokens=0, total_tokens=0)
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=usage,
        )


def scripted_lm(engine: ScriptedEngine) -> Any:
    return dspy.LM("scripted/model", engine=engine, cache=False)


def shout(word: str) -> str:
    """Upper-case a word (a user tool of the RLM)."""
    return word.upper()


class Recorder:
    """An interpreter_factory that keeps the interpreters it made."""

    execution_instructions = SandlotInterpreter.execution_instructions

    def __init__(self) -> None:
        self.made: list[SandlotInterpreter] = []
        self.factory = SandlotInterpreter.factory(config=CONFIG)

    def __call__(self) -> SandlotInterpreter:
        interpreter = self.factory()
        self.made.append(interpreter)
        return interpreter


def test_dspy_rlm_runs_its_code_in_the_sandbox() -> None:
    engine = ScriptedEngine()
    factory = Recorder()
    rlm = dspy.RLM("context, query -> answer", max_iters=4, tools=[shout])
    context = "a needle, some hay, a needle, more hay, a needle"
    # The LM is set by dspy.context, not configure: llm_query reads it on the host,
    # in the thread sandlot runs the tool on.
    with dspy.context(lm=scripted_lm(engine)):
        pred = rlm(context=context, query="needle", interpreter_factory=factory)

    # 3 was counted in the sandbox, passed to the sub-LM through the host, and submitted.
    assert pred.answer == "3|SUB:Is 3 a lot?|NEEDLE"
    assert engine.sub_prompts == ["Is 3 a lot?"]
    first, last = pred.trajectory
    assert first["output"] == f"3 matches in {len(context)} chars\n"  # the dspy facade imported
    assert last["output"].startswith("FINAL: ")
    assert len(factory.made) == 1
    interpreter = factory.made[0]
    assert isinstance(interpreter, CodeInterpreter)
    assert {"llm_query", "llm_query_batched", "shout"} <= set(interpreter.tools)
    assert interpreter.output_fields == [{"name": "answer", "type": "str"}]
    assert interpreter.sandbox is None  # RLM shut it down


def test_dspy_rlm_batch_calls_the_factory_from_several_threads() -> None:
    engine = ScriptedEngine()
    factory = Recorder()
    rlm = dspy.RLM(
        "context, query -> answer", max_iters=4, tools=[shout], interpreter_factory=factory
    )
    examples = [
        dspy.Example(context="x " * k, query="x").with_inputs("context", "query")
        for k in range(1, 5)
    ]
    with dspy.context(lm=scripted_lm(engine)):
        preds = rlm.batch(examples, num_threads=4)
    assert [p.answer for p in preds] == [f"{k}|SUB:Is {k} a lot?|X" for k in range(1, 5)]
    assert len(factory.made) == 4
    assert all(interpreter.sandbox is None for interpreter in factory.made)


def test_tools_added_changed_and_removed_after_start() -> None:
    with SandlotInterpreter(config=CONFIG) as interp:
        assert interp.execute("x = 1") is None
        interp.tools["lookup"] = lambda key, suffix="!": key.upper() + suffix
        assert interp.execute("[lookup('abc'), lookup(key='x', suffix='?')]") == ["ABC!", "X?"]
        interp.tools["lookup"] = lambda key: f"v2:{key}"
        assert interp.execute("lookup('abc')") == "v2:abc"

        # RLM's way: a tool that takes keyword arguments only, called positionally.
        def invoke(**kwargs: Any) -> str:
            return shout(**kwargs)

        invoke.__signature__ = __import__("inspect").signature(shout)  # type: ignore[attr-defined]
        interp.tools["shout"] = invoke

        async def later(n: int) -> dict[str, int]:
            await asyncio.sleep(0)
            return {"n": n + 1}

        @dataclasses.dataclass
        class Point:
            x: int

        interp.tools["later"] = later
        interp.tools["point"] = lambda: Point(3)
        interp.tools["fail"] = lambda: 1 / 0
        assert interp.execute("shout('hey'), later(1), point()") == ["HEY", {"n": 2}, {"x": 3}]
        with pytest.raises(CodeExecutionError, match=r"ToolError: fail: ZeroDivisionError"):
            interp.execute("fail()")
        # A RuntimeError, as in dspy's interpreters.
        assert interp.execute("try:\n    fail()\nexcept RuntimeError:\n    r = 1\nr") == 1

        del interp.tools["lookup"]
        with pytest.raises(CodeExecutionError, match="NameError: name 'lookup'"):
            interp.execute("lookup('abc')")
        assert interp.execute("x") == 1  # state survived all of it


def test_variables_arrive_as_files_including_fifty_megabytes() -> None:
    big = "0123456789" * 5_000_000 + "\udcff\r\nend"  # 50 MB, a lone surrogate, a CRLF
    with SandlotInterpreter(config=CONFIG) as interp:
        sandbox = interp.sandbox
        assert sandbox is not None
        codes: list[str] = []
        run_code = sandbox.run_code

        def recording(code: str, **kwargs: Any) -> sandlot.CodeResult:
            codes.append(code)
            return run_code(code, **kwargs)

        sandbox.run_code = recording  # type: ignore[method-assign]
        written: list[str] = []
        write = sandbox.files.write

        def recording_write(path: str, data: bytes | str, **kwargs: Any) -> int:
            written.append(path.rsplit(".", 1)[-1])
            return write(path, data, **kwargs)

        sandbox.files.write = recording_write  # type: ignore[method-assign]
        values = {
            "context": big,
            "meta": {"n": 1, "tags": ("a", "b"), "ok": True, "none": None, "pi": 3.5},
            "rows": [[1, "é"], [2, "✓"]],
        }
        code = "[len(context), context[-6:] == '\\udcff\\r\\nend', meta, rows]"
        expected = [len(big), True, {"n": 1, "tags": ["a", "b"], "ok": True, "none": None,
                                     "pi": 3.5}, [[1, "é"], [2, "✓"]]]  # fmt: skip
        assert interp.execute(code, values) == expected
        assert written == ["txt", "json"]
        # Reassigned in the sandbox, bound again on the next call; the sandbox kept the
        # very string it was sent, so only the JSON values travel again.
        assert interp.execute("context = 'changed'\nmeta['n'] = 9") is None
        assert interp.execute(code, values) == expected
        assert written == ["txt", "json", "json"]
        assert max(len(c) for c in codes) < 10_000  # no value travelled inside code
        assert sandbox.files.list(".sandlot-dspy") == []  # loaded files are removed

        with pytest.raises(CodeInterpreterError, match="variable 'thing' holds a object"):
            interp.execute("1", {"thing": object()})
        with pytest.raises(CodeInterpreterError, match="not a keyword"):
            interp.execute("1", {"class": 1})


def test_submit_shapes_and_wrong_arguments() -> None:
    with SandlotInterpreter(config=CONFIG) as interp:
        # No output fields: one value, under "output" (as dspy's interpreters do).
        assert interp.execute("SUBMIT({1, 2})\nnever = 1") == FinalOutput({"output": [1, 2]})
        with pytest.raises(CodeExecutionError, match="NameError"):
            interp.execute("never")  # SUBMIT ended the code

        interp.output_fields = [{"name": "answer", "type": "str"}]
        assert interp.execute("SUBMIT('yes')") == FinalOutput({"answer": "yes"})

        interp.output_fields = [{"name": "answer", "type": "str"}, {"name": "score"}]
        assert interp.execute("SUBMIT('a', 0.5)") == FinalOutput({"answer": "a", "score": 0.5})
        assert interp.execute("SUBMIT(score=[1], answer='b')") == FinalOutput(
            {"answer": "b", "score": [1]}
        )
        with pytest.raises(CodeExecutionError) as info:
            interp.execute("SUBMIT('a')")
        assert "TypeError: SUBMIT() missing 1 required positional argument: 'score'" in str(
            info.value
        )
        with pytest.raises(CodeExecutionError, match="unexpected keyword argument 'extra'"):
            interp.execute("SUBMIT(answer='a', score=1, extra=2)")
        with pytest.raises(CodeExecutionError, match="takes 2 positional arguments but 3"):
            interp.execute("SUBMIT(1, 2, 3)")


def test_output_values_errors_and_timeouts() -> None:
    with SandlotInterpreter(config=CONFIG, timeout=1) as interp:
        assert interp.execute("print('hi')") == "hi\n"
        assert interp.execute("import sys\nprint('out')\n_ = sys.stderr.write('warn\\n')") == (
            "out\nwarn\n"
        )
        assert interp.execute("x = 20\nx + 22") == 42  # the last value itself, as dspy's do
        assert interp.execute("pass") is None

        with pytest.raises(CodeExecutionError) as info:
            interp.execute("print('partial')\ndef f():\n    raise ValueError('bad input')\nf()")
        message = str(info.value)
        assert "Traceback" in message and "raise ValueError('bad input')" in message
        assert "ValueError: bad input" in message and "partial" in message

        with pytest.raises(SyntaxError, match="invalid syntax"):
            interp.execute("def (:")
        with pytest.raises(CodeExecutionError, match="TimeoutError"):
            interp.execute("while True:\n    pass")
        assert interp.execute("x") == 20  # the interpreter survived both


def test_a_dead_sandbox_raises_code_interpreter_error_for_good() -> None:
    interp = SandlotInterpreter(config=CONFIG)
    interp.execute("state = 1")
    with pytest.raises(CodeInterpreterError, match=r"died \(killed\)"):
        interp.execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(CodeInterpreterError, match=r"died \(killed\)"):
        interp.execute("state")
    with pytest.raises(CodeInterpreterError, match=r"died \(killed\)"):
        interp.start()  # no silent new session
    interp.shutdown()

    interp = SandlotInterpreter(config=CONFIG)
    interp.start()
    assert interp.sandbox is not None
    interp.sandbox.terminate()  # ended underneath
    with pytest.raises(CodeInterpreterError, match=r"died \(terminated\)"):
        interp.execute("1")
    interp.shutdown()


def test_start_and_shutdown_are_idempotent() -> None:
    interp = SandlotInterpreter(config=CONFIG)
    assert interp.sandbox is None
    interp.start()
    first = interp.sandbox
    interp.start()
    assert interp.sandbox is first and first is not None and first.is_alive
    assert interp("y = 2\ny") == 2
    interp.shutdown()
    interp.shutdown()
    assert interp.sandbox is None and not first.is_alive
    with pytest.raises(CodeInterpreterError, match="shut down"):
        interp.execute("1")
    with pytest.raises(CodeInterpreterError, match="shut down"):
        interp.start()


def stuck_stacks(threads: list[threading.Thread]) -> list[str]:
    """Where each thread still running is, for the failure message of a test that joined them."""
    frames = sys._current_frames()
    return [
        "".join(traceback.format_stack(frames[t.ident]))
        for t in threads
        if t.is_alive() and t.ident in frames
    ]


def test_concurrent_factory_use_from_four_threads() -> None:
    factory = SandlotInterpreter.factory(config=CONFIG)
    barrier = threading.Barrier(4)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            barrier.wait()
            interp = factory()
            interp.tools["double"] = lambda v: 2 * v
            interp.output_fields = [{"name": "answer", "type": "int"}]
            try:
                interp.start()
                interp.execute("total = double(k)", {"k": k})
                results[k] = interp.execute("SUBMIT(total + 1)")
            finally:
                interp.shutdown()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not stuck_stacks(threads), "\n\n".join(stuck_stacks(threads))
    assert errors == []
    assert results == {k: FinalOutput({"answer": 2 * k + 1}) for k in range(4)}


def test_an_interpreter_in_use_refuses_a_second_caller() -> None:
    with SandlotInterpreter(config=CONFIG) as interp:
        seen: list[BaseException] = []

        def reenter() -> None:
            try:
                interp.execute("1")
            except BaseException as exc:
                seen.append(exc)
                raise

        interp.tools["reenter"] = reenter
        with pytest.raises(CodeExecutionError, match="already running code"):
            interp.execute("reenter()")
        assert len(seen) == 1 and isinstance(seen[0], CodeInterpreterError)


def test_dspy_context_of_the_execute_call_reaches_the_tools() -> None:
    with SandlotInterpreter(config=CONFIG) as interp:  # started outside the context
        interp.tools["which_lm"] = lambda: dspy.settings.lm.model
        with dspy.context(lm=scripted_lm(ScriptedEngine())):
            assert interp.execute("which_lm()") == "scripted/model"


def test_without_dspy_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "dspy" or m.startswith("dspy.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "sandlot.integrations.dspy")
    with pytest.raises(ImportError, match=re.escape("pip install 'sandlot[dspy]'")):
        importlib.import_module("sandlot.integrations.dspy")


def test_the_first_import_path_gives_the_same_class() -> None:
    from sandlot.rlm.dspy import SandlotInterpreter as Old
    from sandlot.rlm.dspy import SandlotInterpreterFactory as OldFactory

    assert Old is SandlotInterpreter
    assert OldFactory is type(SandlotInterpreter.factory())


def test_secret_values_never_reach_dspy(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_TOKEN=sk-test-123456\n")
    config = strict(memory_mb=1024, env_file=str(env_file))
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "ok"

    with SandlotInterpreter({"ask": ask}, config=config) as interp:
        # The sandbox has the secret: it can use it, and compare it with the real value.
        assert interp.execute("import os\nos.environ['API_TOKEN'] == 'sk-test-' + '123456'")
        printed = interp.execute("print('token:', os.environ['API_TOKEN'])")
        assert printed == "token: [redacted API_TOKEN]\n"
        token = "os.environ['API_TOKEN']"
        assert interp.execute(f"[{token}, {token}.encode(), {{{token}: 1}}]") == [
            "[redacted API_TOKEN]",
            b"[redacted API_TOKEN]",
            {"[redacted API_TOKEN]": 1},
        ]
        assert interp.execute(f"SUBMIT('is ' + {token})") == FinalOutput(
            {"output": "is [redacted API_TOKEN]"}
        )
        with pytest.raises(CodeExecutionError) as info:
            interp.execute(
                f"import sys\nprint({token}, file=sys.stderr)\nraise ValueError({token})"
            )
        assert "ValueError: [redacted API_TOKEN]" in str(info.value)
        assert "Output before the error:\n[redacted API_TOKEN]" in str(info.value)
        with pytest.raises(SyntaxError) as syntax:  # its message quotes the line
            interp.execute("x = 1 +  # sk-test-123456")
        assert "x = 1 +  # [redacted API_TOKEN]" in str(syntax.value)
        # A tool (llm_query among them) gets the arguments redacted too.
        assert interp.execute(f"ask('use ' + {token})") == "ok"
        assert prompts == ["use [redacted API_TOKEN]"]

    # Through dspy.RLM: the LM's trajectory never holds the value.
    engine = ScriptedEngine(
        {
            1: "import os\nprint('the token is', os.environ['API_TOKEN'])",
            2: "SUBMIT(answer=llm_query(os.environ['API_TOKEN']))",
        }
    )
    rlm = dspy.RLM("query -> answer", max_iters=3)
    with dspy.context(lm=scripted_lm(engine)):
        pred = rlm(query="q", interpreter_factory=SandlotInterpreter.factory(config=config))
    assert pred.trajectory[0]["output"] == "the token is [redacted API_TOKEN]\n"
    assert engine.sub_prompts == ["[redacted API_TOKEN]"]
    assert pred.answer == "SUB:[redacted API_TOKEN]"
    assert "sk-test-123456" not in repr(pred)
