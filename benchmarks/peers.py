"""Uniform, synchronous adapters for *peer* Python-execution environments.

Each adapter wraps one environment that a benchmark can measure side by side with sandlot:

=====================  ===========================================  ========  ==========
class                  environment                                  isolated  host calls
=====================  ===========================================  ========  ==========
RlmLocalREPL           ``rlm.environments.LocalREPL`` (``rlms``)    no        yes
RlmIPythonInProcess    ``rlm`` ``IPythonREPL``, in-process shell    no        yes
RlmIPythonKernel       ``rlm`` ``IPythonREPL``, ipykernel process   no        yes
SweRexLocal            ``swerex`` ``LocalRuntime`` bash session     no        no
JupyterKernel          ``jupyter_client`` + ``ipykernel``           no        no
DspyPythonInterpreter  ``dspy`` ``PythonInterpreter`` (Deno+WASM)   yes       yes
DspyLocalInterpreter   ``dspy`` ``LocalInterpreter`` (subprocess)   no        yes
=====================  ===========================================  ========  ==========

All of them follow the :class:`Peer` protocol: ``available()`` says whether the environment can
run here (``None``) or why not (a reason string); constructing an adapter imports its library, so
that ``start()`` measures only the creation of the environment; ``run(code)`` runs code in one
persistent interpreter and returns what it printed (plus the value of a trailing expression, where
the environment reports one) as text, with errors in the code returned as text, not raised.

Host calls (the ``llm_query`` pattern) go through each library's own mechanism to a trivial host
handler that answers :data:`HOST_ANSWER` at once: ``rlm``'s ``LMHandler`` socket server with a
stub ``BaseLM`` client, or ``dspy``'s ``tools=`` bridge. Nothing here reaches the network, except
that the first start of ``DspyPythonInterpreter`` on a machine lets Deno fetch Pyodide from the
npm registry into its cache (``available()`` does that once, so timed starts never include it).

Caveats for measuring: the in-process peers (``pids() == []``) swap ``sys.stdout`` and ``chdir``
while code runs, so drive them from one thread and measure their memory in this process; a DSPy
``PythonInterpreter`` must stay on the thread that first used it; ``close()`` of the ``rlm``
peers takes about 0.5 s, the poll interval of their ``LMHandler``'s ``socketserver`` shutdown.

:class:`RlmsLoop` is not an environment peer: it runs ``rlms``'s whole RLM loop (root LM turns,
``LocalREPL``, sub-LM calls) with stand-in clients, for the ``rlm`` benchmark.

The peers are optional: install them with ``uv sync --extra bench``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

__all__ = [
    "HOST_ANSWER",
    "PEERS",
    "DspyLocalInterpreter",
    "DspyPythonInterpreter",
    "JupyterKernel",
    "Peer",
    "RlmIPythonInProcess",
    "RlmIPythonKernel",
    "RlmLocalREPL",
    "RlmsLoop",
    "SweRexLocal",
    "available_peers",
    "process_tree",
]

HOST_ANSWER = "pong"
"""What the trivial host handler answers to every host call."""

_T = TypeVar("_T")


class Peer(Protocol):
    """One peer execution environment, driven synchronously."""

    name: str
    """Human-readable label, e.g. ``"rlms LocalREPL"``."""
    isolated: bool
    """True only if code runs walled off from the host (own fs/net/pid)."""
    host_calls: bool
    """True if code inside can call a host function (like ``llm_query``)."""

    @staticmethod
    def available() -> str | None:
        """Return ``None`` if usable here, else the reason (import error, missing runtime)."""
        ...

    def start(self) -> None:
        """Create the environment and make it ready to run code."""
        ...

    def run(self, code: str) -> str:
        """Run ``code`` in the persistent interpreter and return its output as text."""
        ...

    def host_call(self, n: int) -> None:
        """Run code inside that calls the host function ``n`` times and check the answers.

        Raises:
            NotImplementedError: if the environment has no host calls.
        """
        ...

    def pids(self) -> list[int]:
        """OS process ids this environment holds (``[]`` if it runs in-process)."""
        ...

    def close(self) -> None:
        """Tear the environment down and release its processes."""
        ...


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and all its live descendants (Linux ``/proc``; only ``[pid]`` elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    tree = [pid]
    i = 0
    while i < len(tree):
        tree.extend(children.get(tree[i], ()))
        i += 1
    return tree


def _host_handler(prompt: str) -> str:
    """The trivial host function behind every host call: answers at once, ignores the prompt."""
    del prompt
    return HOST_ANSWER


def _host_call_code(call: str, n: int) -> str:
    """Code that makes ``n`` host calls (``call`` is the call expression) and prints the hits."""
    return (
        "_peer_hits = 0\n"
        f"for _peer_i in range({int(n)}):\n"
        f"    _peer_hits += {call} == {HOST_ANSWER!r}\n"
        "print(_peer_hits)\n"
    )


def _check_host_calls(peer: str, output: str, n: int) -> None:
    """Raise if the host-call code did not get ``n`` correct answers."""
    if output.strip() != str(n):
        raise RuntimeError(f"{peer}: expected {n} host answers, got: {output.strip()[:500]!r}")


def _untyped(module: str) -> Any:
    """Import a module of a library that ships no type information (rlm, dspy, deno)."""
    return importlib.import_module(module)


def _missing(package: str, exc: BaseException) -> str:
    return f"{package} is not importable ({exc}); install the peers with `uv sync --extra bench`"


class _PeerBase:
    """Defaults shared by the adapters: no host calls, no processes."""

    name: str = ""
    isolated: bool = False
    host_calls: bool = False

    def host_call(self, n: int) -> None:
        """Not supported by this environment."""
        raise NotImplementedError(f"{self.name} has no host-call mechanism")

    def pids(self) -> list[int]:
        """In-process environment: no processes of its own."""
        return []

    def __repr__(self) -> str:
        return f"<peer {self.name}>"


# ---------------------------------------------------------------------------------------------
# rlms (import name ``rlm``): LocalREPL and IPythonREPL
# ---------------------------------------------------------------------------------------------


@functools.cache
def _rlm_stub_client() -> Any:
    """A ``BaseLM`` whose completions answer :data:`HOST_ANSWER` without any model."""
    base_lm: Any = _untyped("rlm.clients.base_lm").BaseLM
    types = _untyped("rlm.core.types")

    class StubLM(base_lm):  # type: ignore[misc]
        def completion(self, prompt: Any) -> str:
            return _host_handler(str(prompt))

        async def acompletion(self, prompt: Any) -> str:
            return _host_handler(str(prompt))

        def get_usage_summary(self) -> Any:
            return types.UsageSummary(model_usage_summaries={})

        def get_last_usage(self) -> Any:
            return types.ModelUsageSummary(
                total_calls=1, total_input_tokens=0, total_output_tokens=0
            )

    return StubLM(model_name="stub")


class _RlmBase(_PeerBase):
    """Common part of the ``rlm`` environments: an ``LMHandler`` socket server on the host that
    ``llm_query`` inside the REPL reaches over TCP (the real rlm sub-LM path), fed by a stub LM."""

    host_calls: bool = True

    def __init__(self) -> None:
        self._handler_cls = _untyped("rlm.core.lm_handler").LMHandler
        self._handler: Any = None
        self._env: Any = None

    @staticmethod
    def available() -> str | None:
        """``None`` if ``rlm`` imports."""
        try:
            _untyped("rlm.core.lm_handler")
            _untyped("rlm.environments")
        except ImportError as exc:
            return _missing("rlms", exc)
        return None

    def _make_env(self, address: tuple[str, int]) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        """Start the LM handler server, then the REPL environment wired to it."""
        self._handler = self._handler_cls(_rlm_stub_client())
        address = self._handler.start()
        self._env = self._make_env(address)

    def run(self, code: str) -> str:
        """``execute_code``; returns stdout followed by stderr (where errors land)."""
        result = self._env.execute_code(code)
        return str(result.stdout) + str(result.stderr)

    def host_call(self, n: int) -> None:
        """``llm_query('ping')`` ``n`` times inside the REPL."""
        _check_host_calls(self.name, self.run(_host_call_code("llm_query('ping')", n)), n)

    def close(self) -> None:
        """Clean the environment up and stop the handler."""
        if self._env is not None:
            self._env.cleanup()
            self._env = None
        if self._handler is not None:
            self._handler.stop()
            self._handler = None


class RlmLocalREPL(_RlmBase):
    """``rlm.environments.LocalREPL``: ``exec`` in a namespace inside this very process, with
    restricted builtins. ``run`` shows only printed output (no trailing-expression value)."""

    name: str = "rlms LocalREPL"

    def __init__(self) -> None:
        super().__init__()
        self._cls = _untyped("rlm.environments").LocalREPL

    def _make_env(self, address: tuple[str, int]) -> Any:
        return self._cls(lm_handler_address=address)


class RlmIPythonInProcess(_RlmBase):
    """``rlm.environments.ipython_repl.IPythonREPL`` with ``kernel_mode="in_process"``: a fresh
    IPython ``InteractiveShell`` inside this process."""

    name: str = "rlms IPythonREPL (in-process)"
    _mode: ClassVar[str] = "in_process"

    def __init__(self) -> None:
        super().__init__()
        self._cls = _untyped("rlm.environments.ipython_repl").IPythonREPL

    @staticmethod
    def available() -> str | None:
        """``None`` if ``rlm`` and its ``ipython`` extra (IPython, jupyter_client) import."""
        try:
            import IPython  # noqa: F401
            import jupyter_client  # noqa: F401

            _untyped("rlm.environments.ipython_repl")
        except ImportError as exc:
            return _missing("rlms[ipython]", exc)
        return None

    def _make_env(self, address: tuple[str, int]) -> Any:
        return self._cls(lm_handler_address=address, kernel_mode=self._mode)


class RlmIPythonKernel(RlmIPythonInProcess):
    """``IPythonREPL`` with ``kernel_mode="subprocess"``: an ipykernel process driven through
    ``jupyter_client``; ``llm_query`` in the kernel opens a TCP connection to the host handler."""

    name: str = "rlms IPythonREPL (kernel)"
    _mode: ClassVar[str] = "subprocess"

    def pids(self) -> list[int]:
        """The kernel process and its children."""
        km = getattr(self._env, "_km", None)
        pid = getattr(getattr(km, "provisioner", None), "pid", None)
        return process_tree(pid) if isinstance(pid, int) else []


# ---------------------------------------------------------------------------------------------
# SWE-ReX LocalRuntime
# ---------------------------------------------------------------------------------------------

# Installed once in the interactive interpreter: a unique prompt, and a cell runner that gives
# multi-line code REPL semantics (run the statements, then display a trailing expression).
_SWEREX_PROMPT = "PEERPY7f3a9>"
_SWEREX_SETUP = textwrap.dedent(
    f"""
    import ast as _peer_ast, sys as _peer_sys
    def _peer_cell(src):
        tree = _peer_ast.parse(src, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], _peer_ast.Expr):
            last = _peer_ast.Expression(tree.body.pop().value)
        scope = globals()
        exec(compile(tree, "<cell>", "exec"), scope)
        if last is not None:
            _peer_sys.displayhook(eval(compile(last, "<cell>", "eval"), scope))
    def _peer_file(path):
        with open(path) as f:
            _peer_cell(f.read())
    _peer_sys.ps1 = {_SWEREX_PROMPT!r}
    _peer_sys.ps2 = ""
    """
)
# A terminal line longer than this (the pty's canonical-mode limit is 4095 bytes) is passed
# through a file written with the runtime's own write_file instead.
_SWEREX_MAX_LINE = 3000


class SweRexLocal(_PeerBase):
    """SWE-ReX ``LocalRuntime``: a bash session (pexpect on a pty), in which an interactive
    ``python -i`` (this interpreter's executable) is started once and then fed one line per
    ``run`` as an interactive command. SWE-ReX has no Python session type of its own, and its
    ``execute`` runs one-off processes without state, so this is how its sessions keep Python
    state. Note pexpect's default 50 ms ``delaybeforesend`` sits in every round trip."""

    name: str = "SWE-ReX LocalRuntime"
    _session: ClassVar[str] = "peer"

    def __init__(self) -> None:
        from swerex.runtime import abstract
        from swerex.runtime.local import LocalRuntime

        self._abstract = abstract
        self._runtime_cls = LocalRuntime
        self._runtime: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tmp: Path | None = None
        self._files = 0

    @staticmethod
    def available() -> str | None:
        """``None`` if ``swerex`` imports and ``bash`` exists."""
        try:
            import swerex.runtime.local  # noqa: F401
        except ImportError as exc:
            return _missing("swe-rex", exc)
        if shutil.which("bash") is None:
            return "SWE-ReX bash sessions need `bash` on PATH"
        return None

    def _await(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None, "start() first"
        return self._loop.run_until_complete(coro)

    def _interactive(self, line: str, expect: str, timeout: float) -> str:
        action = self._abstract.BashAction(
            session=self._session,
            command=line,
            is_interactive_command=True,
            expect=[expect],
            timeout=timeout,
        )
        obs = self._await(self._runtime.run_in_session(action))
        if obs.expect_string != expect:
            raise RuntimeError(f"{self.name}: python left the session: {obs.output[-500:]!r}")
        return str(obs.output)

    def start(self) -> None:
        """Create the bash session, start ``python -i`` in it and install the cell runner."""
        self._loop = asyncio.new_event_loop()
        self._tmp = Path(tempfile.mkdtemp(prefix="peer-swerex-"))
        self._runtime = self._runtime_cls()
        request = self._abstract.CreateBashSessionRequest(session=self._session)
        self._await(self._runtime.create_session(request))
        python = f"{shlex.quote(sys.executable)} -q -u -i"
        self._interactive(python, ">>> ", timeout=60)
        self._interactive(f"exec({_SWEREX_SETUP!r})", _SWEREX_PROMPT, timeout=60)

    def run(self, code: str, timeout: float = 600) -> str:
        """One interactive line ``_peer_cell(<code>)``; output as the terminal showed it."""
        line = f"_peer_cell({code!r})"
        if len(line) > _SWEREX_MAX_LINE:
            assert self._tmp is not None
            self._files += 1
            path = str(self._tmp / f"cell{self._files}.py")
            request = self._abstract.WriteFileRequest(content=code, path=path)
            self._await(self._runtime.write_file(request))
            line = f"_peer_file({path!r})"
        return self._interactive(line, _SWEREX_PROMPT, timeout=timeout)

    def pids(self) -> list[int]:
        """The session's bash and the python under it."""
        if self._runtime is None or self._session not in self._runtime.sessions:
            return []
        return process_tree(self._runtime.sessions[self._session].shell.pid)

    def close(self) -> None:
        """Quit python (so that bash reaps it), then close the runtime and its pty."""
        if self._runtime is not None:
            with contextlib.suppress(Exception):
                quit_python = self._abstract.BashAction(
                    session=self._session, command="exit()", is_interactive_quit=True, timeout=10
                )
                self._await(self._runtime.run_in_session(quit_python))
            self._await(self._runtime.close())
            self._runtime = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# ---------------------------------------------------------------------------------------------
# Plain Jupyter kernel
# ---------------------------------------------------------------------------------------------


class JupyterKernel(_PeerBase):
    """An ipykernel started with ``jupyter_client.manager.start_new_kernel`` (kernelspec
    ``python3``, i.e. this interpreter) and driven by its blocking client's
    ``execute_interactive``. Output: stream text, ``text/plain`` results, error tracebacks."""

    name: str = "Jupyter ipykernel"

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self._start_new_kernel = start_new_kernel
        self._km: Any = None
        self._kc: Any = None

    @staticmethod
    def available() -> str | None:
        """``None`` if ``jupyter_client`` and ``ipykernel`` import."""
        try:
            import ipykernel  # noqa: F401
            import jupyter_client  # noqa: F401
        except ImportError as exc:
            return _missing("jupyter_client/ipykernel", exc)
        return None

    def start(self) -> None:
        """Start the kernel and wait until it answers."""
        # The kernel's own stderr (a warning about unencrypted TCP on every start) is dropped;
        # cell output travels over iopub and is unaffected.
        self._km, self._kc = self._start_new_kernel(
            kernel_name="python3", startup_timeout=60, stderr=subprocess.DEVNULL
        )

    def run(self, code: str, timeout: float = 600) -> str:
        """Execute one cell; collect its iopub output."""
        parts: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                parts.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                parts.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                parts.append("\n".join(content["traceback"]) + "\n")

        self._kc.execute_interactive(
            code, timeout=timeout, output_hook=hook, allow_stdin=False, stop_on_error=False
        )
        return "".join(parts)

    def pids(self) -> list[int]:
        """The kernel process and its children."""
        pid = getattr(getattr(self._km, "provisioner", None), "pid", None)
        return process_tree(pid) if isinstance(pid, int) else []

    def close(self) -> None:
        """Stop the client's channels and shut the kernel down."""
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None
        if self._km is not None:
            self._km.shutdown_kernel(now=True)
            self._km = None


# ---------------------------------------------------------------------------------------------
# DSPy interpreters
# ---------------------------------------------------------------------------------------------


def _dspy_user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions DSPy interpreters raise for errors in the executed code (not the runtime)."""
    return (_untyped("dspy.primitives.code_interpreter").CodeExecutionError, SyntaxError)


def _dspy_output(value: Any) -> str:
    """Text of what a DSPy interpreter's ``execute`` returned (printed text or a value)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def _find_deno() -> str | None:
    """The Deno binary: the one from the PyPI ``deno`` package (``dspy[deno]``), else PATH."""
    try:
        return str(_untyped("deno").find_deno_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


# DSPy's runner.js imports ``readLines`` from deno.land/std, which this machine cannot reach
# (only the npm registry is). An import map points that URL at this stand-in instead: an async
# generator of the lines read from a Deno reader, which is all runner.js uses it for.
_READLINES_TS = """\
export async function* readLines(reader: { read(p: Uint8Array): Promise<number | null> }) {
  const decoder = new TextDecoder();
  const chunk = new Uint8Array(1 << 16);
  let pending = "";
  for (;;) {
    const n = await reader.read(chunk);
    if (n === null) break;
    let from = pending.length;
    pending += decoder.decode(chunk.subarray(0, n), { stream: true });
    let nl = pending.indexOf("\\n", from);
    while (nl >= 0) {
      const line = pending.slice(0, nl);
      yield line.endsWith("\\r") ? line.slice(0, -1) : line;
      pending = pending.slice(nl + 1);
      from = 0;
      nl = pending.indexOf("\\n");
    }
  }
  pending += decoder.decode();
  if (pending) yield pending;
}
"""
_STD_IO_URL = re.compile(r"https://deno\.land/std@[^\"']+/io/mod\.ts")


@functools.cache
def _deno_import_map(runner_js: str) -> str | None:
    """Write the import map (and the ``readLines`` module) for ``runner_js``; None if unneeded."""
    match = _STD_IO_URL.search(Path(runner_js).read_text())
    if match is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="peer-deno-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "std_io.ts").write_text(_READLINES_TS)
    import_map = {"imports": {match.group(0): (folder / "std_io.ts").as_uri()}}
    (folder / "import_map.json").write_text(json.dumps(import_map))
    return str(folder / "import_map.json")


@functools.cache
def _dspy_python_interpreter_problem() -> str | None:
    """Probe once: can a PythonInterpreter start and run code here? (Also warms Deno's cache.)"""
    try:
        _untyped("dspy.primitives.python_interpreter")
    except ImportError as exc:
        return _missing("dspy", exc)
    deno = _find_deno()
    if deno is None:
        return "no Deno runtime: install `dspy[deno]` (PyPI `deno`) or put `deno` on PATH"
    try:
        version = subprocess.run(
            [deno, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split("\n", 1)[0]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Deno at {deno} does not run: {exc}"
    probe = DspyPythonInterpreter()
    try:
        probe.start()
        out = probe.run("print(6 * 7)")
    except Exception as exc:
        return f"DSPy PythonInterpreter cannot start with {version} ({deno}): {exc}"[:2000]
    finally:
        probe.close()
    if out.strip() != "42":
        return f"DSPy PythonInterpreter probe printed {out!r} instead of '42'"
    return None


class _DspyBase(_PeerBase):
    """What both DSPy interpreters share: ``execute`` and ``shutdown``."""

    _interp: Any
    _user_errors: tuple[type[BaseException], ...]

    def run(self, code: str) -> str:
        """``execute``; Python errors are returned as text."""
        try:
            return _dspy_output(self._interp.execute(code))
        except self._user_errors as exc:
            return f"{type(exc).__name__}: {exc}\n"

    def close(self) -> None:
        """Shut the interpreter (Deno process or worker) down."""
        if self._interp is not None:
            self._interp.shutdown()
            self._interp = None


def deno_python_interpreter(**kwargs: Any) -> Any:
    """A DSPy ``PythonInterpreter`` (not started) whose Deno resolves ``deno.land/std`` locally."""
    interp = _untyped("dspy.primitives.python_interpreter").PythonInterpreter(**kwargs)
    command: list[str] = interp.deno_command
    import_map = _deno_import_map(interp._get_runner_path())
    if import_map is not None and "run" in command:
        command.insert(command.index("run") + 1, f"--import-map={import_map}")
    return interp


class DspyPythonInterpreter(_DspyBase):
    """``dspy.primitives.python_interpreter.PythonInterpreter``: Pyodide (CPython on WASM) in a
    Deno process with no file, network, env or subprocess permissions; host tools are called
    over JSON-RPC on its stdio. One ``llm_query`` tool is registered. ``run`` returns printed
    output, or the trailing expression's value where nothing was printed.

    Deno comes from the PyPI ``deno`` package; its ``deno.land/std`` import is served from an
    import map (see ``_READLINES_TS``) because only the npm registry is reachable here."""

    name: str = "DSPy PythonInterpreter (Deno/Pyodide)"
    isolated: bool = True
    host_calls: bool = True

    def __init__(self) -> None:
        self._cls = _untyped("dspy.primitives.python_interpreter").PythonInterpreter
        self._user_errors = _dspy_user_errors()
        self._interp: Any = None

    @staticmethod
    def available() -> str | None:
        """``None`` if a probe interpreter ran ``print(6 * 7)`` (the result is cached)."""
        return _dspy_python_interpreter_problem()

    def start(self) -> None:
        """Spawn Deno, load Pyodide and register the host tool."""
        interp = deno_python_interpreter(tools={"llm_query": _host_handler})
        self._interp = interp
        interp.start()
        interp._register_tools()  # otherwise the first execute pays for it

    def host_call(self, n: int) -> None:
        """``llm_query(prompt='ping')`` ``n`` times inside the sandbox."""
        _check_host_calls(self.name, self.run(_host_call_code("llm_query(prompt='ping')", n)), n)

    def pids(self) -> list[int]:
        """The Deno process."""
        process = getattr(self._interp, "deno_process", None)
        return process_tree(process.pid) if process is not None else []


class DspyLocalInterpreter(_DspyBase):
    """``dspy.primitives.local_interpreter.LocalInterpreter``: a persistent worker process
    (``python -I``) speaking JSON lines on stdio; not a sandbox. Host tools are called over the
    same pipe. ``run`` returns the trailing expression's value if there is one, else the
    printed output (that is how ``execute`` reports)."""

    name: str = "DSPy LocalInterpreter"
    host_calls: bool = True

    def __init__(self) -> None:
        self._cls = _untyped("dspy.primitives.local_interpreter").LocalInterpreter
        self._user_errors = _dspy_user_errors()
        self._interp: Any = None

    @staticmethod
    def available() -> str | None:
        """``None`` if ``dspy`` has ``LocalInterpreter``."""
        try:
            _untyped("dspy.primitives.local_interpreter").LocalInterpreter  # noqa: B018
        except ImportError as exc:
            return _missing("dspy", exc)
        return None

    def start(self) -> None:
        """Spawn the worker and wait for its ready message."""
        self._interp = self._cls(tools={"llm_query": _host_handler})
        self._interp.start()

    def host_call(self, n: int) -> None:
        """``llm_query('ping')`` ``n`` times inside the worker."""
        _check_host_calls(self.name, self.run(_host_call_code("llm_query('ping')", n)), n)

    def pids(self) -> list[int]:
        """The worker process."""
        process = getattr(self._interp, "_process", None)
        return process_tree(process.pid) if process is not None else []


# ---------------------------------------------------------------------------------------------
# rlms's own RLM loop (not an environment peer): the ``rlm`` benchmark drives it
# ---------------------------------------------------------------------------------------------


class RlmsLoop:
    """The whole ``rlm.RLM`` loop of ``rlms`` on its ``local`` environment (``LocalREPL``), with
    two stand-in clients plugged in where its model clients go.

    - The root client replies from ``root_policy(messages) -> reply`` (a scripted root LM).
    - The sub client (what ``llm_query`` / ``llm_query_batched`` reach, over ``rlm``'s
      ``LMHandler`` socket server) awaits ``sub_lm.acomplete([user message])``: pass
      ``sandlot.rlm.niah.StandInSubLM`` to get the very stand-in sandlot's engine uses.

    ``rlm`` builds its clients by backend name (``get_client``) and its ``LMHandler`` inside
    ``completion``; for the length of one :meth:`completion` this adapter swaps ``rlm.core.rlm``'s
    ``get_client`` for one that returns the stand-ins, and its ``LMHandler`` for a subclass whose
    ``batch_max_concurrent`` (the bound on concurrent prompts of one ``llm_query_batched``; 16
    as shipped, with no ``RLM`` argument to set it) is ``concurrency``. Every sub-call's start
    and end (``time.perf_counter``) is appended to :attr:`calls`.

    ``environment`` and ``environment_kwargs`` go to ``RLM`` as they are: ``"sandlot"`` (with
    ``sandlot.integrations.rlms`` imported) runs the same loop with its code in a sandbox.
    """

    name: str = "rlms LocalREPL"
    SHIPPED_BATCH_CONCURRENCY = 16
    """``LMHandler``'s default ``batch_max_concurrent`` in ``rlms`` 0.1.3."""

    def __init__(
        self,
        root_policy: Any,
        sub_lm: Any,
        concurrency: int,
        *,
        environment: str = "local",
        environment_kwargs: dict[str, Any] | None = None,
        max_iterations: int = 10,
    ) -> None:
        self._rlm = _untyped("rlm.core.rlm")
        self.root_policy = root_policy
        self.sub_lm = sub_lm
        self.concurrency = concurrency
        self.environment = environment
        self.environment_kwargs = environment_kwargs
        self.max_iterations = max_iterations
        self.calls: list[tuple[float, float]] = []

    @staticmethod
    def available() -> str | None:
        """``None`` if ``rlm`` imports."""
        try:
            _untyped("rlm.core.rlm")
        except ImportError as exc:
            return _missing("rlms", exc)
        return None

    def _clients(self) -> tuple[Any, Any]:
        base_lm: Any = _untyped("rlm.clients.base_lm").BaseLM
        types = _untyped("rlm.core.types")
        policy, sub_lm, calls = self.root_policy, self.sub_lm, self.calls

        class _StandIn(base_lm):  # type: ignore[misc]
            def get_usage_summary(self) -> Any:
                return types.UsageSummary(model_usage_summaries={})

            def get_last_usage(self) -> Any:
                return types.ModelUsageSummary(
                    total_calls=1, total_input_tokens=0, total_output_tokens=0
                )

        class RootClient(_StandIn):
            def completion(self, prompt: Any) -> str:
                return str(policy(prompt))

            async def acompletion(self, prompt: Any) -> str:
                return str(policy(prompt))

        class SubClient(_StandIn):
            def completion(self, prompt: Any) -> str:
                return asyncio.run(self.acompletion(prompt))

            async def acompletion(self, prompt: Any) -> str:
                start = time.perf_counter()
                done = await sub_lm.acomplete([{"role": "user", "content": str(prompt)}])
                calls.append((start, time.perf_counter()))
                return str(done.text)

        return RootClient(model_name="scripted-root"), SubClient(model_name="stand-in-sub")

    def completion(self, context: str, query: str) -> str | None:
        """One ``RLM.completion(context, root_prompt=query)``; its answer (``None`` if none)."""
        rlm = self._rlm
        root, sub = self._clients()
        bound = self.concurrency

        def get_client(backend: str, kwargs: dict[str, Any]) -> Any:
            return sub if (kwargs or {}).get("model_name") == sub.model_name else root

        class BoundHandler(rlm.LMHandler):  # type: ignore[misc,name-defined]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["batch_max_concurrent"] = bound
                super().__init__(*args, **kwargs)

        saved = rlm.get_client, rlm.LMHandler
        rlm.get_client, rlm.LMHandler = get_client, BoundHandler
        try:
            engine = rlm.RLM(
                backend="openai",
                backend_kwargs={"model_name": root.model_name},
                environment=self.environment,
                environment_kwargs=self.environment_kwargs,
                other_backends=["openai"],
                other_backend_kwargs=[{"model_name": sub.model_name}],
                max_depth=1,
                max_iterations=self.max_iterations,
                max_concurrent_subcalls=bound,
            )
            result = engine.completion(context, root_prompt=query)
        finally:
            rlm.get_client, rlm.LMHandler = saved
        return None if result.response is None else str(result.response)


PEERS: list[type[Peer]] = [
    RlmLocalREPL,
    RlmIPythonInProcess,
    RlmIPythonKernel,
    SweRexLocal,
    JupyterKernel,
    DspyPythonInterpreter,
    DspyLocalInterpreter,
]
"""Every adapter class, in a stable order."""


def available_peers() -> dict[str, str | None]:
    """``{name: None or reason}`` for every adapter in :data:`PEERS`."""
    return {peer.name: peer.available() for peer in PEERS}


if __name__ == "__main__":
    # Smoke check: python benchmarks/peers.py
    for peer_cls in PEERS:
        reason = peer_cls.available()
        if reason is not None:
            print(f"{peer_cls.name}: unavailable: {reason}")
            continue
        peer = peer_cls()
        t0 = time.perf_counter()
        peer.start()
        t1 = time.perf_counter()
        one = peer.run("print(1+1)")
        t2 = time.perf_counter()
        peer.run("x = 1")
        peer.run("x += 1")
        state = peer.run("print(x)")
        t3 = time.perf_counter()
        big = peer.run("print('x' * 1_000_000)")
        t4 = time.perf_counter()
        print(
            f"{peer.name}: start {t1 - t0:.3f}s, "
            f"print(1+1)={one.strip()!r} {1e3 * (t2 - t1):.1f}ms, "
            f"state={state.strip()!r}, 1MB {len(big)} chars {1e3 * (t4 - t3):.1f}ms, "
            f"pids={peer.pids()}, 1+1 -> {peer.run('1+1').strip()!r}"
        )
        peer.close()
