"""An LM client for any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM).

The SDK does the HTTP; this module holds the policy sandlot needs around it: one
retry loop with exponential backoff that honours ``Retry-After``, errors that say
what to check, replies checked for garbage, usage and cost read from wherever the
provider reports them, and async clients that survive the caller switching event
loops. ``openai`` is imported only when an ``OpenAICompatibleLM`` is built, so
``import sandlot.rlm`` works without the ``rlm`` extra.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field

from ..config import _Strict
from .lm_protocol import Completion, LMError, ToolCall

if TYPE_CHECKING:
    import openai
    from openai._legacy_response import LegacyAPIResponse
    from openai.types.chat import (
        ChatCompletion,
        ChatCompletionMessageParam,
        ChatCompletionToolParam,
    )

PLACEHOLDER_API_KEY = "sandlot-no-key"
"""The key sent when none is set but ``base_url`` is: local servers need none."""

MAX_CONNECTIONS = 512
"""Connections the async client may open at once, per event loop: well above the calls in flight."""

_RETRYABLE_STATUS = frozenset({408, 409, 429})

_HINTS = {
    400: "the server rejected the request: check the messages (a prompt longer than the model's "
    "context window is a common cause) and the settings this server accepts "
    "(temperature, max_tokens, extra_body)",
    401: "check the API key (api_key= or OPENAI_API_KEY) for this endpoint",
    403: "the API key is not allowed to do this: check its permissions and its access to "
    "model {model!r}",
    404: "check the model name {model!r} and base_url {base_url!r} "
    "(OpenAI-compatible servers usually serve under /v1)",
    422: "the server could not process the request: check the model name and the settings "
    "this server accepts",
}


class LMConfig(_Strict):
    """The settings of an :class:`OpenAICompatibleLM`, as data (YAML, JSON, an experiment file).

    The fields and defaults are the client's keyword arguments; the API key is not
    one of them: it is read from the host environment variable ``api_key_env`` when
    the client is made (:meth:`client`), so a config file never holds it.
    """

    model: str = Field(min_length=1, description="The model name the endpoint serves.")
    base_url: str | None = Field(
        None, description="The endpoint, e.g. http://localhost:8000/v1 (default: OpenAI's)."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="The host environment variable that holds the API key."
    )
    max_retries: int = Field(6, ge=0, description="Retries of a failed call.")
    timeout: float = Field(300.0, gt=0, description="Seconds one call may take.")
    backoff: float = Field(0.5, ge=0, description="First wait between retries, doubled each time.")
    max_backoff: float = Field(30.0, ge=0, description="The longest wait between retries.")
    temperature: float | None = Field(None, description="Sent only when set.")
    max_tokens: int | None = Field(None, gt=0, description="Sent only when set.")
    extra_body: dict[str, Any] | None = Field(None, description="Merged into every request body.")

    def client(self, api_key: str | None = None) -> OpenAICompatibleLM:
        """The client these settings describe; the key from ``api_key`` or ``api_key_env``."""
        return OpenAICompatibleLM.from_config(self, api_key)


class _BadReply(Exception):
    """A 200 answer that carries no usable completion."""


def _require_openai() -> None:
    try:
        import openai  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "OpenAICompatibleLM needs the openai package: pip install 'sandlot[rlm]'"
        ) from exc


class OpenAICompatibleLM:
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Implements both LM protocols: ``await lm.acomplete(messages)`` and the blocking
    ``lm.complete(messages)``. ``base_url`` and ``api_key`` fall back to
    ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` as in the SDK. Local servers (vLLM,
    Ollama, llama.cpp) often need no key: when none is set and a ``base_url`` is,
    the placeholder ``PLACEHOLDER_API_KEY`` is sent.

    Failures: rate limits (429), 408, 409, 5xx, connection errors and timeouts are
    retried up to ``max_retries`` times, waiting ``backoff * 2**n`` seconds with
    jitter, capped at ``max_backoff``; a ``Retry-After`` or ``retry-after-ms``
    header sets the wait instead (also capped). Other HTTP errors (400, 401, 403,
    404, 422, ...) raise ``LMError`` at once, naming what to check. A reply with no
    choices, or whose message has neither content nor a refusal, is retried once,
    since proxies do send such replies under load, then raises ``LMError``. A reply
    cut at ``max_tokens`` (``finish_reason == "length"``) is returned as it is,
    unless it is empty: that raises ``LMError`` at once, since the same request
    would be cut again. A refusal is returned as the text.

    Tool calling: pass ``tools`` (OpenAI function specs) and the reply's
    ``tool_calls`` come back in ``Completion.tool_calls``, their arguments as the
    raw JSON text the model wrote (a reply with tool calls and no text is a good
    reply). ``messages`` may then hold assistant messages with ``tool_calls`` and
    ``tool`` messages with the results, as the endpoint takes them. At most
    ``MAX_TOOL_CALLS`` calls of one reply are kept; a call without a function
    name is garbage, retried once like any other.

    ``temperature`` and ``max_tokens`` are sent only when set; ``extra_body`` is
    merged into every request body (e.g. ``{"max_completion_tokens": 4096}`` for
    OpenAI reasoning models, which refuse ``max_tokens``).

    Many concurrent ``acomplete`` calls are fine: each event loop gets its own
    async client with a pool of ``MAX_CONNECTIONS`` connections, so calls from
    successive ``asyncio.run`` calls, or from several threads each running a loop,
    never share a client bound to another loop. A loop's client closes its
    connections when the loop shuts down (``asyncio.run`` does this), or sooner
    with ``await lm.aclose()``; ``close()`` closes the blocking client.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        max_retries: int = 6,
        timeout: float = 300.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not model:
            raise ValueError("OpenAICompatibleLM: model is empty; pass the model name to call")
        if max_retries < 0:
            raise ValueError(f"OpenAICompatibleLM: max_retries must be >= 0, not {max_retries}")
        if timeout <= 0 or backoff < 0 or max_backoff < 0:
            raise ValueError(
                "OpenAICompatibleLM: timeout must be > 0 and backoff, max_backoff >= 0 "
                f"(got timeout={timeout}, backoff={backoff}, max_backoff={max_backoff})"
            )
        _require_openai()
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None:
                raise ValueError(
                    "OpenAICompatibleLM: no API key: pass api_key= or set OPENAI_API_KEY "
                    "(for a local server that needs none, pass its base_url=)"
                )
            api_key = PLACEHOLDER_API_KEY
        self.model = model
        self.base_url: str = base_url or "https://api.openai.com/v1"
        self._api_key = api_key
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body) if extra_body else None
        self._lock = threading.Lock()
        self._sync_client: openai.OpenAI | None = None
        self._async_clients: dict[
            asyncio.AbstractEventLoop, tuple[openai.AsyncOpenAI, AsyncGenerator[None, None]]
        ] = {}

    @classmethod
    def from_config(cls, config: LMConfig, api_key: str | None = None) -> OpenAICompatibleLM:
        """A client made from ``config``; the key is ``api_key``, else ``$api_key_env``."""
        settings = config.model_dump(exclude={"model", "base_url", "api_key_env"})
        key = api_key or os.environ.get(config.api_key_env) or None
        return cls(config.model, config.base_url, key, **settings)

    def with_model(self, model: str) -> OpenAICompatibleLM:
        """A client for ``model`` on the same endpoint, key and settings."""
        return OpenAICompatibleLM(
            model,
            self.base_url,
            self._api_key,
            max_retries=self.max_retries,
            timeout=self.timeout,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            extra_body=self.extra_body,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleLM(model={self.model!r}, base_url={self.base_url!r})"

    async def acomplete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Completion:
        """Answer ``messages`` without blocking the event loop; ``LMError`` if it cannot.

        With ``tools`` the model may answer with calls to them (``Completion.tool_calls``).
        """
        import openai

        request = self._request(messages, tools)
        client = await self._async_client()
        retry = _Retry(self)
        while True:
            try:
                raw = await client.chat.completions.with_raw_response.create(**request)
                return self._completion(raw)
            except (openai.APIError, _BadReply) as exc:
                delay = retry.delay_after(exc)
            await asyncio.sleep(delay)

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Completion:
        """Answer ``messages``, blocking; safe from several threads. ``LMError`` if it cannot.

        With ``tools`` the model may answer with calls to them (``Completion.tool_calls``).
        """
        import openai

        request = self._request(messages, tools)
        client = self._client()
        retry = _Retry(self)
        while True:
            try:
                raw = client.chat.completions.with_raw_response.create(**request)
                return self._completion(raw)
            except (openai.APIError, _BadReply) as exc:
                delay = retry.delay_after(exc)
            time.sleep(delay)

    def close(self) -> None:
        """Close the blocking client's connections (a later call opens new ones)."""
        with self._lock:
            client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the running event loop's async client (a later call opens a new one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._async_clients.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()

    def _request(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
    ) -> dict[str, Any]:
        """The arguments of one chat-completions request, for either client."""
        import openai

        if not messages:
            raise ValueError(f"{self.model}: messages is empty; pass at least one message")
        return {
            "model": self.model,
            "messages": cast("list[ChatCompletionMessageParam]", [dict(m) for m in messages]),
            "tools": cast("list[ChatCompletionToolParam]", [dict(t) for t in tools])
            if tools
            else openai.omit,
            "temperature": openai.omit if self.temperature is None else self.temperature,
            "max_tokens": openai.omit if self.max_tokens is None else self.max_tokens,
            "extra_body": self.extra_body,
        }

    def _client(self) -> openai.OpenAI:
        import openai

        with self._lock:
            if self._sync_client is None:
                self._sync_client = openai.OpenAI(
                    api_key=self._api_key,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=0,
                )
            return self._sync_client

    async def _async_client(self) -> openai.AsyncOpenAI:
        import httpx2
        import openai

        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._async_clients.get(loop)
            if entry is not None:
                return entry[0]
            # Clients of loops that ended without running their async generators' cleanup.
            for ended in [other for other in self._async_clients if other.is_closed()]:
                del self._async_clients[ended]
            client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(
                    limits=httpx2.Limits(
                        max_connections=MAX_CONNECTIONS, max_keepalive_connections=64
                    )
                ),
            )
            keeper = _close_at_loop_end(weakref.ref(client))
            self._async_clients[loop] = (client, keeper)
        # Starting the generator registers it with the loop; it runs to its yield at once,
        # so no other task can see the entry before this.
        await keeper.__anext__()
        return client

    def _completion(self, raw: LegacyAPIResponse[ChatCompletion]) -> Completion:
        try:
            response: object = raw.parse()
        except ValueError as exc:
            raise _BadReply(
                f"the reply is not valid JSON ({exc}): {_snippet(raw.http_response.text)}"
            ) from exc
        choices = getattr(response, "choices", None)
        if not choices:
            raise _BadReply(f"the reply has no choices: {_snippet(raw.http_response.text)}")
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None) or getattr(message, "refusal", None)
        calls = _tool_calls(message, raw.http_response.text)
        if not text and not calls:
            if getattr(choice, "finish_reason", None) == "length":
                raise LMError(
                    f"{self.model} at {self.base_url}: the model hit its token limit before "
                    f"writing any answer (finish_reason='length', max_tokens={self.max_tokens}); "
                    "raise max_tokens (reasoning models spend tokens before they answer)"
                )
            raise _BadReply(
                f"the reply's message has no content: {_snippet(raw.http_response.text)}"
            )
        usage = getattr(response, "usage", None)
        finish = getattr(choice, "finish_reason", None)
        return Completion(
            text=str(text or ""),
            model=self.model,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost=_cost(usage, raw.headers.get("x-litellm-response-cost")),
            tool_calls=calls,
            finish_reason=str(finish) if finish is not None else None,
        )


MAX_TOOL_CALLS = 64
"""Tool calls of one reply that are kept; the rest are dropped."""


def _tool_calls(message: object, body: str) -> tuple[ToolCall, ...]:
    """The function calls of a reply's message; ``_BadReply`` for a call with no name."""
    found = []
    for index, call in enumerate(getattr(message, "tool_calls", None) or []):
        if index >= MAX_TOOL_CALLS:
            break
        function = getattr(call, "function", None)
        name = getattr(function, "name", None)
        if not isinstance(name, str) or not name:
            raise _BadReply(f"a tool call of the reply has no function name: {_snippet(body)}")
        arguments = getattr(function, "arguments", None)
        found.append(
            ToolCall(
                id=str(getattr(call, "id", None) or f"call_{index}"),
                name=name,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(found)


async def _close_at_loop_end(
    client: weakref.ref[openai.AsyncOpenAI],
) -> AsyncGenerator[None, None]:
    """Close ``client`` when its event loop shuts down.

    ``asyncio.run`` (and every loop runner that calls ``shutdown_asyncgens``) closes
    the async generators started on the loop before closing it, so the client's
    kept-alive connections are closed on the loop they belong to instead of leaking
    with it. ``aclose()`` closes it sooner.

    The client is held weakly. One dropped with its LM on a loop that lives on (the
    blocking API's portal) is freed by the garbage collector, which closes its
    sockets itself, and finalizes this generator, whose loop runs this ``finally``
    later. Closing the client then would close its transports a second time, and a
    transport unregisters from its loop by descriptor number: whatever took one of
    those numbers since (a sandbox's channel) would never be polled again.
    """
    try:
        yield
    finally:
        alive = client()
        if alive is not None:
            await alive.close()


class _Retry:
    """The retry policy for one call: counts attempts and says how long to wait."""

    def __init__(self, lm: OpenAICompatibleLM) -> None:
        self.lm = lm
        self.attempts = 0
        self.bad_replies = 0

    def delay_after(self, exc: Exception) -> float:
        """Count a failed attempt; return the wait before the next, or raise ``LMError``."""
        import openai

        lm = self.lm
        where = f"{lm.model} at {lm.base_url}"
        self.attempts += 1
        if isinstance(exc, _BadReply):
            self.bad_replies += 1
            if self.bad_replies > 1 or self.attempts > lm.max_retries:
                raise LMError(
                    f"{where}: the server answered with no usable completion "
                    f"({self.attempts} attempts); {exc}"
                ) from exc
            return 0.0
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status not in _RETRYABLE_STATUS and status < 500:
                hint = _HINTS.get(status, "check the request and the server's documentation")
                raise LMError(
                    f"{where}: HTTP {status}: {_server_message(exc)}; "
                    + hint.format(model=lm.model, base_url=lm.base_url)
                ) from exc
        elif not isinstance(exc, openai.APIConnectionError):
            raise LMError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if self.attempts > lm.max_retries:
            raise LMError(
                f"{where}: gave up after {self.attempts} attempts; last error: {_describe(exc, lm)}"
            ) from exc
        asked = _retry_after(exc)
        if asked is not None:
            return min(lm.max_backoff, asked * random.uniform(1.0, 1.1))
        return min(lm.max_backoff, lm.backoff * 2.0 ** (self.attempts - 1)) * random.uniform(
            0.5, 1.0
        )


def _retry_after(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After``), if it did."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        return str(message) if message else _snippet(str(body))
    if isinstance(body, str) and body:
        return _snippet(body)
    return _snippet(exc.response.text) or exc.response.reason_phrase


def _describe(exc: Exception, lm: OpenAICompatibleLM) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within {lm.timeout}s (raise timeout= for slow models)"
    if isinstance(exc, openai.APIConnectionError):
        return f"could not reach {lm.base_url}: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_server_message(exc)}"
    return str(exc)


def _cost(usage: object, header: str | None) -> float | None:
    """The provider's cost: ``usage.cost`` (OpenRouter) or LiteLLM's response header."""
    extra = getattr(usage, "model_extra", None) or {}
    for value in (extra.get("cost"), header):
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _snippet(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
