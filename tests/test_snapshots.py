"""Snapshots: a REPL and its workdir written to one file, and sandboxes started from it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from conftest import strict

import sandlot
from sandlot.errors import DownloadRefused

pytestmark = pytest.mark.timeout(120)

STATE = """
import json, threading
import collections as col
shared = [1, 2, {'a': (3, 4)}]
alias = shared
scale = 3
def f(n, k=2):
    "Times k, plus the length of shared."
    return n * k + len(shared)
class Point:
    __slots__ = ('x', 'y')
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __repr__(self):
        return f'Point({self.x}, {self.y})'
class Counter(dict):
    def bump(self, key):
        self[key] = self.get(key, 0) + 1
        return super().__repr__()
def outer():
    base = 10
    def inner(n):
        return base + n * scale
    return inner
adder = outer()
square = lambda v: v * v
origin = Point(0, 5)
counts = Counter(); counts.bump('a')
lock = threading.Lock()
gen = (i for i in range(3))
os_name = __import__('os').name
os.makedirs('sub/deep', exist_ok=True)
open('sub/deep/data.txt', 'w').write('hello')
"""


def test_a_restored_sandbox_has_the_variables_the_functions_and_the_files(tmp_path: Path) -> None:
    path = tmp_path / "snaps" / "one.snap"
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code("import os", raise_on_error=True)
        sb.run_code(STATE, raise_on_error=True)
        with pytest.warns(UserWarning, match="could not hold 2 variable") as caught:
            result = sb.snapshot(path)
        assert "'lock'" in str(caught[0].message) and "'gen'" in str(caught[0].message)
        # The parent goes on, unchanged.
        assert sb.run_code("f(1)").value == "5"
    assert result.path == path and result.size == path.stat().st_size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {s.name for s in result.skipped} == {"lock", "gen"}
    assert all("pickle" in s.why for s in result.skipped), result.skipped
    assert {"shared", "alias", "f", "Point", "Counter", "adder", "square", "origin"} <= set(
        result.captured
    )
    assert set(result.modules) == {"os", "json", "threading", "col"}
    assert [p.name for p in path.parent.iterdir()] == ["one.snap"]  # no spool left beside it

    with sandlot.Sandbox.restore(path, strict()) as sb2:
        restored = sb2.restored
        assert restored is not None and not restored.failed and not restored.missing_tools
        assert set(restored.restored) >= set(result.captured) | set(result.modules)
        assert restored.files >= 4  # ., sub, sub/deep, sub/deep/data.txt
        checks = (
            "(shared is alias, f(4), f.__doc__, adder(2), square(7), origin, "
            "counts.bump('a'), counts, col.OrderedDict(a=1), json.dumps(shared), "
            "open('sub/deep/data.txt').read(), 'lock' in dir(), 'gen' in dir())"
        )
        value = sb2.run_code(checks, raise_on_error=True).value
        assert value == (
            "(True, 11, 'Times k, plus the length of shared.', 16, 49, Point(0, 5), "
            "\"{'a': 2}\", {'a': 2}, OrderedDict([('a', 1)]), '[1, 2, {\"a\": [3, 4]}]', "
            "'hello', False, False)"
        )
        # New cells are numbered past the restored ones: the functions' source stays theirs.
        sb2.run_code("zzz = 1")
        source = sb2.run_code("import inspect; inspect.getsource(f)", raise_on_error=True).value
        assert source is not None and "Times k" in source
        # A restored class is a class of this REPL: it makes new instances and pickles again.
        assert sb2.run_code("Point(1, 2).x + origin.y").value == "6"
        again = sb2.snapshot(tmp_path / "two.snap")
        assert {"Point", "origin", "f"} <= set(again.captured)


def test_async_restore_with_tools_and_another_config(tmp_path: Path) -> None:
    asyncio.run(_restore_with_tools(tmp_path))


async def _restore_with_tools(tmp_path: Path) -> None:
    def lookup(key: str) -> str:
        return key.upper()

    path = tmp_path / "tools.snap"
    async with sandlot.AsyncSandbox(strict(), tools={"lookup": lookup}) as sb:
        await sb.run_code("seen = lookup('a')", raise_on_error=True)
        result = await sb.snapshot(path)
    assert result.tools == ("lookup",) and "lookup" not in result.captured

    with pytest.warns(UserWarning, match=r"host tools \['lookup'\]"):
        sb2 = await sandlot.AsyncSandbox.restore(path, strict(memory_mb=512))
    async with sb2:
        assert sb2.restored is not None and sb2.restored.missing_tools == ("lookup",)
        assert (await sb2.run_code("seen")).value == "'A'"
        assert (await sb2.run_code("'lookup' in dir()")).value == "False"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with await sandlot.AsyncSandbox.restore(
            path, strict(), tools={"lookup": lambda key: key * 2}
        ) as sb3:
            assert (await sb3.run_code("seen, lookup('b')")).value == "('A', 'bb')"


def test_what_cannot_come_back_is_named_and_the_rest_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "partial.snap"
    with sandlot.Sandbox(strict()) as sb:
        # A module and a class from outside the workdir: the snapshot holds their names only.
        sb.run_code(
            "import os, sys\n"
            "os.makedirs('/tmp/elsewhere', exist_ok=True)\n"
            "open('/tmp/elsewhere/faraway.py', 'w').write('class Far:\\n    pass\\n')\n"
            "sys.path.insert(0, '/tmp/elsewhere')\n"
            "import faraway\n"
            "far = faraway.Far()\n"
            "os.makedirs('libs', exist_ok=True)\n"
            "open('libs/nearby.py', 'w').write('def hello():\\n    return 1\\n')\n"
            "sys.path.insert(0, os.path.abspath('libs'))\n"
            "import nearby\n"
            "from nearby import hello\n"
            "near = [1, 2, 3]\n"
            "def g():\n    return sum(near)\n",
            raise_on_error=True,
        )
        sb.snapshot(path)
    with sandlot.Sandbox(strict()) as sb2:
        # This sandbox's Python says it is another version: code made elsewhere cannot load.
        sb2.run_code("import sandlot_driver.snapshot as s; s._VERSION = [3, 99]")
        with pytest.warns(UserWarning, match="could not bring back 3 variable"):
            restored = sb2.load_snapshot(path)
        sb2_value = sb2.run_code("nearby.hello(), hello.__module__ == 'nearby' and 1").value
    failed = {f.name: f.why for f in restored.failed}
    assert set(failed) == {"faraway", "far", "g"}, failed
    assert "No module named 'faraway'" in failed["faraway"]
    assert "No module named 'faraway'" in failed["far"]
    assert "made by Python 3." in failed["g"] and "this is Python 3.99" in failed["g"]
    assert {"near", "os", "sys", "nearby", "hello"} <= set(restored.restored)
    # The workdir's libs came back on sys.path, so its module imported again.
    assert sb2_value == "(1, 1)"


def test_a_snapshot_over_max_bytes_writes_nothing_and_the_sandbox_lives(tmp_path: Path) -> None:
    path = tmp_path / "big.snap"
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code("blob = b'x' * (3 << 20)", raise_on_error=True)
        with pytest.raises(DownloadRefused, match="max_bytes"):
            sb.snapshot(path, max_bytes=1 << 20)
        sb.files.write("big.bin", os.urandom(2 << 20))
        with pytest.raises(DownloadRefused, match="max_bytes"):
            sb.run_code("del blob")
            sb.snapshot(path, max_bytes=1 << 20)
        assert list(tmp_path.iterdir()) == []
        assert sb.run_code("1 + 1").value == "2"
        assert sb.snapshot(path).size > 2 << 20


def test_fork_makes_copies_that_go_their_own_ways(tmp_path: Path) -> None:
    calls: list[str] = []

    def note(who: str) -> str:
        calls.append(who)
        return f"noted {who}"

    with sandlot.Sandbox(strict(), tools={"note": note}) as parent:
        parent.run_code(
            "import os\nshared = {'n': 1}\ndef tag(name):\n    return f'{name}:{shared[\"n\"]}'\n"
            "open('base.txt', 'w').write('base')",
            raise_on_error=True,
        )
        children = parent.fork(3)
        try:
            assert len(children) == 3
            for i, child in enumerate(children):
                assert child.restored is not None and not child.restored.failed
                child.run_code(
                    f"shared['n'] = {i + 10}\nopen('mine.txt', 'w').write('{i}')\n"
                    f"said = note('child{i}')",
                    raise_on_error=True,
                )
            for i, child in enumerate(children):
                value = child.run_code(
                    "tag('c'), open('base.txt').read(), open('mine.txt').read(), said"
                ).value
                assert value == f"('c:{i + 10}', 'base', '{i}', 'noted child{i}')"
            assert sorted(calls) == ["child0", "child1", "child2"]
            # The parent saw none of it.
            assert parent.run_code("tag('p'), os.path.exists('mine.txt')").value == "('p:1', False)"
            # Ending one child ends only it.
            children[0].terminate()
            assert children[1].run_code("1 + 1").value == "2"
            assert parent.run_code("2 + 2").value == "4"
        finally:
            for child in children:
                child.terminate()
    with pytest.raises(ValueError, match="n >= 1"):
        sandlot.Sandbox(strict()).fork(0)


@pytest.mark.skipif(os.getuid() != 0, reason="children read a mounted snapshot on a root host")
def test_fork_s_children_read_the_snapshot_mounted_and_fork_again() -> None:
    """On a root host a fork's children read the snapshot from a read-only mount of its
    directory, not sent through their channels; their config is the parent's (no such
    mount), so a child forks again like any sandbox."""
    with sandlot.Sandbox(strict()) as parent:
        parent.run_code("data = list(range(5))", raise_on_error=True)
        (child,) = parent.fork(1)
        with child:
            mounts = child.run_code("open('/proc/self/mountinfo').read()").value or ""
            assert "/.sandlot-fork " in mounts
            assert child.config == parent.config
            (grandchild,) = child.fork(1)
            with grandchild:
                assert grandchild.run_code("data").value == "[0, 1, 2, 3, 4]"


def test_bad_paths_are_clear_errors_and_start_nothing(tmp_path: Path) -> None:
    with sandlot.Sandbox(strict()) as sb:
        with pytest.raises(IsADirectoryError, match="give a file's path"):
            sb.snapshot(tmp_path)
        assert sb.run_code("1").value == "1"
    with pytest.raises(sandlot.SnapshotInvalid, match="cannot read it"):
        sandlot.Sandbox.restore(tmp_path / "missing.snap", strict())
    assert sandlot.sandbox.live_sandboxes() == []


CLASSES = """
import dataclasses, enum, functools
class Shape:
    sides = 0
    @property
    def name(self):
        return f'{type(self).__name__}/{self.sides}'
    @staticmethod
    def unit():
        return 1
    @classmethod
    def make(cls):
        return cls()
    @functools.cached_property
    def costly(self):
        return self.sides * 100
class Square(Shape):
    sides = 4
@dataclasses.dataclass
class Job:
    name: str
    tags: list = dataclasses.field(default_factory=list)
    done: bool = False
@dataclasses.dataclass(frozen=True)
class Key:
    a: int
    b: str = 'x'
class Color(enum.Enum):
    RED = 1
@functools.lru_cache(maxsize=64)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
fib(30)
sq = Square.make()
job = Job('build', ['ci'])
key = Key(1)
"""


def test_classes_with_descriptors_and_dataclasses_come_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "classes.snap"
    with sandlot.Sandbox(strict()) as sb:
        sb.run_code(CLASSES, raise_on_error=True)
        with pytest.warns(UserWarning, match="Color"):
            result = sb.snapshot(path)
    assert {"Shape", "Square", "Job", "Key", "sq", "job", "key", "fib"} <= set(result.captured)
    (enum_class,) = result.skipped  # an Enum of a cell is named, with what to do instead
    assert enum_class.name == "Color" and "define it in a module" in enum_class.why
    with sandlot.Sandbox.restore(path, strict()) as sb2:
        value = sb2.run_code(
            "(sq.name, Square.unit(), sq.costly, Square().costly, isinstance(sq, Shape), "
            "dataclasses.asdict(job), dataclasses.replace(job, done=True), Job('new'), "
            "[f.name for f in dataclasses.fields(Job)], key, Key(2) == Key(2), "
            "hash(Key(2)) == hash(Key(2)), fib(80), fib.cache_info().maxsize)",
            raise_on_error=True,
        ).value
    assert value == (
        "('Square/4', 1, 400, 400, True, {'name': 'build', 'tags': ['ci'], 'done': False}, "
        "Job(name='build', tags=['ci'], done=True), Job(name='new', tags=[], done=False), "
        "['name', 'tags', 'done'], Key(a=1, b='x'), True, True, 23416728348467685, 64)"
    )


def test_a_tool_may_snapshot_and_fork_the_sandbox_whose_cell_called_it(tmp_path: Path) -> None:
    asyncio.run(_snapshot_from_a_tool(tmp_path))


async def _snapshot_from_a_tool(tmp_path: Path) -> None:
    # The cell waits on the tool while the tool snapshots its caller: the REPL is
    # taken as it was at the call (before, not after), with no deadlock.
    async with sandlot.AsyncSandbox(strict()) as sb:
        kept: dict[str, list[sandlot.AsyncSandbox]] = {}

        async def checkpoint(tag: str) -> list[str]:
            taken = await sb.snapshot(tmp_path / f"{tag}.snap")
            kept[tag] = await sb.fork(2)
            return sorted(taken.captured)

        sb.register_tool("checkpoint", checkpoint)
        result = await sb.run_code(
            "before = [1, 2]\nseen = checkpoint('mid')\nafter = 3\nseen", raise_on_error=True
        )
        assert result.value == "['before']"
        assert (await sb.run_code("before, after, seen")).value == "([1, 2], 3, ['before'])"
        for child in kept["mid"]:
            async with child:
                value = await child.run_code("before, 'after' in dir(), 'seen' in dir()")
                assert value.value == "([1, 2], False, False)"
        with pytest.warns(UserWarning, match=r"host tools \['checkpoint'\]"):
            again = await sandlot.AsyncSandbox.restore(tmp_path / "mid.snap", strict())
        async with again:
            assert (await again.run_code("sorted(k for k in dir() if k[0] != '_')")).value == (
                "['ToolError', 'before']"
            )

        # The cell is cancelled while its tool is snapshotting it: the cell ends
        # interrupted, the snapshot fails with a message, and the sandbox goes on.
        snapping: asyncio.Task[object] | None = None
        cell: asyncio.Task[object] | None = None

        async def slow_checkpoint() -> str:
            nonlocal snapping
            snapping = asyncio.create_task(sb.snapshot(tmp_path / "cut.snap"))
            await asyncio.sleep(0.05)
            assert cell is not None
            cell.cancel()
            with contextlib.suppress(Exception):
                await snapping
            return "done"

        sb.register_tool("slow_checkpoint", slow_checkpoint)
        cell = asyncio.create_task(
            sb.run_code("big = [str(i) for i in range(3_000_000)]\nslow_checkpoint()\nmore = 1")
        )
        with pytest.raises(asyncio.CancelledError):
            await cell
        assert snapping is not None
        with pytest.raises(sandlot.SandboxError, match="interrupted"):
            await snapping
        assert not (tmp_path / "cut.snap").exists()
        assert (await sb.run_code("len(big), 'more' in dir()")).value == "(3000000, False)"


def test_a_host_function_cannot_queue_a_cell_behind_the_cell_that_waits_on_it() -> None:
    """A tool that runs code in the sandbox whose cell called it would wait for that cell,
    which waits for the tool: a clear error instead, async or blocking. A call from a thread
    of the sandbox (no cell waiting) may still run code; a snapshot from the tool works."""
    with sandlot.Sandbox(strict()) as sb:

        def peek(expr: str) -> str:
            return sb.run_code(expr).value or ""

        sb.register_tool("peek", peek)
        r = sb.run_code("x = 5\ntry:\n    peek('x')\nexcept ToolError as e:\n    print(e)")
        assert "cell is waiting on the host function" in r.stdout, r
        sb.run_code(
            "import threading\nbox = []\n"
            "t = threading.Thread(target=lambda: box.append(peek('x * 2')))\nt.start()",
            raise_on_error=True,
        )
        deadline = time.monotonic() + 20  # short cells: the thread's call runs between them
        while sb.run_code("box").value != "['10']":
            assert time.monotonic() < deadline, "the thread's call did not run its cell"
            time.sleep(0.05)

    asyncio.run(_async_peek())


async def _async_peek() -> None:
    async with sandlot.AsyncSandbox(strict()) as sb:

        async def peek(expr: str) -> str:
            return (await sb.run_code(expr)).value or ""

        sb.register_tool("peek", peek)
        r = await sb.run_code("try:\n    peek('1')\nexcept ToolError as e:\n    print(e)")
        assert "cell is waiting on the host function" in r.stdout, r

        # Loading a snapshot into the caller is refused before any of its files land.
        path = Path(tempfile.mkdtemp()) / "other.snap"
        async with sandlot.AsyncSandbox(strict()) as other:
            await other.run_code("open('from-other.txt', 'w').write('x')", raise_on_error=True)
            await other.snapshot(path)

        async def load() -> None:
            await sb.load_snapshot(path)

        sb.register_tool("load", load)
        r = await sb.run_code("try:\n    load()\nexcept ToolError as e:\n    print(e)")
        assert "load_snapshot: this sandbox's cell is waiting" in r.stdout, r
        assert not await sb.files.exists("from-other.txt")

        # A task the host function started, once the call is answered, may run cells.
        later: list[asyncio.Task[str | None]] = []

        async def spawn() -> str:
            async def after() -> str | None:
                await asyncio.sleep(0.2)
                return (await sb.run_code("7 * 6")).value

            later.append(asyncio.create_task(after()))
            return "spawned"

        sb.register_tool("spawn", spawn)
        assert (await sb.run_code("spawn()")).value == "'spawned'"
        assert await later[0] == "42"
