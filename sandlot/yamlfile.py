"""The one way sandlot reads YAML (experiment files, skills' front matter): safe, and no aliases.

An alias (``*name``) repeats what its anchor (``&name``) holds, so a few lines
of nested aliases stand for an exponential tree: a 588-byte experiment file
once became 136 MB of JSON when its run wrote the config out. Refusing aliases
while the document is composed, before any value is built, keeps what a file
holds proportional to its size. An anchor alone repeats nothing and is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

from .errors import ConfigError


class YAMLProblem(ValueError):
    """A document that cannot be read: ``problem`` says why, ``line`` (1-based) where, if known."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(f"line {line}: {problem}" if line is not None else problem)
        self.problem = problem
        self.line = line


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """PyYAML's safe loader, refusing an alias at its line when the composer meets it."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"an alias (*{event.anchor}) repeats an anchor's value; sandlot reads no "
                "aliases (nested ones can stand for gigabytes): write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """One YAML document's node tree (for line numbers) and its value; ``(None, None)`` if empty.

    Raises :class:`YAMLProblem` for malformed YAML, more than one document, or
    an alias.
    """
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YAMLProblem(problem, mark.line + 1 if mark is not None else None) from None
    finally:
        loader.dispose()


def line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest parent that exists).

    For an unknown field the line is its key's; for a missing one, its parent's.
    """
    line = node.start_mark.line + 1 if node is not None else None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == step:
                    line = key.start_mark.line + 1
                    node = value
                    if not isinstance(value, yaml.MappingNode | yaml.SequenceNode):
                        line = value.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and step.isdigit() and int(step) < len(node.value):
            node = node.value[int(step)]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def read_yaml_file(file: Path, max_bytes: int, what: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and value of YAML file ``file`` (``what`` names its kind in errors).

    Raises ``ConfigError`` for a file over ``max_bytes``, one that cannot be read,
    or malformed YAML; for the last, ``problems`` holds its ``(FILE:LINE, problem)``.
    """
    try:
        if file.stat().st_size > max_bytes:
            raise ConfigError(f"{file}: over {max_bytes} bytes, too large for {what}")
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read {what}: {exc}") from None
    try:
        return load_yaml(text)
    except YAMLProblem as exc:
        where = f"{file}:{exc.line}" if exc.line is not None else str(file)
        error = ConfigError(f"{where}: not valid YAML: {exc.problem}")
        error.problems = [(where, f"not valid YAML: {exc.problem}")]
        raise error from None
