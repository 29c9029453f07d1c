"""OpenAICompatibleLM against a real OpenAI-compatible HTTP server on loopback."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

import pytest
from openai_server import Reply, ScriptedOpenAIServer, ScriptedReply, in_order

from sandlot.rlm.lm import PLACEHOLDER_API_KEY, OpenAICompatibleLM
from sandlot.rlm.lm_protocol import AsyncLM, LMError, Message, SyncLM

KEY = "sk-test-secret-123"
HELLO: list[Message] = [
    {"role": "system", "content": "you are terse"},
    {"role": "user", "content": "say hello please"},
]


def make_lm(server: ScriptedOpenAIServer, **settings: Any) -> OpenAICompatibleLM:
    """A client for ``server`` with backoff small enough for tests."""
    settings = {"backoff": 0.01, "max_backoff": 2.0, **settings}
    return OpenAICompatibleLM("test-model", server.base_url, KEY, **settings)


def failure(reply: Reply, **settings: Any) -> tuple[str, int]:
    """The LMError message a call against ``reply`` ends in, and how many requests it took."""
    with ScriptedOpenAIServer(reply) as server, pytest.raises(LMError) as caught:
        make_lm(server, **settings).complete(HELLO)
    return str(caught.value), len(server.requests)


def test_complete_sends_the_request_and_reads_text_tokens_and_cost() -> None:
    def answer(body: dict[str, Any]) -> ScriptedReply:
        return ScriptedReply(text=f"hello from {body['model']}", cost=0.25)

    with ScriptedOpenAIServer(answer) as server:
        lm = make_lm(server, temperature=0.3, max_tokens=50)
        assert isinstance(lm, SyncLM) and isinstance(lm, AsyncLM)
        done = lm.complete(HELLO)
        lm.close()
    assert done.text == "hello from test-model"
    assert done.model == "test-model"
    assert (done.prompt_tokens, done.completion_tokens) == (6, 3)  # the server counts words
    assert done.cost == 0.25
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "test-model"
    assert request.body["messages"] == HELLO
    assert request.body["temperature"] == 0.3
    assert request.body["max_tokens"] == 50
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_acomplete_reads_litellm_cost_header_and_sends_extra_body() -> None:
    reply = ScriptedReply(text="hi there", headers={"x-litellm-response-cost": "0.0042"})

    async def call(lm: OpenAICompatibleLM) -> Any:
        try:
            return await lm.acomplete(HELLO)
        finally:
            await lm.aclose()

    with ScriptedOpenAIServer(lambda body: reply) as server:
        done = asyncio.run(call(make_lm(server, extra_body={"top_k": 5})))
    assert (done.text, done.model, done.completion_tokens, done.cost) == (
        "hi there",
        "test-model",
        2,
        0.0042,
    )
    [request] = server.requests
    assert request.body["top_k"] == 5
    assert "temperature" not in request.body and "max_tokens" not in request.body


def test_no_cost_reported_is_none() -> None:
    with ScriptedOpenAIServer() as server:
        done = make_lm(server).complete(HELLO)
    assert done.text == "say hello please"
    assert done.cost is None


def test_429_waits_for_retry_after_then_succeeds() -> None:
    script = in_order(ScriptedReply.error(429, "slow down", retry_after=1), "finally")
    with ScriptedOpenAIServer(script) as server:
        done = make_lm(server).complete(HELLO)
    assert done.text == "finally"
    first, second = server.requests
    assert second.at - first.at >= 0.9


def test_retry_after_ms_header_is_honoured() -> None:
    busy = ScriptedReply(status=503, error_message="busy", headers={"retry-after-ms": "400"})
    with ScriptedOpenAIServer(in_order(busy, "ok")) as server:
        assert make_lm(server).complete(HELLO).text == "ok"
    first, second = server.requests
    assert second.at - first.at >= 0.36


def test_retry_after_is_capped_by_max_backoff() -> None:
    script = in_order(ScriptedReply.error(429, "slow down", retry_after=60), "ok")
    with ScriptedOpenAIServer(script) as server:
        started = time.monotonic()
        assert make_lm(server, max_backoff=0.2).complete(HELLO).text == "ok"
    assert time.monotonic() - started < 5


def test_500_is_retried_then_succeeds() -> None:
    oops = ScriptedReply.error(500, "internal oops")
    with ScriptedOpenAIServer(in_order(oops, oops, "recovered")) as server:
        assert make_lm(server).complete(HELLO).text == "recovered"
    assert len(server.requests) == 3


def test_exhausted_retries_name_attempts_and_last_error() -> None:
    message, requests = failure(lambda body: ScriptedReply.error(503, "overloaded"), max_retries=2)
    assert "3 attempts" in message
    assert "503" in message and "overloaded" in message
    assert requests == 3


def test_401_fails_at_once_naming_the_api_key() -> None:
    denied = ScriptedReply.error(401, "Incorrect API key provided")
    message, requests = failure(lambda body: denied)
    assert "API key" in message and "OPENAI_API_KEY" in message
    assert "Incorrect API key provided" in message
    assert KEY not in message
    assert requests == 1


def test_404_names_the_model_and_base_url() -> None:
    missing = ScriptedReply.error(404, "The model `test-model` does not exist")
    message, requests = failure(lambda body: missing)
    assert "'test-model'" in message and "127.0.0.1" in message and "/v1" in message
    assert "does not exist" in message
    assert requests == 1


def test_400_fails_at_once() -> None:
    bad = ScriptedReply.error(400, "maximum context length is 8192 tokens")
    message, requests = failure(lambda body: bad)
    assert "HTTP 400" in message and "maximum context length" in message
    assert requests == 1


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (ScriptedReply.malformed(b"{not json"), "not valid JSON"),
        (ScriptedReply.malformed(b'{"id": "x", "choices": []}'), "no choices"),
        (ScriptedReply.malformed(b"<html>bad gateway</html>", "text/html"), "no choices"),
        (ScriptedReply(text=None), "no content"),
        (ScriptedReply(text=""), "no content"),
    ],
)
def test_garbage_reply_is_retried_once_then_an_lm_error(reply: ScriptedReply, says: str) -> None:
    message, requests = failure(lambda body: reply)
    assert says in message and "no usable completion" in message
    assert requests == 2


def test_one_garbage_reply_then_a_good_one_succeeds() -> None:
    script = in_order(ScriptedReply.malformed(b"{not json"), "good")
    with ScriptedOpenAIServer(script) as server:
        assert make_lm(server).complete(HELLO).text == "good"
    assert len(server.requests) == 2


def test_refusal_is_returned_as_text() -> None:
    refused = ScriptedReply(text=None, refusal="I can't help with that")
    with ScriptedOpenAIServer(lambda body: refused) as server:
        assert make_lm(server).complete(HELLO).text == "I can't help with that"


def test_length_cut_returns_the_text_but_an_empty_cut_is_an_error() -> None:
    cut = ScriptedReply(text="the answer is", finish_reason="length")
    with ScriptedOpenAIServer(lambda body: cut) as server:
        assert make_lm(server, max_tokens=3).complete(HELLO).text == "the answer is"
    empty = ScriptedReply(text="", finish_reason="length")
    message, requests = failure(lambda body: empty, max_tokens=3)
    assert "finish_reason='length'" in message and "raise max_tokens" in message
    assert requests == 1


def test_connection_refused_is_retried_then_an_lm_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lm = OpenAICompatibleLM("m", f"http://127.0.0.1:{port}/v1", KEY, max_retries=2, backoff=0.01)
    with pytest.raises(LMError) as caught:
        lm.complete(HELLO)
    message = str(caught.value)
    assert "3 attempts" in message and "could not reach" in message


def test_timeout_is_retried_then_an_lm_error() -> None:
    slow = ScriptedReply(text="late", delay=1.0)
    message, requests = failure(lambda body: slow, timeout=0.2, max_retries=1)
    assert "2 attempts" in message and "no answer within 0.2s" in message
    assert requests == 2


def test_32_concurrent_calls_run_at_once() -> None:
    async def fan_out(lm: OpenAICompatibleLM) -> list[str]:
        calls = [lm.acomplete([{"role": "user", "content": f"n{i}"}]) for i in range(32)]
        try:
            return [done.text for done in await asyncio.gather(*calls)]
        finally:
            await lm.aclose()

    with ScriptedOpenAIServer(latency=0.2) as server:
        started = time.monotonic()
        texts = asyncio.run(fan_out(make_lm(server)))
        elapsed = time.monotonic() - started
    assert texts == [f"n{i}" for i in range(32)]
    assert len(server.requests) == 32
    assert elapsed < 3.0, f"32 calls of 0.2 s took {elapsed:.2f} s: they did not overlap"


def _run_as_asyncio_run_does(coro: Any) -> Any:
    """Run ``coro`` on a new loop, then shut its async generators down and close it.

    What ``asyncio.run`` does, written out: other tests' libraries (Inspect AI) patch
    ``asyncio.run`` for the whole process with nest_asyncio, whose run skips the
    shutdown of async generators.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_acomplete_works_across_successive_event_loops() -> None:
    with ScriptedOpenAIServer() as server:
        lm = make_lm(server)
        first = _run_as_asyncio_run_does(lm.acomplete([{"role": "user", "content": "one"}]))
        second = _run_as_asyncio_run_does(lm.acomplete([{"role": "user", "content": "two"}]))
        # Each loop's client closed its connections as its loop shut down.
        deadline = time.monotonic() + 5
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.open_connections == 0
    assert (first.text, second.text) == ("one", "two")


def test_with_model_keeps_endpoint_key_and_settings() -> None:
    with ScriptedOpenAIServer() as server:
        lm = make_lm(server, temperature=0.7, max_tokens=9, extra_body={"seed": 1})
        other = lm.with_model("other-model")
        done = other.complete(HELLO)
    assert other.model == "other-model" and lm.model == "test-model"
    assert done.model == "other-model"
    [request] = server.requests
    assert request.body["model"] == "other-model"
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.7, 9)
    assert request.body["seed"] == 1
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert (other.base_url, other.max_retries, other.backoff) == (
        lm.base_url,
        lm.max_retries,
        lm.backoff,
    )


def test_repr_hides_the_key() -> None:
    lm = OpenAICompatibleLM("gpt-x", "http://127.0.0.1:9/v1", KEY)
    text = repr(lm)
    assert "gpt-x" in text and "127.0.0.1:9" in text
    assert KEY not in text and KEY not in repr(lm.with_model("y"))


def test_key_and_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        lm = OpenAICompatibleLM("m")
        assert lm.complete(HELLO).text == "say hello please"
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"


def test_local_server_without_key_gets_a_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with ScriptedOpenAIServer() as server:
        OpenAICompatibleLM("m", server.base_url).complete(HELLO)
    assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAICompatibleLM("m")


def test_bad_settings_fail_at_once() -> None:
    with pytest.raises(ValueError, match="model is empty"):
        OpenAICompatibleLM("", "http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="max_retries"):
        OpenAICompatibleLM("m", "http://127.0.0.1:9/v1", max_retries=-1)
    with pytest.raises(ValueError, match="messages is empty"):
        OpenAICompatibleLM("m", "http://127.0.0.1:9/v1").complete([])


def test_without_openai_import_works_and_construction_says_what_to_install() -> None:
    script = (
        "import sys\n"
        "sys.modules['openai'] = None\n"
        "import sandlot.rlm, sandlot.rlm.lm\n"
        "try:\n"
        "    sandlot.rlm.lm.OpenAICompatibleLM('m', 'http://127.0.0.1:9/v1')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'sandlot[rlm]'" in done.stdout


# -- tool calling --------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "execute_code",
            "description": "Run Python.",
            "parameters": {"type": "object", "properties": {"code": {"type": "string"}}},
        },
    }
]


def test_tool_calls_come_back_with_their_raw_arguments_and_usage() -> None:
    reply = ScriptedReply.calls(
        ("execute_code", {"code": "1 + 1"}), ("execute_code", "{not json"), text=None
    )
    with ScriptedOpenAIServer(in_order(reply)) as server:
        lm = make_lm(server)
        done = asyncio.run(lm.acomplete(HELLO, tools=TOOLS))
    assert done.text == "" and done.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in done.tool_calls] == [
        ("execute_code", '{"code": "1 + 1"}'),
        ("execute_code", "{not json"),  # kept as written: the caller tells the LM
    ]
    assert len({c.id for c in done.tool_calls}) == 2
    assert done.prompt_tokens == 6
    [request] = server.requests
    assert request.body["tools"] == TOOLS


def test_a_conversation_with_tool_results_is_sent_as_given_and_no_tools_sends_none() -> None:
    messages: list[dict[str, Any]] = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "execute_code", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
    ]
    with ScriptedOpenAIServer(in_order("the answer is 2")) as server:
        done = make_lm(server).complete(messages, tools=TOOLS)
        make_lm(server).complete(HELLO)
    assert done.text == "the answer is 2" and done.tool_calls == ()
    assert server.requests[0].body["messages"] == messages
    assert "tools" not in server.requests[1].body


def test_a_tool_call_without_a_name_is_garbage_retried_once() -> None:
    nameless = ScriptedReply(text=None, tool_calls=[{"name": "", "arguments": "{}"}])
    message, requests = failure(in_order(nameless))
    assert "no function name" in message and requests == 2
    with ScriptedOpenAIServer(in_order(nameless, "fine")) as server:
        assert make_lm(server).complete(HELLO, tools=TOOLS).text == "fine"


def test_lm_config_makes_the_same_client_and_reads_the_key_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandlot.rlm.lm import LMConfig

    monkeypatch.setenv("MY_LM_KEY", KEY)
    with ScriptedOpenAIServer() as server:
        config = LMConfig(model="m", base_url=server.base_url, api_key_env="MY_LM_KEY", timeout=9)
        lm = config.client()
        assert (lm.model, lm.base_url, lm.timeout) == ("m", server.base_url, 9)
        lm.complete(HELLO)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_an_lm_collected_with_its_client_open_leaves_the_loops_other_descriptors_watched() -> None:
    """An LM dropped with its async client open on a loop that lives on (the portal), freed
    by the cycle collector: the collector closes the client's sockets, and the client is not
    closed again afterwards. It was, on the loop, by the generator meant to close it at the
    loop's end, and its transports unregistered by number whatever had taken a socket's
    number meanwhile: in the full suite, the channel of a sandbox starting then, whose
    start waited out its timeout with the driver's ready unread."""
    for _ in range(5):  # another thread of the process may take the freed number first
        if _collected_lm_leaves_a_new_socket_on_its_number_watched():
            return
    raise AssertionError("other threads took the freed number five times in a row")


def _collected_lm_leaves_a_new_socket_on_its_number_watched() -> bool:
    """One try; False if the freed number went to another thread before this one took it."""
    from sandlot.sync import portal

    shared = portal()
    loop = shared.loop
    hold = threading.Event()
    gc.disable()  # the collection below is the one that frees the LM, at a known point
    try:
        with ScriptedOpenAIServer() as server:
            lm = make_lm(server)
            shared.call(lm.acomplete(HELLO))
            (number,) = _connections_to(urllib.parse.urlsplit(server.base_url).port or 0)
            lm.itself = lm  # type: ignore[attr-defined]  # garbage only the collector frees
            del lm
            loop.call_soon_threadsafe(hold.wait)  # what the collection hands the loop waits
            gc.collect()  # closes the connection's socket: its number is free
            assert number not in _connections_to(urllib.parse.urlsplit(server.base_url).port or 0)
            channel, peer = socket.socketpair()  # as a sandbox's channel would, it takes the number
            if channel.fileno() != number:  # unless a lower one was free
                moved = socket.socket(fileno=fcntl.fcntl(channel, fcntl.F_DUPFD_CLOEXEC, number))
                channel.close()
                channel = moved
            if channel.fileno() != number:
                channel.close()
                peer.close()
                return False
            woken = threading.Event()
            loop.call_soon_threadsafe(loop.add_reader, number, woken.set)
            hold.set()
            time.sleep(0.5)  # the loop closes what the collection left it, if anything
            peer.send(b"x")
            try:
                assert woken.wait(5), "the loop no longer watches a descriptor it registered"
            finally:
                loop.call_soon_threadsafe(loop.remove_reader, number)
                shared.call(asyncio.sleep(0))
                channel.close()
                peer.close()
            return True
    finally:
        hold.set()
        gc.enable()


def _connections_to(port: int) -> list[int]:
    """This process's descriptors that are TCP connections to ``port`` on loopback."""
    found = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as copy:
                peer = copy.getpeername()
        except OSError:
            continue
        if peer == ("127.0.0.1", port):
            found.append(fd)
    return found
