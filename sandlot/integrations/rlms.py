"""``SandlotREPL``: an environment of the RLM library (``rlms``) on a sandlot sandbox.

``rlm.RLM`` runs the code its root LM writes in an environment (``LocalREPL`` by
default: ``exec`` in the host process itself). Importing this module adds one
named ``"sandlot"``, so that the code runs in a sandlot sandbox instead::

    import sandlot.integrations.rlms  # registers environment="sandlot"
    from rlm import RLM

    rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"},
              environment="sandlot",
              environment_kwargs={"config": sandlot.SandboxConfig(memory_mb=1024)})
    print(rlm.completion(long_document, root_prompt="Who signed it?").response)

rlms 0.1.3 picks environments by name from a fixed list (``get_environment``) and
has no registry; this module wraps that lookup in ``rlm.core.rlm`` so that
``"sandlot"`` builds a :class:`SandlotREPL` and every other name goes where it went.

How the library's contract is kept (``LocalREPL``'s behaviour is the reference):

- ``context`` (and ``context_0``): written into the sandbox as a file (text for a
  ``str``, JSON for a dict or list, as ``LocalREPL`` does) and loaded there, so a
  long context never travels inside a code string.
- ``llm_query`` / ``llm_query_batched``: sandlot host calls. The host side sends
  the request to rlms's ``LMHandler`` (``send_lm_request``); the sandbox never
  opens a socket, and has no network. ``rlm_query`` / ``rlm_query_batched`` fall
  back to them, as ``LocalREPL`` does without a recursion callback (rlms passes
  one only to its own environments).
- ``answer["content"] = ...; answer["ready"] = True``: the content reaches the
  host as ``REPLResult.final_answer``, as in every rlms environment (0.1.3 ends a
  run this way; it has no ``FINAL``/``FINAL_VAR``).
- stdout and stderr of each block; an exception's traceback goes to stderr; the
  names the block left, as short reprs, in ``REPLResult.locals``.
- custom tools: callables become host tools (JSON arguments and results); other
  values are sent in as data, like the context.

What the host trusts: nothing the sandbox sends. Prompts must be strings of at
most ``max_prompt_chars``, batches at most ``max_batch`` prompts; a final answer
is at most the config's ``max_output_bytes``; the variables report is checked
name by name; printed output is already bounded by ``max_output_bytes``. The
config's secret values are redacted from everything handed back to rlms (output,
answers, variables) and from the prompts sent to the LM.

Misbehaving code: a block that runs past ``timeout`` is interrupted (state kept);
a sandbox that dies (out of memory, killed) is replaced by a fresh one with the
context loaded again. Either way the block's stderr says what happened and the
RLM loop goes on.
"""

from __future__ import annotations

import contextlib
import json
import keyword
import posixpath
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import backends
from ..backends import BackendSpec
from ..config import SandboxConfig
from ..errors import ConfigError, SandboxDied, SandboxError
from ..resources import package_text
from ..results import CodeResult
from ..secrets import Redactor
from ..sync import Sandbox, SandboxPool

try:
    import rlm.core.rlm as _rlm_core  # type: ignore[import-untyped]
    from rlm.core.comms_utils import (  # type: ignore[import-untyped]
        LMRequest,
        send_lm_request,
        send_lm_request_batched,
    )
    from rlm.core.types import REPLResult, RLMChatCompletion  # type: ignore[import-untyped]
    from rlm.environments import (  # type: ignore[import-untyped]
        get_environment as _library_get_environment,
    )
    from rlm.environments.base_env import (  # type: ignore[import-untyped]
        NonIsolatedEnv,
        extract_tool_value,
        validate_custom_tools,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sandlot.integrations.rlms needs rlms ({exc}); "
        "install it with: pip install 'sandlot[rlms]'"
    ) from exc

__all__ = ["ENVIRONMENT", "SandlotREPL", "register"]

#: The name to pass as ``RLM(environment=...)``.
ENVIRONMENT = "sandlot"

SETUP = package_text("sandlot.integrations", "in_sandbox/rlms_setup.py")
AFTER = "_sandlot_rlms_after()"
RESERVED_PREFIX = "_sandlot_rlms"
MAX_VARS = 200  # the in-sandbox report's own caps (rlms_setup.py), checked again here
MAX_REPR = 120
MAX_MODEL_CHARS = 200


def _check_prompt(prompt: object, limit: int, what: str) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{what}: a prompt must be a str, not {type(prompt).__name__}")
    if len(prompt) > limit:
        raise ValueError(
            f"{what}: a prompt of {len(prompt)} characters is over this environment's "
            f"max_prompt_chars ({limit}); send a smaller chunk"
        )
    return prompt


def _check_model(model: object) -> str | None:
    if model is None:
        return None
    if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_CHARS:
        raise ValueError(f"model must be None or a model name (a short str), not {model!r:.80}")
    return model


def _encode(payload: object, what: str) -> tuple[bytes, str]:
    """A context or data value as it is written into the sandbox, and its kind."""
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass"), "text"
    try:
        return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass"), "json"
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a str or a JSON value (dict, list, ...): {exc}") from exc


class SandlotREPL(NonIsolatedEnv):  # type: ignore[misc]
    """An rlms environment whose code runs in a sandlot sandbox.

    ``RLM(environment="sandlot", environment_kwargs={...})`` builds one per
    ``completion`` with rlms's own arguments (the LM handler's address, the
    context, the depth, custom tools) plus the ``environment_kwargs``: the
    keyword-only arguments below. It may also be built directly, like
    ``LocalREPL``. ``cleanup()`` ends the sandbox (or returns it to its pool).

    rlms counts it a "non-isolated" environment only in its own sense (it runs
    on the LM's machine, as ``DockerREPL`` does): the code runs in a separate
    process under bubblewrap, with no network, and reaches the host only
    through the host calls above. With ``backend="ray"`` it runs on a cluster
    node instead.

    Args:
        lm_handler_address: rlms's ``LMHandler`` (host, port); set by ``RLM``.
            None makes ``llm_query`` answer ``"Error: No LM handler configured"``.
        context_payload: loaded as ``context_0`` and ``context``.
        setup_code: run once after the context is loaded.
        depth: sent with each sub-LM request (the handler routes depth 1 to
            ``other_backends``); set by ``RLM``.
        custom_tools: ``{name: callable or value}`` (or ``{"tool": ..., "description":
            ...}``); callables become host tools, values are sent in as data.
        custom_sub_tools: tools for child RLMs; kept for rlms, unused here
            (``rlm_query`` falls back to ``llm_query``).
        max_concurrent_subcalls: rlms's bound on child RLMs; kept for rlms.
        config: the sandbox's configuration (memory, CPU, lifetime, packages,
            network, secrets); the defaults of ``SandboxConfig`` when None.
            Not with ``pool`` (the pool's config applies).
        backend: where the sandbox runs: a backend, a name (``"local"``,
            ``"ray"``), or None for ``$SANDLOT_BACKEND``, else local.
        pool: a :class:`sandlot.SandboxPool` to borrow the sandbox from, for many
            RLM runs at once; it goes back to the pool at ``cleanup``.
        timeout: seconds one code block may run (sub-LM calls included); at the
            end it is interrupted and the REPL keeps its state. None for no
            limit but the sandbox's lifetime.
        max_prompt_chars: the longest prompt ``llm_query`` takes.
        max_batch: the most prompts one ``llm_query_batched`` takes.
    """

    def __init__(
        self,
        lm_handler_address: tuple[str, int] | None = None,
        context_payload: dict[str, Any] | list[Any] | str | None = None,
        setup_code: str | None = None,
        depth: int = 1,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        max_concurrent_subcalls: int = 4,
        *,
        config: SandboxConfig | None = None,
        backend: BackendSpec = None,
        pool: SandboxPool | None = None,
        timeout: float | None = 300.0,
        max_prompt_chars: int = 1_000_000,
        max_batch: int = 256,
    ) -> None:
        super().__init__(depth=depth, max_concurrent_subcalls=max_concurrent_subcalls)
        if pool is not None and (config is not None or backend is not None):
            raise ConfigError("pass either pool or config/backend: a pool's sandboxes use its own")
        if timeout is not None and timeout <= 0:
            raise ConfigError("timeout must be positive or None")
        if max_prompt_chars < 1 or max_batch < 1:
            raise ConfigError("max_prompt_chars and max_batch must be at least 1")
        self.lm_handler_address = lm_handler_address
        self.custom_tools: dict[str, Any] = dict(custom_tools or {})
        self.custom_sub_tools = (
            custom_sub_tools if custom_sub_tools is not None else self.custom_tools
        )
        validate_custom_tools(self.custom_tools)
        for name in self.custom_tools:
            if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
                raise ValueError(
                    f"custom tool name {name!r} must be a Python identifier that is not a "
                    "keyword and does not start with '_'"
                )
        self.pool = pool
        self.config = pool.config if pool is not None else config or SandboxConfig()
        self.backend = None if pool is not None else backends.resolve(backend)
        self.timeout = timeout
        self.max_prompt_chars = max_prompt_chars
        self.max_batch = max_batch
        self._redactor = Redactor.for_config(self.config)
        self._sandbox: Sandbox | None = None
        self._borrowed = contextlib.ExitStack()
        self._ended = False
        self._files = 0
        # The contexts loaded, by index, to load again into a sandbox that replaces a dead one.
        self._contexts: dict[int, dict[str, Any] | list[Any] | str] = {}
        self._cell_lock = threading.Lock()
        self._calls_lock = threading.Lock()
        # Sub-LM calls are answered only while a code block runs: a thread the code left
        # behind cannot spend on the LM between blocks.
        self._running = False
        self._calls: list[RLMChatCompletion] = []  # sub-LM calls of the running block
        self._final: str | None = None
        self._shown: dict[str, str] = {}
        self.setup()
        try:
            if context_payload is not None:
                self.load_context(context_payload)
            if setup_code:
                self.execute_code(setup_code)
        except BaseException:
            self.cleanup()
            raise

    # -- lifetime ----------------------------------------------------------------

    def setup(self) -> None:
        """Start (or borrow) a sandbox and put the helpers and custom tools in it."""
        if self._ended:
            raise SandboxError("this SandlotREPL was cleaned up; make a new one")
        tools = self._tools()
        if self.pool is not None:
            sandbox = self._borrowed.enter_context(self.pool.sandbox(clean=True))
            for name, fn in tools.items():
                sandbox.register_tool(name, fn)
        else:
            sandbox = Sandbox(self.config, backend=self.backend, tools=tools).start()
        self._sandbox = sandbox
        try:
            self._run_setup(sandbox, SETUP)
            for name, entry in self.custom_tools.items():
                value = extract_tool_value(entry)
                if not callable(value):
                    self._bind(sandbox, name, value, f"custom tool {name!r}")
        except BaseException:
            self._release()
            raise

    def cleanup(self) -> None:
        """End the sandbox (or hand it back to its pool); safe to call more than once."""
        self._ended = True
        self._release()

    def _release(self) -> None:
        sandbox, self._sandbox = self._sandbox, None
        if self.pool is not None:
            self._borrowed.close()
        elif sandbox is not None:
            with contextlib.suppress(SandboxError):
                sandbox.terminate()

    def __enter__(self) -> SandlotREPL:
        return self

    def __exit__(self, *_: object) -> None:
        self.cleanup()

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox the code runs in (its files, processes); None after ``cleanup``."""
        return self._sandbox

    def _tools(self) -> dict[str, Callable[..., Any]]:
        tools: dict[str, Callable[..., Any]] = {
            "llm_query": self._llm_query,
            "llm_query_batched": self._llm_query_batched,
            "rlm_query": self._llm_query,
            "rlm_query_batched": self._llm_query_batched,
            "_sandlot_rlms_final": self._receive_final,
            "_sandlot_rlms_vars": self._receive_vars,
        }
        for name, entry in self.custom_tools.items():
            value = extract_tool_value(entry)
            if callable(value):
                tools[name] = value
        return tools

    def _run_setup(self, sandbox: Sandbox, code: str) -> None:
        self._running = True  # the setup code may ask the LM, as a block may
        try:
            result = sandbox.run_code(code)
        finally:
            self._running = False
        if result.error is not None:
            raise SandboxError(
                self._redactor.redact(f"setting up the sandbox failed: {result.error.traceback}")
            )

    # -- context -----------------------------------------------------------------

    def load_context(self, context_payload: dict[str, Any] | list[Any] | str) -> None:
        """Load the context as ``context_0``, with ``context`` as its alias."""
        self.add_context(context_payload, 0)

    def add_context(
        self, context_payload: dict[str, Any] | list[Any] | str, context_index: int | None = None
    ) -> int:
        """Load a context as ``context_N`` (the next free N when None); return N."""
        index = len(self._contexts) if context_index is None else context_index
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"context_index must be a non-negative int, not {index!r}")
        self._bind(self._require(), f"context_{index}", context_payload, "the context")
        if index == 0:
            self._run_setup(self._require(), "context = context_0")
        self._contexts[index] = context_payload
        return index

    def get_context_count(self) -> int:
        """How many contexts are loaded."""
        return max(self._contexts, default=-1) + 1

    def _bind(self, sandbox: Sandbox, name: str, value: object, what: str) -> None:
        data, kind = _encode(value, what)
        self._files += 1
        path = posixpath.join(sandbox.workdir, ".sandlot-rlms", f"{self._files}.{kind}")
        sandbox.files.write(path, data)
        self._run_setup(
            sandbox, f"_sandlot_rlms_load({json.dumps(name)}, {json.dumps(path)}, {kind!r})"
        )

    def _require(self) -> Sandbox:
        if self._sandbox is None:
            raise SandboxError("this SandlotREPL was cleaned up; make a new one")
        return self._sandbox

    # -- running code --------------------------------------------------------------

    def execute_code(self, code: str) -> REPLResult:
        """Run one code block in the sandbox's persistent REPL.

        Never raises for what the code does: an exception, a timeout or the
        sandbox's death end up in ``stderr``, and a dead sandbox is replaced.
        Raises ``SandboxError`` only when this environment was cleaned up or a
        replacement sandbox does not start.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        started = time.perf_counter()
        with self._cell_lock:
            sandbox = self._require()
            with self._calls_lock:
                self._calls = []
            self._final, self._shown = None, {}
            try:
                self._running = True
                result = sandbox.run_code(code, timeout=self.timeout)
                self._running = False
                after = sandbox.run_code(AFTER, timeout=self.timeout)
                stdout, stderr = result.stdout, _stderr(result)
                if after.error is not None:  # e.g. an answer too large for the host to take
                    stderr = f"{stderr}\n{after.error}" if stderr else str(after.error)
            except SandboxDied as exc:
                stdout, stderr = "", self._revive(exc)
            except SandboxError as exc:
                stdout, stderr = "", f"SandboxError: {exc}"
            finally:
                self._running = False
            with self._calls_lock:
                calls = list(self._calls)
            redact = self._redactor.redact
            final = None if self._final is None else redact(self._final)
            return REPLResult(
                stdout=redact(stdout),
                stderr=redact(stderr),
                locals={redact(name): redact(shown) for name, shown in self._shown.items()},
                execution_time=time.perf_counter() - started,
                rlm_calls=calls,
                final_answer=final,
            )

    def _revive(self, exc: SandboxDied) -> str:
        """A fresh sandbox with the contexts loaded again; what to tell the LM."""
        self._release()
        self.setup()
        for index, payload in sorted(self._contexts.items()):
            self.add_context(payload, index)
        return (
            f"SandboxDied: the sandbox died while running this code ({exc}); its variables "
            "are lost. A new sandbox was started with `context` loaded again; redo what you need."
        )

    # -- calls from the sandbox ------------------------------------------------------

    def _record(self, completion: RLMChatCompletion) -> None:
        with self._calls_lock:
            self._calls.append(completion)

    def _between_blocks(self, name: str) -> None:
        if not self._running:
            raise RuntimeError(f"{name} is answered only while a code block runs")

    def _llm_query(self, prompt: str, model: str | None = None) -> str:
        """Host end of ``llm_query``: one prompt to rlms's LM handler."""
        self._between_blocks("llm_query")
        prompt = self._redactor.redact(_check_prompt(prompt, self.max_prompt_chars, "llm_query"))
        model = _check_model(model)
        if not self.lm_handler_address:
            return "Error: No LM handler configured"
        request = LMRequest(prompt=prompt, model=model, depth=self.depth)
        response = send_lm_request(self.lm_handler_address, request)
        if not response.success:
            return f"Error: {response.error}"
        self._record(response.chat_completion)
        return str(response.chat_completion.response)

    def _llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """Host end of ``llm_query_batched``: the prompts to the LM handler at once."""
        self._between_blocks("llm_query_batched")
        if not isinstance(prompts, list):
            raise TypeError(
                f"llm_query_batched: prompts must be a list of str, not {prompts!r:.80}"
            )
        if len(prompts) > self.max_batch:
            raise ValueError(
                f"llm_query_batched: {len(prompts)} prompts is over this environment's "
                f"max_batch ({self.max_batch}); split the batch"
            )
        checked = [
            self._redactor.redact(_check_prompt(p, self.max_prompt_chars, "llm_query_batched"))
            for p in prompts
        ]
        model = _check_model(model)
        if not self.lm_handler_address:
            return ["Error: No LM handler configured"] * len(prompts)
        answers = []
        for response in send_lm_request_batched(
            self.lm_handler_address, checked, model=model, depth=self.depth
        ):
            if not response.success:
                answers.append(f"Error: {response.error}")
            else:
                self._record(response.chat_completion)
                answers.append(str(response.chat_completion.response))
        return answers

    def _receive_final(self, content: object, rebound: object) -> None:
        """Host end of ``answer["ready"] = True``: the block's final answer."""
        if not isinstance(content, str):
            raise TypeError("the final answer must arrive as a str")
        limit = self.config.max_output_bytes
        if len(content) > limit or len(content.encode("utf-8", "surrogatepass")) > limit:
            raise ValueError(
                f"the final answer is larger than this sandbox's max_output_bytes ({limit} "
                "bytes), so the host did not take it; answer with something shorter"
            )
        # A rebound ``answer`` dict counts only when ``answer["ready"]`` did not fire.
        if rebound is not True or self._final is None:
            self._final = content

    def _receive_vars(self, shown: object) -> None:
        """Host end of the variables report after each block: ``{name: short repr}``."""
        if not isinstance(shown, Mapping) or len(shown) > MAX_VARS:
            raise ValueError(f"the variables report must be a dict of at most {MAX_VARS} names")
        checked: dict[str, str] = {}
        for name, text in shown.items():
            if not (isinstance(name, str) and name.isidentifier() and len(name) <= MAX_REPR):
                raise ValueError(f"the variables report names {name!r:.80}, not an identifier")
            if not isinstance(text, str) or len(text) > MAX_REPR:
                raise ValueError(f"the variables report's entry for {name} is not a short str")
            checked[name] = text
        self._shown = checked


def _stderr(result: CodeResult) -> str:
    """What the block wrote to stderr, then its exception's traceback (if any)."""
    error = result.error
    if error is None:
        return result.stderr
    told = error.traceback.rstrip() or str(error)
    if result.timed_out:  # the traceback shows the interrupt; say why it came
        told += f"\n{error}"
    return f"{result.stderr}\n{told}" if result.stderr else told


def _get_environment(environment: str, environment_kwargs: dict[str, Any]) -> Any:
    """rlms's ``get_environment``, which also knows ``"sandlot"``."""
    if environment == ENVIRONMENT:
        return SandlotREPL(**environment_kwargs)
    return _library_get_environment(environment, environment_kwargs)


def register() -> None:
    """Make ``RLM(environment="sandlot")`` build a :class:`SandlotREPL`.

    Done when this module is imported; calling it again changes nothing.
    """
    if getattr(_rlm_core.get_environment, "__module__", None) != __name__:
        _rlm_core.get_environment = _get_environment


register()
