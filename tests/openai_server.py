"""A real OpenAI-compatible chat server on loopback, scripted by the test that runs it.

Tests talk to it over HTTP with the real client, so retries, headers, timeouts and
connection pooling are exercised as they are against vLLM or OpenAI::

    from openai_server import ScriptedOpenAIServer, ScriptedReply, in_order

    def answer(body: dict) -> str:          # body: the request's JSON
        return "42" if "question" in body["messages"][-1]["content"] else "?"

    with ScriptedOpenAIServer(answer, latency=0.1) as server:
        lm = OpenAICompatibleLM("m", base_url=server.base_url, api_key="k")
        ...
        server.requests[0].body["model"], server.requests[0].headers["authorization"]

A reply function returns the answer's text, or a ``ScriptedReply`` for anything
else: tool calls (``ScriptedReply.calls(("execute_code", {"code": "1 + 1"}))``), an
HTTP error (``ScriptedReply.error(429, "slow down", retry_after=1)``), a
malformed body (``ScriptedReply.malformed(b"{not json")``), a cost, headers, a
delay. ``in_order(...)`` scripts a sequence of replies, one per request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass
class ScriptedReply:
    """What the server sends for one request.

    ``text`` is the assistant message's content (``None`` sends ``null``);
    ``status`` other than 200 sends an OpenAI-style error body with
    ``error_message`` as its message; ``raw`` replaces the whole body with these bytes. ``cost`` is
    put in ``usage.cost`` (as OpenRouter does); ``headers`` are added to the
    response; ``delay`` is slept before answering, on top of the server's latency.
    ``tool_calls`` are sent in the message as OpenAI does (each a dict with ``name``
    and ``arguments``: a dict is sent as its JSON text, a str as it is, so a test can
    send malformed JSON; ``id`` is made up when missing).
    """

    text: str | None = ""
    status: int = 200
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    cost: float | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    delay: float = 0.0
    tool_calls: list[dict[str, Any]] | None = None

    @classmethod
    def error(cls, status: int, message: str, *, retry_after: float | None = None) -> ScriptedReply:
        """An HTTP error with an OpenAI-style JSON body and, optionally, ``Retry-After``."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(status=status, error_message=message, headers=headers)

    @classmethod
    def calls(
        cls, *calls: tuple[str, dict[str, Any] | str], text: str | None = None
    ) -> ScriptedReply:
        """A reply asking for the tool calls ``(name, arguments)``, with optional text."""
        made = [{"name": name, "arguments": arguments} for name, arguments in calls]
        return cls(text=text, tool_calls=made, finish_reason="tool_calls")

    @classmethod
    def malformed(cls, body: bytes, content_type: str = "application/json") -> ScriptedReply:
        """A 200 answer whose body is exactly ``body``."""
        return cls(raw=body, content_type=content_type)


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server got it: path, lowercased headers, JSON body, arrival time."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


Reply = Callable[[dict[str, Any]], "str | ScriptedReply"]


def in_order(*replies: str | ScriptedReply) -> Reply:
    """A reply function that answers the n-th request with ``replies[n]``, then the last."""
    if not replies:
        raise ValueError("in_order needs at least one reply")
    lock = threading.Lock()
    served = 0

    def reply(body: dict[str, Any]) -> str | ScriptedReply:
        nonlocal served
        with lock:
            index = min(served, len(replies) - 1)
            served += 1
        return replies[index]

    return reply


def echo(body: dict[str, Any]) -> str:
    """The default reply: the last message's content."""
    return str(body["messages"][-1]["content"])


def count_tokens(text: str) -> int:
    """A crude token count: words."""
    return len(text.split())


class ScriptedOpenAIServer:
    """An OpenAI-compatible ``POST /v1/chat/completions`` server in a background thread.

    Each request is handled on its own thread, so many can be in flight at once;
    ``latency`` seconds are slept before every answer. ``requests`` lists what
    arrived, in arrival order. Use it as a context manager, or ``start()`` and
    ``stop()``.
    """

    def __init__(self, reply: Reply = echo, *, latency: float = 0.0) -> None:
        self.reply = reply
        self.latency = latency
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._served = 0
        self._connections = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        """Listen on a free loopback port and serve in a daemon thread."""
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.scripted = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-server"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def open_connections(self) -> int:
        """Client connections open now (kept-alive ones included)."""
        with self._lock:
            return self._connections

    def _connected(self, change: int) -> None:
        with self._lock:
            self._connections += change

    def _record(self, request: ReceivedRequest) -> int:
        with self._lock:
            self.requests.append(request)
            self._served += 1
            return self._served

    def _answer(self, body: dict[str, Any], number: int) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request."""
        try:
            scripted = self.reply(body)
        except Exception as exc:  # the test's script broke: say so to the client
            return _error(500, f"reply function raised {type(exc).__name__}: {exc}", {})
        if isinstance(scripted, str):
            scripted = ScriptedReply(text=scripted)
        time.sleep(self.latency + scripted.delay)
        if scripted.status != 200:
            return _error(scripted.status, scripted.error_message, scripted.headers)
        headers = {"Content-Type": scripted.content_type, **scripted.headers}
        if scripted.raw is not None:
            return 200, headers, scripted.raw
        prompt = sum(count_tokens(str(m.get("content") or "")) for m in body.get("messages", []))
        completion = count_tokens(scripted.text or "")
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if scripted.cost is not None:
            usage["cost"] = scripted.cost
        message: dict[str, Any] = {"role": "assistant", "content": scripted.text}
        if scripted.refusal is not None:
            message["refusal"] = scripted.refusal
        if scripted.tool_calls is not None:
            message["tool_calls"] = [
                {
                    "id": call.get("id", f"call_{number}_{index}"),
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": call["arguments"]
                        if isinstance(call["arguments"], str)
                        else json.dumps(call["arguments"]),
                    },
                }
                for index, call in enumerate(scripted.tool_calls)
            ]
        payload = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": scripted.finish_reason}],
            "usage": usage,
        }
        return 200, headers, json.dumps(payload).encode()


def _error(status: int, message: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    kind = "rate_limit_error" if status == 429 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # a burst of concurrent connects must not overflow the backlog
    scripted: ScriptedOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    timeout = 30  # an idle kept-alive connection ends its thread after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.scripted._connected(+1)

    def finish(self) -> None:
        self.server.scripted._connected(-1)
        super().finish()

    def do_POST(self) -> None:
        scripted = self.server.scripted
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        if self.path != CHAT_PATH:
            self._send(*_error(404, f"no route {self.path}; this server serves {CHAT_PATH}", {}))
            return
        try:
            body = json.loads(data)
        except ValueError as exc:
            self._send(*_error(400, f"the body is not JSON: {exc}", {}))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        number = scripted._record(ReceivedRequest(self.path, headers, body, time.monotonic()))
        self._send(*scripted._answer(body, number))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``requests`` instead of a log."""
