"""Local helpers for the agent (a workspace library, imported as ``helpers``)."""

from __future__ import annotations

from typing import Any


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) > 4:
        return f"list(len={len(value)}, first=[{', '.join(_short(v) for v in value[:4])}, ...])"
    return str(value)


def format_result(data: dict[str, Any], title: str = "Result") -> str:
    """Format a result dict as a markdown list under a ``## title`` heading."""
    lines = [f"## {title}", ""]
    lines += [f"- **{key}**: {_short(value)}" for key, value in data.items()]
    return "\n".join(lines)
