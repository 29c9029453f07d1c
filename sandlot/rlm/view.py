"""A trajectory as one self-contained HTML page: ``sandlot rlm view``.

The page carries the events as JSON in a ``<script type="application/json">``
element and a small script that builds the DOM from them with text nodes only,
so nothing an LM or a user wrote can become markup. A Content-Security-Policy
lets only that script (named by its hash) run and loads nothing from anywhere:
no network, no external fonts or scripts.

Timings: an event is written when the thing it records has finished, so an
event's span is ``[t - seconds, t]`` on its run's clock.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..resources import package_text
from ..sink import private_opener
from .trajectory import read_trajectory

__all__ = ["JS_HELPERS", "page_script", "render_html", "render_page", "write_html"]

_CSS = package_text("sandlot.rlm", "viewer/page.css")

JS_HELPERS = package_text("sandlot.rlm", "viewer/helpers.js")

_JS_TRAJECTORY = package_text("sandlot.rlm", "viewer/trajectory.js")


def page_script(body: str) -> str:
    """``body`` (JavaScript) after :data:`JS_HELPERS`, in one strict-mode function."""
    return '"use strict";\n(function () {\n' + JS_HELPERS + body + "})();\n"


_JS = page_script(_JS_TRAJECTORY)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities turned into strings, which JSON cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _embedded_json(events: Any) -> str:
    """The data as JSON safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` can only occur inside JSON strings, where their
    ``\\u`` escapes mean the same, so no ``</script>`` or ``<!--`` survives.
    """
    data = json.dumps(_finite(events), ensure_ascii=True, separators=(",", ":"), default=repr)
    return data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _title(events: list[dict[str, Any]], source: str | None) -> str:
    """The page's title: the first run's query, cut short, or the file's name."""
    for event in events:
        if event.get("type") == "run_start" and isinstance(event.get("query"), str):
            query = " ".join(event["query"].split())
            if query:
                return "RLM: " + (query if len(query) <= 80 else query[:79] + "…")
    return f"RLM trajectory {source}" if source else "RLM trajectory"


def render_page(
    title: str,
    data: Any,
    script: str,
    *,
    data_id: str,
    generator: str,
    what: str,
    css: str = "",
    data_images: bool = False,
) -> str:
    """One self-contained HTML page: ``data`` as JSON in element ``data_id``, shown by ``script``.

    ``script`` (made with :func:`page_script`) reads the data and builds the DOM
    with text nodes only. The page needs no network: CSS and JS are inline, and
    the Content-Security-Policy lets nothing but that script (named by its hash)
    run. ``css`` is added to the viewer's own styles; ``what`` names the data in
    the note shown without JavaScript. ``data_images`` lets the page show images
    from ``data:`` URLs (the script must make them only from checked base64).
    """
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )
    if data_images:  # images from data: URLs the script made, and nothing from anywhere else
        csp += "; img-src data:"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{html.escape(generator)}">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{_CSS}{css}</style>\n</head>\n<body>\n"
        f'<main id="app"><noscript><p>This page needs JavaScript to show the {html.escape(what)}; '
        f"the data is in the {data_id} element of its source.</p></noscript></main>\n"
        f'<script type="application/json" id="{data_id}">{_embedded_json(data)}</script>\n'
        f"<script>{script}</script>\n"
        "</body>\n</html>\n"
    )


def render_html(events: Iterable[dict[str, Any]], source: str | None = None) -> str:
    """One self-contained HTML page showing the trajectory ``events`` (of any number of runs).

    ``source`` (the file's name, say) is only used in the page's title when no run
    has a query. The page needs no network: CSS and JS are inline, and the
    Content-Security-Policy lets nothing but its own script run.
    """
    items = [dict(event) for event in events]
    return render_page(
        _title(items, source),
        items,
        _JS,
        data_id="trajectory-data",
        generator="sandlot rlm view",
        what="trajectory",
    )


def write_html(jsonl_path: str | Path, html_path: str | Path | None = None) -> Path:
    """Render the trajectory at ``jsonl_path`` to ``html_path`` and return where it went.

    By default the page goes next to the trajectory, ``x.jsonl`` -> ``x.html``.
    Raises ``OSError`` if a file cannot be read or written, and ``ValueError`` if
    ``jsonl_path`` is not a JSONL trajectory (``UnicodeDecodeError`` for a binary
    file) or holds no event.
    """
    source = Path(jsonl_path)
    target = Path(html_path) if html_path is not None else source.with_suffix(".html")
    events = list(read_trajectory(source))
    if not events:
        raise ValueError(f"{source}: no trajectory events in it")
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(f"{target}: the page would overwrite the trajectory itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8", opener=private_opener) as out:  # it quotes sandboxes
        out.write(render_html(events, source=source.name))
    return target
