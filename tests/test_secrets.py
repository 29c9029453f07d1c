"""Secrets from .env files: passed in, never kept in a config, redacted where sandlot shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import strict
from hypothesis import given
from hypothesis import strategies as st
from test_cli import sandlot

import sandlot as sl
from sandlot.secrets import Redactor, read_env_file, secret_values

TOKEN = "sk-test-0123456789abcdef"


def _env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_env_file_syntax(tmp_path: Path) -> None:
    path = _env_file(
        tmp_path,
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "SPACED = padded value  # trailing comment\n"
        "HASH=a#b\n"
        "SINGLE='keep \\n as is # not a comment'\n"
        'DOUBLE="line\\nbreak \\"quoted\\""  # comment\n'
        "EMPTY=\n",
    )
    assert read_env_file(path) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "padded value",
        "HASH": "a#b",
        "SINGLE": "keep \\n as is # not a comment",
        "DOUBLE": 'line\nbreak "quoted"',
        "EMPTY": "",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("NOEQUALS", "expected KEY=VALUE"),
        ("1BAD=x", "the text before '=' is not an environment variable name"),
        ("sk-never-shown", "expected KEY=VALUE"),
        ('OPEN="sk-never-shown', "the value's \" is not closed"),
        ("Q='a' trailing", "unexpected text after the closing '"),
    ],
)
def test_a_malformed_line_names_the_file_and_line_and_hides_the_value(
    tmp_path: Path, line: str, message: str
) -> None:
    path = _env_file(tmp_path, f"GOOD=1\n{line}\n")
    with pytest.raises(sl.ConfigError) as info:
        read_env_file(path)
    assert f"{path}:2: {message}" in str(info.value)
    assert "sk-never-shown" not in str(info.value)


def test_a_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(sl.ConfigError, match="does not exist"):
        sl.Sandbox(strict(env_file=str(tmp_path / "missing.env"))).start()


def test_the_sandbox_gets_the_values_and_the_config_never_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _env_file(tmp_path, f"API_TOKEN={TOKEN}\nSHARED=from-file\n")
    monkeypatch.setenv("SHARED", "from-host")
    config = strict(env_file=str(path), secrets=["SHARED"])
    assert TOKEN not in repr(config) and TOKEN not in config.model_dump_json()
    assert secret_values(config) == {"API_TOKEN": TOKEN, "SHARED": "from-host"}
    with sl.Sandbox(config) as sb:
        assert sb.run_code("import os\nos.environ['API_TOKEN']").value == repr(TOKEN)
        assert sb.run_code("os.environ['SHARED']").value == "'from-host'"
        cmdline = sb.exec("cat", "/proc/1/cmdline").stdout
        assert TOKEN not in cmdline  # through a descriptor, never a command line


def test_redactor_replaces_values_longest_first_and_skips_short_ones() -> None:
    r = Redactor({"LONG": "abcdef-123", "SHORT_PART": "abcdef", "TINY": "abc"})
    assert r.redact("x abcdef-123 y abcdef z abc") == (
        "x [redacted LONG] y [redacted SHORT_PART] z abc"
    )
    assert r.redact_bytes(b"abcdef-123") == b"[redacted LONG]"
    assert not Redactor({"A": "ab"})  # nothing long enough to redact


@given(
    st.lists(
        st.sampled_from(["sk-SECRET-1", "tok42", "x", "sk-", "SECRET", " ", "\n"]), max_size=40
    ),
    st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=30),
)
def test_a_stream_redacts_values_split_across_chunks(parts: list[str], cuts: list[int]) -> None:
    redactor = Redactor({"K": "sk-SECRET-1", "T": "tok42"})
    data = "".join(parts).encode()
    stream = redactor.stream()
    shown = b""
    i = 0
    for n in cuts * (len(data) // max(1, sum(cuts)) + 1):
        if i >= len(data):
            break
        shown += stream.feed(data[i : i + n])
        i += n
    shown += stream.feed(data[i:]) + stream.flush()
    assert shown == redactor.redact_bytes(data)
    assert b"sk-SECRET-1" not in shown and b"tok42" not in shown


def test_the_cli_redacts_secrets_from_a_commands_output(tmp_path: Path) -> None:
    path = _env_file(tmp_path, f"API_TOKEN={TOKEN}\n")
    code = (
        "import os, sys\n"
        "t = os.environ['API_TOKEN']\n"
        "sys.stdout.write(t[:5]); sys.stdout.flush(); sys.stdout.write(t[5:] + '\\n')\n"
        "print('err', t, file=sys.stderr)\n"
    )
    done = sandlot("exec", "--env-file", str(path), "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert done.stdout == "[redacted API_TOKEN]\n"
    assert "err [redacted API_TOKEN]" in done.stderr
    repl = sandlot("repl", "--env-file", str(path), stdin="import os\nos.environ['API_TOKEN']\n")
    assert TOKEN not in repl.stdout + repl.stderr
    assert "[redacted API_TOKEN]" in repl.stdout


def test_secrets_check_says_whether_a_name_is_set_without_showing_it(
    tmp_path: Path,
) -> None:
    path = _env_file(tmp_path, f"API_TOKEN={TOKEN}\nBLANK=\n")
    found = sandlot("secrets", "check", "API_TOKEN", "--env-file", str(path))
    assert found.returncode == 0
    assert found.stdout == f"API_TOKEN is set in {path}\n"
    default = sandlot("secrets", "check", "API_TOKEN", cwd=tmp_path)  # ./.env by default
    assert default.returncode == 0 and "is set in .env" in default.stdout
    blank = sandlot("secrets", "check", "BLANK", "--env-file", str(path))
    assert blank.returncode == 1 and "set but empty" in blank.stdout
    host = sandlot("secrets", "check", "FROM_HOST", env={"FROM_HOST": TOKEN})
    assert host.returncode == 0 and "set in the environment" in host.stdout
    missing = sandlot("secrets", "check", "NOPE", "--env-file", str(path))
    assert missing.returncode == 1 and "NOPE is not set" in missing.stdout
    for done in (found, default, host):
        assert TOKEN not in done.stdout + done.stderr
    broken = _env_file(tmp_path, f'BAD="{TOKEN}\n')
    bad = sandlot("secrets", "check", "BAD", "--env-file", str(broken))
    assert bad.returncode == 2 and ":1: " in bad.stderr and TOKEN not in bad.stderr


def test_a_sandboxs_last_words_are_redacted_in_the_clis_error(tmp_path: Path) -> None:
    """The death message carries what the driver wrote last, which cell code can reach."""
    path = _env_file(tmp_path, f"API_TOKEN={TOKEN}\n")
    cell = (
        "import os, sys\n"
        "fd = next(m.DIAG_FD for m in list(sys.modules.values()) if hasattr(m, 'DIAG_FD'))\n"
        "os.write(fd, os.environ['API_TOKEN'].encode())\n"
        "os._exit(3)\n"
    )
    done = sandlot("repl", "--env-file", str(path), stdin=cell)
    assert done.returncode == 2, done.stderr
    assert "sandbox died" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert "[redacted API_TOKEN]" in done.stderr


def test_output_held_back_for_redaction_is_shown_when_the_sandbox_dies(tmp_path: Path) -> None:
    path = _env_file(tmp_path, f"API_TOKEN={TOKEN}\n")
    done = sandlot(
        "exec",
        "--env-file",
        str(path),
        "--",
        "sh",
        "-c",
        'printf "last words before the end"; sleep 0.5; kill -9 -1',
    )
    assert done.returncode == 2
    assert done.stdout == "last words before the end"
