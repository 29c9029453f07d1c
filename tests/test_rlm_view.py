"""``sandlot rlm view``: a trajectory rendered as HTML, checked in a real headless Chromium.

The page builds its DOM with JavaScript, so the assertions run on the DOM that
Chromium dumps after loading it: that proves the script ran, and that text an LM
wrote (markup included) shows as text and never becomes an element.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import dump_dom
from pydantic import TypeAdapter

from sandlot.rlm.events import RLMEvent, RunStart, event_dict
from sandlot.rlm.trajectory import TrajectoryWriter, read_trajectory

INJECTION = (
    "I will look at the context.\n"
    "<img src=x onerror=\"document.body.dataset.pwned='img'\">\n"
    "<script>document.body.dataset.pwned = 'script'; document.title = 'pwned'</script>\n"
    "</script><!-- <b>bold?</b>\n"
    "```repl\nanswers = llm_query_batched(prompts)\n```"
)
QUERY = "Which number is the needle in this haystack?"
ANSWER = "The needle is 4271."
ERROR = "NameError: name 'chunks' is not defined"
LONG_REPLY = "".join(f"Thought {i}: look closer.\n" for i in range(40)) + "```repl\n...\n```"
TIMEOUT_ERROR = "TimeoutError: sub-LM call took too long"


# -- a realistic trajectory ------------------------------------------------------


def _usage(model: str, calls: int, tokens: int, cost: float) -> dict[str, object]:
    return {
        "models": {
            model: {
                "calls": calls,
                "errors": 0,
                "prompt_tokens": tokens - 100 * calls,
                "completion_tokens": 100 * calls,
                "cost": cost,
                "seconds": 1.5 * calls,
            }
        },
        "calls": calls,
        "total_tokens": tokens,
        "cost": cost,
    }


def _lm_call(run: str, t: float, iteration: int, reply: str, seconds: float) -> dict[str, object]:
    return {
        "type": "lm_call",
        "run": run,
        "t": t,
        "iteration": iteration,
        "seconds": seconds,
        "prompt_chars": 4000 + 1500 * iteration,
        "messages": 2 * iteration,
        "reply": reply,
        "usage": {
            "model": "root-model",
            "prompt_tokens": 1000 * iteration,
            "completion_tokens": 120,
            "cost": 0.002,
        },
        "error": None,
    }


def _code(
    run: str, t: float, iteration: int, block: int, code: str, output: str, error: str | None
) -> dict[str, object]:
    return {
        "type": "code",
        "run": run,
        "t": t,
        "iteration": iteration,
        "block": block,
        "seconds": 0.05,
        "code": code,
        "output": output,
        "error": error,
        "truncated": 0,
    }


def _sub_call(
    run: str,
    t: float,
    iteration: int,
    batch: int | None,
    prompt: str,
    response: str,
    *,
    kind: str = "llm",
    child: str | None = None,
    error: str | None = None,
) -> dict[str, object]:
    return {
        "type": "sub_call",
        "run": run,
        "t": t,
        "iteration": iteration,
        "kind": kind,
        "model": "sub-model",
        "batch": batch,
        "seconds": 1.25,
        "prompt_chars": len(prompt),
        "prompt": prompt,
        "response": response,
        "tokens": 250,
        "error": error,
        "child": child,
    }


def _write_trajectory(path: Path) -> None:
    """A parent run (3 iterations, a batch of sub-LM calls, a child RLM) and a crashed run."""
    writer = TrajectoryWriter(path)
    root, child, crashed = "r-parent", "r-child", "r-crashed"
    writer.write(
        {
            "type": "run_start",
            "run": root,
            "t": 0.0,
            "depth": 0,
            "parent": None,
            "started_at": 1_790_000_000.0,
            "query": QUERY,
            "context": {"type": "str", "size": 1_048_576},
            "models": {"root": "root-model", "sub": "sub-model"},
            "limits": {"max_iterations": 12, "max_depth": 1, "max_tokens": None},
        }
    )
    # Iteration 1: a look at the context, then a block that fails.
    writer.write(_lm_call(root, 2.0, 1, "Let me check the size.\n```repl\n...\n```", 2.0))
    writer.write(_code(root, 2.1, 1, 0, "print(len(context))", "1048576\n", None))
    writer.write(_code(root, 2.2, 1, 1, "print(chunks[0])", "", ERROR))
    # Iteration 2: a reply trying to inject markup, a batch of 4 sub-LM calls
    # (one failing) and a child RLM whose events come before the sub_call that reports it.
    writer.write(_lm_call(root, 5.0, 2, INJECTION, 2.7))
    for i in range(4):
        writer.write(
            _sub_call(
                root,
                6.5 + 0.1 * i,
                2,
                i,
                f"Chunk {i}: does it hold a number? <b>chunk</b>",
                f"chunk {i}: nothing; see https://example.com/{i}" if i != 2 else "",
                error=TIMEOUT_ERROR if i == 2 else None,
            )
        )
    writer.write(
        {
            "type": "run_start",
            "run": child,
            "t": 0.0,
            "depth": 1,
            "parent": root,
            "started_at": 1_790_000_007.0,
            "query": "Find the number in chunk 3.",
            "context": {"type": "str", "size": 65_536},
            "models": {"root": "sub-model", "sub": "sub-model"},
            "limits": {"max_iterations": 4},
            "forked": True,
        }
    )
    writer.write(_lm_call(child, 1.0, 1, "```repl\nFINAL(re.findall(r'\\d+', context))\n```", 1.0))
    writer.write(_code(child, 1.2, 1, 0, "print(re.findall(r'\\d+', context))", "['4271']", None))
    writer.write(
        {
            "type": "run_end",
            "run": child,
            "t": 1.3,
            "parent": root,
            "answer": "child says 4271",
            "finished": True,
            "stop_reason": "final",
            "error": None,
            "iterations": 1,
            "usage": _usage("sub-model", 1, 900, 0.0004),
            "seconds": 1.3,
        }
    )
    writer.write(
        _sub_call(root, 8.4, 2, None, "Find the number", "child says 4271", kind="rlm", child=child)
    )
    writer.write(
        _code(
            root,
            8.5,
            2,
            0,
            "answers = llm_query_batched(prompts)\nprint(answers)\nprint(rlm_query(chunks[3]))",
            "['chunk 0: nothing', ...]\nchild says 4271\n",
            None,
        )
    )
    # Iteration 3: the answer.
    writer.write(_lm_call(root, 10.0, 3, f"FINAL({ANSWER!r})", 1.4))
    writer.write(
        {
            "type": "run_end",
            "run": root,
            "t": 10.1,
            "answer": ANSWER,
            "finished": True,
            "stop_reason": "final",
            "error": None,
            "iterations": 3,
            "usage": _usage("root-model", 8, 12_345, 0.0123),
            "seconds": 10.1,
        }
    )
    # A second run that crashed after one iteration: no run_end.
    writer.write(
        {
            "type": "run_start",
            "run": crashed,
            "t": 0.0,
            "depth": 0,
            "parent": None,
            "started_at": 1_790_000_100.0,
            "query": "A second question that never got its answer.",
            "context": {"type": "list", "size": 3},
            "models": {"root": "root-model", "sub": "sub-model"},
            "limits": {"max_iterations": 12},
        }
    )
    writer.write(_lm_call(crashed, 1.5, 1, LONG_REPLY, 1.5))
    writer.write(_code(crashed, 1.6, 1, 0, "print(context[0])", "first item\n", None))
    writer.close()


# -- running the CLI and Chromium ---------------------------------------------------


def sandlot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sandlot.cli ARGS`` and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


# -- a small DOM of the dumped page ---------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Element:
    """An element of the dumped DOM: tag, attributes, children (elements and text)."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def is_run(self) -> bool:
        return self.tag == "section" and "run" in self.classes

    def walk(self, deep: bool = True) -> Iterator[Element]:
        """This element and those below it; not into nested runs unless ``deep``."""
        yield self
        for child in self.children:
            if isinstance(child, Element) and (deep or not child.is_run):
                yield from child.walk(deep)

    def find_all(
        self, tag: str = "*", cls: str | None = None, *, deep: bool = False, **attrs: str
    ) -> list[Element]:
        """Matching elements below; by default not those of runs nested in this one."""
        return [
            e
            for e in self.walk(deep)
            if (tag == "*" or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(
        self, tag: str = "*", cls: str | None = None, *, deep: bool = False, **attrs: str
    ) -> Element:
        found = self.find_all(tag, cls, deep=deep, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]

    def inside(self, other: Element) -> bool:
        node = self.parent
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.node = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self.node)
        self.node.children.append(element)
        if tag not in VOID:
            self.node = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.node.children.append(Element(tag, {k: v or "" for k, v in attrs}, self.node))

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.node = node.parent

    def handle_data(self, data: str) -> None:
        self.node.children.append(data)


def run_of(dom: Element, run: str) -> Element:
    """The section of run ``run``, nested or not."""
    return dom.one("section", "run", deep=True, data_run=run)


def parse(markup: str) -> Element:
    builder = _Builder()
    builder.feed(markup)
    builder.close()
    return builder.root


# -- the tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Element]:
    """The trajectory rendered by the CLI: the page's path, its source, its dumped DOM."""
    tmp = tmp_path_factory.mktemp("rlm-view")
    trajectory = tmp / "run.jsonl"
    _write_trajectory(trajectory)
    done = sandlot("rlm", "view", str(trajectory))
    assert done.returncode == 0, done.stderr
    page = tmp / "run.html"
    assert done.stdout.strip() == str(page)
    assert page.is_file()
    dom = dump_dom(page, tmp / "chromium-profile")
    return page, page.read_text(encoding="utf-8"), parse(dom)


def test_the_script_ran_and_rendered_every_run(rendered: tuple[Path, str, Element]) -> None:
    _, _, dom = rendered
    body = dom.one("body", deep=True)
    assert body.attrs.get("data-rendered") == "3", "the page's script did not run to its end"
    runs = dom.find_all("section", "run", deep=True)
    assert [r.attrs["data-run"] for r in runs] == ["r-parent", "r-child", "r-crashed"]
    assert dom.one("title", deep=True).text == f"RLM: {QUERY}"
    assert "needs JavaScript" not in body.text


def test_the_parent_run_header(rendered: tuple[Path, str, Element]) -> None:
    _, _, dom = rendered
    run = run_of(dom, "r-parent")
    assert run.attrs["data-status"] == "finished"
    head = run.one("div", "run-head")
    text = head.text
    for expected in (
        QUERY,
        "root root-model · sub sub-model",
        "str, size 1,048,576",
        "max_iterations = 12",
        "max_tokens = none",
        "10.1 s",
        "final",
        "12,345 tokens",
        "0.0123",
    ):
        assert expected in text, f"{expected!r} not in the run's header: {text!r}"
    assert ANSWER in head.one("div", "answer").text


def test_iterations_code_outputs_and_errors(rendered: tuple[Path, str, Element]) -> None:
    _, _, dom = rendered
    run = run_of(dom, "r-parent")
    iterations = run.find_all("section", "iteration")
    assert [s.attrs["data-iteration"] for s in iterations] == ["1", "2", "3"]
    for number, section in enumerate(iterations, 1):
        assert section.one("h3").text == f"Iteration {number}"
    first = iterations[0]
    blocks = first.find_all("div", "code-block")
    assert len(blocks) == 2
    assert blocks[0].one("pre", "code").text == "print(len(context))"
    assert blocks[0].one("pre", "output").text == "1048576\n"
    assert blocks[1].one("pre", "error").text == ERROR
    assert "Code block 2 of 2" in blocks[1].text
    assert "prompt 5,500 chars in 2 messages" in first.text
    assert "tokens 1,000 in / 120 out" in first.text
    assert f"FINAL({ANSWER!r})" in iterations[2].one("pre", "reply").text


def test_sub_calls_with_timings_and_the_nested_child_run(
    rendered: tuple[Path, str, Element],
) -> None:
    _, _, dom = rendered
    run = run_of(dom, "r-parent")
    second = run.one("section", "iteration", data_iteration="2")
    assert second.attrs["data-subcalls"] == "5"
    assert "5 sub-calls, 1 failed" in second.one("span", "subcall-count").text
    calls = second.find_all("details", "subcall")
    assert [c.attrs["data-kind"] for c in calls].count("llm") == 4
    assert "batch #3" in second.text
    assert "1,250 sub-call tokens" in second.one("header").text
    assert TIMEOUT_ERROR in second.text
    # Timings: a bar per root LM call, code block and sub-call on the iteration's axis.
    timeline = second.find_all("div", "timeline")[0]
    bars = timeline.find_all(cls="tl-bar")
    assert len(bars) == 1 + 1 + 5
    assert all("left:" in b.attrs.get("style", "") for b in bars)
    assert len([b for b in bars if "failed" in b.classes]) == 1
    # The child run sits inside the sub-call that started it.
    spawner = second.one("details", "subcall", data_kind="rlm")
    assert spawner.attrs["data-child"] == "r-child"
    child = run_of(dom, "r-child")
    assert child.inside(spawner)
    assert "child" in child.classes
    assert child.attrs["data-status"] == "finished"
    assert child.one("h2").one("span", "forked").text == "forked from its parent's REPL"
    assert not run.one("h2").find_all("span", "forked")  # the parent was not forked
    assert "child says 4271" in child.one("div", "answer").text
    assert "['4271']" in child.one("pre", "output").text


def test_the_crashed_run_is_marked_unfinished(rendered: tuple[Path, str, Element]) -> None:
    _, _, dom = rendered
    run = run_of(dom, "r-crashed")
    assert run.attrs["data-status"] == "unfinished"
    assert "unfinished" in run.one("span", "unfinished").text
    assert "did not end" in run.one("div", "answer").text
    assert [s.attrs["data-iteration"] for s in run.find_all("section", "iteration")] == ["1"]
    assert "first item" in run.one("pre", "output").text
    # A long text shows its head, and all of it on a click; it is all in the page.
    reply = run.one("pre", "reply")
    assert reply.text == LONG_REPLY
    assert "clip" in reply.classes
    assert run.one("button", "more").text == "show all (43 lines, 1,005 chars)"
    index = dom.one("ul", "index", deep=True)
    assert "unfinished" in index.text


def test_markup_from_the_trajectory_stays_text(rendered: tuple[Path, str, Element]) -> None:
    _, source, dom = rendered
    body = dom.one("body", deep=True)
    assert "data-pwned" not in body.attrs, "markup in a reply ran as code"
    assert dom.one("title", deep=True).text != "pwned"
    assert dom.find_all("img", deep=True) == []
    assert dom.find_all("b", deep=True) == []
    scripts = dom.find_all("script", deep=True)
    assert [s.attrs.get("type") for s in scripts] == ["application/json", None]
    handlers = [(e.tag, a) for e in dom.walk(deep=True) for a in e.attrs if a.startswith("on")]
    assert handlers == []
    second = run_of(dom, "r-parent").one("section", "iteration", data_iteration="2")
    reply = second.one("pre", "reply")
    assert reply.text == INJECTION
    # In the file itself, the data cannot close its script element or open a comment.
    data = source.split('id="trajectory-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data


def test_the_page_loads_nothing_from_outside(rendered: tuple[Path, str, Element]) -> None:
    _, source, dom = rendered
    external = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""", re.I)
    assert external.search(source) is None
    assert "@import" not in source and "url(" not in source
    assert "default-src 'none'" in source
    for element in dom.walk(deep=True):
        assert "src" not in element.attrs, element.tag
        href = element.attrs.get("href")
        assert href is None or href.startswith("#"), href
    # The sub-calls' URLs are there, as text.
    assert "https://example.com/0" in dom.one("body", deep=True).text


def test_view_writes_where_told(tmp_path: Path) -> None:
    trajectory = tmp_path / "t.jsonl"
    _write_trajectory(trajectory)
    out = tmp_path / "pages" / "page.html"
    done = sandlot("rlm", "view", str(trajectory), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not (tmp_path / "t.html").exists()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.jsonl", lambda p: None, "no such file"),
        ("notes.jsonl", lambda p: p.write_text("just\nsome notes\n"), "not a JSON trajectory"),
        ("list.jsonl", lambda p: p.write_text("[1, 2]\n{}\n"), "not a trajectory event"),
        ("empty.jsonl", lambda p: p.write_text(""), "no trajectory events"),
        ("blob.jsonl", lambda p: p.write_bytes(b"\xff\xfe\x00" * 50), "not UTF-8"),
    ],
)
def test_view_rejects_bad_input_in_one_line(
    tmp_path: Path, name: str, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / name
    make(path)
    done = sandlot("rlm", "view", str(path))
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert lines[0].startswith("sandlot: error: ")
    assert not path.with_suffix(".html").exists()


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to parse JavaScript")
@pytest.mark.parametrize("module", ["sandlot.rlm.view", "sandlot.experiment.view"])
def test_the_page_scripts_parse_as_javascript(module: str, tmp_path: Path) -> None:
    """The viewers' .js files, put together as a page runs them, are valid JavaScript."""
    script = tmp_path / "page.js"
    script.write_text(importlib.import_module(module)._JS, encoding="utf-8")
    subprocess.run(["node", "--check", str(script)], check=True, timeout=60)


OLD_TRAJECTORY = Path(__file__).parent / "data" / "rlm_trajectory_before_typed_events.jsonl"


def test_a_trajectory_written_before_typed_events_loads_and_renders(tmp_path: Path) -> None:
    """A file the engine wrote from dict literals parses as typed events, lays out as the same
    JSON again (with newer fields at their defaults), and the viewer renders both of its runs."""
    events = list(read_trajectory(OLD_TRAJECTORY))
    adapter: TypeAdapter[RLMEvent] = TypeAdapter(RLMEvent)
    typed = [adapter.validate_python(event) for event in events]
    # Fields added since (a run's ``forked``) take their defaults; the rest is as written.
    added = {"run_start": {"forked": False}}
    assert [event_dict(event) for event in typed] == [
        {**e, **added.get(e["type"], {})} for e in events
    ]
    assert {type(event).__name__ for event in typed} == {
        "RunStart", "LMCall", "CodeRun", "SubCall", "RunEnd"
    }  # fmt: skip
    page = tmp_path / "old.html"
    done = sandlot("rlm", "view", str(OLD_TRAJECTORY), "--output", str(page))
    assert done.returncode == 0, done.stderr
    dom = parse(dump_dom(page, tmp_path / "chromium-profile"))
    assert dom.one("body", deep=True).attrs.get("data-rendered") == "2"
    parent = next(e for e in typed if isinstance(e, RunStart) and e.parent is None)
    assert run_of(dom, parent.run).attrs["data-status"] == "finished"
