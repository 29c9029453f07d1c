"""The ``.ipynb`` file a notebook session writes as it runs, for a person to open in JupyterLab.

The session appends each cell it runs and the outputs as they arrive, and
saves the file now and then, so the notebook on disk follows the session and
can be opened while it runs. Saving replaces the file atomically and never
follows a link: what lands at the path is always a whole notebook, written
where the host chose to write it. The file is created with mode 0600: it
holds a sandbox's output, which only its user may read.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import fastjsonschema
import nbformat  # typed package, but its functions are unannotated: calls carry ignores
from nbformat import NotebookNode
from nbformat.validator import get_validator

from ..errors import ConfigError
from ..sink import PRIVATE

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (sandlot)", "language": "python"}
OUTPUT_TYPES = frozenset({"stream", "execute_result", "display_data", "error"})
_output_checks: dict[str, Any] = {}


def _check_output(node: NotebookNode) -> None:
    """Check one output against nbformat 4.5's schema for its type; ValueError if it fails.

    nbformat.validate walks the schema with jsonschema on every call (about
    0.4 ms an output); the same schema compiled once checks an output in
    microseconds.
    """
    kind = node.output_type
    if not _output_checks:
        schema = get_validator(version=4, version_minor=5)._schema  # type: ignore[no-untyped-call]
        for name in OUTPUT_TYPES:
            _output_checks[name] = fastjsonschema.compile(
                {"$ref": f"#/definitions/{name}", "definitions": schema["definitions"]}
            )
    try:
        _output_checks[kind](node)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(f"not a valid {kind} output: {exc.message}") from None


def _encode(value: Any) -> str:
    """JSON as nbformat lays a notebook out: indent 1, sorted keys, text as it is."""
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)


class NotebookFile:
    """A notebook document on disk, kept in memory and saved on demand.

    Code cells are addressed by their index among code cells (as a session
    numbers what it ran), not by their position among all cells; ``dirty`` says
    whether the document changed since it was last saved.
    """

    def __init__(self, path: Path, notebook: NotebookNode) -> None:
        """Wrap ``notebook``, to be saved at ``path``; use :meth:`create` or :meth:`open`."""
        self.path = path
        self.dirty = False
        self._notebook = notebook
        self._code_positions = [
            i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
        ]
        self._last_save: float | None = None  # time.monotonic() of the last save
        # Each cell's JSON as it stands in the file, by position, until the cell changes:
        # a save encodes only the cells that changed, not the whole notebook.
        self._encoded: dict[int, str] = {}
        self._clear_pending: set[int] = set()  # cells whose outputs go at their next output

    @classmethod
    def create(cls, path: Path, *, name: str | None = None) -> NotebookFile:
        """A new, empty notebook written at ``path``, which must not exist yet.

        ``name`` (a session's name) is kept in the notebook's ``sandlot`` metadata.
        The path is claimed with an exclusive create before the first save, so
        two sessions cannot both take it and an existing file is never replaced.
        """
        path = Path(path)
        notebook = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
        notebook.metadata["kernelspec"] = dict(KERNELSPEC)
        notebook.metadata["language_info"] = {"name": "python"}
        if name is not None:
            notebook.metadata["sandlot"] = {"name": name}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE)
        except FileExistsError:
            raise FileExistsError(
                f"{path} already exists; NotebookFile.create does not overwrite a file "
                "(open it with NotebookFile.open, or choose another path)"
            ) from None
        os.close(fd)
        document = cls(path, notebook)
        try:
            document.save()
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return document

    @classmethod
    def open(cls, path: Path) -> NotebookFile:
        """The notebook at ``path``, upgraded to format 4.5 with an id on every cell.

        A symbolic link at ``path`` is refused, since saving would replace the
        link rather than write through it. A file nbformat cannot read as a
        valid notebook raises :class:`ConfigError` naming it.
        """
        path = Path(path)
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symbolic link; open the notebook it points to instead "
                "(saving replaces the file at the path, it does not write through links)"
            )
        try:  # O_NOFOLLOW: a link put there since the check above is refused too
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8") as file:
                text = file.read()
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not a notebook: it is not UTF-8 text ({exc})") from None
        try:
            notebook = nbformat.reader.reads(text)  # type: ignore[no-untyped-call]
            version = nbformat.reader.get_version(notebook)  # type: ignore[no-untyped-call]
            notebook = nbformat.convert(notebook, 4)  # type: ignore[no-untyped-call]
            minor = notebook.nbformat_minor
            if minor < 5:
                notebook = nbformat.v4.upgrade(  # type: ignore[no-untyped-call]
                    notebook, from_version=4, from_minor=minor
                )
            repaired = _repair_cell_ids(notebook)
            nbformat.validate(notebook)
        except Exception as exc:  # nbformat raises many kinds for a file it cannot read
            said = str(exc) if len(str(exc)) <= 1000 else str(exc)[:1000] + " ..."
            raise ConfigError(f"{path} is not a notebook nbformat can read: {said}") from None
        document = cls(path, notebook)
        document.dirty = repaired or version != (4, 5)
        return document

    # ---- cells ---------------------------------------------------------------------------

    def code_sources(self) -> list[str]:
        """The sources of the code cells, in order."""
        return [self._cells[i].source for i in self._code_positions]

    def append_code(self, source: str) -> int:
        """Add a code cell marked running; return its index among code cells."""
        cell = self._new_cell("code", source, execution_count=None, outputs=[])
        cell.metadata["sandlot"] = {"status": "running"}
        self._cells.append(cell)
        self._code_positions.append(len(self._cells) - 1)
        self.dirty = True
        return len(self._code_positions) - 1

    def append_markdown(self, text: str) -> int:
        """Add a markdown cell; return its position among all cells."""
        self._cells.append(self._new_cell("markdown", text))
        self.dirty = True
        return len(self._cells) - 1

    def code_position(self, code_index: int) -> int:
        """The position among all cells of code cell ``code_index`` (negative: from the end)."""
        count = len(self._code_positions)
        if not -count <= code_index < count:
            raise IndexError(
                f"no code cell {code_index}: the notebook has {count} code cell"
                f"{'' if count == 1 else 's'} (indexes {-count} to {count - 1})"
                if count
                else f"no code cell {code_index}: the notebook has no code cells"
            )
        return self._code_positions[code_index]

    def replace_code(self, code_index: int, source: str) -> int:
        """Give code cell ``code_index`` a new source, outputs cleared and marked running.

        Returns the index made non-negative.
        """
        cell = self._edit(code_index)
        self._clear_pending.discard(self._code_positions[code_index])
        cell.source = source
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata["sandlot"] = {"status": "running"}
        self.dirty = True
        return code_index % len(self._code_positions)

    def add_output(self, code_index: int, output: dict[str, Any]) -> None:
        """Append one nbformat v4 output to code cell ``code_index``.

        The output is checked against nbformat's schema first, so the saved
        notebook stays valid whatever the kernel sent. A ``stream`` output
        right after one of the same name is merged into it, as Jupyter does.
        """
        node = nbformat.from_dict(output)  # type: ignore[no-untyped-call]
        if node.get("output_type") not in OUTPUT_TYPES:
            raise ValueError(
                f"output_type {node.get('output_type')!r} is not one of {sorted(OUTPUT_TYPES)}"
            )
        if node.output_type == "stream" and isinstance(node.get("text"), list):
            node.text = "".join(node.text)
        _check_output(node)
        cell = self._edit(code_index)
        position = self._code_positions[code_index]  # in range: _edit checked it
        if position in self._clear_pending:
            self._clear_pending.discard(position)
            cell.outputs = []
        outputs = cell.outputs
        last = outputs[-1] if outputs else None
        if (
            node.output_type == "stream"
            and last is not None
            and last.output_type == "stream"
            and last.name == node.name
        ):
            last.text += node.text
        else:
            outputs.append(node)
        self.dirty = True

    def clear_outputs(self, code_index: int, *, wait: bool = False) -> None:
        """Clear code cell ``code_index``'s outputs, as ``IPython.display.clear_output`` asks.

        With ``wait`` the outputs go when the next one arrives, so an animation
        replaces its frame instead of flickering (and the file keeps one frame).
        """
        position = self.code_position(code_index)
        if wait:
            self._clear_pending.add(position)
            return
        self._clear_pending.discard(position)
        self._edit(code_index).outputs = []
        self.dirty = True

    def finish(
        self,
        code_index: int,
        *,
        execution_count: int | None,
        status: str,
        started: str | None = None,
        finished: str | None = None,
    ) -> None:
        """Record how code cell ``code_index`` ended.

        ``status`` ("ok", "error", "interrupted", "timeout") goes to the cell's
        ``sandlot`` metadata; ``started`` and ``finished`` (ISO times), when
        given, to the ``execution`` metadata JupyterLab shows as the cell's timing.
        """
        cell = self._edit(code_index)
        cell.execution_count = execution_count
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.execution_count = execution_count
        ours = cell.metadata.get("sandlot")
        cell.metadata["sandlot"] = {**(ours if isinstance(ours, dict) else {}), "status": status}
        timing = {"iopub.execute_input": started, "shell.execute_reply": finished}
        timing = {key: value for key, value in timing.items() if value is not None}
        if timing:
            cell.metadata["execution"] = timing
        self.dirty = True

    # ---- saving --------------------------------------------------------------------------

    def save(self) -> None:
        """Write the notebook to ``path`` atomically, whether or not it changed.

        The text goes to a new temporary file beside the path (exclusive create,
        a random name, never through a link), is synced, and then renamed over
        the path: a reader sees the old notebook or the new one, and a link
        planted at the path is replaced, not followed.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(partial, flags, PRIVATE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                # Every output was checked by add_output and every cell made by nbformat,
                # so nbformat.write's whole-notebook validation, deep copy and line
                # splitting would only repeat work, at a cost growing with the notebook
                # on every save. Strings unsplit are valid nbformat.
                file.write(self.text())
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.dirty = False
        self._last_save = time.monotonic()

    def text(self) -> str:
        """The notebook as saved: what ``json.dumps(notebook, indent=1, sort_keys=True)`` gives.

        Built from each cell's cached JSON, so its cost is one cell's encoding
        plus a join, however long the notebook.
        """
        rest = {key: value for key, value in self._notebook.items() if key != "cells"}
        if not self._cells or not rest or min(rest) < "cells":  # not the usual layout
            return _encode(self._notebook) + "\n"
        cells = []
        for position, cell in enumerate(self._cells):
            text = self._encoded.get(position)
            if text is None:  # indented two levels, as it sits in the "cells" list
                text = self._encoded[position] = "  " + _encode(cell).replace("\n", "\n  ")
            cells.append(text)
        # _encode(rest) opens with "{\n"; the cells list goes in front of its first key.
        return '{\n "cells": [\n' + ",\n".join(cells) + "\n ],\n" + _encode(rest)[2:] + "\n"

    def save_if_due(self, min_interval: float) -> bool:
        """Save if the notebook changed and ``min_interval`` seconds passed since the last save.

        A cell printing thousands of lines then costs one write per interval,
        not one per line. Returns whether it saved.
        """
        if not self.dirty:
            return False
        if self._last_save is not None and time.monotonic() - self._last_save < min_interval:
            return False
        self.save()
        return True

    # ---- helpers -------------------------------------------------------------------------

    @property
    def _cells(self) -> list[NotebookNode]:
        cells: list[NotebookNode] = self._notebook.cells
        return cells

    def _new_cell(self, kind: str, source: str, **fields: Any) -> NotebookNode:
        """A cell as nbformat.v4's ``new_*_cell`` makes it, with an id no other cell has.

        Those functions validate the cell they make against the whole schema
        (half a millisecond); a cell built from a string needs no check.
        """
        cell_id = _fresh_id({cell.get("id") for cell in self._cells})
        return NotebookNode(  # type: ignore[no-untyped-call]
            id=cell_id,
            cell_type=kind,
            metadata=NotebookNode(),  # type: ignore[no-untyped-call]
            source=str(source),
            **fields,
        )

    def _edit(self, code_index: int) -> NotebookNode:
        """Code cell ``code_index``, about to change: its cached JSON is dropped."""
        position = self.code_position(code_index)
        self._encoded.pop(position, None)
        return self._cells[position]


def _repair_cell_ids(notebook: NotebookNode) -> bool:
    """Give each cell without an id, or with an id seen before, a new one; say if any changed."""
    seen: set[str] = set()
    changed = False
    for cell in notebook.cells:
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not cell_id or cell_id in seen:
            cell_id = cell["id"] = _fresh_id(seen)
            changed = True
        seen.add(cell_id)
    return changed


def _fresh_id(taken: set[Any]) -> str:
    """A new cell id (eight hex digits, as nbformat makes them) not in ``taken``."""
    cell_id = uuid.uuid4().hex[:8]
    while cell_id in taken:
        cell_id = uuid.uuid4().hex[:8]
    return cell_id
