"""The notebook file a session writes: valid nbformat, stable cell ids, atomic link-safe saves."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import nbformat
import pytest

from sandlot.errors import ConfigError
from sandlot.notebook.document import NotebookFile

# A 1x1 transparent PNG, base64 as nbformat stores it.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAC"
    "hwGA60e6kgAAAABJRU5ErkJggg=="
)


def read_strictly(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, read and validated with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(notebook)
    return notebook


def build(path: Path) -> NotebookFile:
    """A notebook with one cell of each kind of output."""
    document = NotebookFile.create(path, name="demo")
    assert document.append_markdown("# A session") == 0
    first = document.append_code("print('a'); print('b')\n1 + 1")
    assert first == 0
    document.add_output(first, {"output_type": "stream", "name": "stdout", "text": "a\n"})
    document.add_output(first, {"output_type": "stream", "name": "stdout", "text": ["b", "\n"]})
    document.add_output(first, {"output_type": "stream", "name": "stderr", "text": "warn\n"})
    document.add_output(first, {"output_type": "stream", "name": "stdout", "text": "c\n"})
    document.add_output(
        first,
        {
            "output_type": "execute_result",
            "data": {"text/plain": "2"},
            "metadata": {},
            "execution_count": None,
        },
    )
    document.finish(
        first,
        execution_count=1,
        status="ok",
        started="2025-01-01T00:00:00.000000Z",
        finished="2025-01-01T00:00:01.500000Z",
    )
    second = document.append_code("show()\n1 / 0")
    assert second == 1
    document.add_output(
        second,
        {
            "output_type": "display_data",
            "data": {"image/png": PNG, "text/plain": "<Figure>"},
            "metadata": {"image/png": {"width": 1, "height": 1}},
        },
    )
    document.add_output(
        second,
        {
            "output_type": "error",
            "ename": "ZeroDivisionError",
            "evalue": "division by zero",
            "traceback": ["\x1b[31mZeroDivisionError\x1b[0m", "division by zero"],
        },
    )
    document.finish(second, execution_count=2, status="error")
    return document


def test_saved_notebook_is_valid_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "session.ipynb"
    document = build(path)
    document.save()
    notebook = read_strictly(path)
    assert (notebook.nbformat, notebook.nbformat_minor) == (4, 5)
    assert notebook.metadata.kernelspec == {
        "name": "python3",
        "display_name": "Python 3 (sandlot)",
        "language": "python",
    }
    assert notebook.metadata.language_info == {"name": "python"}
    assert notebook.metadata.sandlot == {"name": "demo"}
    markdown, first, second = notebook.cells
    assert markdown.cell_type == "markdown"
    assert markdown.source == "# A session"

    assert first.execution_count == 1
    assert first.metadata.sandlot == {"status": "ok"}
    assert first.metadata.execution == {
        "iopub.execute_input": "2025-01-01T00:00:00.000000Z",
        "shell.execute_reply": "2025-01-01T00:00:01.500000Z",
    }
    assert [(o.output_type, o.get("name"), o.get("text")) for o in first.outputs[:3]] == [
        ("stream", "stdout", "a\nb\n"),  # consecutive stdout merged
        ("stream", "stderr", "warn\n"),
        ("stream", "stdout", "c\n"),  # not merged across the stderr output
    ]
    assert first.outputs[3].output_type == "execute_result"
    assert first.outputs[3].execution_count == 1  # finish() set it

    assert second.execution_count == 2
    assert second.metadata.sandlot == {"status": "error"}
    assert "execution" not in second.metadata
    display, error = second.outputs
    assert display.data["image/png"] == PNG
    assert error.ename == "ZeroDivisionError"
    assert error.traceback[1] == "division by zero"
    assert document.code_sources() == ["print('a'); print('b')\n1 + 1", "show()\n1 / 0"]


def test_cell_ids_survive_save_and_open(tmp_path: Path) -> None:
    path = tmp_path / "ids.ipynb"
    build(path).save()
    ids = [cell.id for cell in read_strictly(path).cells]
    assert len(set(ids)) == 3
    reopened = NotebookFile.open(path)
    assert not reopened.dirty
    reopened.append_code("x = 3")
    reopened.save()
    again = [cell.id for cell in read_strictly(path).cells]
    assert again[:3] == ids
    assert len(set(again)) == 4
    assert reopened.code_sources()[-1] == "x = 3"


def test_code_indexes_and_positions(tmp_path: Path) -> None:
    document = NotebookFile.create(tmp_path / "n.ipynb")
    with pytest.raises(IndexError, match="has no code cells"):
        document.code_position(0)
    document.append_markdown("intro")
    document.append_code("a")
    document.append_markdown("between")
    document.append_code("b")
    assert document.code_position(0) == 1
    assert document.code_position(1) == 3
    assert document.code_position(-1) == 3
    assert document.code_position(-2) == 1
    for bad in (2, -3):
        with pytest.raises(IndexError, match=r"has 2 code cells \(indexes -2 to 1\)"):
            document.code_position(bad)


def test_replace_code_on_the_last_cell(tmp_path: Path) -> None:
    path = tmp_path / "r.ipynb"
    document = NotebookFile.create(path)
    document.append_code("first")
    index = document.append_code("1/0")
    document.add_output(
        index, {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []}
    )
    document.finish(index, execution_count=2, status="error", started="s", finished="f")
    assert document.replace_code(-1, "1/1") == 1
    document.save()
    cell = read_strictly(path).cells[-1]
    assert cell.source == "1/1"
    assert cell.outputs == []
    assert cell.execution_count is None
    assert cell.metadata == {"sandlot": {"status": "running"}}
    assert document.code_sources() == ["first", "1/1"]


def test_bad_outputs_are_refused(tmp_path: Path) -> None:
    document = NotebookFile.create(tmp_path / "o.ipynb")
    index = document.append_code("x")
    with pytest.raises(ValueError, match="output_type"):
        document.add_output(index, {"output_type": "clear_output"})
    with pytest.raises(ValueError, match="not a valid stream output"):
        document.add_output(index, {"output_type": "stream", "name": "stdout", "text": 3})
    with pytest.raises(ValueError, match="not a valid error output"):
        document.add_output(index, {"output_type": "error", "ename": "E"})
    with pytest.raises(IndexError):
        document.add_output(5, {"output_type": "stream", "name": "stdout", "text": "x"})
    extra = {"output_type": "stream", "name": "stdout", "text": "x", "evil": 1}
    with pytest.raises(ValueError, match="not a valid stream output"):
        document.add_output(index, extra)
    not_text = {"output_type": "display_data", "data": {"text/plain": 2}, "metadata": {}}
    with pytest.raises(ValueError, match="not a valid display_data output"):
        document.add_output(index, not_text)


def full_encoding(path: Path) -> str:
    """The file at ``path`` encoded whole, as nbformat lays it out (indent 1, sorted keys)."""
    return json.dumps(json.loads(path.read_text()), indent=1, sort_keys=True, ensure_ascii=False)


def test_each_save_matches_a_whole_encoding_after_every_kind_of_change(tmp_path: Path) -> None:
    """Cells encoded once and reused must give the same file as encoding all of it again."""
    path = tmp_path / "cache.ipynb"
    document = NotebookFile.create(path, name="cache")
    steps = [
        lambda: document.append_code("print('é')"),
        lambda: document.add_output(0, {"output_type": "stream", "name": "stdout", "text": "é\n"}),
        lambda: document.add_output(0, {"output_type": "stream", "name": "stdout", "text": "b\n"}),
        lambda: document.finish(0, execution_count=1, status="ok", started="t0", finished="t1"),
        lambda: document.append_markdown('# notes\nwith "quotes"'),
        lambda: document.append_code("1+1"),
        lambda: document.add_output(
            1,
            {
                "output_type": "execute_result",
                "data": {"text/plain": "2"},
                "metadata": {},
                "execution_count": None,
            },
        ),
        lambda: document.finish(1, execution_count=2, status="ok"),
        lambda: document.replace_code(0, "x = 1"),
        lambda: document.finish(0, execution_count=3, status="error"),
        lambda: document.clear_outputs(1),
        lambda: document.add_output(1, {"output_type": "stream", "name": "stdout", "text": "1"}),
        lambda: document.clear_outputs(1, wait=True),  # nothing goes until the next output
        lambda: document.add_output(1, {"output_type": "stream", "name": "stderr", "text": "2"}),
    ]
    for step in steps:
        step()
        document.save()
        text = path.read_text()
        assert text == full_encoding(path) + "\n"
        assert json.loads(text) == json.loads(json.dumps(document._notebook))
    assert [o["text"] for o in json.loads(path.read_text())["cells"][2]["outputs"]] == ["2"]
    read_strictly(path)
    reopened = NotebookFile.open(path)
    reopened.append_code("y")
    reopened.save()
    assert path.read_text() == full_encoding(path) + "\n"
    assert [c["source"] for c in json.loads(path.read_text())["cells"]] == [
        "x = 1",
        '# notes\nwith "quotes"',
        "1+1",
        "y",
    ]


def test_open_upgrades_a_v44_notebook_and_adds_ids(tmp_path: Path) -> None:
    path = tmp_path / "old.ipynb"
    old = {
        "nbformat": 4,
        "nbformat_minor": 4,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Old\n", "notebook"]},
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": 1,
                "source": "x = 1",
                "outputs": [],
            },
        ],
    }
    path.write_text(json.dumps(old), encoding="utf-8")
    document = NotebookFile.open(path)
    assert document.dirty  # it was upgraded
    assert document.code_sources() == ["x = 1"]
    document.save()
    notebook = read_strictly(path)
    assert notebook.nbformat_minor == 5
    assert all(cell.id for cell in notebook.cells)
    assert notebook.cells[0].source == "# Old\nnotebook"


def test_open_repairs_missing_and_duplicate_ids_in_a_v45_notebook(tmp_path: Path) -> None:
    path = tmp_path / "dup.ipynb"
    cell = {"cell_type": "markdown", "metadata": {}, "source": "x"}
    broken = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [{**cell, "id": "same"}, {**cell, "id": "same"}, cell],
    }
    path.write_text(json.dumps(broken), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        document = NotebookFile.open(path)
    document.save()
    ids = [c.id for c in read_strictly(path).cells]
    assert ids[0] == "same"
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    "content",
    ["not json at all", "[1, 2]", '{"nbformat": 4, "nbformat_minor": 5}', '{"a": 1}'],
)
def test_open_refuses_what_is_not_a_notebook(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        NotebookFile.open(path)
    assert str(path) in str(info.value)
    assert "not a notebook" in str(info.value)


def test_open_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.ipynb"
    NotebookFile.create(real)
    link = tmp_path / "link.ipynb"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symbolic link"):
        NotebookFile.open(link)


def test_create_refuses_an_existing_path(tmp_path: Path) -> None:
    path = tmp_path / "taken.ipynb"
    path.write_text("precious", encoding="utf-8")
    with pytest.raises(FileExistsError, match="already exists"):
        NotebookFile.create(path)
    assert path.read_text(encoding="utf-8") == "precious"
    dangling = tmp_path / "dangling.ipynb"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        NotebookFile.create(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_create_makes_the_parent_and_writes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "new.ipynb"
    document = NotebookFile.create(path)
    assert document.path == path
    assert not document.dirty
    assert read_strictly(path).cells == []


# ---- security --------------------------------------------------------------------------------


def test_save_replaces_a_symlink_planted_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "session.ipynb"
    document = NotebookFile.create(path)
    document.append_code("x = 1")
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch", encoding="utf-8")
    path.unlink()
    path.symlink_to(victim)
    document.save()
    assert victim.read_text(encoding="utf-8") == "do not touch"
    assert not path.is_symlink()
    assert path.is_file()
    assert read_strictly(path).cells[0].source == "x = 1"


def test_temp_names_are_random_and_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "session.ipynb"
    document = NotebookFile.create(path)
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch", encoding="utf-8")
    seen: set[str] = set()
    real_open = os.open

    def spying_open(name: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if Path(name).name.endswith(".tmp"):
            seen.add(Path(name).name)
            # A link planted at the very name that is about to be created.
            Path(name).symlink_to(victim)
        return real_open(name, flags, mode)

    monkeypatch.setattr(os, "open", spying_open)
    for _ in range(3):
        with pytest.raises(FileExistsError):
            document.save()
    monkeypatch.undo()
    assert victim.read_text(encoding="utf-8") == "do not touch"
    assert len(seen) == 3  # a fresh random name each time: none can be planted in advance
    assert all(name.startswith(".session.ipynb.") for name in seen)
    # the planted links were not ours to remove, and the notebook itself is intact
    assert read_strictly(path).cells == []
    document.save()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == [
        "session.ipynb",
        "victim.txt",
    ]


def test_a_failed_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "session.ipynb"
    document = NotebookFile.create(path)
    before = path.read_bytes()

    def broken_sync(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken_sync)
    document.append_code("x")
    with pytest.raises(RuntimeError, match="disk on fire"):
        document.save()
    assert [p.name for p in tmp_path.iterdir()] == ["session.ipynb"]
    assert path.read_bytes() == before
    assert document.dirty


def test_saved_file_mode(tmp_path: Path) -> None:
    """A notebook holds a sandbox's output: its user's alone, whatever the umask."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "mode.ipynb"
        NotebookFile.create(path).save()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600


# ---- throttling ------------------------------------------------------------------------------


def test_save_if_due_throttles(tmp_path: Path) -> None:
    path = tmp_path / "t.ipynb"
    document = NotebookFile.create(path)
    inode = path.stat().st_ino
    assert document.save_if_due(0) is False  # nothing changed
    assert path.stat().st_ino == inode

    index = document.append_code("for i in range(10_000): print(i)")
    assert document.save_if_due(60) is False  # changed, but saved a moment ago (at create)
    assert path.stat().st_ino == inode
    for i in range(1000):
        document.add_output(index, {"output_type": "stream", "name": "stdout", "text": f"{i}\n"})
        document.save_if_due(60)
    assert path.stat().st_ino == inode  # not one rewrite
    assert document.dirty

    time.sleep(0.05)
    assert document.save_if_due(0.01) is True
    assert path.stat().st_ino != inode
    assert not document.dirty
    outputs = read_strictly(path).cells[0].outputs
    assert len(outputs) == 1
    assert outputs[0].text == "".join(f"{i}\n" for i in range(1000))

    inode = path.stat().st_ino
    document.save()  # always writes
    assert path.stat().st_ino != inode
