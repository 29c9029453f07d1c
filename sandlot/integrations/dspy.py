"""``SandlotInterpreter``: DSPy's ``CodeInterpreter`` on a sandlot sandbox.

``dspy.RLM`` (and ``CodeAct``, ``ProgramOfThought``) run the code an LM writes
through a ``CodeInterpreter``. This one runs it in a sandlot sandbox: a live
CPython under bubblewrap that keeps its state between ``execute`` calls and
reaches the host only through the tools in ``interpreter.tools``.

How dspy.RLM drives it (3.3 and later): it creates one interpreter per call
(``interpreter_factory``, possibly from several threads at once), updates its
``tools`` dict (``llm_query``, ``llm_query_batched``, the user's tools, the
``__dspy_*`` tools of its sandboxed ``dspy`` facade) and sets ``output_fields``,
then calls ``execute(code, variables=inputs)`` once per iteration with the same
input values, and ``shutdown()`` at the end. ``execute`` returns the last
expression's value if it is not None, else the printed output, else None, or
``FinalOutput(dict)`` when the code called ``SUBMIT``; ``CodeExecutionError`` and
``SyntaxError`` go back to the LM as ``[Error] ...``; ``CodeInterpreterError``
ends the RLM call.

What crosses, and how:

- variables: written into the sandbox as files with the files API (raw UTF-8
  for a ``str``, JSON for anything else) and loaded there, so a long context
  never travels inside a code string; a ``str`` that is the same object as the
  one sent before is not sent again.
- tools and SUBMIT values: sandlot's host calls (JSON values, bytes, numpy
  arrays).
- secrets: every secret value of the sandbox's config (its ``env_file``
  entries and ``secrets``) is redacted from what goes back to DSPy: output,
  error messages, returned and submitted values, tool arguments.

docs/rlm-dspy.md lists where this interpreter and DSPy's own ones differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import json
import keyword
import posixpath
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .. import backends
from ..backends import BackendSpec
from ..config import SandboxConfig
from ..driver import codec
from ..errors import ConfigError, SandboxDied, SandboxError
from ..resources import package_text
from ..results import CodeResult
from ..secrets import Redactor
from ..sink import Sink
from ..sync import Sandbox

try:
    from dspy.primitives.code_interpreter import (  # type: ignore[import-untyped]
        CodeExecutionError,
        CodeInterpreterError,
        FinalOutput,
    )
    from dspy.utils.callback import BaseCallback, with_callbacks  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sandlot.integrations.dspy needs dspy ({exc}); "
        "install it with: pip install 'sandlot[dspy]'"
    ) from exc

__all__ = ["SandlotInterpreter", "SandlotInterpreterFactory"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# Names this module owns in the sandbox's namespace.
RESERVED_PREFIX = "_sandlot_dspy"
# The host function through which values from the sandbox (SUBMIT's, last expressions') arrive.
RECEIVE_TOOL = "_sandlot_dspy_receive"
SUBMIT_SIGNAL = "_SandlotDspySubmit"  # the exception SUBMIT raises to end the code
SYNTAX_ERRORS = frozenset({"SyntaxError", "IndentationError", "TabError"})
# The output-field types dspy writes into SUBMIT's signature (dspy's SIMPLE_TYPES).
ANNOTATED_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict"})
# In the JSON file of variables, a dict with keys other than str: {PAIRS: [[key, value], ...]}.
PAIRS = "_sandlot_dspy_pairs"
# What a returned value becomes when it is too deeply nested to redact.
WITHHELD = "[sandlot: value withheld: too deeply nested to check for secrets]"

# Run once in each sandbox. SUBMIT (defined per set of output fields) hands its
# fields to the host and raises _SandlotDspySubmit, which ends the code; the
# variables arrive as files that _sandlot_dspy_load reads and removes.
SETUP = package_text("sandlot.integrations", "in_sandbox/dspy_setup.py")


def _with_callbacks(fn: F) -> F:
    """dspy's ``with_callbacks`` (the ``on_interpreter_*`` callback hooks), typed."""
    return cast(F, with_callbacks(fn))


def _check_name(name: object, what: str) -> str:
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or name == "SUBMIT"
        or name.startswith(RESERVED_PREFIX)
    ):
        raise ValueError(
            f"{what} {name!r} is not usable: it must be a Python identifier, not a keyword, "
            f"not SUBMIT, and not start with {RESERVED_PREFIX!r}"
        )
    return name


def _check_tools(tools: Mapping[str, Callable[..., Any]]) -> None:
    for name, fn in tools.items():
        _check_name(name, "tool name")
        if not callable(fn):
            raise ValueError(f"tool {name!r} is not callable: {fn!r}")


def _submit_source(output_fields: list[dict[str, Any]] | None) -> str:
    """The source of ``SUBMIT`` for these output fields, as dspy's interpreters define it.

    Without fields it takes one value, submitted as ``{"output": value}``; with
    fields it takes them by position or keyword, so wrong arguments raise
    Python's own ``TypeError`` (``SUBMIT() missing 1 required positional
    argument: 'answer'``), as in dspy's ``PythonInterpreter``.
    """
    if not output_fields:
        params, names = ["output"], ["output"]
    else:
        params, names = [], []
        for field in output_fields:
            if not isinstance(field, Mapping):
                raise ValueError(f"an output field must be a dict with a 'name', not {field!r}")
            name = _check_name(field.get("name"), "output field name")
            if name in names:
                raise ValueError(f"output field {name!r} is named twice")
            kind = field.get("type")
            names.append(name)
            params.append(f"{name}: {kind}" if kind in ANNOTATED_TYPES else name)
    fields = ", ".join(f"{name!r}: {name}" for name in names)
    return (
        f"def SUBMIT({', '.join(params)}):\n"
        '    """Submit the final output; this ends the code at once."""\n'
        f"    _sandlot_dspy_submit({{{fields}}})\n"
    )


def _keywords_where_possible(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Turn positional arguments into keywords by ``fn``'s signature.

    DSPy calls tools with keyword arguments (``dspy.RLM`` wraps user tools as
    ``invoke(**kwargs)``), while code in the sandbox often calls them
    positionally (``lookup("x")``).
    """
    if not args:
        return args, kwargs
    try:
        signature = inspect.signature(fn)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs  # the call itself says what is wrong
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return args, kwargs
        elif kind is inspect.Parameter.VAR_KEYWORD:
            keywords.update(value)
        else:
            keywords[name] = value
    return positional, keywords


class _NoJsonForm(Exception):
    """A value, or a dict key, that has no JSON form; ``what`` says which (``a Weird``)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _set_order(items: list[Any]) -> list[Any]:
    """A set's items (already plain) in a fixed order: their own, else by type and ``repr``,
    so that the same set gives the same list whatever the hash seed."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda item: (type(item).__name__, repr(item)))


def _crosses_as_is(value: Any) -> bool:
    """Whether a tool result's part crosses into the sandbox as it is: bytes, numpy arrays."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    if type(value).__module__.split(".")[0] not in ("numpy", "torch"):
        return False
    try:
        codec.encode(value)
    except TypeError:
        return False
    return True


class _Plain:
    """Turns a value from the host into plain data the way DSPy's interpreters do before
    JSON: tuples become lists, sets sorted lists, pydantic models and dataclasses dicts,
    dates, enums, UUIDs and the like their JSON form (pydantic's ``to_jsonable_python``).

    For a tool's result (``for_tool``), named tuples become dicts (``_asdict()``), bytes and
    numpy arrays stay as they are, and dict keys become strings as JSON writes them (``1``
    becomes ``"1"``). For a variable, named tuples become lists like any tuple, bytes
    their UTF-8 text, and dict keys of None, bool, int or float are kept: such a dict is
    written as ``{PAIRS: [[key, value], ...]}`` (and ``pairs`` is set) for the sandbox
    to rebuild. Anything else raises :class:`_NoJsonForm`; deep nesting (or a value that
    holds itself) ``RecursionError``.
    """

    def __init__(self, *, for_tool: bool) -> None:
        self.for_tool = for_tool
        self.pairs = False

    def __call__(self, value: Any) -> Any:
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, dict):
            return self._dict(value)
        if self.for_tool and isinstance(value, tuple) and hasattr(value, "_asdict"):
            return self._dict(value._asdict())
        if isinstance(value, (list, tuple)):
            return [self(item) for item in value]
        if isinstance(value, (set, frozenset)):
            return _set_order([self(item) for item in value])
        if isinstance(value, BaseModel):
            try:
                return self(value.model_dump())  # python mode: its sets are still sets
            except _NoJsonForm:
                return self(self._leaf(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._dict({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        if self.for_tool and _crosses_as_is(value):
            return value
        return self(self._leaf(value))

    @staticmethod
    def _leaf(value: Any) -> Any:
        try:
            return to_jsonable_python(value)
        except (PydanticSerializationError, ValueError, TypeError):
            raise _NoJsonForm(f"a {type(value).__name__}") from None

    def _dict(self, value: Mapping[Any, Any]) -> Any:
        plain: dict[Any, Any] = {}
        keyed = False  # a key other than str
        for key, item in value.items():
            key = self._key(key)
            keyed = keyed or not isinstance(key, str)
            plain[key] = self(item)
        if self.for_tool or not (keyed or (len(plain) == 1 and PAIRS in plain)):
            return plain
        self.pairs = True
        return {PAIRS: [[key, item] for key, item in plain.items()]}

    def _key(self, key: Any) -> Any:
        if isinstance(key, str):
            return key
        if not (key is None or isinstance(key, (bool, int, float))):
            what = f"a dict key of type {type(key).__name__}"
            try:
                key = to_jsonable_python(key)  # a date, an enum, a UUID: its JSON form
            except (PydanticSerializationError, ValueError, TypeError):
                raise _NoJsonForm(what) from None
            if isinstance(key, str):
                return key
            if not (key is None or isinstance(key, (bool, int, float))):
                raise _NoJsonForm(what)
        return json.dumps(key) if self.for_tool else key


def _tool_result(value: Any) -> Any:
    """A tool's result as it enters the sandbox, as DSPy's interpreters send it.

    Its plain form (see :class:`_Plain`: named tuples as dicts, sets sorted, models
    and dataclasses as dicts, dict keys as strings), with bytes and numpy arrays as
    they are; a result with no JSON form arrives as its ``str()``.
    """
    try:
        return _Plain(for_tool=True)(value)
    except (_NoJsonForm, RecursionError):
        return str(value)


def _json_entry(name: str, value: Any, plain: _Plain) -> str:
    """``"name": <value as JSON>``, for the file of JSON variables."""
    try:
        data = plain(value)
    except _NoJsonForm as exc:
        raise CodeInterpreterError(
            f"variable {name!r} holds {exc.what}, which has no JSON form; pass JSON values "
            "(dict keys str, int, float, bool or None), pydantic models, dataclasses or other "
            "values pydantic can serialise"
        ) from None
    except RecursionError:
        raise CodeInterpreterError(
            f"variable {name!r} is nested too deeply, or holds itself"
        ) from None
    return f"{json.dumps(name)}: {json.dumps(data, ensure_ascii=False)}"


def _over(value: Any, limit: int) -> bool:
    """Whether ``value`` (as sent from the sandbox: JSON values, bytes, numpy arrays)
    holds more than ``limit`` bytes; stops counting once it does.

    Strings count their UTF-8 bytes, bytes and arrays their length, numbers and
    the items of lists and dicts 8 bytes each, so a value of many small parts
    counts too. Checked before a container's items are walked, so the walk
    itself holds at most about ``limit / 8`` references.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            total += len(item)
        elif isinstance(item, dict):
            total += 16 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += 8 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += max(int(getattr(item, "nbytes", 8)), 8)
        if total > limit:
            return True
    return False


def _output(result: CodeResult) -> str:
    """What the code printed: stdout, then stderr."""
    out = result.stdout
    if result.stderr:
        if out and not out.endswith("\n"):
            out += "\n"
        out += result.stderr
    return out


class SandlotInterpreter:
    """A DSPy ``CodeInterpreter`` whose code runs in a sandlot sandbox.

    Use it wherever DSPy takes an interpreter::

        rlm = dspy.RLM("context, query -> answer",
                       interpreter_factory=SandlotInterpreter.factory(config=config))

    State persists across ``execute`` calls until ``shutdown``. Each instance
    owns one sandbox and serves one thread at a time; instances may be created
    and used on many threads at once.

    Semantics, matching dspy's own interpreters (docs/rlm-dspy.md lists where
    they differ, and why):

    - ``execute`` returns the value of the code's last expression when it is not
      None (as a JSON value, bytes or a numpy array; other values in their JSON
      form, sets as sorted lists, or their ``repr``), else what it printed
      (stdout, then stderr), else None; ``FinalOutput(dict)`` when it called
      ``SUBMIT``.
    - Variables are injected as globals before the code runs, every call (a
      name the code reassigned is reset). A ``str`` arrives exactly; other values
      go through JSON, so tuples (named ones too) become lists and sets sorted
      lists; dict keys of None, bool, int and float stay as they are; pydantic
      models, dataclasses, dates and the like become their JSON form (as in
      dspy's ``PythonInterpreter``); a value with no JSON form raises
      ``CodeInterpreterError``.
    - Tools are called with the arguments the code gives; positional ones are
      mapped to the tool's parameter names first, dict keys that are not
      strings are sent as JSON writes them. Coroutine tools are awaited. A
      result arrives in its JSON form (named tuples as dicts, sets as sorted
      lists), bytes and numpy arrays as they are; a result with no JSON form
      arrives as its ``str()``. A tool that raises shows up in the sandbox as
      ``ToolError``, a ``RuntimeError``.
    - An exception in the code raises ``CodeExecutionError`` (its traceback,
      then any output printed before it); invalid syntax raises ``SyntaxError``;
      ``timeout`` interrupts the code and raises ``CodeExecutionError`` with
      ``TimeoutError``, keeping the state.
    - A sandbox that died (killed, out of memory, lifetime over, ignoring an
      interrupt) raises ``CodeInterpreterError`` naming the cause, now and on
      every later call: its state is gone and no new session starts silently.
    - The config's secret values (its ``env_file`` entries and ``secrets``) are
      replaced by ``[redacted NAME]`` in everything handed to DSPy: printed
      output, error messages, returned and submitted values, tool arguments.

    Args:
        tools: host functions the code may call by name; the dict is ``tools``,
            which callers (``dspy.RLM``) update between calls.
        output_fields: ``[{"name": ..., "type": ...}]``, the parameters of
            ``SUBMIT``; None means ``SUBMIT(output)``.
        config: the sandbox's configuration (memory, lifetime, packages,
            isolation, ...); the defaults of ``SandboxConfig`` when None.
        timeout: seconds one ``execute`` may run, tool calls included; None for
            no limit beyond the sandbox's lifetime.
        callbacks: DSPy callbacks for this instance (``on_interpreter_*``).
        backend: where the sandbox runs: a backend, a name (``"local"``), or None
            for ``$SANDLOT_BACKEND``, else local.
    """

    execution_instructions = (
        "Code runs in CPython inside an isolated sandbox with no network access. State, imports "
        "and functions persist across executions. The standard library is available, plus any "
        "packages the sandbox was configured with. Host tools and SUBMIT are global functions; "
        "their arguments and results must be JSON values, bytes or numpy arrays. A failed tool "
        "call raises RuntimeError. Files written under the working directory stay for the "
        "session."
    )

    def __init__(
        self,
        tools: dict[str, Callable[..., Any]] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        *,
        config: SandboxConfig | None = None,
        timeout: float | None = None,
        callbacks: list[BaseCallback] | None = None,
        backend: BackendSpec = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive or None")
        self.tools: dict[str, Callable[..., Any]] = dict(tools or {})
        _check_tools(self.tools)
        self.output_fields: list[dict[str, Any]] | None = (
            None if output_fields is None else [dict(field) for field in output_fields]
        )
        _submit_source(self.output_fields)  # validates the fields
        self.config = config if config is not None else SandboxConfig()
        self.backend = backends.resolve(backend)
        self.timeout = timeout
        self.callbacks: list[BaseCallback] = list(callbacks or [])
        self._sandbox: Sandbox | None = None
        self._ended = False
        self._death: str | None = None  # why the sandbox is gone, once it died
        self._start_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._registered: dict[str, Callable[..., Any]] = {}
        # Tools registered but not yet wrapped in the sandbox, and removed but not yet
        # dropped there: kept until a preparation cell has done it.
        self._unwrapped: list[str] = []
        self._dropped: list[str] = []
        self._submit_installed: str | None = None
        self._texts: dict[str, str] = {}  # the str variables the sandbox holds, by name
        self._files = 0
        self._received: tuple[Any] | None = None  # the last value the sandbox sent, boxed
        self._call_context: contextvars.Context | None = None
        self._redactor: Redactor | None = None  # the config's secrets, read once by start()

    @classmethod
    def factory(
        cls,
        *,
        config: SandboxConfig | None = None,
        timeout: float | None = None,
        callbacks: list[BaseCallback] | None = None,
        backend: BackendSpec = None,
    ) -> SandlotInterpreterFactory:
        """A zero-argument factory for ``interpreter_factory=`` that makes interpreters
        with these settings and tells dspy.RLM what the runtime is."""
        return SandlotInterpreterFactory(
            config=config, timeout=timeout, callbacks=callbacks, backend=backend
        )

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox the code runs in (files, processes), once started; None before
        ``start`` and after ``shutdown``."""
        return self._sandbox

    # -- lifetime ------------------------------------------------------------

    @_with_callbacks
    def start(self) -> None:
        """Start the sandbox; a no-op when it is running.

        Raises ``CodeInterpreterError`` after ``shutdown`` or once the sandbox
        died: a lost session is never replaced silently.
        """
        with self._start_lock:
            self._check_usable()
            if self._sandbox is not None:
                return
            if self._redactor is None:
                try:
                    self._redactor = Redactor.for_config(self.config)
                except ConfigError as exc:  # names no secret value
                    raise CodeInterpreterError(f"the sandbox did not start: {exc}") from exc
            sandbox = Sandbox(
                self.config, backend=self.backend, tools={RECEIVE_TOOL: self._receive}
            )
            try:
                sandbox.start()
                setup = sandbox.run_code(SETUP)
            except (SandboxError, OSError) as exc:
                with contextlib.suppress(Exception):
                    sandbox.terminate()
                raise CodeInterpreterError(
                    self._redact(f"the sandbox did not start: {exc}")
                ) from exc
            if setup.error is not None:
                sandbox.terminate()
                raise CodeInterpreterError(
                    self._redact(f"the sandbox's setup failed: {setup.error.traceback}")
                )
            self._sandbox = sandbox

    @_with_callbacks
    def shutdown(self) -> None:
        """End the sandbox and its session; safe to call more than once."""
        with self._start_lock:
            self._ended = True
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            with contextlib.suppress(SandboxError):
                sandbox.terminate()

    def __enter__(self) -> SandlotInterpreter:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    def _check_usable(self) -> None:
        if self._ended:
            raise CodeInterpreterError(
                "this SandlotInterpreter was shut down; create a new one for a fresh session"
            )
        if self._death is not None:
            raise CodeInterpreterError(self._death)

    def _guard(self, call: Callable[[], T]) -> T:
        """Run a sandbox call; a dead sandbox ends the session for good."""
        try:
            return call()
        except SandboxDied as exc:
            if self._ended:
                raise CodeInterpreterError("this SandlotInterpreter was shut down") from exc
            self._death = self._redact(
                f"the sandbox died ({exc.cause}): {exc.detail or 'no detail'}; its interpreter "
                "state is lost. Create a new SandlotInterpreter for a fresh session."
            )
            raise CodeInterpreterError(self._death) from exc
        except SandboxError as exc:
            raise CodeInterpreterError(
                self._redact(f"the sandbox refused the request: {exc}")
            ) from exc

    # -- secrets -------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """``text`` with the config's secret values replaced by ``[redacted NAME]``."""
        redactor = self._redactor
        return redactor.redact(text) if redactor else text

    def _redact_value(self, value: Any) -> Any:
        """A value from the sandbox with the secret values in its strings and bytes replaced."""
        redactor = self._redactor
        if not redactor:
            return value
        try:
            return Sink(redactor).data(value)
        except RecursionError:
            return WITHHELD

    # -- running code --------------------------------------------------------

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Same as :meth:`execute`."""
        return self.execute(code, variables)

    @_with_callbacks
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code`` in the sandbox's persistent interpreter, ``variables`` bound first.

        Returns ``FinalOutput`` if the code called ``SUBMIT``, else the last
        expression's value if not None, else the printed output, else None.
        Raises ``CodeExecutionError`` for an exception in the code (or a timeout),
        ``SyntaxError`` for invalid code, and ``CodeInterpreterError`` when the
        sandbox is gone or the call cannot be set up.
        """
        if not isinstance(code, str):
            raise CodeInterpreterError(f"code must be a str, not {type(code).__name__}")
        if variables is not None and not isinstance(variables, Mapping):
            raise CodeInterpreterError("variables must be a dict of names to values")
        if not self._run_lock.acquire(blocking=False):
            raise CodeInterpreterError(
                "this SandlotInterpreter is already running code; use one interpreter per thread"
            )
        try:
            self._check_usable()
            if self._sandbox is None:
                self.start()
            sandbox = self._sandbox
            if sandbox is None:  # shut down by another thread meanwhile
                raise CodeInterpreterError("this SandlotInterpreter was shut down")
            self._call_context = contextvars.copy_context()
            self._prepare(sandbox, dict(variables or {}))
            self._received = None
            result = self._guard(lambda: sandbox.run_code(code, timeout=self.timeout))
            return self._outcome(sandbox, result)
        finally:
            self._run_lock.release()

    def _prepare(self, sandbox: Sandbox, variables: dict[str, Any]) -> None:
        """Bring the sandbox up to date: tools, SUBMIT, and the variables."""
        try:
            _check_tools(self.tools)
            submit = _submit_source(self.output_fields)
            for name in variables:
                _check_name(name, "variable name")
                if name in self.tools:
                    raise ValueError(f"variable {name!r} has the name of a tool")
        except ValueError as exc:
            raise CodeInterpreterError(str(exc)) from exc
        dropped, registered = self._sync_tools(sandbox)
        self._unwrapped = [n for n in self._unwrapped if n not in dropped + registered]
        self._unwrapped += registered
        self._dropped = [n for n in self._dropped if n not in registered] + dropped
        dropped = self._dropped
        lines = []
        if submit != self._submit_installed:
            lines.append(submit)
        if self._unwrapped:
            lines.append(f"_sandlot_dspy_wrap({self._unwrapped!r})")
        texts, json_path, pairs, sent = self._send_variables(sandbox, variables)
        if dropped or texts or json_path is not None:
            lines.append(f"_sandlot_dspy_load({dropped!r}, {texts!r}, {json_path!r}, {pairs!r})")
        if not lines:
            return
        result = self._guard(lambda: sandbox.run_code("\n".join(lines)))
        if result.error is not None:
            raise CodeInterpreterError(
                self._redact(
                    f"binding the variables in the sandbox failed: {result.error.traceback}"
                )
            )
        self._submit_installed = submit
        self._unwrapped, self._dropped = [], []
        for name in variables:
            self._texts.pop(name, None)
        self._texts.update(sent)

    def _sync_tools(self, sandbox: Sandbox) -> tuple[list[str], list[str]]:
        """Register tools that are new or changed; return the names of removed ones and
        of those registered now (for ``_sandlot_dspy_wrap``)."""
        current = dict(self.tools)
        registered = []
        for name, fn in current.items():
            if self._registered.get(name) is not fn:
                dispatch = functools.partial(self._dispatch, name)
                doc = inspect.getdoc(fn) or ""
                self._guard(functools.partial(sandbox.register_tool, name, dispatch, doc))
                self._registered[name] = fn
                registered.append(name)
        dropped = [name for name in self._registered if name not in current]
        for name in dropped:
            del self._registered[name]
        return dropped, registered

    def _send_variables(
        self, sandbox: Sandbox, variables: dict[str, Any]
    ) -> tuple[list[tuple[str, str | None]], str | None, bool, dict[str, str]]:
        """Write the variables into the sandbox as files.

        Returns what ``_sandlot_dspy_load`` takes (text variables with their file,
        or None where the sandbox holds that very string already; the JSON file
        of the others; whether that file holds dicts written as key-value pairs)
        and the strings sent.
        """
        plain = _Plain(for_tool=False)
        encoded = [  # first, so that a value with no JSON form fails before anything is sent
            _json_entry(name, value, plain)
            for name, value in variables.items()
            if not isinstance(value, str)
        ]
        texts: list[tuple[str, str | None]] = []
        sent: dict[str, str] = {}
        for name, value in variables.items():
            if isinstance(value, str):
                held = self._texts.get(name) is value
                texts.append((name, None if held else self._write(sandbox, "txt", value)))
                sent[name] = value
        json_path = (
            self._write(sandbox, "json", "{" + ", ".join(encoded) + "}") if encoded else None
        )
        return texts, json_path, plain.pairs, sent

    def _write(self, sandbox: Sandbox, suffix: str, text: str) -> str:
        self._files += 1
        path = posixpath.join(sandbox.workdir, ".sandlot-dspy", f"{self._files}.{suffix}")
        data = text.encode("utf-8", "surrogatepass")
        self._guard(lambda: sandbox.files.write(path, data))
        return path

    def _outcome(self, sandbox: Sandbox, result: CodeResult) -> Any:
        error = result.error
        if error is None:
            if result.value is None:
                return self._redact(_output(result)) or None
            return self._redact_value(self._last_value(sandbox, result.value))
        if error.name == SUBMIT_SIGNAL:
            received = self._take()
            if received is None:
                raise CodeInterpreterError("SUBMIT ended the code, but its value never arrived")
            return FinalOutput(self._redact_value(received[0]))
        if error.name in SYNTAX_ERRORS:
            raise SyntaxError(self._redact(error.traceback.rstrip() or str(error)))
        message = error.traceback.rstrip() or str(error)
        if result.timed_out:  # the traceback shows the interrupt; say why it came
            message += f"\n{error}"
        printed = _output(result)
        if printed:
            message += f"\n\nOutput before the error:\n{printed}"
        raise CodeExecutionError(self._redact(message))

    def _last_value(self, sandbox: Sandbox, shown: str) -> Any:
        """The last expression's value itself (the driver keeps it as ``_``); its
        ``repr`` if it cannot be had."""
        self._received = None
        fetched = self._guard(lambda: sandbox.run_code("_sandlot_dspy_send(_)"))
        received = self._take()
        if fetched.error is not None or received is None:
            return shown  # the driver's repr, cut at max_output_bytes
        return received[0]

    def _take(self) -> tuple[Any] | None:
        """The last value received (boxed), or None; the host keeps it no longer."""
        received, self._received = self._received, None
        return received

    # -- calls from the sandbox ----------------------------------------------

    def _receive(self, value: Any) -> None:
        """Host end of ``_sandlot_dspy_send``: a SUBMIT's fields or a last value.

        Only the last value of a cell is read, so only it is kept: however often
        the sandbox calls this, the host holds one value, and none over the
        sandbox's ``max_output_bytes`` (the code sees that as a ``ToolError``).
        """
        self._received = None
        limit = self.config.max_output_bytes
        if _over(value, limit):
            raise ValueError(
                f"the value is larger than this sandbox's max_output_bytes ({limit} bytes), "
                "so the host did not take it; return or SUBMIT something smaller (a summary, "
                "or the path of a file that holds the rest)"
            )
        self._received = (value,)

    def _dispatch(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Host end of tool ``name``, in the context (dspy settings) of the ``execute`` call.

        The arguments reach the tool with the config's secret values redacted, as
        everything else the sandbox hands to DSPy (``llm_query`` sends its prompt on).
        """
        call_args = self._redact_value(list(args))
        call_kwargs = self._redact_value(kwargs)
        if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
            raise ValueError(f"{name}: its arguments are nested too deeply to check for secrets")
        context = self._call_context
        if context is None:
            return self.invoke_tool(name, call_args, call_kwargs)
        return context.copy().run(self.invoke_tool, name, call_args, call_kwargs)

    @_with_callbacks
    def invoke_tool(self, tool_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call tool ``tool_name`` from ``tools`` as the sandboxed code asked; return its
        result as it enters the sandbox (its JSON form, else its ``str()``)."""
        fn = self.tools.get(tool_name)
        if fn is None:
            raise CodeInterpreterError(f"Unknown tool: {tool_name}")
        call_args, call_kwargs = _keywords_where_possible(fn, args, kwargs)
        result = fn(*call_args, **call_kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return _tool_result(result)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class SandlotInterpreterFactory:
    """Makes a :class:`SandlotInterpreter` per call, with fixed settings.

    A zero-argument callable, as ``interpreter_factory`` wants; safe to call from
    many threads at once. Its ``execution_instructions`` tell dspy.RLM's prompt
    what the runtime is.
    """

    execution_instructions = SandlotInterpreter.execution_instructions

    def __init__(
        self,
        *,
        config: SandboxConfig | None = None,
        timeout: float | None = None,
        callbacks: list[BaseCallback] | None = None,
        backend: BackendSpec = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.callbacks = callbacks
        self.backend = backends.resolve(backend)  # an unknown name fails here, not per call

    def __call__(self) -> SandlotInterpreter:
        return SandlotInterpreter(
            config=self.config, timeout=self.timeout, callbacks=self.callbacks, backend=self.backend
        )
