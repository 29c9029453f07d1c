"""SandlotInterpreter keeps DSPy's interpreter contract where a model's code would notice.

Each test runs code in a real sandbox through ``SandlotInterpreter.execute``, as
``dspy.RLM`` does, and checks what the code sees and what DSPy gets back against
what DSPy's own interpreters do (``PythonInterpreter`` and ``LocalInterpreter``,
read from dspy's source and, for LocalInterpreter, run side by side here).
docs/rlm-dspy.md lists the differences that remain, and why.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import math
import string
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest
from conftest import strict
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput

from sandlot.integrations.dspy import PAIRS, SandlotInterpreter

CONFIG = strict(memory_mb=1024)

Point = collections.namedtuple("Point", "x y")

# Twenty strings: the chance that a set of them iterates in sorted order by
# luck of the hash seed is 1 in 20!, so "comes back sorted" cannot pass by accident.
WORDS = [
    a + b for a, b in zip(string.ascii_lowercase[:20], string.ascii_lowercase[6:], strict=False)
]
SORTED = sorted(WORDS)


class Weird:
    """A value with no JSON form."""

    def __str__(self) -> str:
        return "weird as str"

    def __repr__(self) -> str:
        return "Weird()"


class Colour(enum.Enum):
    RED = "red"


class Tagged(pydantic.BaseModel):
    tags: set[str]
    when: datetime.date


@dataclasses.dataclass
class Box:
    items: frozenset[int]
    where: Point


def fail() -> None:
    raise ValueError("bad thing")


@pytest.fixture(scope="module")
def interp() -> Iterator[SandlotInterpreter]:
    """One interpreter for the module's checks that keep no state between them."""
    with SandlotInterpreter(config=CONFIG) as interpreter:
        yield interpreter


def with_tools(interp: SandlotInterpreter, **tools: Callable[..., Any]) -> SandlotInterpreter:
    interp.tools.clear()
    interp.tools.update(tools)
    return interp


# -- tool errors --------------------------------------------------------------------------


def test_a_failing_tool_is_a_runtime_error_in_the_sandbox(interp: SandlotInterpreter) -> None:
    with_tools(interp, fail=fail)
    # Code written for DSPy's interpreters catches a tool's failure as RuntimeError.
    caught = interp.execute(
        "try:\n    fail()\nexcept RuntimeError as e:\n    caught = e\n"
        "[type(caught).__name__, isinstance(caught, ToolError), str(caught),"
        " [c.__name__ for c in type(caught).__mro__]]"
    )
    assert caught == [
        "ToolError",
        True,
        "fail: ValueError: bad thing",
        ["ToolError", "RuntimeError", "Exception", "BaseException", "object"],
    ]
    # Uncaught: a CodeExecutionError whose traceback shows the caller's line and the
    # tool, not the driver's own frames.
    with pytest.raises(CodeExecutionError) as info:
        interp.execute("x = 1\nfail()")
    message = str(info.value)
    assert 'File "<cell-' in message and "line 2" in message and "    fail()" in message
    assert 'File "<host tool>"' in message and ", in fail" in message
    assert message.rstrip().endswith("ToolError: fail: ValueError: bad thing")
    assert "server.py" not in message


def test_an_argument_that_cannot_cross_is_a_type_error_as_in_dspy(
    interp: SandlotInterpreter,
) -> None:
    with_tools(interp, echo=lambda x: x)
    # json.dumps refuses a set in DSPy's interpreters: a TypeError in the sandbox there too.
    out = interp.execute("try:\n    echo({1, 2})\nexcept TypeError as e:\n    out = str(e)\nout")
    assert isinstance(out, str) and "echo() argument" in out and "set" in out
    with pytest.raises(CodeExecutionError) as info:
        interp.execute("echo(object())")
    assert str(info.value).rstrip().splitlines()[-1].startswith("TypeError: echo() argument")


# -- tool results -------------------------------------------------------------------------


def test_named_tuples_from_tools_arrive_as_dicts(interp: SandlotInterpreter) -> None:
    with_tools(
        interp,
        point=lambda: Point(1, 2),
        points=lambda: {"all": [Point(0, Point(5, 6))], "one": (Point(3, 4),)},
        box=lambda: Box(items=frozenset({3, 1, 2}), where=Point(7, 8)),
    )
    assert interp.execute("r = point()\n[type(r).__name__, r, r['x']]") == [
        "dict",
        {"x": 1, "y": 2},
        1,
    ]
    assert interp.execute("points()") == {
        "all": [{"x": 0, "y": {"x": 5, "y": 6}}],
        "one": [{"x": 3, "y": 4}],
    }
    assert interp.execute("box()") == {"items": [1, 2, 3], "where": {"x": 7, "y": 8}}


def test_sets_from_tools_arrive_sorted(interp: SandlotInterpreter) -> None:
    with_tools(
        interp,
        words=lambda: set(WORDS),
        frozen=lambda: frozenset(WORDS),
        nested=lambda: {"s": set(WORDS), "l": [frozenset({3, 1, 2})]},
        mixed=lambda: {"b", 2, "a", 1, None},
        model=lambda: Tagged(tags=set(WORDS), when=datetime.date(2020, 1, 2)),
    )
    assert interp.execute("words()") == SORTED
    assert interp.execute("frozen()") == SORTED
    assert interp.execute("nested()") == {"s": SORTED, "l": [[1, 2, 3]]}
    # Items that do not compare: by type name, then repr; the same every run.
    assert interp.execute("mixed()") == [None, 1, 2, "a", "b"]
    assert interp.execute("model()") == {"tags": SORTED, "when": "2020-01-02"}


def test_a_tool_result_with_no_json_form_arrives_as_its_str(interp: SandlotInterpreter) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with_tools(
        interp,
        weird=Weird,
        weird_list=lambda: [Weird(), 1],
        tuple_keys=lambda: {(1, 2): 3},
        loop=lambda: loop,
    )
    assert interp.execute("r = weird()\n[type(r).__name__, r]") == ["str", "weird as str"]
    assert interp.execute("weird_list()") == "[Weird(), 1]"
    assert interp.execute("tuple_keys()") == "{(1, 2): 3}"
    assert interp.execute("loop()") == "[[...]]"


def test_tool_results_keep_their_values(interp: SandlotInterpreter) -> None:
    with_tools(
        interp,
        nothing=lambda: None,
        raw=lambda: b"ab\xff",
        big=lambda: 2**70,
        special=lambda: [math.nan, math.inf, -math.inf],
        int_keys=lambda: {1: "a", None: "b", False: "c", 1.5: "d"},
        tup=lambda: (1, [2, (3,)]),
        colour=lambda: Colour.RED,
        day=lambda: datetime.date(2020, 1, 2),
    )
    code = (
        "n, r, b, s = nothing(), raw(), big(), special()\n"
        "[n is None, r, b, type(b).__name__, [repr(x) for x in s]]"
    )
    assert interp.execute(code) == [True, b"ab\xff", 2**70, "int", ["nan", "inf", "-inf"]]
    # Dict keys as JSON writes them, as DSPy's interpreters send them.
    assert interp.execute("int_keys()") == {"1": "a", "null": "b", "false": "c", "1.5": "d"}
    assert interp.execute("tup(), colour(), day()") == [[1, [2, [3]]], "red", "2020-01-02"]


def test_tool_arguments_as_dspy_sends_them(interp: SandlotInterpreter) -> None:
    received: list[Any] = []

    def lookup(name: str, table: Any = None) -> str:
        received.append((name, table))
        return f"found {name}"

    with_tools(interp, lookup=lookup)
    # A keyword called `name` reaches the tool (it is not taken by the dispatcher).
    assert interp.execute("lookup(name='ada')") == "found ada"
    # Dict keys that are not str go as JSON writes them, as with DSPy's json.dumps.
    assert interp.execute("lookup('x', table={1: {None: 2, 2.5: [(3, 4)]}, False: 0})") == (
        "found x"
    )
    assert received == [("ada", None), ("x", {"1": {"null": 2, "2.5": [[3, 4]]}, "false": 0})]


def test_tools_changed_in_a_call_that_failed_take_effect_on_the_next() -> None:
    with SandlotInterpreter({"old": lambda: 1}, config=CONFIG) as interp:
        assert interp.execute("old()") == 1
        del interp.tools["old"]
        interp.tools["echo"] = lambda x: x
        with pytest.raises(CodeInterpreterError, match="has no JSON form"):
            interp.execute("1", {"v": object()})
        # echo is DSPy's (dict keys as JSON writes them), and old is gone.
        assert interp.execute("echo({1: 2})") == {"1": 2}
        with pytest.raises(CodeExecutionError, match="NameError: name 'old'"):
            interp.execute("old()")


# -- variables ------------------------------------------------------------------------------


def test_variables_of_every_json_kind(interp: SandlotInterpreter) -> None:
    variables = {
        "t": (1, (2, 3)),
        "s": set(WORDS),
        "fs": frozenset({3, 1, 2}),
        "n": None,
        "b": b"ab",
        "nan": math.nan,
        "inf": math.inf,
        "big": 2**70,
        "keys": {1: "a", None: "b", False: "c", 2.5: "d", "e": {3: [{4: 5}]}},
        "p": Point(1, 2),
        "tricky": {PAIRS: [[1, 2]]},
        "when": datetime.date(2020, 1, 2),
        "model": Tagged(tags={"b", "a"}, when=datetime.date(2020, 1, 2)),
    }
    code = (
        "[t, s, fs, n, b, repr(nan), repr(inf), big, keys, keys[1], keys[None], keys[2.5],"
        " keys['e'][3][0][4], p, tricky, when, model]"
    )
    assert interp.execute(code, variables) == [
        [1, [2, 3]],
        SORTED,
        [1, 2, 3],
        None,
        "ab",
        "nan",
        "inf",
        2**70,
        # Returned through JSON, so its keys come back as str; in the sandbox they are
        # the very keys given (keys[1], keys[None], keys[2.5] found them).
        {"1": "a", "null": "b", "false": "c", "2.5": "d", "e": {"3": [{"4": 5}]}},
        "a",
        "b",
        "d",
        5,
        [1, 2],  # a named tuple is a tuple: a list, as in DSPy's PythonInterpreter
        {PAIRS: [[1, 2]]},
        "2020-01-02",
        {"tags": ["a", "b"], "when": "2020-01-02"},
    ]
    assert interp.execute("type(keys).__name__, sorted(map(repr, keys))") == [
        "dict",
        ["'e'", "1", "2.5", "False", "None"],
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({(1, 2): 3}, "holds a dict key of type tuple"),
        (object(), "holds a object"),
        (b"\xff", "holds a bytes"),
    ],
)
def test_a_variable_with_no_json_form_is_refused_before_anything_runs(
    interp: SandlotInterpreter, value: Any, says: str
) -> None:
    interp.execute("marker = 'before'")
    with pytest.raises(CodeInterpreterError, match=f"variable 'v' {says}, which has no JSON"):
        interp.execute("marker = 'after'", {"v": value, "ok": 1})
    assert interp.execute("marker") == "before"


def test_a_variable_that_holds_itself_is_refused(interp: SandlotInterpreter) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CodeInterpreterError, match="nested too deeply, or holds itself"):
        interp.execute("1", {"v": loop})


# -- values back, SUBMIT, output, errors, state ----------------------------------------------


def test_last_values_as_dspy_gets_them(interp: SandlotInterpreter) -> None:
    assert interp.execute("(1, (2, 3))") == [1, [2, 3]]
    assert interp.execute(f"set({WORDS!r})") == SORTED
    assert interp.execute("{'s': frozenset({3, 1, 2}), 'm': {2, 'a'}}") == {
        "s": [1, 2, 3],
        "m": [2, "a"],
    }
    assert interp.execute("{1: 'a', None: 'b'}") == {"1": "a", "null": "b"}
    assert interp.execute("b'ab'") == b"ab"
    assert interp.execute("2**70") == 2**70
    assert math.isnan(interp.execute("float('nan')"))
    assert interp.execute("import collections\ncollections.namedtuple('P', 'x y')(1, 2)") == [1, 2]
    shown = interp.execute("object()")
    assert isinstance(shown, str) and shown.startswith("<object object at 0x")
    # Printed output only when there is no value, as in both of DSPy's interpreters.
    assert interp.execute("print('p')\n5") == 5
    assert interp.execute("print('p')\nNone") == "p\n"
    assert interp.execute("y = 1") is None


def test_submit_values(interp: SandlotInterpreter) -> None:
    interp.output_fields = None
    try:
        assert interp.execute(f"SUBMIT(set({WORDS!r}))") == FinalOutput({"output": SORTED})
        assert interp.execute("SUBMIT((1, 2))") == FinalOutput({"output": [1, 2]})
        assert interp.execute("SUBMIT({1: 'a'})") == FinalOutput({"output": {"1": "a"}})
        assert interp.execute("SUBMIT(None)") == FinalOutput({"output": None})
        # Caught with `except Exception`, SUBMIT still ends the code (a BaseException).
        assert interp.execute(
            "try:\n    SUBMIT(1)\nexcept Exception:\n    print('caught')\nprint('after')"
        ) == FinalOutput({"output": 1})
        with pytest.raises(CodeExecutionError, match=r"TypeError: SUBMIT\(\) missing 1"):
            interp.execute("SUBMIT()")
    finally:
        interp.output_fields = None


def test_syntax_errors_and_state() -> None:
    with SandlotInterpreter(config=CONFIG) as interp:
        interp.execute("import math\ndef f():\n    return 7\nkept = [1]")
        with pytest.raises(SyntaxError, match="invalid syntax"):
            interp.execute("kept = 2\ndef (:")
        with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
            interp.execute("kept.append(2)\n1/0")
        # Nothing of the invalid cell ran; the failing one ran up to its error.
        assert interp.execute("f(), kept, math.floor(2.5)") == [7, [1, 2], 2]
        assert interp.execute("import asyncio\nawait asyncio.sleep(0)\n5") == 5


# -- beside DSPy's own LocalInterpreter ------------------------------------------------------

SAME_AS_LOCAL = [
    ("print_then_value", "print('p')\n5", None),
    ("tuple_value", "(1, (2, 3))", None),
    ("int_key_value", "{1: 'a'}", None),
    ("state", "x = 41\nx + 1", None),
    ("variables", "[t, d, n]", {"t": (1, 2), "d": {"k": [1.5, None]}, "n": None}),
    (
        "tool_runtime_error",
        "try:\n    fail()\nexcept RuntimeError as e:\n    r = 'caught'\nr",
        None,
    ),
    ("tool_positional", "echo(5)", None),
    ("tool_tuple_arg", "echo((1, 2))", None),
    ("tool_int_key_arg", "echo({1: 'a'})", None),
    ("tool_tuple_result", "pair()", None),
    ("submit_tuple", "SUBMIT((1, 2))", None),
    ("submit_caught", "try:\n    SUBMIT(1)\nexcept Exception:\n    pass\n2", None),
]


@pytest.mark.parametrize(
    ("case", "code", "variables"), SAME_AS_LOCAL, ids=[c[0] for c in SAME_AS_LOCAL]
)
def test_same_as_dspys_local_interpreter(
    interp: SandlotInterpreter, case: str, code: str, variables: dict[str, Any] | None
) -> None:
    local_interpreter = pytest.importorskip("dspy.primitives.local_interpreter")
    tools: dict[str, Callable[..., Any]] = {
        "fail": fail,
        "echo": lambda x: x,
        "pair": lambda: (1, 2),
    }
    with_tools(interp, **tools)
    local = local_interpreter.LocalInterpreter(tools=dict(tools))
    try:
        expected = local.execute(code, variables)
    finally:
        local.shutdown()
    assert interp.execute(code, variables) == expected
