"""``@expose``, the model registry, and what a served module's functions look like.

Interface files use ``from sandlot import expose, models``; inside a sandbox that
name resolves to this module (through the small ``sandlot`` shim the driver puts
last on ``sys.path``), on the host to the same objects re-exported by sandlot.

Standard library only: torch and transformers are imported when a model loads.
"""

from __future__ import annotations

import ast
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__sandlot_expose__"


@overload
def expose(fn: F, /) -> F: ...
@overload
def expose(*, concurrent: bool = False, name: str | None = None) -> Callable[[F], F]: ...
def expose(
    fn: F | None = None, /, *, concurrent: bool = False, name: str | None = None
) -> F | Callable[[F], F]:
    """Mark a function of an interface file to be served by ``Sandbox.serve``.

    ``concurrent=True`` declares it safe to run for several callers at once;
    otherwise calls to it run one at a time. ``name`` serves it under another name.
    """

    def mark(f: F) -> F:
        setattr(f, MARK, {"name": name or f.__name__, "concurrent": concurrent})
        return f

    return mark(fn) if fn is not None else mark


class _Models:
    """Models loaded from ``SandboxConfig.models``, by variable name or model name."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}
        self._tokenizers: dict[str, Any] = {}

    def add(self, names: list[str], model: Any, tokenizer: Any) -> None:
        for key in names:
            self._models[key] = model
            if tokenizer is not None:
                self._tokenizers[key] = tokenizer

    def get(self, name: str = "model") -> Any:
        """The model loaded as ``name`` (its ``var_name`` or its ``name``)."""
        try:
            return self._models[name]
        except KeyError:
            raise KeyError(f"no model {name!r}; loaded: {sorted(self._models) or 'none'}") from None

    def get_tokenizer(self, name: str = "model") -> Any:
        """The tokenizer loaded with model ``name``."""
        try:
            return self._tokenizers[name]
        except KeyError:
            known = sorted(self._tokenizers) or "none"
            raise KeyError(f"no tokenizer for {name!r}; loaded: {known}") from None

    def names(self) -> list[str]:
        """Every name a model can be reached by."""
        return sorted(self._models)


models = _Models()


def load_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """Load one ``ModelConfig`` (as a dict) and register it; return what to inject."""
    var = cfg["var_name"]
    tok_var = "tokenizer" if var == "model" else f"{var}_tokenizer"
    if cfg.get("load_code"):
        scope: dict[str, Any] = {"config": cfg}
        code = compile(cfg["load_code"], f"<load_code of {cfg['name']}>", "exec", dont_inherit=True)
        exec(code, scope)
        if "model" not in scope:
            raise NameError(f"load_code for {cfg['name']!r} must assign a variable named 'model'")
        model, tokenizer = scope["model"], scope.get("tokenizer")
    else:
        import torch
        import transformers

        kwargs = dict(cfg.get("kwargs") or {})
        auto = getattr(transformers, kwargs.pop("auto_class", "AutoModel"))
        dtype = cfg.get("dtype", "auto")
        device = cfg.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = auto.from_pretrained(
            cfg["name"],
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
            revision=cfg.get("revision"),
            **kwargs,
        ).to(device)
        if cfg.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, cfg["adapter"])
        model.eval()
        tokenizer = None
        if cfg.get("tokenizer", True):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                cfg["name"], revision=cfg.get("revision")
            )
    models.add([var, cfg["name"]], model, tokenizer)
    inject = {var: model}
    if tokenizer is not None:
        inject[tok_var] = tokenizer
    return inject


def _annotation(value: Any) -> str | None:
    import inspect  # lazily: not needed before the first served function (start-up time)

    if value is inspect.Parameter.empty:
        return None
    text = value if isinstance(value, str) else inspect.formatannotation(value)
    try:
        ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    return text


def _default(value: Any) -> tuple[str | None, bool]:
    """(source text of a default, whether that text rebuilds it exactly)."""
    import inspect  # lazily: not needed before the first served function (start-up time)

    if value is inspect.Parameter.empty:
        return None, False
    text = repr(value)
    try:
        return text, ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text, False


_JSON = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_schema(hint: Any) -> dict[str, Any]:
    """A JSON schema for a type hint (an empty schema, meaning any value, when unknown)."""
    if hint in _JSON:
        return {"type": _JSON[hint]}
    if hint is type(None):
        return {"type": "null"}
    if hint in (bytes, bytearray):
        return {"type": "string", "contentEncoding": "base64"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in (list, tuple, set) or origin in (list, tuple, set, frozenset):
        schema: dict[str, Any] = {"type": "array"}
        if origin is tuple and args and args[-1] is not Ellipsis:
            schema["prefixItems"] = [json_schema(a) for a in args]
        elif args:
            schema["items"] = json_schema(args[0])
        return schema
    if hint is dict or origin is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = json_schema(args[1])
        return schema
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_schema(a) for a in args]}
    if origin is typing.Annotated:
        return json_schema(args[0])
    return {}


def describe(fn: Callable[..., Any]) -> dict[str, Any]:
    """A served function as plain data: signature pieces, docstring, JSON schema."""
    mark = getattr(fn, MARK)
    import inspect  # lazily: not needed before the first served function (start-up time)

    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # annotations naming what cannot be resolved: no schema for them
        hints = {}
    params = []
    properties: dict[str, Any] = {}
    required = []
    for p in sig.parameters.values():
        default, exact = _default(p.default)
        params.append(
            {
                "name": p.name,
                "kind": p.kind.name,
                "annotation": _annotation(p.annotation),
                "default": default,
                "default_exact": exact,
            }
        )
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY):
            prop = json_schema(hints[p.name]) if p.name in hints else {}
            if exact:
                prop["default"] = p.default
            properties[p.name] = prop
            if p.default is p.empty:
                required.append(p.name)
    doc = inspect.getdoc(fn) or ""
    return {
        "name": mark["name"],
        "concurrent": mark["concurrent"],
        "doc": doc,
        "params": params,
        "returns": _annotation(sig.return_annotation),
        "schema": {
            "type": "object",
            "properties": properties,
            "required": required,
            **({"description": doc.split("\n\n")[0]} if doc else {}),
        },
    }


def exposed_functions(module: types.ModuleType) -> dict[str, Callable[..., Any]]:
    """The ``@expose`` functions defined in ``module``, by served name."""
    found = {}
    for value in vars(module).values():
        mark = getattr(value, MARK, None)
        if isinstance(mark, dict) and callable(value):
            found[mark["name"]] = value
    return found
