"""The experiment page shows a notebook's images, and nothing else a sandbox wrote becomes markup.

The notebook's outputs come from sandboxed code, which can put anything under
any MIME type. The page turns only PNG and JPEG data that is base64 and nothing
else into ``data:`` images (the Content-Security-Policy allows images from
``data:`` URLs and nowhere else); SVG, HTML, markup hidden in an image's data
and script stay text. The page is loaded in headless Chromium and its DOM read.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

from browser import dump_dom
from PIL import Image

from sandlot.experiment.view import write_view


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (0, 128, 255)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _display(data: dict[str, object]) -> dict[str, object]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def test_only_checked_png_and_jpeg_become_images(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir()
    events = [
        {"type": "run_start", "experiment": "pics", "run": "run-1"},
        {"type": "run_end", "status": "answered", "stop_reason": "answered", "run": "run-1"},
    ]
    (run / "transcript.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    png = _png()
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" onload="document.title=1"><script>x</script></svg>'
    )
    outputs = [
        _display({"image/png": png, "text/plain": "<Figure>"}),
        _display({"image/png": [png[:40] + "\n", png[40:]]}),  # nbformat's list of lines
        _display({"image/png": 'x" onerror="document.title=\'owned\'" y="'}),
        _display({"image/jpeg": "AAAA<img src=x onerror=alert(1)>"}),
        _display({"image/svg+xml": svg, "text/html": "<b id='injected'>bold</b>"}),
    ]
    cell = {
        "cell_type": "code",
        "id": "c1",
        "metadata": {},
        "execution_count": 1,
        "source": "plot()",
        "outputs": outputs,
    }
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (run / "notebook.ipynb").write_text(json.dumps(notebook))

    page = write_view(tmp_path)
    source = page.read_text()
    assert "img-src data:" in source and "default-src 'none'" in source
    dom = dump_dom(page, tmp_path / "profile")

    srcs = re.findall(r'<img class="plot"[^>]*src="([^"]*)"', dom)
    assert srcs == [f"data:image/png;base64,{png}"] * 2
    assert "owned" not in dom.split("<title>")[1].split("</title>")[0]
    assert "<svg" not in dom and "<script>x" not in dom
    assert 'id="injected"' not in dom
    assert len(re.findall(r"<img\b", dom)) == 2  # no element from the forged JPEG's markup
