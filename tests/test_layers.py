"""The layers of the package import one way, and reach the sandbox only through its link.

The import graph is read from the source with ``ast``: every ``import`` a module
runs, at its top or inside a function, is an edge to the sandlot module it names.
Imports under ``if TYPE_CHECKING:`` run only for the type checker; they form a
graph of their own. (Importing ``a.b`` also runs ``a/__init__.py``; like other
layering checks, the graph leaves that implicit edge out.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import sandlot

PACKAGE = Path(sandlot.__file__).parent
# The layers above the sandbox: they talk to it only through sandlot.link.
ABOVE_SANDBOX = ("sandlot.files", "sandlot.serving.library", "sandlot.link")
# The only imports from one backend to another: Ray's actors run the local backend on
# their nodes, and the SSH backend's former module re-exports it.
BUILT_ON = {
    ("sandlot.backends.ray", "sandlot.backends.local"),
    ("sandlot.backends.stream", "sandlot.backends.ssh"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("sandlot", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "shim" not in parts and "in_sandbox" not in parts:  # the sandbox's code, not modules
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imports(module: str, path: Path, *, typing_only: bool) -> Iterator[str]:
    """The sandlot modules ``module`` imports (at run time, or under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    typing_nodes = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if (id(node) in typing_nodes) != typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""])
                base = base.rstrip(".")
            else:
                base = node.module or ""
            # "from . import x" names a submodule when one exists, else the package's attribute.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for name in names:
            while name and name not in MODULES:  # "import sandlot.x.y" → the deepest module
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


def _graph(*, typing_only: bool = False) -> dict[str, set[str]]:
    return {m: set(_imports(m, p, typing_only=typing_only)) for m, p in MODULES.items()}


RUNTIME = _graph()
TYPING = _graph(typing_only=True)
# The backends, side by side over the kit (sandlot.backends.kit) and the helpers beside it:
# the modules the registry (sandlot.backends) imports, and the SSH backend's former module.
BACKENDS = {m for m in RUNTIME["sandlot.backends"] if m.startswith("sandlot.backends.")}
BACKENDS.add("sandlot.backends.stream")


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """One chain of imports from ``start`` to ``goal`` (for the failure message)."""
    came: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node]):
            if nxt not in came and nxt != start:
                came[nxt] = node
                todo.append(nxt)
    chain = [goal]
    while chain[-1] != start:
        chain.append(came[chain[-1]])
    return chain[::-1]


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module."""
    reach = {m: _reachable(graph, m) for m in graph}
    components = {frozenset({m} | {n for n in reach[m] if m in reach[n]}) for m in graph}
    return [set(c) for c in components if len(c) > 1]


def test_the_graph_sees_the_imports_it_must() -> None:
    """The parser finds top-level, in-function, relative and TYPE_CHECKING imports."""
    assert {"sandlot.files", "sandlot.link", "sandlot.serving.library"} <= RUNTIME[
        "sandlot.sandbox"
    ]
    assert "sandlot.rlm.cli" in RUNTIME["sandlot.cli"]
    assert "sandlot.rlm.view" in RUNTIME["sandlot.rlm.cli"]  # imported inside view_command
    assert "sandlot.sandbox" in TYPING["sandlot.serving.library"]  # RemoteLibrary.sandbox's type
    assert "sandlot.sandbox" not in RUNTIME["sandlot.serving.library"]


def test_the_layers_above_the_sandbox_never_import_it() -> None:
    """files, serving.library and link reach no path of imports back to sandbox."""
    for layer in ABOVE_SANDBOX:
        reached = _reachable(RUNTIME, layer)
        assert "sandlot.sandbox" not in reached, (
            f"{layer} imports sandlot.sandbox at run time: "
            f"{' -> '.join(_path(RUNTIME, layer, 'sandlot.sandbox'))}"
        )
    # Not even for the type checker: files and the link know nothing of AsyncSandbox.
    for layer in ("sandlot.files", "sandlot.link"):
        assert "sandlot.sandbox" not in RUNTIME[layer] | TYPING[layer]


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One chain of imports round ``component`` (a strongly connected one), for a message."""
    first = min(component)
    step = min(n for n in graph[first] if n in component)
    inside = {m: graph[m] & component for m in component}
    return [first, *_path(inside, step, first)] if step != first else [first, first]


def test_no_import_cycle_anywhere() -> None:
    """No module of sandlot imports, at run time, one that imports it back (lazy imports count)."""
    cycles = [" -> ".join(_a_cycle(RUNTIME, c)) for c in _cycles(RUNTIME)]
    assert not cycles, "import cycles in sandlot:\n" + "\n".join(sorted(cycles))


def test_the_backends_are_siblings_over_their_kit() -> None:
    """A backend imports the kit and helpers below it, never another backend or a layer above.

    A backend is found from the registry, so a new one is checked once it is registered.

    The kit and the helpers (``sandlot.backends.*`` but the backends) reach no backend,
    nor anything above the config, the channel, the task scopes, the exit's stages and the
    driver, through any chain of imports.
    """
    assert {"sandlot.backends.local", "sandlot.backends.ssh", "sandlot.backends.ray"} < BACKENDS
    below = {m for m in MODULES if m.startswith("sandlot.backends.")} - BACKENDS
    base = below | {m for m in MODULES if m.startswith("sandlot.driver.")}
    base |= {"sandlot.config", "sandlot.errors", "sandlot.secrets", "sandlot.channel"}
    base |= {"sandlot.tasks"}  # the owner of background tasks, which imports nothing of sandlot
    base |= {"sandlot.exits"}  # the exit's stages, which import nothing of sandlot
    wrong = [
        f"{backend} imports {imported}"
        for backend in sorted(BACKENDS)
        for imported in sorted(RUNTIME[backend] - base)
        if (backend, imported) not in BUILT_ON
    ]
    assert not wrong, "\n".join(wrong)
    for module in sorted(below):
        beyond = _reachable(RUNTIME, module) - base
        assert not beyond, f"{module} reaches {sorted(beyond)}"


def test_no_cycle_runs_through_the_named_layers() -> None:
    """The cycles the layering removed stay gone (other cycles are listed, not judged)."""
    named = {*ABOVE_SANDBOX, "sandlot.console", "sandlot.cli", "sandlot.rlm.cli"}
    for component in _cycles(RUNTIME):
        assert not component & named, f"an import cycle through {sorted(component)}"


def test_the_rlm_command_line_never_imports_the_main_one() -> None:
    """``sandlot rlm`` shares the console helpers with ``sandlot``; it never imports it."""
    assert "sandlot.cli" not in _reachable(RUNTIME, "sandlot.rlm.cli") | TYPING["sandlot.rlm.cli"]
    assert "sandlot.console" in RUNTIME["sandlot.rlm.cli"]
    assert "sandlot.console" in RUNTIME["sandlot.cli"]


def _private_members_of_async_sandbox() -> set[str]:
    tree = ast.parse(MODULES["sandlot.sandbox"].read_text(encoding="utf-8"))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AsyncSandbox"]
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.endswith("__")}


def test_no_module_but_sandbox_touches_private_members_of_async_sandbox() -> None:
    """``x._request`` (or any of AsyncSandbox's private names) on anything but self."""
    private = _private_members_of_async_sandbox()
    assert {"_request", "_reply", "_value", "_violation", "_channel"} <= private
    touched = []
    for module, path in MODULES.items():
        if module == "sandlot.sandbox":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                touched.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.attr}")
    assert not touched, "\n".join(touched)


def _task_groups(tree: ast.AST) -> set[str]:
    """The names bound by ``async with asyncio.TaskGroup() as name``."""
    return {
        item.optional_vars.id
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncWith)
        for item in node.items
        if ast.unparse(item.context_expr) in ("asyncio.TaskGroup()", "TaskGroup()")
        and isinstance(item.optional_vars, ast.Name)
    }


def test_every_task_is_started_by_its_owner() -> None:
    """Only sandlot.tasks (TaskScope) and a TaskGroup's block start tasks: none is unowned."""
    starts = ("create_task", "ensure_future")
    unowned = []
    for module, path in MODULES.items():
        if module == "sandlot.tasks":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        groups = _task_groups(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in starts:
                if isinstance(node.value, ast.Name) and node.value.id in groups:
                    continue
            elif not (isinstance(node, ast.Name) and node.id in starts):
                continue
            unowned.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not unowned, "start these tasks on a TaskScope (sandlot/tasks.py):\n" + "\n".join(
        unowned
    )
    # The check sees what it must: the one place left that starts tasks, and a group's.
    tasks_tree = ast.parse(MODULES["sandlot.tasks"].read_text(encoding="utf-8"))
    assert "ensure_future" in ast.unparse(tasks_tree)
    assert "group" in _task_groups(
        ast.parse(MODULES["sandlot.experiment.runner"].read_text(encoding="utf-8"))
    )


def test_framework_adapters_are_leaves() -> None:
    """Nothing in sandlot imports an adapter, but the DSPy one's first import path."""
    importers = {
        module
        for module, imported in RUNTIME.items()
        if not module.startswith("sandlot.integrations")
        and any(name.startswith("sandlot.integrations") for name in imported)
    }
    assert importers == {"sandlot.rlm.dspy"}
