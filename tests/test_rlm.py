"""The RLM engine with a scripted root LM and a sub-LM stand-in, in real sandboxes.

The root LM's replies are scripted (the LM is not what is under test); every
code block they hold runs in a real bubblewrap sandbox and every sub-LM call
crosses sandbox -> host router -> LM object.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import strict
from pydantic import TypeAdapter

from sandlot.errors import ConfigError
from sandlot.rlm import Completion, LMError, Message
from sandlot.rlm.engine import RLM, find_code_blocks, find_final, truncate_middle
from sandlot.rlm.events import RLMEvent, event_dict
from sandlot.rlm.niah import NIAH_QUERY, ScriptedRootLM, StandInSubLM, make_haystack, niah_policy
from sandlot.rlm.trajectory import read_trajectory


class Script:
    """A root-LM script: reply ``i`` answers the turn after ``i`` assistant turns."""

    def __init__(self, *replies: str) -> None:
        self.replies = replies
        self.seen: list[list[Message]] = []

    def __call__(self, messages: Sequence[Message]) -> str:
        self.seen.append(list(messages))
        turn = sum(1 for m in messages if m["role"] == "assistant")
        return self.replies[min(turn, len(self.replies) - 1)]

    def last_user(self) -> str:
        return self.seen[-1][-1]["content"]


def repl(code: str) -> str:
    return f"Let me run this.\n```repl\n{code}\n```\n"


def make(script: Script, sub: object | None = None, **kwargs: object) -> RLM:
    kwargs.setdefault("sandbox", strict())
    return RLM(ScriptedRootLM(script), sub or StandInSubLM(0.0), **kwargs)  # type: ignore[arg-type]


def test_niah_end_to_end_with_trajectory(tmp_path: Path) -> None:
    haystack, needle = make_haystack(3000, seed=7)
    path = tmp_path / "runs" / "niah.jsonl"
    seen: list[str] = []
    rlm = RLM(
        ScriptedRootLM(niah_policy(chunk_chars=20_000)),
        StandInSubLM(0.01),
        sandbox=strict(),
        pool_size=4,
        trajectory=path,
        on_event=lambda e: seen.append(e["type"]),
    )
    result = rlm.completion(haystack, NIAH_QUERY)
    assert result.finished and result.stop_reason == "final" and result.error is None
    assert result.answer == needle
    assert result.iterations == 2
    chunks = -(-len(haystack) // 20_000)
    sub = result.usage.models["stand-in-sub-lm"]
    assert chunks <= sub.calls <= chunks + 1 and sub.errors == 0
    assert result.usage.models["scripted-root-lm"].calls == 2
    events = list(read_trajectory(path))
    assert [e["type"] for e in events] == [e["type"] for e in result.trajectory]
    assert events[0]["type"] == "run_start" and events[-1]["type"] == "run_end"
    assert events[-1]["answer"] == needle and events[-1]["stop_reason"] == "final"
    assert sum(e["type"] == "sub_call" for e in events) == sub.calls
    code = [e for e in events if e["type"] == "code"]
    assert "llm_query_batched" in code[0]["code"] and "candidates" in code[0]["output"]
    assert "sub_call_begin" in seen and "sub_call_begin" not in {e["type"] for e in events}
    typed = TypeAdapter(RLMEvent)  # every event written is one of the declared types, as declared
    assert [event_dict(typed.validate_python(e)) for e in events] == events


def test_finishing_conventions() -> None:
    cases = {
        "FINAL line": ("Done.\nFINAL(forty two)", "forty two"),
        "FINAL quoted": ('FINAL("quoted answer")', "quoted answer"),
        "FINAL_VAR": (repl("result = {'n': 6 * 7}") + "FINAL_VAR(result)", {"n": 42}),
        "answer dict": (repl('answer["content"] = "via dict"\nanswer["ready"] = True'), "via dict"),
        "SUBMIT": (repl("SUBMIT(total=3, items=['a'])\nprint('not reached')"), None),
    }
    for name, (reply, expected) in cases.items():
        result = make(Script(reply)).completion("ctx", "q")
        assert result.finished, name
        if name == "SUBMIT":
            assert result.answer == {"total": 3, "items": ["a"]}
            code = next(e for e in result.trajectory if e["type"] == "code")
            assert code["error"] is None and "not reached" not in code["output"]
        else:
            assert result.answer == expected, name


def test_final_var_of_a_missing_variable_is_reported_and_the_run_goes_on() -> None:
    script = Script("FINAL_VAR(nothing_here)", repl("x = len(context)") + "FINAL_VAR(x)")
    result = make(script).completion("abcdef", "q")
    assert result.answer == 6 and result.iterations == 2
    told = script.seen[1][-1]["content"]
    assert "FINAL_VAR(nothing_here) did not finish" in told and "no variable" in told


def test_code_blocks_run_in_order_and_output_is_cut_in_the_middle() -> None:
    reply = (
        "```python\nsteps = ['python']\nprint('first')\n```\n"
        "then\n```repl\nsteps.append('repl')\nprint('HEAD' + 'x' * 50_000 + 'TAIL')\n```\n"
        "```bash\necho not python\n```\n"
    )
    script = Script(reply, repl("print(steps, SHOW_VARS())"), "FINAL(ok)")
    result = make(script, max_output_chars=1000).completion("c", "q")
    assert result.answer == "ok"
    told = script.seen[1][-1]["content"]
    assert "block 1 of 2" in told and "first" in told
    assert "HEAD" in told and "TAIL" in told and "cut from the middle" in told
    assert len(told) < 2500
    assert "not python" not in told
    shown = script.seen[2][-1]["content"]
    assert "['python', 'repl']" in shown and "'steps': 'list'" in shown
    assert "llm_query" not in shown.split("REPL output:")[1].split("Turn")[0]


def test_context_kinds_arrive_as_python_values() -> None:
    for context, probe, expected in (
        ({"a": [1, 2], "b": "x"}, "sorted(context), context['a']", "(['a', 'b'], [1, 2])"),
        ([{"content": "hi"}, 3], "type(context).__name__, context[0]", "{'content': 'hi'}"),
        ("plain\ntext", "context.splitlines()", "['plain', 'text']"),
    ):
        script = Script(repl(probe), "FINAL(done)")
        make(script).completion(context, "q")
        assert expected in script.seen[1][-1]["content"]
        assert f"a {type(context).__name__}" in script.seen[0][1]["content"]


def test_a_100_mb_context_goes_in_as_a_file() -> None:
    line = "0123456789" * 9 + "abcdefghi\n"  # 100 characters
    context = line * 1_000_000 + "needle at the end"
    script = Script(
        repl("print(len(context), context[-6:], context.count('\\n'))"), "FINAL(read it)"
    )
    result = make(script, sandbox=strict(memory_mb=1536)).completion(context, "q")
    assert result.answer == "read it"
    assert f"{len(context)} he end 1000000" in script.seen[1][-1]["content"]
    # The root LM never saw the context itself.
    assert all(len(m["content"]) < 20_000 for m in script.seen[1])


class Recording:
    """A sub-LM stand-in that records concurrency and fails on prompts it is told to."""

    model = "recorder"

    def __init__(self, latency: float = 0.05) -> None:
        self.latency = latency
        self.now = 0
        self.peak = 0
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    async def acomplete(self, messages: Sequence[Message]) -> Completion:
        prompt = messages[-1]["content"]
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.prompts.append(prompt)
        try:
            await asyncio.sleep(self.latency)
            if "fail" in prompt:
                raise LMError("the stand-in was told to fail")
            return Completion(prompt.upper(), self.model, 3, 2, cost=0.001)
        finally:
            with self.lock:
                self.now -= 1


def test_batched_calls_are_bounded_ordered_and_fail_one_by_one() -> None:
    sub = Recording()
    code = (
        "prompts = [f'p{i}' for i in range(12)]\nprompts[5] = 'fail here'\n"
        "out = llm_query_batched(prompts)\nsame = parallel_llm_query(['a', 'b'])\n"
        "one = llm_query('single')\nprint(out, same, one)"
    )
    script = Script(repl(code), "FINAL(x)")
    result = make(script, sub, pool_size=3).completion("c", "q")
    assert result.finished
    told = script.seen[1][-1]["content"]
    expected = [f"P{i}" for i in range(12)]
    expected[5] = "Error: the stand-in was told to fail"
    assert str(expected) in told and "['A', 'B'] SINGLE" in told
    assert sub.peak == 3
    usage = result.usage.models["recorder"]
    assert usage.calls == 14 and usage.errors == 1
    assert usage.prompt_tokens == 42 and usage.cost == pytest.approx(0.014)
    batch = [e for e in result.trajectory if e["type"] == "sub_call" and e["batch"] is not None]
    assert sorted(e["batch"] for e in batch) == sorted([*range(12), 0, 1])


def test_llm_query_errors_reach_the_code_as_tool_errors() -> None:
    code = (
        "try:\n    llm_query('please fail')\nexcept ToolError as e:\n    print('caught:', e)\n"
        "try:\n    llm_query('x', model='nope')\nexcept ToolError as e:\n    print('caught:', e)\n"
        "print(llm_query('routed', model='other'))"
    )
    other = StandInSubLM(0.0, model="other", rule=lambda p: f"other saw {p}")
    script = Script(repl(code), "FINAL(x)")
    make(script, Recording(0.0), models={"other": other}).completion("c", "q")
    told = script.seen[1][-1]["content"]
    assert "caught: llm_query: LMError: the stand-in was told to fail" in told
    assert "unknown model 'nope'" in told and "other, recorder, scripted-root-lm" in told
    assert "other saw routed" in told


def test_rlm_query_runs_a_child_rlm_in_its_own_sandbox_until_max_depth() -> None:
    # The sub-LM is also the children's root LM: it scripts a child's turns, and answers
    # plain prompts (at the depth limit) by rule.
    def sub_policy(messages: Sequence[Message]) -> str:
        if messages[0]["role"] != "system":
            return f"plain:{messages[-1]['content']}"
        if not any(m["role"] == "assistant" for m in messages):
            return repl("import os\nSUBMIT(f'child read {context!r} pid-ns {os.getpid()}')")
        return "FINAL(unreachable)"

    sub = ScriptedRootLM(sub_policy, model="child-lm")
    code = (
        "import os\nprint('parent pid-ns', os.getpid())\n"
        "print(rlm_query('task one'))\nprint(rlm_query_batched(['t2', 't3']))"
    )
    script = Script(repl(code), "FINAL(done)")
    result = make(script, sub, max_depth=1, pool_size=2).completion("c", "q")
    assert result.finished
    told = script.seen[1][-1]["content"]
    assert "child read 'task one'" in told and "child read 't2'" in told
    runs = [e for e in result.trajectory if e["type"] == "run_start"]
    assert [r["depth"] for r in runs] == [0, 1, 1, 1]
    assert {r["parent"] for r in runs[1:]} == {runs[0]["run"]}
    rlm_calls = [e for e in result.trajectory if e["type"] == "sub_call" and e["kind"] == "rlm"]
    assert {c["child"] for c in rlm_calls} == {r["run"] for r in runs[1:]}
    assert result.usage.models["child-lm"].calls == 3  # the children's usage is the parent's too

    script = Script(repl("print(rlm_query('task'))"), "FINAL(done)")
    flat = make(script, sub, max_depth=0).completion("c", "q")
    assert "plain:task" in script.seen[1][-1]["content"]
    assert [e["depth"] for e in flat.trajectory if e["type"] == "run_start"] == [0]


def test_forked_children_start_from_the_parents_repl_and_go_their_own_ways() -> None:
    # Each child's REPL is a copy of the parent's at the call: it reads the parent's
    # variables by name, changes only its own copy, and its llm_query is its own.
    firsts: list[str] = []

    def sub_policy(messages: Sequence[Message]) -> str:
        if messages[0]["role"] != "system":
            return f"read:{messages[-1]['content']}"
        firsts.append(messages[1]["content"])
        task = messages[1]["content"].split("\n", 1)[0].removeprefix("Query: ")
        if not any(m["role"] == "assistant" for m in messages):
            return repl(
                f"part = {task}\nbudget += 1\nmine = 1\n"
                "SUBMIT(f'{llm_query(part)}|{budget}|{len(context)}|{len(SHOW_VARS())}')"
            )
        return "FINAL(unreachable)"

    sub = ScriptedRootLM(sub_policy, model="child-lm")
    code = (
        "chunks = ['alpha', 'beta', 'gamma']\nbudget = 41\nanswer['content'] = 'half'\n"
        "got = rlm_query_batched([f'chunks[{i}]' for i in range(3)], fork=True)\n"
        "one = rlm_query('chunks[0].upper()', fork=True)\n"
        "print(got, one, budget, 'mine' in globals(), answer)"
    )
    script = Script(repl(code), "FINAL(done)")
    result = make(script, sub, max_depth=1, pool_size=2).completion("the context", "q")
    assert result.finished, result.error
    told = script.seen[1][-1]["content"]
    # Every child saw budget 41 (not a sibling's 42) and the parent's 11-character context.
    assert "['read:alpha|42|11|" in told and "'read:beta|42|11|" in told
    assert "read:ALPHA|42|11|" in told
    assert "41 False {'content': 'half', 'ready': False}" in told  # the parent is untouched
    # Each child's LM was told which of the parent's variables it has (not the prelude's).
    assert sorted(f.count("`got`") for f in firsts) == [0, 0, 0, 1]  # made after the batch
    assert all("(`chunks`, `budget`" in f and "a str of 11 characters" in f for f in firsts)
    runs = [e for e in result.trajectory if e["type"] == "run_start"]
    assert [r["forked"] for r in runs] == [False, True, True, True, True]
    assert all(r["context"] == runs[0]["context"] for r in runs)
    child_ids = {r["run"] for r in runs[1:]}
    plain = [e for e in result.trajectory if e["type"] == "sub_call" and e["kind"] == "llm"]
    assert {e["run"] for e in plain} == child_ids  # each child's llm_query was routed to it
    blocks = [e for e in result.trajectory if e["type"] == "code" and e["run"] in child_ids]
    assert len(blocks) == 4 and all(c["error"] is None for c in blocks)

    # From a thread the code started the cell does not wait on the call: refused, not hung.
    threaded = (
        "import threading\nseen = []\n"
        "def ask():\n    try:\n        rlm_query('chunks', fork=True)\n"
        "    except Exception as e:\n        seen.append(str(e))\n"
        "t = threading.Thread(target=ask)\nt.start()\nt.join(30)\nprint(seen)"
    )
    script = Script(repl(threaded), "FINAL(done)")
    assert make(script, sub, max_depth=1).completion("c", "q").finished
    assert "must be called from the REPL's own thread" in script.last_user()

    # A fork at the depth limit is refused with what to do instead, and the run goes on.
    script = Script(repl("print(rlm_query('x', fork=True))"), "FINAL(done)")
    flat = make(script, sub, max_depth=0).completion("c", "q")
    assert flat.finished and "put what the sub-LM needs in the prompt" in script.last_user()


def test_custom_tools_are_callable_and_described() -> None:
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return {"alpha": "first"}.get(key, "missing")

    script = Script(repl("print(lookup('alpha'), lookup(key='zeta'))"), "FINAL(x)")
    make(script, tools=[lookup]).completion("c", "q")
    assert "first missing" in script.seen[1][-1]["content"]
    assert "`lookup`" in script.seen[0][0]["content"]
    assert "Look a key up" in script.seen[0][0]["content"]
    with pytest.raises(ConfigError, match="taken by the REPL"):
        make(Script("x"), tools={"llm_query": lookup})


def test_limits_stop_with_a_partial_answer_and_the_reason() -> None:
    # Iterations: the LM never finishes; it is asked for its best answer once.
    script = Script(repl("print(1)"), repl("print(2)"), "FINAL(best guess)")
    result = make(script, max_iterations=2).completion("c", "q")
    assert (result.finished, result.stop_reason, result.answer) == (
        False,
        "max_iterations",
        "best guess",
    )
    assert "2 turns without a final answer" in (result.error or "")
    assert "limit of this run" in script.last_user()

    # Consecutive errors.
    script = Script(repl("1/0"))
    result = make(script, max_errors=3, max_iterations=10).completion("c", "q")
    assert result.stop_reason == "max_errors" and result.iterations == 3

    # Sub-LM calls: the budget runs out inside a batch; one more turn to finish.
    script = Script(
        repl("out = llm_query_batched([f'p{i}' for i in range(5)])\nprint(out)"),
        repl('answer["content"] = "partial"'),
        "FINAL(never)",
    )
    result = make(script, Recording(0.0), max_llm_calls=3).completion("c", "q")
    assert result.stop_reason == "max_llm_calls" and not result.finished
    assert result.answer == "never"  # its last-chance answer
    told = script.seen[1][-1]["content"]
    assert told.count("Error: all max_llm_calls=3") == 2 and "budget of this run is spent" in told

    # Wall time: the code runs past max_time and is interrupted; the partial answer stays.
    script = Script(repl('answer["content"] = "so far"\nimport time\ntime.sleep(30)'))
    started = time.monotonic()
    result = make(script, max_time=1.5).completion("c", "q")
    assert time.monotonic() - started < 10
    assert (result.stop_reason, result.answer) == ("max_time", "so far")

    # Tokens.
    script = Script(repl("print(llm_query('x' * 4000))"), "FINAL(x)")
    result = make(script, StandInSubLM(0.0), max_tokens=600).completion("c", "q")
    assert result.stop_reason == "max_tokens" and "tokens used of max_tokens=600" in (
        result.error or ""
    )


class Failing:
    model = "down"

    async def acomplete(self, messages: Sequence[Message]) -> Completion:
        raise LMError("down: 401 Unauthorized; check the API key")


def test_root_lm_failure_and_garbage_replies() -> None:
    result = RLM(Failing(), sandbox=strict()).completion("c", "q")  # type: ignore[arg-type]
    assert result.stop_reason == "lm_error" and "check the API key" in (result.error or "")
    assert result.usage.models["down"].errors == 1

    script = Script("I think the answer is probably 7.", "FINAL(7)")
    result = make(script).completion("c", "q")
    assert result.answer == "7" and "no ```repl code block" in script.seen[1][-1]["content"]


class BlockingLM:
    """A SyncLM: only a blocking ``complete``."""

    model = "sync-only"

    def complete(self, messages: Sequence[Message]) -> Completion:
        time.sleep(0.01)
        return Completion("FINAL(from a blocking client)", self.model, 1, 1)


def test_a_sync_lm_works_and_bad_input_is_refused_clearly() -> None:
    result = RLM(BlockingLM(), sandbox=strict()).completion("c", "q")
    assert result.answer == "from a blocking client"
    with pytest.raises(TypeError, match="is not an LM"):
        RLM(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="could not be encoded"):
        RLM(BlockingLM(), sandbox=strict()).completion({"x": object()}, "q")
    with pytest.raises(ConfigError, match="pool_size"):
        RLM(BlockingLM(), pool_size=0)


def test_a_crashed_sandbox_is_replaced_and_the_run_goes_on() -> None:
    script = Script(
        repl("kept = 1\nhog = bytearray(600 * 2**20)"),
        repl("print('kept' in globals(), len(context))"),
        "FINAL(recovered)",
    )
    result = make(script, sandbox=strict(memory_mb=256)).completion("0123456789", "q")
    assert result.answer == "recovered"
    told = script.seen[1][-1]["content"]
    assert "sandbox died" in told and "out_of_memory" in told
    assert "False 10" in script.seen[2][-1]["content"]


def test_the_trajectory_survives_a_cancelled_run(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    script = Script(repl("print('working')"), repl("import time\ntime.sleep(60)"))
    rlm = make(script, trajectory=path)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rlm.acompletion("c", "q"), 3)

    asyncio.run(main())
    events = list(read_trajectory(path))
    assert [e["type"] for e in events][:3] == ["run_start", "lm_call", "code"]
    assert events[-1]["type"] == "run_end" and events[-1]["stop_reason"] == "cancelled"
    assert json.loads(path.read_text().splitlines()[2])["output"] == "working"


def test_warm_sandboxes_serve_the_next_completions_until_closed() -> None:
    from sandlot.sandbox import live_sandboxes

    before = set(live_sandboxes())
    script = Script(repl("x = globals().get('x', 0) + 1\nprint('x is', x)"), "FINAL(done)")
    with make(script, warm=1) as rlm:
        rlm.start()
        pool = rlm._warm_pool
        assert pool is not None and pool.stats()["idle"] == 1
        waiting = next(iter(set(live_sandboxes()) - before))
        first = rlm.completion("c", "q")
        assert first.answer == "done"
        deadline = time.monotonic() + 5  # used once, then retired in the background
        while waiting.is_alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not waiting.is_alive
        rlm.completion("c", "q")
        # Each completion got a fresh interpreter (x restarts at 1).
        outputs = [m[-1]["content"] for m in script.seen if "x is" in m[-1]["content"]]
        assert len(outputs) == 2 and all("x is 1" in o for o in outputs)
    assert set(live_sandboxes()) == before


def test_parsing_helpers() -> None:
    reply = "a\n```repl\nx = 1\n```\n```python\ny = 2\n```\n```\nz\n```\n```repl\n\n```"
    assert find_code_blocks(reply) == ["x = 1\n", "y = 2\n"]
    assert find_final("```repl\nFINAL(no)\n```\nFINAL_VAR(res)") == ("FINAL_VAR", "res")
    assert find_final("text\nFINAL(multi\nline)") == ("FINAL", "multi\nline")
    assert find_final("FINAL(7)\nI checked (twice).") == ("FINAL", "7")
    assert find_final("mentions FINAL(x) mid-line") is None
    text, dropped = truncate_middle("a" * 50 + "b" * 50, 40)
    assert dropped == 60 and text.startswith("a" * 26) and text.endswith("b" * 14)
    assert re.search(r"60 characters cut", text)


SECRET = "hunter2-db-password-xyz"
EXTRA = "extra-secret-value-42"


def test_secrets_never_reach_lm_prompts_trajectories_or_results(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text(f"DB_PASSWORD={SECRET}\n")
    path = tmp_path / "t.jsonl"
    sub_prompts: list[str] = []

    def echo(prompt: str) -> str:
        sub_prompts.append(prompt)
        return f"echo: {prompt}"

    script = Script(
        repl(
            "import os\nsecret = os.environ['DB_PASSWORD']\n"
            "print('length', len(secret), 'value', secret)\n"
            "print(llm_query('remember ' + secret))\n"
            f"print({EXTRA!r})"
        ),
        repl("raise RuntimeError('failed with ' + secret)"),
        repl("SUBMIT(secret)"),
    )
    events: list[dict[str, object]] = []
    rlm = make(
        script,
        StandInSubLM(0.0, rule=echo),
        sandbox=strict(env_file=str(env_file)),
        trajectory=path,
        on_event=events.append,
        secrets={"EXTRA_KEY": EXTRA},
        max_output_chars=200,
    )
    result = rlm.completion("ctx", "q")
    assert result.finished and result.iterations == 3
    # The sandbox had the value (its length is printed); the root LM was shown its name only.
    told = script.seen[1][-1]["content"]
    assert f"length {len(SECRET)} value [redacted DB_PASSWORD]" in told
    assert "echo: remember [redacted DB_PASSWORD]" in told and "[redacted EXTRA_KEY]" in told
    assert "failed with [redacted DB_PASSWORD]" in script.seen[2][-1]["content"]
    assert sub_prompts == ["remember [redacted DB_PASSWORD]"]
    assert result.answer == "[redacted DB_PASSWORD]"
    everything = [
        json.dumps(script.seen),
        json.dumps(result.trajectory),
        json.dumps(events),
        path.read_text(),
    ]
    for text in everything:
        assert SECRET not in text and EXTRA not in text
    on_disk = path.read_text()
    assert "failed with [redacted DB_PASSWORD]" in on_disk and "[redacted EXTRA_KEY]" in on_disk
    recorded = list(read_trajectory(path))
    sub_call = next(e for e in recorded if e["type"] == "sub_call")
    assert sub_call["prompt"] == "remember [redacted DB_PASSWORD]"
    assert sub_call["response"] == "echo: remember [redacted DB_PASSWORD]"
    assert recorded[-1]["answer"] == "[redacted DB_PASSWORD]"


def test_a_secret_is_redacted_before_the_output_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    # Cut first, the head would keep the value's first 33 characters; redacted first, none.
    token = "tok-" + "z" * 300
    monkeypatch.setenv("SANDLOT_TEST_TOKEN", token)
    code = "import os\nprint('a' * 100 + os.environ['SANDLOT_TEST_TOKEN'] + 'b' * 100)"
    script = Script(repl(code), "FINAL(done)")
    sandbox = strict(secrets=["SANDLOT_TEST_TOKEN"])
    result = make(script, sandbox=sandbox, max_output_chars=200).completion("c", "q")
    told = script.seen[1][-1]["content"]
    assert result.answer == "done"
    assert "a" * 100 + "[redacted SANDLOT_TEST_TOKEN]" in told and "tok-z" not in told


def test_secrets_that_cannot_be_read_are_refused_when_the_rlm_is_made(tmp_path: Path) -> None:
    root = ScriptedRootLM(Script("FINAL(x)"))
    with pytest.raises(ConfigError, match="SANDLOT_SURELY_UNSET_VAR"):
        RLM(root, sandbox=strict(secrets=["SANDLOT_SURELY_UNSET_VAR"]))
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=value\nnot a line\n")
    with pytest.raises(ConfigError, match=r"bad\.env:2:"):
        RLM(root, sandbox=strict(env_file=str(bad)))
