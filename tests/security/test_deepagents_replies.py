"""What a sandbox sends back to SandlotBackend is checked before Deep Agents sees it.

Sandboxed code can make links to host paths, name files with newlines, escapes and
``..``, print without end, and (sharing its process with the driver and the REPL)
replace the functions that answer listings, globs and greps. The backend must hand
the model only names under the root it asked about, with control characters shown
as ``\\xNN``, bounded in size; and it never writes on the host: downloads are bytes
in memory, a link is refused rather than followed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import strict

from sandlot.integrations.deepagents import SandlotBackend
from sandlot.sync import portal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def backend() -> Iterator[SandlotBackend]:
    with SandlotBackend(
        strict(memory_mb=512, max_output_bytes=64 << 10), max_file_bytes=1 << 20
    ) as made:
        yield made


def in_repl(backend: SandlotBackend, code: str) -> None:
    """Run ``code`` in the backend's REPL, as sandboxed code that took it over could."""
    sandbox = backend.sandbox
    assert sandbox is not None
    result = portal().call(sandbox.run_code(code))
    assert result.error is None, result.error


def test_links_to_host_paths_are_neither_followed_nor_fetched(
    backend: SandlotBackend, tmp_path: Path
) -> None:
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text("host only")
    backend.execute(
        "mkdir -p /tmp/lk && cd /tmp/lk && ln -s /etc/passwd pw && ln -s /etc etc"
        f" && ln -s {host_file} host && echo inside > real.txt"
    )
    (pw, etc, host) = backend.download_files(["/tmp/lk/pw", "/tmp/lk/etc", "/tmp/lk/host"])
    assert (pw.content, etc.content, host.content) == (None, None, None)
    assert pw.error == etc.error == host.error == "invalid_path"
    read = backend.read("/tmp/lk/pw")
    assert read.file_data is None and read.error is not None and "link" in read.error
    globbed = backend.glob("*", path="/tmp/lk")
    assert [m["path"] for m in globbed.matches or []] == ["/tmp/lk/real.txt"]
    assert backend.grep("root", path="/tmp/lk").matches == []
    listed = {e["path"]: e["is_dir"] for e in backend.ls("/tmp/lk").entries or []}
    assert listed["/tmp/lk/etc"] is False  # a link, not a directory to walk into
    assert host_file.read_text() == "host only"


def test_download_writes_nothing_on_the_host(backend: SandlotBackend) -> None:
    name = f"/tmp/sandlot-da-{uuid.uuid4().hex}.txt"
    backend.upload_files([(name, b"in the sandbox")])
    (got,) = backend.download_files([name])
    assert got.content == b"in the sandbox"
    assert not Path(name).exists()  # the same path on the host was never touched


def test_a_file_over_the_cap_is_not_brought_to_the_host(backend: SandlotBackend) -> None:
    backend.execute("head -c 3000000 /dev/zero > /tmp/big.bin")
    (got,) = backend.download_files(["/tmp/big.bin"])
    assert got.content is None and got.error == "invalid_path"
    edit = backend.edit("/tmp/big.bin", "a", "b")
    assert edit.error is not None and "max_bytes" in edit.error


def test_names_with_newlines_and_escapes_come_back_escaped(backend: SandlotBackend) -> None:
    backend.execute(
        "mkdir -p /tmp/nm && cd /tmp/nm && printf 'x\\n' > \"$(printf 'a\\nFAKE.txt')\""
        " && printf 'x\\n' > \"$(printf 'b\\033]0;t\\007.txt')\""
    )
    shown = {"/tmp/nm/a\\x0aFAKE.txt", "/tmp/nm/b\\x1b]0;t\\x07.txt"}
    assert {e["path"] for e in backend.ls("/tmp/nm").entries or []} == shown
    assert {m["path"] for m in backend.glob("*.txt", path="/tmp/nm").matches or []} == shown
    assert {m["path"] for m in backend.grep("x", path="/tmp/nm").matches or []} == shown


def test_huge_output_is_cut_at_the_configured_limit(backend: SandlotBackend) -> None:
    result = backend.execute("yes 0123456789 | head -c 50000000")
    assert result.truncated and result.exit_code == 0
    assert len(result.output.encode()) < (64 << 10) + 1024


def test_forged_glob_and_grep_replies_are_checked(backend: SandlotBackend) -> None:
    backend.glob("*", path="/tmp")  # the helpers are loaded
    in_repl(
        backend,
        "def _sandlot_da_glob(*a):\n"
        "    _sandlot_da_reply({'files': ['ok.py', '../../etc/passwd.py', '/abs.py', 'a/../b.py',"
        " 'a//c.py', './d.py', 'new\\nline.py'], 'unreadable': 0, 'cut': False})\n"
        "def _sandlot_da_grep(*a):\n"
        "    _sandlot_da_reply({'matches': [['ok.py', 1, 'hit'], ['../x', 1, 'hit'],"
        " ['ok.py', 0, 'hit'], ['ok.py', 2, 'no match here'], ['ok.py', 3, 'hit' * 9000]],"
        " 'unreadable': 0, 'cut': False})\n",
    )
    globbed = backend.glob("*.py", path="/w")
    assert [m["path"] for m in globbed.matches or []] == ["/w/ok.py", "/w/new\\x0aline.py"]
    grepped = backend.grep("hit", path="/w")
    assert [(m["path"], m["line"]) for m in grepped.matches or []] == [
        ("/w/ok.py", 1),
        ("/w/ok.py", 3),
    ]
    assert len((grepped.matches or [])[1]["text"]) == 5000
    in_repl(backend, "def _sandlot_da_glob(*a):\n    _sandlot_da_reply({'files': [1, 2]})\n")
    assert backend.glob("*", path="/w").error == (
        "Path '/w': the sandbox sent an answer that is not what was asked for"
    )
    in_repl(backend, "def _sandlot_da_glob(*a):\n    print('x' * 10_000_000)\n")
    error = backend.glob("*", path="/w").error or ""
    assert "larger than max_output_bytes" in error
    in_repl(
        backend, "def _sandlot_da_glob(*a):\n    _sandlot_da_reply({'error': 'e\\x1b[2J' * 100})\n"
    )
    error = backend.glob("*", path="/w").error or ""
    assert "\x1b" not in error and len(error) < 1000


def test_a_forged_listing_is_checked(backend: SandlotBackend) -> None:
    backend.execute("mkdir -p /tmp/ls")
    in_repl(
        backend,
        "import sys\n"
        "ops = next(m for n, m in list(sys.modules.items()) if n.endswith('fileops'))\n"
        "real = ops.list_dir\n"
        "def forged(path):\n"
        "    names = ['ok', '..', '.', '../up', 'a/b', '', 'x\\x00y', 'tab\\tline\\n']\n"
        "    return {'entries': [{'name': n, 'type': 'file', 'size': 1} for n in names]}\n"
        "ops.list_dir = forged\n",
    )
    try:
        entries = backend.ls("/tmp/ls").entries
    finally:
        in_repl(backend, "ops.list_dir = real\n")
    assert [e["path"] for e in entries or []] == ["/tmp/ls/ok", "/tmp/ls/tab\\x09line\\x0a"]


def test_oversized_arguments_are_refused_and_the_sandbox_goes_on(backend: SandlotBackend) -> None:
    huge = "x" * 2_000_000  # over the 1 MiB a request header may hold
    assert "too long" in (backend.grep(huge, path="/tmp").error or "")
    assert "too long" in (backend.glob(huge, path="/tmp").error or "")
    assert backend.execute(f"echo {huge}").exit_code == 1
    assert backend.upload_files([("/tmp/" + huge, b"")])[0].error == "invalid_path"
    assert backend.download_files(["/tmp/a\0b"])[0].error == "invalid_path"
    assert backend.read("/" + huge).error is not None
    assert backend.ls("/" + huge).error is not None
    assert backend.delete("/" + huge).error is not None
    assert backend.execute("echo alive").output == "alive\n"


def test_a_secret_used_as_a_file_name_is_redacted_from_listings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Command output is redacted; a name the sandbox makes from the secret must be too.
    monkeypatch.setenv("DA_NAME_TOKEN", "tok-name-0123456789")
    with SandlotBackend(strict(memory_mb=256, secrets=["DA_NAME_TOKEN"])) as named:
        named.execute('mkdir -p /tmp/n && echo hit > "/tmp/n/$DA_NAME_TOKEN"')
        shown = [
            *(e["path"] for e in named.ls("/tmp/n").entries or []),
            *(e["path"] for e in named.glob("*", path="/tmp/n").matches or []),
            *(m["path"] for m in named.grep("hit", path="/tmp/n").matches or []),
        ]
    assert len(shown) == 3, shown
    assert all("tok-name-0123456789" not in p and "[redacted DA_NAME_TOKEN]" in p for p in shown)
