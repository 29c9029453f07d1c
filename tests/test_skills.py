"""Skill files: parsing, errors at the right line, loading in a kernel, and the agent's prompt."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandlot.errors import ConfigError
from sandlot.notebook.skills import (
    Skill,
    SkillError,
    load_skills,
    loader_code,
    parse_skill,
    skills_prompt,
)

FENCE = "```"

EXAMPLE = f'''\
---
name: logit_lens
description: Project each layer's hidden state onto the vocabulary.
preload: true
---
# Logit lens
Some prose.
{FENCE}python
def logit_lens(prompt: str, top_k: int = 5) -> list[list[str]]:
    """Top tokens per layer.

    More words.
    """
    return [[f"{{model}}:{{prompt}}"] * top_k]
{FENCE}
'''


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def skill_text(name: str, code: str, *, preload: bool = True, description: str = "Helps.") -> str:
    return (
        f"---\nname: {name}\ndescription: {description}\npreload: {str(preload).lower()}\n---\n"
        f"{FENCE}python\n{code}{FENCE}\n"
    )


# ---- parsing ---------------------------------------------------------------------------------


def test_parse_example(tmp_path: Path) -> None:
    path = write(tmp_path, "lens.md", EXAMPLE)
    skill = parse_skill(path)
    assert skill.name == "logit_lens"
    assert skill.description == "Project each layer's hidden state onto the vocabulary."
    assert skill.preload is True
    assert skill.path == path
    assert skill.functions == ("logit_lens",)
    assert skill.signatures == {
        "logit_lens": "logit_lens(prompt: str, top_k: int = 5) -> list[list[str]]"
    }
    assert skill.docs == {"logit_lens": "Top tokens per layer."}
    assert skill.source.startswith("def logit_lens(prompt: str, top_k: int = 5)")
    assert skill.source.endswith("* top_k]\n")
    assert skill.body.startswith("# Logit lens\nSome prose.\n```python\n")


def test_preload_defaults_to_true_and_blocks_join_in_order(tmp_path: Path) -> None:
    text = (
        "---\nname: two\ndescription: Two blocks.\n---\n"
        f"{FENCE}python\n\ndef first(): pass\n\n{FENCE}\n"
        f"{FENCE}bash\necho not python\n{FENCE}\n"
        f"~~~py\nasync def second(*args: int, key, flag=False, **rest) -> None: ...\n~~~\n"
    )
    skill = parse_skill(write(tmp_path, "two.md", text))
    assert skill.preload is True
    assert skill.source == (
        "def first(): pass\n\nasync def second(*args: int, key, flag=False, **rest) -> None: ...\n"
    )
    assert skill.functions == ("first", "second")
    assert skill.signatures == {
        "first": "first()",
        "second": "async second(*args: int, key, flag=False, **rest) -> None",
    }
    assert skill.docs == {"first": "", "second": ""}


def test_signature_keeps_positional_only_and_keyword_only_markers(tmp_path: Path) -> None:
    code = "def f(a, /, b: int = 1, *, c: str = 'x', d):\n    pass\n"
    skill = parse_skill(write(tmp_path, "f.md", skill_text("f", code)))
    assert skill.signatures["f"] == "f(a, /, b: int = 1, *, c: str = 'x', d)"


def test_a_fence_shown_inside_a_longer_fence_is_not_code(tmp_path: Path) -> None:
    text = (
        "---\nname: shown\ndescription: d\n---\n"
        f"````markdown\n{FENCE}python\nthis is not code (\n{FENCE}\n````\n"
        f"{FENCE}python\nx = 1\n{FENCE}\n"
    )
    assert parse_skill(write(tmp_path, "s.md", text)).source == "x = 1\n"


def test_an_indented_fence_loses_its_indent(tmp_path: Path) -> None:
    text = (
        "---\nname: ind\ndescription: d\n---\n"
        "- item\n\n  ```python\n  def g():\n      return 1\n  ```\n"
    )
    assert parse_skill(write(tmp_path, "s.md", text)).source == "def g():\n    return 1\n"


def test_crlf_and_bom_are_read(tmp_path: Path) -> None:
    path = tmp_path / "crlf.md"
    path.write_bytes(b"\xef\xbb\xbf" + skill_text("crlf", "x = 1\n").replace("\n", "\r\n").encode())
    assert parse_skill(path).source == "x = 1\n"


def _error(tmp_path: Path, text: str, name: str = "bad.md") -> SkillError:
    path = write(tmp_path, name, text)
    with pytest.raises(SkillError) as info:
        parse_skill(path)
    error = info.value
    assert error.path == path
    assert str(error).startswith(f"{path}:{error.line}: ")
    return error


CODE = f"{FENCE}python\nx = 1\n{FENCE}\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param("# no front matter\n" + CODE, 1, "no front matter", id="no-front-matter"),
        pytest.param("---\nname: x\ndescription: d\n" + CODE, 1, "never closed", id="unclosed"),
        pytest.param(
            "---\nname: x\ndescription: [unclosed\npreload: true\n---\n" + CODE,
            4,  # the flow list runs on; yaml stops at the ':' on the next line
            "not valid YAML",
            id="yaml-syntax",
        ),
        pytest.param(
            "---\nname: x\n  description: d: e\n---\n" + CODE, 3, "not valid YAML", id="yaml-map"
        ),
        pytest.param("---\n- a\n- b\n---\n" + CODE, 2, "must be a mapping", id="not-mapping"),
        pytest.param("---\n---\n" + CODE, 1, "got empty", id="empty"),
        pytest.param("---\ndescription: d\n---\n" + CODE, 1, "no 'name'", id="missing-name"),
        pytest.param("---\nname: x\n---\n" + CODE, 1, "no 'description'", id="missing-desc"),
        pytest.param(
            "---\nname: x\ndescription: d\nauthor: me\n---\n" + CODE,
            4,
            "unknown front matter key 'author'",
            id="unknown-key",
        ),
        pytest.param(
            "---\nname: x\ndescription: d\npreload: 'yes'\n---\n" + CODE,
            4,
            "'preload' must be a bool, got a str",
            id="preload-type",
        ),
        pytest.param(
            "---\nname: 12\ndescription: d\n---\n" + CODE, 2, "'name' must be a str", id="name-type"
        ),
        pytest.param(
            "---\nname: x\ndescription:\n  - a\n---\n" + CODE,
            4,
            "'description' must be a str",
            id="description-type",
        ),
        pytest.param(
            "---\nname: ../evil\ndescription: d\n---\n" + CODE, 2, "not a valid name", id="name"
        ),
        pytest.param(
            "---\nname: x\ndescription: '  '\n---\n" + CODE, 3, "is empty", id="blank-desc"
        ),
        pytest.param(
            "---\nname: x\ndescription: d\n---\nprose only\n", 1, "no ```python", id="no-block"
        ),
        pytest.param(
            f"---\nname: x\ndescription: d\n---\n{FENCE}bash\nls\n{FENCE}\n",
            1,
            "no ```python",
            id="other-language-only",
        ),
        pytest.param(
            f"---\nname: x\ndescription: d\n---\n{FENCE}python\n\n{FENCE}\n",
            5,
            "hold no code",
            id="empty-block",
        ),
        pytest.param(
            f"---\nname: x\ndescription: d\n---\ntext\n{FENCE}python\nx = 1\n",
            6,
            "never closed",
            id="unclosed-fence",
        ),
        pytest.param(
            f"---\nname: x\ndescription: d\n---\n{CODE}\nprose\n\n"
            f"{FENCE}python\n# comment\ndef f(:\n    pass\n{FENCE}\n",
            13,  # the block's first code line is 12; the error is on its line 2
            "syntax error",
            id="syntax-error",
        ),
        pytest.param(
            f"---\nname: x\ndescription: d\n---\n{FENCE}python\ny = 2\nreturn y\n{FENCE}\n",
            7,
            "'return' outside function",
            id="compile-error",
        ),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    error = _error(tmp_path, text)
    assert error.line == line, str(error)
    assert words in error.message
    assert isinstance(error, ConfigError)


def test_unknown_key_error_lists_the_known_keys(tmp_path: Path) -> None:
    error = _error(tmp_path, "---\nname: x\ndescription: d\nauthor: me\n---\n" + CODE)
    assert "name, description, preload" in str(error)


def test_syntax_error_in_an_indented_block_is_at_its_md_line(tmp_path: Path) -> None:
    text = f"---\nname: x\ndescription: d\n---\n1. step\n\n   {FENCE}python\n   x = (\n   {FENCE}\n"
    assert _error(tmp_path, text).line == 8


def test_large_files_are_refused(tmp_path: Path) -> None:
    text = skill_text("big", "x = 1\n") + "#" * (1 << 20)
    error = _error(tmp_path, text)
    assert "byte limit" in error.message


def test_bad_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.md"
    path.write_bytes(b"---\nname: x\ndescription: caf\xe9\n---\n")
    with pytest.raises(SkillError) as info:
        parse_skill(path)
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)


def test_skill_error_pickles() -> None:
    error = SkillError(Path("a.md"), 3, "broken", "fix it")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "a.md:3: broken; fix it"
    assert (again.path, again.line, again.message) == (Path("a.md"), 3, "broken")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(description=st.text(min_size=1).filter(lambda s: s.strip()))
def test_any_description_survives_yaml_quoting(tmp_path: Path, description: str) -> None:
    quoted = yaml.safe_dump(description, default_style='"', width=1 << 30).strip()
    quoted = quoted.removesuffix("\n...").strip()
    text = f"---\nname: quoted\ndescription: {quoted}\n---\n{CODE}"
    path = tmp_path / "quoted.md"
    path.write_text(text, encoding="utf-8")
    expected = yaml.safe_load(quoted)  # YAML itself folds some line breaks
    assert parse_skill(path).description == expected


# ---- loading many ----------------------------------------------------------------------------


def test_load_skills_from_a_directory(tmp_path: Path) -> None:
    write(tmp_path, "b.md", skill_text("bee", "def bee(): pass\n"))
    write(tmp_path, "a.md", skill_text("ay", "def ay(): pass\n"))
    write(tmp_path, "nested/SKILL.md", skill_text("nested", "def nested(): pass\n"))
    write(tmp_path, "nested/notes.md", "not a skill")  # only SKILL.md one level down
    write(tmp_path, "c.txt", "not a skill")
    extra = write(tmp_path / "elsewhere", "z.md", skill_text("zed", "def zed(): pass\n"))
    skills = load_skills([tmp_path, extra, tmp_path / "a.md"])  # a.md twice: loaded once
    assert [s.name for s in skills] == ["ay", "bee", "nested", "zed"]


def test_duplicate_skill_names_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.md", skill_text("same", "def f(): pass\n"))
    second = write(tmp_path, "b.md", skill_text("same", "def g(): pass\n"))
    with pytest.raises(SkillError) as info:
        load_skills([tmp_path])
    assert info.value.path == second
    assert info.value.line == 2
    assert str(first) in str(info.value)
    assert "'same'" in str(info.value)


def test_duplicate_functions_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.md", skill_text("one", "x = 1\ndef shared(): pass\n"))
    second = write(tmp_path, "b.md", skill_text("two", "\n\ndef shared(): pass\n"))
    with pytest.raises(SkillError) as info:
        load_skills([first, second])
    assert info.value.path == second
    assert info.value.line == 9  # the def, in b.md
    assert f"{first}:8" in str(info.value)
    assert "'shared'" in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.md"
    with pytest.raises(SkillError) as info:
        load_skills([missing])
    assert info.value.line == 0
    assert str(info.value).startswith(f"{missing}:0: no such skill file or directory")


# ---- loading into a kernel -------------------------------------------------------------------


def _parsed(tmp_path: Path, text: str) -> Skill:
    return parse_skill(write(tmp_path, "skill.md", text))


def test_loader_defines_functions_with_source(tmp_path: Path) -> None:
    skill = _parsed(tmp_path, EXAMPLE)
    ns: dict[str, object] = {"model": "gpt"}
    exec(loader_code(skill), ns)
    assert set(ns) == {"__builtins__", "model", "logit_lens"}  # no helper left behind
    function = ns["logit_lens"]
    assert callable(function)
    assert function("hi", top_k=2) == [["gpt:hi", "gpt:hi"]]
    assert inspect.getsource(function) == skill.source
    on_disk = Path("/tmp/sandlot-skills/logit_lens.py").read_text(encoding="utf-8")
    assert on_disk == skill.source


def test_loader_tracebacks_show_the_skill_lines(tmp_path: Path) -> None:
    code = "def boom():\n    x = 1\n    raise ValueError('from the skill')\n"
    skill = _parsed(tmp_path, skill_text("boom_skill", code))
    ns: dict[str, object] = {}
    exec(loader_code(skill), ns)
    import traceback

    with pytest.raises(ValueError) as info:
        ns["boom"]()  # type: ignore[operator]
    text = "".join(traceback.format_exception(info.value))
    assert 'File "/tmp/sandlot-skills/boom_skill.py", line 3, in boom' in text
    assert "raise ValueError('from the skill')" in text


def test_loader_survives_quotes_and_backslashes(tmp_path: Path) -> None:
    code = (
        "def tricky():\n"
        '    """Has \\"\\"\\" and \'\'\' inside."""\n'
        '    return "\\\\n" + "\'\'\'" + r"\\d" + "\\x00"\n'
    )
    skill = _parsed(tmp_path, skill_text("tricky", code))
    ns: dict[str, object] = {}
    exec(loader_code(skill), ns)
    assert ns["tricky"]() == "\\n" + "'''" + "\\d" + "\x00"  # type: ignore[operator]
    assert inspect.getsource(ns["tricky"]) == code  # type: ignore[arg-type]
    assert skill.docs["tricky"] == "Has \"\"\" and ''' inside."


def test_loader_in_a_fresh_interpreter_prints_nothing(tmp_path: Path) -> None:
    skill = _parsed(tmp_path, EXAMPLE)
    program = (
        "import inspect\n"
        "model = 'm'\n"
        f"exec({loader_code(skill)!r})\n"
        "print(sorted(k for k in globals() if not k.startswith('__')))\n"
        "print(logit_lens('p', 1))\n"
        "print(inspect.getsource(logit_lens).splitlines()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "['inspect', 'logit_lens', 'model']",
        "[['m:p']]",
        "def logit_lens(prompt: str, top_k: int = 5) -> list[list[str]]:",
    ]


def test_loader_refuses_a_name_that_cannot_be_a_file(tmp_path: Path) -> None:
    skill = _parsed(tmp_path, EXAMPLE)
    forged = Skill(**{**skill.__dict__, "name": "../../etc/x"})
    with pytest.raises(ValueError, match="cannot name a file"):
        loader_code(forged)


# ---- prompt ----------------------------------------------------------------------------------


def test_prompt_for_preloaded_and_other_skills(tmp_path: Path) -> None:
    lens = _parsed(tmp_path, EXAMPLE)
    lazy_code = 'def shout(text: str) -> str:\n    """Loud."""\n    return text.upper()\n'
    lazy = parse_skill(
        write(
            tmp_path, "lazy.md", skill_text("shout", lazy_code, preload=False, description="Loud")
        )
    )
    prompt = skills_prompt([lens, lazy])
    assert prompt.startswith("## Skills\n")
    lens_part, lazy_part = prompt.split("### logit_lens")[1].split("### shout")
    assert "Project each layer's hidden state onto the vocabulary." in lens_part
    assert "already defined in the kernel" in lens_part.lower()
    assert (
        "- `logit_lens(prompt: str, top_k: int = 5) -> list[list[str]]`: Top tokens per layer."
        in lens_part
    )
    assert "return" not in lens_part  # signatures only, no source
    assert "not loaded; run this code to use it" in lazy_part.lower()
    assert f"{FENCE}python\n{lazy_code}{FENCE}" in lazy_part


def test_prompt_fence_outlasts_backticks_in_the_source(tmp_path: Path) -> None:
    code = 'DOC = """\n```python\nx\n```\n"""\n'
    text = f"---\nname: doc\ndescription: d\npreload: false\n---\n````python\n{code}````\n"
    skill = _parsed(tmp_path, text)
    assert skill.source == code
    assert f"````python\n{code}````" in skills_prompt([skill])


def test_prompt_of_no_skills_is_empty() -> None:
    assert skills_prompt([]) == ""
