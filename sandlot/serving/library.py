"""Libraries a session can import: local code, and functions served by another sandbox.

``Sandbox.serve("interface.py", expose_as="library", name="model_tools")`` imports
the interface once in the serving sandbox and returns a :class:`RemoteLibrary`.
Its functions are callable from the host at once, and installing it in a
workspace writes a real module, generated from the functions' signatures, whose
every call travels session sandbox → host router → serving sandbox and back.
The session never reaches the serving sandbox any other way.

This layer sends its requests through the serving sandbox's
:class:`~sandlot.link.Link` (``sandbox.link``), which keeps the sandbox's bounds
on every reply, and it never imports :mod:`sandlot.sandbox` at run time (the
sandbox imports it, for ``serve``).
"""

from __future__ import annotations

import ast
import asyncio
import keyword
import shutil
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..driver import codec
from ..errors import ConfigError, SandboxDied, SandboxError

if TYPE_CHECKING:
    from ..router import Route
    from ..sandbox import AsyncSandbox

T = TypeVar("T")
ExposeAs = Literal["library", "mcp", "prompt"]
SERVE_DIR = ".sandlot/serve"


@dataclass
class Library:
    """Local code installed into a workspace: one module file or a package directory."""

    name: str
    path: Path

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> Library:
        """A module file; importable in the session as ``name`` (default: the file's stem)."""
        path = Path(path).resolve()
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(f"Library.from_file: {str(path)!r} is not a .py file")
        return cls(_identifier(name or path.stem), path)

    @classmethod
    def from_directory(cls, path: str | Path, name: str | None = None) -> Library:
        """A package directory; importable as ``name`` (default: the directory's name)."""
        path = Path(path).resolve()
        if not path.is_dir():
            raise ConfigError(f"Library.from_directory: {str(path)!r} is not a directory")
        return cls(_identifier(name or path.name), path)

    def install(self, directory: Path) -> Path:
        """Copy the library into ``directory``; return what was written."""
        if self.path.is_file():
            target = directory / f"{self.name}.py"
            shutil.copyfile(self.path, target)
        else:
            target = directory / self.name
            shutil.copytree(
                self.path,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        return target


def _identifier(name: str) -> str:
    if not name.isidentifier():
        raise ConfigError(f"library name {name!r} is not a Python identifier; pass name=...")
    return name


class RemoteLibrary:
    """Functions served by a sandbox: call them from the host, or install them in a workspace."""

    def __init__(
        self, sandbox: AsyncSandbox, name: str, source: str, functions: list[dict[str, Any]]
    ) -> None:
        self.name = name
        self.source = source  # the interface file's text, kept to serve it again on restart
        self.functions = {f["name"]: f for f in functions}
        if sandbox.loop is None:
            raise SandboxError("the sandbox is not started; start it before serving")
        self._sandbox = sandbox
        self._loop: asyncio.AbstractEventLoop = sandbox.loop
        self._loop_thread = sandbox.loop_thread

    @property
    def sandbox(self) -> AsyncSandbox:
        """The sandbox serving this library (a new one after :meth:`restart`)."""
        return self._sandbox

    def __repr__(self) -> str:
        return f"<RemoteLibrary {self.name}: {', '.join(self.functions)}>"

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.functions]

    # -- calling -------------------------------------------------------------------

    async def invoke_raw(self, function: str, structure: Any, payload: bytes) -> tuple[Any, bytes]:
        """Call ``function`` with encoded arguments; return the encoded result."""
        where = f"{self.name}.{function}()"
        if function not in self.functions:
            raise AttributeError(
                f"{self.name} serves no function {function!r}; it serves "
                f"{', '.join(self.functions)}"
            )
        fields = {"library": self.name, "function": function, "value": structure}
        try:
            link = self._sandbox.link
            async with link.request("invoke", payload, **fields) as req:
                header, data = await req.result()
                header = await link.reply(header, "invoke", where)
                return await link.value(header, data)
        except SandboxDied as exc:
            raise SandboxDied(
                exc.cause,
                f"the sandbox serving {self.name} is gone "
                f"({exc.detail}); call {self.name}.restart() to serve it again",
            ) from None

    async def call(self, function: str, /, *args: Any, **kwargs: Any) -> Any:
        """``await lib.call("fn", ...)``: the async way to call a served function."""
        structure, payload = codec.encode(
            [list(args), kwargs], where=f"{self.name}.{function}() argument"
        )
        value, data = await self.invoke_raw(function, structure, payload)
        return codec.decode(value, data)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the serving sandbox's event loop and wait for it."""
        if self._loop_thread is threading.current_thread():
            coro.close()
            raise RuntimeError(
                f"{self.name}: a blocking call on its own event loop; use "
                f"'await {self.name}.call(name, ...)' there"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, function: str) -> Callable[..., Any]:
        if function.startswith("_") or function not in self.__dict__.get("functions", {}):
            raise AttributeError(f"{self.__dict__.get('name')} serves no function {function!r}")
        spec = self.functions[function]

        def remote(*args: Any, **kwargs: Any) -> Any:
            return self._run(self.call(function, *args, **kwargs))

        remote.__name__ = remote.__qualname__ = function
        remote.__doc__ = spec["doc"]
        return remote

    def route(self, function: str) -> Route:
        """A router entry forwarding encoded calls of ``function`` to the serving sandbox."""

        async def forward(structure: Any, payload: bytes) -> tuple[Any, bytes]:
            coro = self.invoke_raw(function, structure, payload)
            if asyncio.get_running_loop() is self._loop:
                return await coro
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

        return forward

    # -- restarting ----------------------------------------------------------------

    async def arestart(self) -> None:
        """Serve the library again from a new sandbox with the same configuration."""
        old = self._sandbox
        await old.terminate()
        # Its own class: this layer does not import sandlot.sandbox, which imports it.
        fresh = type(old)(old.config, backend=old.backend)
        for tool in old.router.tools.values():
            fresh.router.register(tool.name, tool.fn, tool.doc)
        await fresh.start()
        functions = await _serve_source(fresh, self.name, self.source)
        self._sandbox = fresh
        self.functions = {f["name"]: f for f in functions}

    def restart(self) -> None:
        """Blocking :meth:`arestart`."""
        self._run(self.arestart())

    def terminate(self) -> None:
        """End the serving sandbox (the library owns the ones its restarts made)."""
        self._run(self._sandbox.terminate())

    # -- other forms ---------------------------------------------------------------

    def module_source(self) -> str:
        """The Python module a session imports: one stub per served function."""
        return generate_module(self.name, list(self.functions.values()))

    def install(self, directory: Path) -> Path:
        """Write the generated module into ``directory``; return its path."""
        target = directory / f"{self.name}.py"
        target.write_text(self.module_source())
        return target

    def prompt(self) -> str:
        """Text documenting the functions, for an LM's system prompt."""
        lines = [
            f"The Python module `{self.name}` can be imported in your REPL. Its functions run "
            "in a separate sandbox (with its own models and state); arguments and results "
            "are JSON values, bytes or arrays (which arrive as numpy arrays).",
            "",
        ]
        for spec in self.functions.values():
            params = _params_text(spec, "...")
            lines.append(f"{self.name}.{spec['name']}({params}){_returns(spec)}")
            if spec["doc"]:
                lines += [f"    {line}" if line else "" for line in spec["doc"].splitlines()]
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def mcp(self) -> McpServerSpec:
        """The functions as MCP tools: names, descriptions, JSON schemas of their arguments."""
        tools = [
            {
                "name": f"{self.name}_{spec['name']}",
                "description": spec["doc"],
                "inputSchema": spec["schema"],
            }
            for spec in self.functions.values()
        ]
        return McpServerSpec(self.name, tools, self)


@dataclass
class McpServerSpec:
    """An MCP server's tool list for a served library, and the way to call each tool."""

    name: str
    tools: list[dict[str, Any]]
    library: RemoteLibrary

    async def acall_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call an MCP tool by name with its JSON arguments."""
        prefix = f"{self.library.name}_"
        if not tool.startswith(prefix) or tool[len(prefix) :] not in self.library.functions:
            raise LookupError(f"unknown tool {tool!r}; tools: {[t['name'] for t in self.tools]}")
        return await self.library.call(tool[len(prefix) :], **arguments)

    def call_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Blocking :meth:`acall_tool`."""
        return self.library._run(self.acall_tool(tool, arguments))


def _params_text(
    spec: dict[str, Any], default_marker: str | None = None, annotate: bool = True
) -> str:
    """A served function's parameter list as text.

    Defaults that are not exact literals become ``default_marker`` when one is
    given; ``annotate=False`` leaves the annotations out.
    """
    parts: list[str] = []
    params = spec["params"]
    kinds = [p["kind"] for p in params]
    for i, p in enumerate(params):
        kind = p["kind"]
        if (
            kind == "KEYWORD_ONLY"
            and "VAR_POSITIONAL" not in kinds
            and (i == 0 or params[i - 1]["kind"] != "KEYWORD_ONLY")
        ):
            parts.append("*")
        text = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "") + p["name"]
        if p["annotation"] and annotate:
            text += f": {p['annotation']}"
        if p["default"] is not None:
            exact = p["default_exact"] or default_marker is None
            value = p["default"] if exact else default_marker
            text += f" = {value}" if p["annotation"] and annotate else f"={value}"
        parts.append(text)
        if kind == "POSITIONAL_ONLY" and (
            i + 1 == len(params) or params[i + 1]["kind"] != "POSITIONAL_ONLY"
        ):
            parts.append("/")
    return ", ".join(parts)


def _returns(spec: dict[str, Any]) -> str:
    return f" -> {spec['returns']}" if spec["returns"] else ""


def generate_module(name: str, functions: list[dict[str, Any]]) -> str:
    """Source of a module whose functions forward to a served library, one stub each.

    Annotations are set as strings after each ``def`` (what ``from __future__
    import annotations`` would make of them), never written as code: the serving
    sandbox chose their text, and types that cannot be imported in the session
    do not break the import.
    Defaults that do not survive as source text are sent as "not given", and
    the serving side applies the real one.
    """
    out = [
        f'"""{name}: functions served by another sandbox, reached through the host.',
        "",
        "Generated by sandlot from the served interface; do not edit.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any  # for annotations that name it, should they be evaluated",
        "",
        "from sandlot_driver.codec import MISSING as _DEFAULT",
        "from sandlot_driver.server import call_host as _call_host",
        "",
        f"__all__ = {sorted(f['name'] for f in functions)!r}",
    ]
    for spec in functions:
        positional = []
        keywords = []
        for p in spec["params"]:
            if p["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD"):
                positional.append(p["name"])
            elif p["kind"] == "VAR_POSITIONAL":
                positional.append(f"*{p['name']}")
            elif p["kind"] == "KEYWORD_ONLY":
                keywords.append(f"{p['name']!r}: {p['name']}")
            else:
                keywords.append(f"**{p['name']}")
        args = f"({', '.join(positional)}{',' if len(positional) == 1 else ''})"
        doc = (spec["doc"] or f"Served function {spec['name']}.").replace("\\", "\\\\")
        doc = doc.replace('"""', '\\"\\"\\"')
        notes = {p["name"]: p["annotation"] for p in spec["params"] if p["annotation"]}
        if spec["returns"]:
            notes["return"] = spec["returns"]
        out += [
            "",
            "",
            f"def {spec['name']}({_params_text(spec, '_DEFAULT', annotate=False)}):",
            f'    """{doc}\n    """',
            f"    return _call_host({name + '.' + spec['name']!r}, {args}, "
            f"{{{', '.join(keywords)}}})",
            "",
            f"{spec['name']}.__annotations__ = {notes!r}",
        ]
    return "\n".join(out) + "\n"


async def _serve_source(sandbox: AsyncSandbox, name: str, source: str) -> list[dict[str, Any]]:
    sandbox.link.refuse_in_cells_call("serve")  # before any file goes up
    remote = f"{SERVE_DIR}/{name}.py"
    await sandbox.files.write(remote, source)
    models = [m.model_dump() for m in sandbox.config.models]
    link = sandbox.link
    async with link.request("serve", path=remote, name=name, models=models) as req:
        header, _ = await req.result()
    header = await link.reply(header, "serve", f"serving {name}")
    functions: list[dict[str, Any]] = header["functions"]
    try:
        for spec in functions:
            _check_spec(spec)
    except ValueError as exc:
        raise await link.violation(f"serving {name}: {exc}") from None
    return functions


def _check_spec(spec: dict[str, Any]) -> None:
    """Refuse a served function's description that could smuggle code into a session.

    Its names, annotations and defaults become source text of the module a session
    imports (see :func:`generate_module`), in another sandbox: the serving sandbox
    must not choose that code. Names must be identifiers and a default pasted as
    source a literal; annotations are set as strings in ``__annotations__`` (see
    :func:`generate_module`), so their text is never code.
    """
    names = [spec["name"], *(p["name"] for p in spec["params"])]
    for ident in names:
        if not ident.isidentifier() or keyword.iskeyword(ident):
            raise ValueError(f"{ident!r} is not a Python identifier")
    for p in spec["params"]:
        if p["default_exact"] and p["default"] is not None:
            try:
                ast.literal_eval(p["default"])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise ValueError(f"default {p['default'][:80]!r} is not a literal") from None


async def serve_interface(
    sandbox: AsyncSandbox,
    path: str | Path,
    expose_as: ExposeAs = "library",
    name: str | None = None,
) -> RemoteLibrary | McpServerSpec | str:
    """Import an interface file in ``sandbox`` once and serve its ``@expose`` functions."""
    if expose_as not in ("library", "mcp", "prompt"):
        raise ConfigError(f"expose_as={expose_as!r}: use 'library', 'mcp' or 'prompt'")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"serve: interface file {str(path)!r} does not exist")
    name = _identifier(name or path.stem)
    source = path.read_text(encoding="utf-8")
    library = RemoteLibrary(sandbox, name, source, await _serve_source(sandbox, name, source))
    if expose_as == "prompt":
        return library.prompt()
    if expose_as == "mcp":
        return library.mcp()
    return library
