"""Local helpers for the agent: formatting only, no model and no GPU.

This file is a library of the agent's workspace (``Library.from_file("helpers.py")``): the
session imports it as ``helpers``, beside the remote ``model_tools``. Standard library only;
numpy arrays are recognised by their ``shape``/``dtype``/``tolist`` attributes, so numpy need
not be installed where this runs.
"""

from __future__ import annotations

from typing import Any

#: How many leading items of an array or long list a summary shows.
PREVIEW_ITEMS = 4
#: Lists at most this long are shown in full.
SHORT_LIST = 8


def _number(value: Any) -> str:
    """A float to 4 decimals, anything else as ``str``."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _preview(items: list[Any]) -> str:
    """The first :data:`PREVIEW_ITEMS` items, numbers rounded, as ``[a, b, ...]``."""
    return "[" + ", ".join(_number(v) for v in items[:PREVIEW_ITEMS]) + ", ...]"


def summarize(value: Any) -> str:
    """A short text for one value: arrays and long lists summarised, floats rounded.

    >>> summarize([0.123456, 2.0])
    '[0.1235, 2.0000]'
    >>> summarize(list(range(10)))
    'list(len=10, first=[0, 1, 2, 3, ...])'
    """
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "tolist"):
        flat = value.reshape(-1).tolist() if hasattr(value, "reshape") else value.tolist()
        shape = tuple(value.shape)
        return f"array(shape={shape}, dtype={value.dtype}, first={_preview(flat)})"
    if isinstance(value, (list, tuple)):
        if len(value) > SHORT_LIST:
            return f"{type(value).__name__}(len={len(value)}, first={_preview(list(value))})"
        return "[" + ", ".join(summarize(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {summarize(v)}" for k, v in value.items()) + "}"
    return _number(value)


def format_result(data: dict[str, Any], title: str = "Result") -> str:
    """Format a result dict as a markdown list under a ``## title`` heading.

    >>> print(format_result({"text": "hi", "score": 0.5}))
    ## Result
    <BLANKLINE>
    - **text**: hi
    - **score**: 0.5000
    """
    lines = [f"## {title}", ""]
    for key, value in data.items():
        lines.append(f"- **{key}**: {summarize(value)}")
    return "\n".join(lines)
