"""``SandlotExecutor``: smolagents' ``PythonExecutor`` on a sandlot sandbox.

``CodeAgent`` runs the code its model writes through a ``PythonExecutor``. Its
default, ``LocalPythonExecutor``, interprets that code's syntax tree in the
agent's own process; its remote executors (E2B, Modal, Docker, Blaxel) copy the
tools' source into the remote interpreter. This one runs the code in a sandlot
sandbox (a live CPython under bubblewrap) and leaves the tools on the host.

How CodeAgent drives it (1.26): ``agent.run`` calls ``send_variables(agent.state)``
and ``send_tools({**tools, **managed_agents})``, then once per step
``executor(code) -> CodeOutput(output, logs, is_final_answer)``; whatever the
call raises becomes the step's ``AgentExecutionError`` (its message goes back to
the model, the agent goes on), and the logs of a failed step are read from
``executor.state["_print_outputs"]``. ``agent.cleanup()`` (and leaving
``with CodeAgent(...)``) calls ``cleanup()``.

What crosses, and how:

- tools and managed agents: each is a sandlot host call. The sandbox holds a stub
  per name that sends the arguments to the host, where the tool itself runs.
  ``final_answer`` hands its value to the host and then ends the code.
- variables: one host call that the sandbox makes to fetch them.
- output: what the code printed (stdout, then stderr) and the last expression's
  ``repr``, bounded by the sandbox's ``max_output_bytes`` and then cut to
  ``max_print_outputs_length`` as smolagents cuts its own logs.

Nothing that comes back is trusted: a step is a final answer only when the
host's own ``final_answer`` ran during that step and the code then ended with
the signal it raises (printed text or a forged exception counts for nothing);
tools answer only during a step, only under the names sent, and only with
keywords the tool declares; a final answer over ``max_output_bytes`` is
refused; the config's secret values are redacted, and control characters
escaped, in everything handed to smolagents (its logger prints it to a terminal).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import keyword
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from .. import backends
from ..backends import BackendSpec
from ..config import SandboxConfig
from ..driver import codec
from ..errors import SandboxDied, SandboxError
from ..resources import package_text
from ..results import CodeResult
from ..secrets import Redactor
from ..sink import Sink
from ..sync import Sandbox, SandboxPool

try:
    from smolagents.local_python_executor import (  # type: ignore[import-untyped]
        DEFAULT_MAX_LEN_OUTPUT,
        MAX_EXECUTION_TIME_SECONDS,
        CodeOutput,
        PythonExecutor,
    )
    from smolagents.monitoring import AgentLogger, LogLevel  # type: ignore[import-untyped]
    from smolagents.tools import Tool  # type: ignore[import-untyped]
    from smolagents.utils import AgentExecutionError, truncate_content  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sandlot.integrations.smolagents needs smolagents ({exc}); "
        "install it with: pip install 'sandlot[smolagents]'"
    ) from exc

__all__ = ["SandlotExecutor"]

# Names this module owns in the sandbox's namespace.
RESERVED_PREFIX = "_sandlot_smol"
VARIABLES_TOOL = "_sandlot_smol_variables"  # the host call through which variables arrive
FINAL_SIGNAL = "_SandlotSmolFinal"  # the exception final_answer raises to end the code
FINAL_ANSWER = "final_answer"

# Run once in each sandbox: the signal, the wrapper of tool stubs, the variable loader.
SETUP = package_text("sandlot.integrations", "in_sandbox/smolagents_setup.py")


def _check_name(name: object, what: str) -> str:
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or name.startswith(RESERVED_PREFIX)
        or name == "ToolError"
    ):
        raise ValueError(
            f"{what} {name!r} is not usable: it must be a Python identifier, not a keyword, "
            f"not ToolError, and not start with {RESERVED_PREFIX!r}"
        )
    return name


def _check_arguments(
    name: str, tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> None:
    """Refuse a call that ``tool`` does not declare: keywords not among a smolagents
    ``Tool``'s ``inputs`` (``sanitize_inputs_outputs`` included), more positional
    arguments than inputs; for other callables (managed agents) their signature."""
    if isinstance(tool, Tool):
        inputs = list(tool.inputs)
        unknown = [key for key in kwargs if key not in inputs]
        if unknown or len(args) > len(inputs):
            raise TypeError(
                f"{name}() takes {inputs} as its inputs; it was given "
                f"{len(args)} positional arguments and the keywords {list(kwargs)}"
            )
        return
    try:
        inspect.signature(tool).bind(*args, **kwargs)
    except ValueError:  # no signature to check against
        return


def _crosses(value: Any) -> bool:
    """Whether ``value`` can cross the sandbox boundary as it is (JSON values, bytes,
    numpy arrays)."""
    try:
        codec.encode(value)
    except (TypeError, RecursionError):
        return False
    return True


def _plain(value: Any) -> Any:
    """``value`` where it can cross as it is, else its JSON form (pydantic models,
    dataclasses, dates, sets, ...); raises ``TypeError`` where neither can."""
    if _crosses(value):
        return value
    try:
        plain = to_jsonable_python(value)
    except (PydanticSerializationError, ValueError, TypeError):
        plain = None
    if plain is None or not _crosses(plain):
        raise TypeError(f"a {type(value).__name__} cannot enter the sandbox")
    return plain


def _into_sandbox(value: Any) -> Any:
    """A tool's result as it enters the sandbox: as it is, else its JSON form, else
    its ``str()``."""
    try:
        return _plain(value)
    except TypeError:
        return str(value)


def _size(args: list[Any], kwargs: dict[str, Any]) -> int:
    """Bytes that ``args`` and ``kwargs`` take as they cross the sandbox boundary."""
    structure, payload = codec.encode([args, kwargs])
    return len(payload) + len(json.dumps(structure))


class SandlotExecutor(PythonExecutor):  # type: ignore[misc]
    """A smolagents ``PythonExecutor`` whose code runs in a sandlot sandbox.

    Give it to a ``CodeAgent``::

        with CodeAgent(tools=[...], model=model, executor=SandlotExecutor()) as agent:
            agent.run("...")

    Semantics, beside smolagents' ``LocalPythonExecutor``:

    - The code is real CPython in one interpreter per executor: variables,
      imports and functions persist from step to step (and from run to run of
      the same agent) until ``cleanup``. Any module installed in the sandbox can
      be imported (``config.python_packages``); the sandbox, not an import list,
      is the wall.
    - ``CodeOutput.output`` is the ``repr`` of the step's last expression (None
      when it has none), as smolagents' remote executors give it; on a final
      answer it is the value ``final_answer`` returned on the host. ``logs`` is
      what the code printed, stdout then stderr.
    - Tools and managed agents run on the host, called with the arguments the
      code passed (JSON values, bytes, numpy arrays; tuples arrive as lists).
      Their results enter the sandbox as they are where they can, else in their
      JSON form, else as ``str()``. A failed or refused call is a ``ToolError``
      (a ``RuntimeError``) in the code. ``final_answer``'s value crosses in its
      JSON form (sets as sorted lists, other objects as ``str()``) when it
      cannot cross as it is.
    - An exception in the code, a step over ``timeout`` (interrupted; the state
      is kept) and a sandbox that died (out of memory, killed) raise
      ``AgentExecutionError``. After a death the next step runs in a fresh
      sandbox, with the tools and the variables sent so far; the message says
      that the state was lost.

    Args:
        config: the sandbox's configuration (memory, CPU, packages, network, ...);
            the defaults of ``SandboxConfig`` when None.
        backend: where the sandbox runs: a backend, a name (``"local"``,
            ``"ray"``), or None for ``$SANDLOT_BACKEND``, else local.
        pool: borrow the sandbox from this ``SandboxPool`` instead of starting
            one (``config`` and ``backend`` are then the pool's); ``cleanup``
            returns it.
        timeout: seconds one step may run, tool calls included; None for no
            limit beyond the sandbox's lifetime. smolagents' default, 30.
        max_print_outputs_length: characters of logs handed back per step, cut
            in the middle as smolagents does; its default, 50 000.
        logger: the ``AgentLogger`` that the ``AgentExecutionError`` raised here
            logs to; a silent one when None (``CodeAgent`` logs the error itself).
    """

    def __init__(
        self,
        *,
        config: SandboxConfig | None = None,
        backend: BackendSpec = None,
        pool: SandboxPool | None = None,
        timeout: float | None = MAX_EXECUTION_TIME_SECONDS,
        max_print_outputs_length: int | None = None,
        logger: AgentLogger | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive or None")
        if pool is not None and (config is not None or backend is not None):
            raise ValueError("pass either pool or config and backend: a pool has its own")
        self.pool = pool
        self.config = pool.config if pool is not None else config or SandboxConfig()
        self.backend = None if pool is not None else backends.resolve(backend)
        self.timeout = timeout
        self.max_print_outputs_length = max_print_outputs_length or DEFAULT_MAX_LEN_OUTPUT
        self.logger = logger if logger is not None else AgentLogger(level=LogLevel.OFF)
        #: What the last step printed, where ``CodeAgent`` looks for a failed step's logs.
        self.state: dict[str, Any] = {"_print_outputs": ""}
        self._redactor = Redactor.for_config(self.config)
        self._shown = Sink(self._redactor, terminal=True)  # text smolagents prints
        self._tools: dict[str, Callable[..., Any]] = {}
        self._variables: dict[str, Any] = {}  # every variable sent, for a fresh sandbox
        self._pending: dict[str, Any] = {}  # those the sandbox has not fetched yet
        self._sandbox: Sandbox | None = None
        self._lease: contextlib.ExitStack | None = None
        self._ended = False
        self._lock = threading.RLock()  # one step (or send) at a time
        self._stepping = False
        self._final: tuple[Any] | None = None
        self._context: contextvars.Context | None = None

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox the code runs in (files, processes), once started; None before
        the first use and after ``cleanup``."""
        return self._sandbox

    # -- lifetime ------------------------------------------------------------

    def start(self) -> SandlotExecutor:
        """Start (or borrow) the sandbox, with the tools and variables sent so far; a no-op
        when it is running. Raises ``AgentExecutionError`` when it cannot start."""
        with self._lock:
            if self._ended:
                raise self._error("this SandlotExecutor was cleaned up; create a new one")
            if self._sandbox is not None:
                return self
            lease = contextlib.ExitStack()
            try:
                if self.pool is not None:
                    sandbox = lease.enter_context(self.pool.sandbox(clean=True))
                else:
                    sandbox = lease.enter_context(Sandbox(self.config, backend=self.backend))
                sandbox.register_tool(VARIABLES_TOOL, self._take_variables)
                setup = sandbox.run_code(SETUP)
                if setup.error is not None:
                    raise SandboxError(f"the sandbox's setup failed: {setup.error.traceback}")
                self._sandbox, self._lease = sandbox, lease
                self._pending = dict(self._variables)
                self._install(self._tools, [])
            except (SandboxError, OSError) as exc:
                self._sandbox, self._lease = None, None
                with contextlib.suppress(Exception):
                    lease.close()
                raise self._error(f"the sandbox did not start: {exc}") from exc
            return self

    def cleanup(self) -> None:
        """End the sandbox (or return it to its pool); safe to call more than once. The
        executor cannot be used afterwards."""
        with self._lock:
            self._ended = True
            self._drop()

    def __enter__(self) -> SandlotExecutor:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.cleanup()

    def _drop(self) -> None:
        """Let go of the sandbox: terminate it, or hand it back to its pool."""
        lease, self._sandbox, self._lease = self._lease, None, None
        if lease is not None:
            with contextlib.suppress(SandboxError):
                lease.close()

    def _error(self, message: str) -> AgentExecutionError:
        return AgentExecutionError(self._shown.text(message), self.logger)

    # -- what CodeAgent sends ------------------------------------------------

    def send_tools(self, tools: dict[str, Any]) -> None:
        """Make ``tools`` (smolagents ``Tool``s, managed agents, any callables, by name)
        the host functions the code may call; tools sent before and missing here are
        removed. Starts the sandbox (``agent.run`` sends the tools before its first
        step), so that its start is not part of a step."""
        for name, tool in tools.items():
            _check_name(name, "tool name")
            if not callable(tool):
                raise TypeError(f"tool {name!r} is not callable: {tool!r}")
        with self._lock:
            dropped = [name for name in self._tools if name not in tools]
            self._tools = dict(tools)
            if self._sandbox is None:
                self.start()
            else:
                self._guard(lambda: self._install(self._tools, dropped))

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Bind ``variables`` as globals in the sandbox (JSON values, bytes and numpy
        arrays as they are; other values in their JSON form): now if it is running,
        else when it starts."""
        plain = {}
        for name, value in variables.items():
            _check_name(name, "variable name")
            try:
                plain[name] = _plain(value)
            except TypeError as exc:
                raise TypeError(
                    f"variable {name!r}: {exc}; pass JSON values, bytes, numpy arrays, or "
                    "values pydantic can serialise"
                ) from None
        if not plain:
            return
        with self._lock:
            self._variables.update(plain)
            self._pending.update(plain)
            sandbox = self._sandbox
            if sandbox is not None:
                self._guard(lambda: self._run_setup(sandbox, "_sandlot_smol_load()"))

    def _install(self, tools: Mapping[str, Any], dropped: list[str]) -> None:
        """Register ``tools`` in the sandbox, wrap their stubs, remove ``dropped``, and
        bind the variables not yet fetched."""
        sandbox = self._sandbox
        assert sandbox is not None
        for name, tool in tools.items():
            handler = self._final_answer if name == FINAL_ANSWER else self._dispatch
            doc = getattr(tool, "description", None) or inspect.getdoc(tool) or ""
            sandbox.register_tool(name, functools.partial(handler, name), doc)
        lines = [f"_sandlot_smol_wrap({list(tools)!r}, {FINAL_ANSWER!r}, {dropped!r})"]
        if self._pending:
            lines.append("_sandlot_smol_load()")
        self._run_setup(sandbox, "\n".join(lines))

    def _run_setup(self, sandbox: Sandbox, code: str) -> None:
        result = sandbox.run_code(code)
        if result.error is not None:
            raise SandboxError(f"preparing the sandbox failed: {result.error.traceback}")

    def _guard(self, call: Callable[[], None]) -> None:
        """Run a preparing call; a sandbox that died or refused is dropped, so that the
        next use starts a fresh one."""
        try:
            call()
        except SandboxError as exc:
            self._drop()
            raise self._error(f"the sandbox could not be prepared: {exc}") from exc

    # -- steps ---------------------------------------------------------------

    def __call__(self, code_action: str) -> CodeOutput:
        """Run one step's code; a final answer, or its last value, with what it printed.

        Raises ``AgentExecutionError`` for an exception in the code, a timeout, or a
        sandbox that died (the next step then gets a fresh sandbox).
        """
        if not isinstance(code_action, str):
            raise TypeError(f"code must be a str, not {type(code_action).__name__}")
        with self._lock:
            self.state["_print_outputs"] = ""
            self.start()
            sandbox = self._sandbox
            assert sandbox is not None
            self._final, self._context = None, contextvars.copy_context()
            self._stepping = True
            try:
                result = sandbox.run_code(code_action, timeout=self.timeout)
            except SandboxDied as exc:
                self._drop()
                raise self._error(
                    f"The sandbox died ({exc.cause}): {exc.detail or 'no detail'}. Its state "
                    "(variables, imports, functions) is lost; the next code runs in a fresh "
                    "sandbox that has the tools and the task's variables again."
                ) from exc
            except SandboxError as exc:
                raise self._error(f"The sandbox refused the code: {exc}") from exc
            finally:
                self._stepping = False
            return self._outcome(result)

    def _outcome(self, result: CodeResult) -> CodeOutput:
        printed = result.stdout
        if result.stderr:
            printed += ("" if not printed or printed.endswith("\n") else "\n") + result.stderr
        logs = truncate_content(self._shown.text(printed), self.max_print_outputs_length)
        self.state["_print_outputs"] = logs
        final, self._final = self._final, None
        error = result.error
        if error is None:
            output = None if result.value is None else self._shown.text(result.value)
            return CodeOutput(output=output, logs=logs, is_final_answer=False)
        if error.name == FINAL_SIGNAL and final is not None:
            return CodeOutput(output=final[0], logs=logs, is_final_answer=True)
        if result.timed_out:
            raise self._error(
                f"Code execution exceeded the maximum execution time of {self.timeout:g} seconds "
                "and was interrupted; the sandbox keeps its state.\n"
                f"{error.traceback.rstrip()}"
            )
        raise self._error(f"Code execution failed:\n{error.traceback.rstrip() or error}")

    # -- calls from the sandbox ----------------------------------------------

    def _take_variables(self) -> dict[str, Any]:
        """Host end of ``_sandlot_smol_variables``: the variables not fetched yet."""
        pending, self._pending = self._pending, {}
        return pending

    def _arguments(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        """The tool and checked, redacted arguments for a call from the sandbox."""
        if not self._stepping:
            raise RuntimeError(f"{name}: host tools answer only while a step runs")
        tool = self._tools.get(name)
        if tool is None:
            raise LookupError(f"{name}: no such tool was sent to this executor")
        call_args, call_kwargs = list(args), dict(kwargs)
        _check_arguments(name, tool, call_args, call_kwargs)
        if self._redactor:
            call_args = Sink(self._redactor).data(call_args)
            call_kwargs = Sink(self._redactor).data(call_kwargs)
        return tool, call_args, call_kwargs

    def _run_tool(self, tool: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call ``tool`` in the context (context variables) of the step that called it."""
        context = self._context
        if context is None:
            return tool(*args, **kwargs)
        return context.copy().run(tool, *args, **kwargs)

    def _dispatch(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Host end of tool ``name``."""
        tool, call_args, call_kwargs = self._arguments(name, args, kwargs)
        return _into_sandbox(self._run_tool(tool, call_args, call_kwargs))

    def _final_answer(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Host end of ``final_answer``: run the tool and keep its value for this step.

        Arguments over the sandbox's ``max_output_bytes`` are refused before the tool
        sees them (the code gets a ``ToolError``).
        """
        tool, call_args, call_kwargs = self._arguments(name, args, kwargs)
        limit = self.config.max_output_bytes
        if _size(call_args, call_kwargs) > limit:
            raise ValueError(
                f"the answer is larger than this sandbox's max_output_bytes ({limit} bytes); "
                "give a shorter one (a summary, or the path of a file that holds the rest)"
            )
        value = self._run_tool(tool, call_args, call_kwargs)
        self._final = (self._shown.data(value),)
