"""Skills: Markdown files of helper code that a notebook session offers to its agent.

A skill is a Markdown file with YAML front matter (``name``, ``description``,
``preload``) and ```` ```python ```` blocks. A preloaded skill's functions are
defined in the kernel before the agent starts, and its prompt shows only their
signatures; any other skill's prompt shows the code, for the agent to run
when it wants it. Skill files are parsed on the host, so every mistake in one
is reported as ``file:line`` before a kernel is started.
"""

from __future__ import annotations

import ast
import re
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml  # type: ignore[import-untyped,unused-ignore]

from ..errors import ConfigError
from ..yamlfile import YAMLProblem, load_yaml

MAX_SKILL_BYTES = 1 << 20  # a skill is a page of helpers; a bigger file is a mistake
MAX_NAME_LENGTH = 100  # the name becomes a file name in the kernel
SKILLS_DIR = "/tmp/sandlot-skills"  # where loader_code writes each skill's source, in the kernel

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_KNOWN_KEYS = ("name", "description", "preload")
_PYTHON_INFO = frozenset({"python", "py", "python3"})
_OPEN_FENCE = re.compile(r"(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)")


class SkillError(ConfigError):
    """A skill file that cannot be used: where (``path``, ``line``), what, and what to do.

    ``line`` is 1-based in the Markdown file; 0 when the file itself is the
    problem (it is missing, or is not a file).
    """

    def __init__(self, path: Path, line: int, message: str, fix: str = "") -> None:
        super().__init__(path, line, message, fix)  # args kept whole, so the error pickles
        self.path = path
        self.line = line
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: {self.message}"
        return f"{where}; {self.fix}" if self.fix else where


@dataclass(frozen=True)
class Skill:
    """One parsed skill file.

    ``source`` is the file's python blocks joined in order; ``functions`` its
    top-level function names, and ``signatures`` and ``docs`` (the first line of
    each docstring, "" when there is none) describe them for an agent's prompt.
    """

    name: str
    description: str
    preload: bool
    path: Path
    source: str
    functions: tuple[str, ...]
    # Derived from ``source``, so left out of comparison and hashing (dicts do not hash).
    signatures: dict[str, str] = field(compare=False)
    docs: dict[str, str] = field(compare=False)
    body: str


class _Parsed(NamedTuple):
    """A skill and the lines that ``load_skills`` needs to report clashes."""

    skill: Skill
    name_line: int
    def_lines: dict[str, int]  # function name -> line of its (last) def in the .md file


class _Block(NamedTuple):
    """A python block: its opening fence's .md line, its code lines, and the .md line of each."""

    fence_line: int
    lines: list[str]
    md_lines: list[int]


def parse_skill(path: str | Path) -> Skill:
    """Parse one skill file; any problem raises :class:`SkillError` at its line."""
    return _parse(Path(path)).skill


def load_skills(paths: Iterable[str | Path]) -> list[Skill]:
    """The skills in ``paths``, in order: files, or directories of skills.

    A directory's skills are its ``*.md`` files and its ``*/SKILL.md`` files, in
    sorted order. A file reached twice is loaded once. Two skills with one name,
    or two skills defining one function (the kernel would keep only the later),
    raise :class:`SkillError` naming both files.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted({*path.glob("*.md"), *path.glob("*/SKILL.md")})
        elif path.exists():
            files.append(path)
        else:
            raise SkillError(
                path, 0, "no such skill file or directory", "check the path, or leave it out"
            )
    seen: set[Path] = set()
    by_name: dict[str, _Parsed] = {}
    by_function: dict[str, _Parsed] = {}
    for file in files:
        key = file.resolve()
        if key in seen:
            continue
        seen.add(key)
        parsed = _parse(file)
        skill = parsed.skill
        other = by_name.get(skill.name)
        if other is not None:
            raise SkillError(
                file,
                parsed.name_line,
                f"skill name {skill.name!r} is already used by "
                f"{other.skill.path}:{other.name_line}",
                "rename one of the two skills",
            )
        by_name[skill.name] = parsed
        for function in skill.functions:
            other = by_function.get(function)
            if other is not None:
                raise SkillError(
                    file,
                    parsed.def_lines[function],
                    f"function {function!r} is also defined by skill {other.skill.name!r} "
                    f"at {other.skill.path}:{other.def_lines[function]}",
                    "rename one of them: the kernel would keep only the later definition",
                )
            by_function[function] = parsed
    return [parsed.skill for parsed in by_name.values()]


def loader_code(skill: Skill) -> str:
    """Python source that defines ``skill``'s code in a kernel's global namespace.

    Run inside the kernel (an IPython kernel in a sandbox). The source goes to
    ``/tmp/sandlot-skills/<name>.py`` and into ``linecache`` under that name, and
    is compiled with it as the file name: so ``inspect.getsource`` works on the
    skill's functions and tracebacks show its lines (linecache alone suffices
    where ``/tmp`` cannot be written). It is executed in the namespace the code
    runs in, so the skill's functions see the kernel's globals (``model``). The
    code prints nothing and leaves no names behind but the skill's own.
    """
    if not (_NAME.fullmatch(skill.name) and len(skill.name) <= MAX_NAME_LENGTH):
        raise ValueError(f"skill name {skill.name!r} cannot name a file; parse_skill refuses it")
    filename = f"{SKILLS_DIR}/{skill.name}.py"
    return f"""\
def _sandlot_load_skill(source, directory, filename):
    import linecache
    import os
    import warnings

    partial = f"{{filename}}.{{os.getpid()}}.tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(partial, "w", encoding="utf-8") as file:
            file.write(source)
        os.replace(partial, filename)
    except OSError:  # the linecache entry below is what inspect and tracebacks read
        try:
            os.unlink(partial)
        except OSError:
            pass
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, globals())


try:
    _sandlot_load_skill({skill.source!r}, {SKILLS_DIR!r}, {filename!r})
finally:
    del _sandlot_load_skill
"""


def skills_prompt(skills: Sequence[Skill]) -> str:
    """Markdown that tells an agent which skills it has and how to use them ("" for none)."""
    if not skills:
        return ""
    parts = [
        "## Skills\n\nHelper code for this session's kernel. "
        "Preloaded skills are ready to call; run the code of the others to use them."
    ]
    for skill in skills:
        text = f"### {skill.name}\n\n{skill.description.strip()}\n\n"
        if skill.preload:
            if skill.functions:
                text += "Already defined in the kernel:\n\n"
                for function in skill.functions:
                    doc = skill.docs.get(function, "")
                    text += f"- `{skill.signatures[function]}`" + (f": {doc}" if doc else "") + "\n"
            else:
                text += "Already run in the kernel (it defines no functions).\n"
        else:
            fence = "`" * max(3, _longest_run(skill.source, "`") + 1)
            text += (
                f"Not loaded; run this code to use it:\n\n"
                f"{fence}python\n{skill.source.rstrip()}\n{fence}\n"
            )
        parts.append(text.rstrip())
    return "\n\n".join(parts) + "\n"


def _longest_run(text: str, char: str) -> int:
    """The length of the longest run of ``char`` in ``text``."""
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


# ---- parsing -------------------------------------------------------------------------------


def _read(path: Path) -> str:
    """The file's text with newlines made ``\\n``; refuses what is not a small UTF-8 file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SkillError(path, 0, "no such skill file", "check the path") from None
    if not stat.S_ISREG(info.st_mode):
        raise SkillError(path, 0, "not a regular file", "a skill is a Markdown file")
    if info.st_size > MAX_SKILL_BYTES:
        raise SkillError(
            path,
            0,
            f"{info.st_size} bytes, over the {MAX_SKILL_BYTES} byte limit for a skill",
            "split it into smaller skills",
        )
    with path.open("rb") as file:
        data = file.read(MAX_SKILL_BYTES + 1)
    if len(data) > MAX_SKILL_BYTES:  # it grew after the stat
        raise SkillError(
            path, 0, f"over the {MAX_SKILL_BYTES} byte limit for a skill", "make it smaller"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SkillError(path, line, "not valid UTF-8", "save the file as UTF-8") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise SkillError(path, line, "holds a NUL character", "remove it")
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _parse(path: Path) -> _Parsed:
    lines = _read(path).split("\n")
    if lines[0].rstrip() != "---":
        raise SkillError(
            path,
            1,
            "no front matter",
            "start the file with a '---' line, then 'name:' and 'description:', then '---'",
        )
    close = next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), None)
    if close is None:
        raise SkillError(path, 1, "the front matter is never closed", "end it with a '---' line")
    meta, name_line = _front_matter(path, lines[1:close])
    blocks = _python_blocks(path, lines, first=close + 1)
    source, md_lines = _join(path, blocks)
    tree = _compile(path, source, md_lines)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[node.name] = node  # a later def replaces an earlier one, as when run
    skill = Skill(
        name=meta["name"],
        description=meta["description"],
        preload=meta.get("preload", True),
        path=path,
        source=source,
        functions=tuple(functions),
        signatures={name: _signature(node) for name, node in functions.items()},
        docs={name: _first_line(ast.get_docstring(node)) for name, node in functions.items()},
        body="\n".join(lines[close + 1 :]),
    )
    def_lines = {name: md_lines[node.lineno - 1] for name, node in functions.items()}
    return _Parsed(skill, name_line, def_lines)


def _front_matter(path: Path, lines: list[str]) -> tuple[dict[str, Any], int]:
    """The checked front matter (its lines start on .md line 2) and the line of ``name``."""
    first = 2  # .md line of the front matter's first line
    try:
        node, data = load_yaml("\n".join(lines))
    except YAMLProblem as exc:
        line = first - 1 + exc.line if exc.line is not None else 1
        raise SkillError(
            path, line, f"front matter is not valid YAML: {exc.problem}", "fix the YAML"
        ) from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise SkillError(
            path,
            first if node is not None else 1,
            f"front matter must be a mapping of keys to values, got {got}",
            "write 'name: ...' and 'description: ...' lines",
        )
    key_lines: dict[object, int] = {}
    value_lines: dict[object, int] = {}
    for key_node, value_node in node.value:  # keys are scalars here: others do not hash
        if isinstance(key_node, yaml.ScalarNode):  # the last of a repeated key wins, as in data
            key_lines[key_node.value] = first + key_node.start_mark.line
            value_lines[key_node.value] = first + value_node.start_mark.line
    unknown = [key for key in data if key not in _KNOWN_KEYS]
    if unknown:
        key = unknown[0]
        raise SkillError(
            path,
            key_lines.get(str(key), first),
            f"unknown front matter key {key!r}",
            f"the known keys are {', '.join(_KNOWN_KEYS)}",
        )
    for key in ("name", "description"):
        if key not in data:
            raise SkillError(path, 1, f"front matter has no {key!r}", f"add a '{key}:' line")
    for key, kind in (("name", str), ("description", str), ("preload", bool)):
        if key in data and not isinstance(data[key], kind):
            raise SkillError(
                path,
                value_lines.get(key, first),
                f"{key!r} must be a {kind.__name__}, got a {type(data[key]).__name__}",
                "write true or false" if kind is bool else "write it as text",
            )
    name: str = data["name"]
    if not (_NAME.fullmatch(name) and len(name) <= MAX_NAME_LENGTH):
        raise SkillError(
            path,
            value_lines["name"],
            f"skill name {name!r} is not a valid name",
            f"use letters, digits, '_' and '-', starting with a letter or '_', "
            f"at most {MAX_NAME_LENGTH} characters",
        )
    if not data["description"].strip():
        raise SkillError(
            path, value_lines["description"], "'description' is empty", "say what the skill does"
        )
    return data, key_lines["name"]


def _python_blocks(path: Path, lines: list[str], *, first: int) -> list[_Block]:
    """The python fenced blocks in ``lines[first:]``, as CommonMark reads fences.

    Other fenced blocks are skipped whole, so a fence shown inside one (a
    ```` ```python ```` line in a ```` ```` ```` block) is text, not code. A fence
    that is never closed is an error: it would swallow the rest of the file.
    """
    blocks: list[_Block] = []
    i = first
    while i < len(lines):
        opening = _OPEN_FENCE.fullmatch(lines[i])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")
        end = next((j for j in range(i + 1, len(lines)) if closing.fullmatch(lines[j])), None)
        if end is None:
            raise SkillError(
                path, i + 1, f"the {fence} fence opened here is never closed", f"close it: {fence}"
            )
        info = opening["info"].split()
        if info and info[0].lower() in _PYTHON_INFO:
            code = [_dedent(line, indent) for line in lines[i + 1 : end]]
            blocks.append(_Block(i + 1, code, list(range(i + 2, end + 2))))
        i = end + 1
    if not blocks:
        raise SkillError(path, 1, "no ```python block", "put the skill's code in one")
    return blocks


def _dedent(line: str, indent: int) -> str:
    """``line`` less up to ``indent`` leading spaces (the fence's own indent, per CommonMark)."""
    return line[min(indent, len(line) - len(line.lstrip(" "))) :]


def _join(path: Path, blocks: list[_Block]) -> tuple[str, list[int]]:
    """The blocks as one source, a blank line between two, and the .md line of each line.

    Blank lines at a block's edges are dropped, so the source reads cleanly in
    a prompt; the line map keeps every remaining line tied to its .md line.
    """
    lines: list[str] = []
    md_lines: list[int] = []
    for block in blocks:
        kept = [i for i, line in enumerate(block.lines) if line.strip()]
        if not kept:
            continue
        if lines:
            lines.append("")
            md_lines.append(md_lines[-1] + 1)
        lines += block.lines[kept[0] : kept[-1] + 1]
        md_lines += block.md_lines[kept[0] : kept[-1] + 1]
    if not lines:
        raise SkillError(
            path, blocks[0].fence_line, "the ```python blocks hold no code", "put the code in them"
        )
    return "\n".join(lines) + "\n", md_lines


def _compile(path: Path, source: str, md_lines: list[int]) -> ast.Module:
    """The source's syntax tree, once it is known to compile as the kernel will compile it.

    ``compile`` also catches what parsing alone lets through (``return`` outside
    a function, top-level ``await``).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are the kernel's to show
            compile(source, str(path), "exec", dont_inherit=True)
        return ast.parse(source)
    except SyntaxError as exc:
        index = min(max((exc.lineno or 1) - 1, 0), len(md_lines) - 1)
        raise SkillError(
            path,
            md_lines[index],
            f"python syntax error: {exc.msg}",
            "fix the code in this ```python block",
        ) from None
    except RecursionError:
        raise SkillError(
            path, md_lines[0], "python code nested too deeply to compile", "simplify it"
        ) from None


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """``name(params) -> returns``, as written; ``async`` first for a coroutine function."""
    args = node.args
    params: list[str] = []
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        params.append(_param(arg, default))
        if args.posonlyargs and index == len(args.posonlyargs) - 1:
            params.append("/")
    if args.vararg is not None:
        params.append("*" + _param(args.vararg, None))
    elif args.kwonlyargs:
        params.append("*")
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(_param(arg, kw_default))
    if args.kwarg is not None:
        params.append("**" + _param(args.kwarg, None))
    text = f"{node.name}({', '.join(params)})"
    if node.returns is not None:
        text += f" -> {ast.unparse(node.returns)}"
    return f"async {text}" if isinstance(node, ast.AsyncFunctionDef) else text


def _param(arg: ast.arg, default: ast.expr | None) -> str:
    """One parameter, spaced as PEP 8 spaces it (``top_k: int = 5``, ``n=3``)."""
    text = arg.arg
    if arg.annotation is not None:
        text += f": {ast.unparse(arg.annotation)}"
    if default is not None:
        text += (" = " if arg.annotation is not None else "=") + ast.unparse(default)
    return text


def _first_line(doc: str | None) -> str:
    """The first non-blank line of a docstring, "" for none."""
    return next((line.strip() for line in (doc or "").splitlines() if line.strip()), "")
