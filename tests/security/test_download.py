"""Attacks on ``download()``: sandboxed code forges the tar stream the host extracts.

Sandboxed code shares the driver's process, so it can replace the driver's
``get_tar`` (or ``read_file``, or the ``exists`` answer) and send any bytes it
likes. Each test is one such attack through the public API. The promises: no
host file outside the destination changes and nothing appears beside it, the
host's disk and time stay bounded, the call returns, what is not a regular
file or directory is skipped and reported, and the same sandbox still serves a
legitimate download afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from conftest import strict
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sandlot
from sandlot.errors import DownloadRefused
from sandlot.untar import DownloadResult, extract

pytestmark = pytest.mark.timeout(120)

SECRET = b"host secret, not for the sandbox\n"
CALL_TIMEOUT = 60  # seconds; a download that takes longer counts as a hang

# -- forging streams -------------------------------------------------------------


def header(
    name: bytes | str,
    kind: bytes = b"0",
    size: int = 0,
    *,
    mode: int = 0o644,
    link: bytes | str = b"",
    size_field: bytes | None = None,
    gnu: bool = False,
    extra: dict[int, bytes] | None = None,
) -> bytes:
    """One 512-byte tar header with a correct checksum (the fields say whatever we like)."""
    block = bytearray(512)

    def put(at: int, data: bytes) -> None:
        block[at : at + len(data)] = data

    put(0, os.fsencode(name)[:100])
    put(100, b"%07o\0" % mode)
    put(108, b"0000000\0")
    put(116, b"0000000\0")
    put(124, size_field if size_field is not None else b"%011o\0" % size)
    put(136, b"%011o\0" % 1_700_000_000)
    put(148, b" " * 8)
    put(156, kind)
    put(157, os.fsencode(link)[:100])
    put(257, b"ustar  \0" if gnu else b"ustar\x0000")
    for at, data in (extra or {}).items():
        put(at, data)
    put(148, b"%06o\0 " % sum(block))
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax(**records: bytes | str) -> bytes:
    """A pax extended header ('x') carrying ``records`` for the member after it."""
    body = b""
    for key, value in records.items():
        item = key.replace("_", ".").encode() + b"=" + os.fsencode(value) + b"\n"
        length = len(item) + 2
        while len(str(length).encode()) + 1 + len(item) != length:
            length += 1
        body += str(length).encode() + b" " + item
    return header("PaxHeader", b"x", len(body)) + padded(body)


def member(
    name: str, kind: bytes = b"0", data: bytes = b"", *, link: str = "", mode: int = 0o644
) -> bytes:
    """A member; names and link targets too long for ustar travel in a pax header."""
    records = {}
    if len(os.fsencode(name)) > 100:
        records["path"] = name
    if len(os.fsencode(link)) > 100:
        records["linkpath"] = link
    head = pax(**records) if records else b""
    return head + header(name, kind, len(data), link=link, mode=mode) + padded(data)


END = bytes(1024)


def tar_of(*members: bytes) -> bytes:
    return b"".join(members) + END


# -- the attack harness -------------------------------------------------------------

FORGE_FROM_FILE = """
import sandlot_driver.fileops as _f
def _forged(rid, path, send, root=None, _real=_f.get_tar):
    _f.get_tar = _real  # one shot: the next download is served honestly
    with open('forged.tar', 'rb') as fh:
        while chunk := fh.read(1 << 20):
            send({'t': 'chunk', 'id': rid}, chunk)
    return {}
_f.get_tar = _forged
"""


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (links not followed): kind, content digest, mode."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st_.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(st_.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                seen[rel] = ("file", digest, st_.st_mode, st_.st_nlink)
            elif stat.S_ISDIR(st_.st_mode):
                seen[rel] = ("dir", st_.st_mode)
            else:
                seen[rel] = ("other", st_.st_mode)
    return seen


def disk_bytes(root: Path) -> int:
    """Bytes the files under ``root`` take on disk."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


@dataclass
class Outcome:
    result: DownloadResult | None
    error: BaseException | None
    before: dict[str, tuple[object, ...]]
    after: dict[str, tuple[object, ...]]
    seconds: float
    disk: int  # bytes under the host dir after the attack


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The host directory downloads land in, with a secret file beside the destination."""
    root = tmp_path / "host"
    root.mkdir()
    (root / "secret.txt").write_bytes(SECRET)
    (root / "secret.txt").chmod(0o600)
    return root


Attack = Callable[[sandlot.AsyncSandbox], Awaitable[None]]


def forge(stream: bytes) -> Attack:
    """Make the sandbox's next ``get_tar`` send ``stream`` as it is."""

    async def install(sb: sandlot.AsyncSandbox) -> None:
        await sb.files.write("forged.tar", stream)
        await sb.run_code(FORGE_FROM_FILE, raise_on_error=True)

    return install


def forge_code(code: str) -> Attack:
    """Run ``code`` in the sandbox's REPL to set up the forgery."""

    async def install(sb: sandlot.AsyncSandbox) -> None:
        await sb.run_code(code, raise_on_error=True)

    return install


def attack(
    host: Path,
    install: Attack,
    *,
    remote: str = "out",
    local: Path | None = None,
    check: Attack | None = None,
    **limits: int,
) -> Outcome:
    """Install a forgery, download ``remote`` to ``local`` (then ``check`` the sandbox),
    and check that an honest download still works."""

    async def main() -> Outcome:
        async with sandlot.AsyncSandbox(strict(memory_mb=512)) as sb:
            await sb.files.write("legit/inner/a.txt", b"legit")
            await install(sb)
            before = snapshot(host)
            result: DownloadResult | None = None
            error: BaseException | None = None
            start = time.monotonic()
            try:
                result = await asyncio.wait_for(
                    sb.files.download(remote, local or host / "out", **limits), CALL_TIMEOUT
                )
            except DownloadRefused as exc:
                error = exc
            seconds = time.monotonic() - start
            if check is not None:
                await check(sb)
            after = snapshot(host)
            disk = disk_bytes(host)
            # The same sandbox still serves an honest download, to a place of its own.
            with tempfile.TemporaryDirectory() as elsewhere:
                back = await sb.files.download("legit", Path(elsewhere) / "legit")
                assert (back.files, back.directories, back.skipped) == (1, 2, ())
                assert (Path(elsewhere) / "legit/inner/a.txt").read_bytes() == b"legit"
            return Outcome(result, error, before, after, seconds, disk)

    return asyncio.run(main())


def refused(outcome: Outcome, match: str) -> None:
    """The download was refused with a message like ``match`` and the host is as it was."""
    assert outcome.result is None, outcome.result
    assert isinstance(outcome.error, DownloadRefused)
    assert match in str(outcome.error), str(outcome.error)
    assert outcome.after == outcome.before
    assert outcome.seconds < 30


# -- links ------------------------------------------------------------------------------


def test_symlink_to_a_host_directory_then_a_file_through_it(host: Path) -> None:
    """A symlink member is never created, so nothing can be written through it."""
    stream = tar_of(
        member("out", b"5"),
        member("out/link", b"2", link=str(host)),
        member("out/link/secret.txt", data=b"pwned"),
    )
    outcome = attack(host, forge(stream))
    refused(outcome, "not under a directory")
    assert (host / "secret.txt").read_bytes() == SECRET


def test_symlink_to_a_host_file_then_the_same_name_as_a_file(host: Path) -> None:
    """A name given twice (a link, then a file over it) is refused, not written through."""
    stream = tar_of(
        member("out", b"5"),
        member("out/s", b"2", link=str(host / "secret.txt")),
        member("out/s", data=b"pwned"),
    )
    refused(attack(host, forge(stream)), "appears twice")


def test_cve_2025_4517_symlink_chain_past_path_max(host: Path) -> None:
    """The tarfile 'data' filter bypass: a chain of links that resolves past PATH_MAX.

    Checked on this Python (3.11.7): ``tarfile.extractall(filter="data")`` on this
    very stream overwrites ``host/secret.txt`` with b"pwned".
    """
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    parts = [member("out", b"5")]
    path = "out"
    for step in steps:
        parts.append(member(f"{path}/{comp}", b"5"))
        parts.append(member(f"{path}/{step}", b"2", link=comp))
        path = f"{path}/{comp}"
    link_path = "out/" + "/".join(steps) + "/" + "l" * 254
    parts.append(member(link_path, b"2", link="../" * len(steps)))
    up = "../" * (len(host.parts) + 2)
    parts.append(member("out/escape", b"2", link=link_path[4:] + "/" + up + str(host)[1:]))
    parts.append(member("out/escape/secret.txt", data=b"pwned"))
    outcome = attack(host, forge(tar_of(*parts)))
    refused(outcome, "not under a directory")
    assert (host / "secret.txt").read_bytes() == SECRET


def test_hard_link_to_a_host_file_is_skipped_and_reported(host: Path) -> None:
    """A hard link is not created; the download goes on without it and says so."""
    stream = tar_of(
        member("out", b"5"),
        member("out/h", b"1", link=str(host / "secret.txt")),
        member("out/ok.txt", data=b"fine"),
    )
    with pytest.warns(UserWarning, match=r"'out/h' \(hard link\)"):
        outcome = attack(host, forge(stream))
    assert outcome.result is not None
    assert [(s.name, s.kind) for s in outcome.result.skipped] == [("out/h", "hard link")]
    assert sorted(os.listdir(host)) == ["out", "secret.txt"]
    assert os.listdir(host / "out") == ["ok.txt"]
    assert (host / "out/ok.txt").read_bytes() == b"fine"
    assert outcome.after["secret.txt"] == outcome.before["secret.txt"]  # same bytes, one link


def test_hard_link_then_a_file_written_through_it(host: Path) -> None:
    """A file over a hard link's name is a duplicate: refused."""
    stream = tar_of(
        member("out", b"5"),
        member("out/h", b"1", link=str(host / "secret.txt")),
        member("out/h", data=b"pwned"),
    )
    refused(attack(host, forge(stream)), "appears twice")


def test_device_nodes_and_fifos_are_skipped_and_reported(host: Path) -> None:
    """Devices and fifos are never created on the host."""
    stream = tar_of(
        member("out", b"5"),
        header("out/null", b"3", extra={329: b"0000001\0", 337: b"0000003\0"}),
        header("out/sda", b"4", extra={329: b"0000010\0", 337: b"0000000\0"}),
        member("out/fifo", b"6"),
        member("out/weird", b"V"),
    )
    with pytest.warns(UserWarning, match="skipped 4 member"):
        outcome = attack(host, forge(stream))
    assert outcome.result is not None
    assert [s.kind for s in outcome.result.skipped] == [
        "character device",
        "block device",
        "fifo",
        "type 'V'",
    ]
    assert os.listdir(host / "out") == []


# -- names ------------------------------------------------------------------------------


def test_absolute_names_are_refused(host: Path) -> None:
    """An absolute member name never lands at that absolute path."""
    target = host / "abs.txt"
    refused(attack(host, forge(tar_of(member(str(target), data=b"pwned")))), "absolute")
    stream = tar_of(member("out", b"5"), member(str(target), data=b"pwned"))
    refused(attack(host, forge(stream)), "absolute")
    assert not target.exists()


@pytest.mark.parametrize(
    "name", ["out/../escaped.txt", "../escaped.txt", "out/./escaped.txt", "out//escaped.txt"]
)
def test_dot_dot_and_odd_components_are_refused(host: Path, name: str) -> None:
    """No '..', '.' or empty component: nothing escapes to the destination's parent."""
    stream = tar_of(member("out", b"5"), member(name, data=b"pwned"))
    outcome = attack(host, forge(stream))
    assert isinstance(outcome.error, DownloadRefused)
    assert outcome.after == outcome.before
    assert not (host / "escaped.txt").exists()


def test_names_outside_the_single_root_are_refused(host: Path) -> None:
    """The stream has one root; a second top-level name is refused."""
    stream = tar_of(member("out", b"5"), member("other.txt", data=b"x"))
    refused(attack(host, forge(stream)), "outside the stream's root")
    refused(attack(host, forge(tar_of(member("a/b.txt", data=b"x")))), "single name")
    refused(attack(host, forge(END)), "no members")


def test_nul_in_a_pax_path_is_refused(host: Path) -> None:
    """A NUL hidden in a pax path (where ustar fields cannot carry one) is refused."""
    stream = tar_of(member("out", b"5"), pax(path="out/a\0/../../x") + header("x"))
    refused(attack(host, forge(stream)), "NUL")


# -- sizes and counts -------------------------------------------------------------------

HUGE = 256 << 20  # what a 40 KB stream claims


def test_a_small_stream_declaring_a_huge_file_is_refused(host: Path) -> None:
    """A 40 KB stream whose header claims 256 MiB never becomes 256 MiB on the host."""
    body = os.urandom(40 << 10)
    stream = member("out", b"5") + header("out/big", b"0", HUGE) + body
    outcome = attack(host, forge(stream))
    refused(outcome, "declares 268435456 bytes")
    assert outcome.disk < 64 << 10


def test_a_pax_size_past_the_stream_is_refused(host: Path) -> None:
    """The pax 'size' record is held to the bytes actually sent, like the header's."""
    stream = member("out", b"5") + pax(size=str(HUGE)) + header("out/big", b"0", 0)
    stream += os.urandom(40 << 10)
    outcome = attack(host, forge(stream))
    refused(outcome, "declares 268435456 bytes")
    assert outcome.disk < 64 << 10


@pytest.mark.parametrize(
    "field", [b"-0000000001\0", b"\xff" * 12, b"0000000001x\0", b"12 34\0\0\0\0\0\0\0"]
)
def test_a_size_field_that_is_not_plain_octal_is_refused(host: Path, field: bytes) -> None:
    """Negative (base-256) sizes and fields with stray characters are refused."""
    stream = tar_of(member("out", b"5"), header("out/x", b"0", size_field=field))
    refused(attack(host, forge(stream)), "not a plain octal number")


def test_gnu_sparse_members_are_skipped_not_inflated(host: Path) -> None:
    """Old and pax GNU sparse files claiming 256 MiB are skipped; the host disk stays small."""
    old_sparse = header(
        "out/sparse",
        b"S",
        512,
        gnu=True,
        extra={386: b"%011o\0" % (HUGE - 512) + b"%011o\0" % 512, 483: b"%011o\0" % HUGE},
    ) + os.urandom(512)
    new_sparse = (
        pax(
            GNU_sparse_major="1",
            GNU_sparse_minor="0",
            GNU_sparse_name="out/sparse2",
            GNU_sparse_realsize=str(HUGE),
        )
        + header("out/sparse2", b"0", 1024)
        + padded(b"1\n%d\n512\n" % (HUGE - 512))  # the sparse map, then the data
        + os.urandom(512)
    )
    stream = member("out", b"5") + old_sparse + new_sparse + bytes(38 << 10)
    with pytest.warns(UserWarning, match="GNU sparse file"):
        outcome = attack(host, forge(stream))
    assert outcome.result is not None
    assert [s.kind for s in outcome.result.skipped] == ["GNU sparse file"] * 2
    assert os.listdir(host / "out") == []
    assert outcome.disk < 64 << 10


GENERATE_MEMBERS = """
import sandlot_driver.fileops as _f
def _forged(rid, path, send, root=None, _real=_f.get_tar):
    _f.get_tar = _real
    def head(name, kind):
        b = bytearray(512)
        b[0:len(name)] = name
        b[100:108] = b'0000644\\0'
        b[124:136] = b'00000000000\\0'
        b[148:156] = b' ' * 8
        b[156] = kind
        b[257:265] = b'ustar\\x0000'
        b[148:156] = b'%06o\\0 ' % sum(b)
        return b
    buf = head(b'out/', 53)
    for i in range(200_000):
        buf += head(b'out/f%06d' % i, 48)
        if len(buf) >= 1 << 20:
            send({'t': 'chunk', 'id': rid}, bytes(buf))
            buf.clear()
    send({'t': 'chunk', 'id': rid}, bytes(buf) + bytes(1024))
    return {}
_f.get_tar = _forged
"""


def test_two_hundred_thousand_empty_members_hit_the_member_cap(host: Path) -> None:
    """200 000 members (100 MB of headers) stop at the default cap of 100 000, quickly."""
    outcome = attack(host, forge_code(GENERATE_MEMBERS))
    refused(outcome, "more than 100000 members")


ENDLESS = """
import sandlot_driver.fileops as _f
def _forged(rid, path, send, root=None, _real=_f.get_tar):
    _f.get_tar = _real
    chunk = bytes(1 << 20)
    for _ in range(256):  # as good as endless for a host that stops at 8 MiB
        send({'t': 'chunk', 'id': rid}, chunk)
    return {}
_f.get_tar = _forged
"""


def test_an_endless_stream_stops_at_the_byte_cap(host: Path) -> None:
    """The host stops spooling at max_bytes; the spool is gone afterwards."""
    outcome = attack(host, forge_code(ENDLESS), max_bytes=8 << 20)
    refused(outcome, "larger than max_bytes=8388608")
    assert outcome.disk < 64 << 10


def test_a_pax_header_declaring_gigabytes_is_refused(host: Path) -> None:
    """A pax header's own size is bounded (1 MiB) before any of it is read."""
    stream = member("out", b"5") + header("PaxHeader", b"x", 2 << 30) + bytes(40 << 10)
    refused(attack(host, forge(stream)), "at most 1048576")
    body = b"%d path=%s\n" % (2 << 20, b"a" * ((2 << 20) - 20))
    stream = member("out", b"5") + header("PaxHeader", b"x", len(body)) + padded(body)
    refused(attack(host, forge(stream)), "at most 1048576")


@pytest.mark.parametrize(
    "body",
    [
        b"1" * (1 << 20),  # no space: the CVE-2024-6232 shape, quadratic in tarfile's regex
        b"99999999999999999999 path=x\n",
        b"9 path=\n",
        b"6 path\n",
        b"0 " * (1 << 19),
    ],
)
def test_malformed_pax_records_are_refused_in_linear_time(host: Path, body: bytes) -> None:
    """pax records are parsed in one pass; a malformed one is refused, fast."""
    stream = tar_of(
        member("out", b"5"), header("PaxHeader", b"x", len(body)) + padded(body), header("x")
    )
    outcome = attack(host, forge(stream))
    refused(outcome, "pax header")
    assert outcome.seconds < 10


# -- what the sandbox says about the path -----------------------------------------------

LIE = """
import os, types
import sandlot_driver.fileops as _f
import sandlot_driver.server as _s
_path = types.SimpleNamespace(**{{k: getattr(os.path, k) for k in dir(os.path)}})
_path.isdir = lambda p: {is_dir}
_path.lexists = lambda p: (open('exists-was-asked', 'w').close(), True)[1]
_os = types.SimpleNamespace(**{{k: getattr(os, k) for k in dir(os)}})
_os.path = _path
_s.os = _os
def _read(rid, path, send):
    open('read-was-asked', 'w').close()
    send({{'t': 'chunk', 'id': rid}}, {forged!r})
    return {{'size': 1}}
_f.read_file = _read
"""


@pytest.mark.parametrize("is_dir", [False, True])
def test_the_exists_answer_does_not_choose_the_path(host: Path, is_dir: bool) -> None:
    """The old code asked ``exists`` and let ``is_dir`` pick read() or tar; now nothing asks.

    The sandbox lies both ways (a directory "is not one", a file "is one") and
    forges ``read``; the host still gets exactly what ``remote`` is.
    """
    evil = tar_of(member("real", b"5"), member("real/l", b"2", link=str(host)))
    code = LIE.format(is_dir=is_dir, forged=evil)

    async def install(sb: sandlot.AsyncSandbox) -> None:
        if is_dir:
            await sb.files.write("real", b"a file, claimed to be a directory")
        else:
            await sb.files.write("real/a.txt", b"in a directory, claimed to be a file")
        await sb.run_code(code, raise_on_error=True)

    async def nothing_was_asked(sb: sandlot.AsyncSandbox) -> None:
        # no 'exists-was-asked' or 'read-was-asked' marker
        assert [f.name for f in await sb.files.list(".")] == ["legit", "real"]

    outcome = attack(host, install, remote="real", local=host / "real", check=nothing_was_asked)
    assert outcome.error is None and outcome.result is not None
    if is_dir:
        assert (host / "real").read_bytes() == b"a file, claimed to be a directory"
    else:
        assert (host / "real/a.txt").read_bytes() == b"in a directory, claimed to be a file"
    assert sorted(os.listdir(host)) == ["real", "secret.txt"]


def test_a_local_symlink_is_replaced_not_followed(host: Path) -> None:
    """``local`` a symlink to a host file: a refused stream leaves the link; a good one
    replaces the link itself, and the file it pointed at keeps its bytes."""
    link = host / "out"
    link.symlink_to(host / "secret.txt")
    stream = tar_of(member("out", b"5"), member("out/../secret.txt", data=b"pwned"))
    outcome = attack(host, forge(stream), local=link)
    refused(outcome, "'..'")
    assert os.readlink(link) == str(host / "secret.txt")

    good = tar_of(member("out", data=b"downloaded"))
    outcome = attack(host, forge(good), local=link)
    assert outcome.result is not None
    assert not link.is_symlink() and link.read_bytes() == b"downloaded"
    assert (host / "secret.txt").read_bytes() == SECRET


def test_a_missing_remote_is_file_not_found(host: Path) -> None:
    """A sandbox path that does not exist raises FileNotFoundError naming it."""

    async def main() -> None:
        async with sandlot.AsyncSandbox(strict()) as sb:
            with pytest.raises(FileNotFoundError, match="no/such/file"):
                await sb.files.download("no/such/file", host / "x")

    asyncio.run(main())
    assert sorted(os.listdir(host)) == ["secret.txt"]


# -- the parser alone, on random and mutated bytes --------------------------------------

GOOD_NAMES = st.lists(st.sampled_from([b"a", b"b", b"c", b"\xff"]), min_size=1, max_size=3)
ANY_NAMES = st.lists(
    st.sampled_from([b"out", b"a", b"b", b"..", b".", b"", b"x\0y", b"/tmp", b"\xff", b"c/"]),
    min_size=1,
    max_size=4,
)
NAMES = st.one_of(GOOD_NAMES, GOOD_NAMES, ANY_NAMES).map(b"/".join)
KINDS = st.sampled_from(
    [b"0", b"0", b"\0", b"7", b"5", b"5", b"5", b"1", b"2", b"3", b"6", b"S", b"x", b"L", b"g"]
)
MEMBERS = st.lists(
    st.tuples(NAMES, KINDS, st.binary(max_size=700), st.sampled_from([0o644, 0o7777, 0o4755])),
    max_size=6,
)


def _build(members: list[tuple[bytes, bytes, bytes, int]]) -> bytes:
    out = header("out/", b"5")
    for name, kind, data, mode in members:
        if kind == b"x":
            out += header("PaxHeader", b"x", len(data)) + padded(data)
        elif kind == b"L":
            out += header("././@LongLink", b"L", len(name) + 1, gnu=True) + padded(name + b"\0")
        else:
            data = b"" if kind == b"5" else data
            out += header(b"out/" + name, kind, len(data), mode=mode, link=b"/etc/passwd")
            out += padded(data)
    return out + END


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    members=MEMBERS,
    flips=st.lists(st.tuples(st.integers(0, 1 << 13), st.integers(0, 255)), max_size=3),
    cut=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 1 << 13)),
    noise=st.binary(max_size=2048),
    how=st.sampled_from(["as built", "mutated", "mutated", "random"]),
)
def test_the_parser_extracts_under_the_destination_or_refuses(
    tmp_path: Path,
    members: list[tuple[bytes, bytes, bytes, int]],
    flips: list[tuple[int, int]],
    cut: int | None,
    noise: bytes,
    how: str,
) -> None:
    """Any bytes: the result is regular files and directories under ``local`` with safe
    modes, or DownloadRefused; nothing is written beside it and nothing else is raised."""
    data = bytearray(noise if how == "random" else _build(members))
    if how == "mutated":
        for at, value in flips:
            if at < len(data):
                data[at] = value
        if cut is not None:
            del data[cut:]
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_bytes(SECRET)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    try:
        with tempfile.TemporaryFile() as spool:
            spool.write(data)
            spool.flush()
            try:
                result = extract(spool, len(data), work / "out", max_members=50)
            except DownloadRefused as exc:
                event(f"refused: {' '.join(str(exc).split(' ')[:5])}")
                assert os.listdir(work) == []
            else:
                event(f"extracted {result.files} files, {len(result.skipped)} skipped")
                assert os.listdir(work) == ["out"]
                files = dirs = 0
                for kind, _, mode in _walk(work / "out"):
                    assert kind in ("file", "dir")
                    assert mode & 0o7022 == 0
                    files += kind == "file"
                    dirs += kind == "dir"
                assert (files, dirs) == (result.files, result.directories)
        assert sorted(os.listdir(tmp_path)) == ["outside", "work"]
        assert os.listdir(outside) == ["secret.txt"]
        assert (outside / "secret.txt").read_bytes() == SECRET
    finally:
        for entry in os.listdir(work):
            path = work / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _walk(root: Path) -> list[tuple[str, str, int]]:
    found = []
    for path in [root, *root.rglob("*")]:
        mode = os.lstat(path).st_mode
        kind = "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
        found.append((kind, str(path), stat.S_IMODE(mode)))
    return found


def test_a_real_tarfile_stream_round_trips_through_the_parser(tmp_path: Path) -> None:
    """What the driver's tarfile writes (pax, long and non-UTF-8 names) reads back intact."""
    long_name = "n" * 180
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("root", None), (f"root/{long_name}", b"long"), ("root/é", b"utf")]:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(os.fsdecode(b"root/\xff\xfe"))
        info.size = 3
        tar.addfile(info, io.BytesIO(b"raw"))
    with tempfile.TemporaryFile() as spool:
        spool.write(buf.getvalue())
        result = extract(spool, len(buf.getvalue()), tmp_path / "got")
    assert (result.files, result.directories) == (3, 1)
    assert (tmp_path / "got" / long_name).read_bytes() == b"long"
    assert (tmp_path / "got" / "é").read_bytes() == b"utf"
    assert (tmp_path / os.fsdecode(b"got/\xff\xfe")).read_bytes() == b"raw"


# -- deep trees: what planning holds ------------------------------------------------------


def deep_stream(spool: IO[bytes], members: int, component: str, depth: int) -> int:
    """The shape of a memory attack: a chain of ``depth`` directories named
    ``component`` (plus a number), then ``members`` empty files at its bottom, so
    every name repeats the whole chain. Written to ``spool``; returns its length."""
    path = "out"
    spool.write(member(path, b"5"))
    for level in range(depth - 2):
        path += f"/{component}{level % 100:02d}"
        spool.write(member(path, b"5"))
    for i in range(members):
        spool.write(member(f"{path}/f{i:07d}", b"0"))
    spool.write(END)
    spool.flush()
    return spool.tell()


PLAN_RSS = """
import sys
from sandlot.untar import read_plan

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

with open(sys.argv[1], "rb") as spool:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from what is resident now
    before = status("VmRSS:")
    plan = read_plan(spool, int(sys.argv[2]))
    peak = status("VmHWM:")
print(plan.files, plan.directories, peak - before)
"""


def test_planning_a_deep_tree_holds_memory_per_member_not_per_name_byte(
    tmp_path: Path,
) -> None:
    """20 000 files at depth 250 (names of 1 KB, a 39 MiB stream, 20 MB of names):
    the plan holds one node per member (its own last name: about 280 bytes, 5 MiB
    here), not every member's whole path (as tuples of components: 14 KiB a
    member, 276 MiB here). The bound, 1 KiB a member, is below the 2 KiB of
    stream each such member costs, so memory stays under the stream's size."""
    files = 20_000
    spool_path = tmp_path / "deep.tar"
    with spool_path.open("w+b") as spool:
        length = deep_stream(spool, files, "d", 250)
    run = subprocess.run(
        [sys.executable, "-c", PLAN_RSS, str(spool_path), str(length)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    planned_files, directories, grown = map(int, run.stdout.split())
    assert (planned_files, directories) == (files, 249)
    assert grown < files * 1024, f"planning grew the host by {grown >> 20} MiB"


def test_names_past_the_stream_cap_are_refused(tmp_path: Path) -> None:
    """8 200 names of ~4 KB under one chain of 240 directories: past the 32 MiB cap
    on all names of a stream, refused before anything is created."""
    work = tmp_path / "work"
    work.mkdir()
    with tempfile.TemporaryFile() as spool:
        length = deep_stream(spool, 8_200, "d" * 14, 240)
        start = time.monotonic()
        with pytest.raises(DownloadRefused, match="member names add up to more than 33554432"):
            extract(spool, length, work / "out")
        assert time.monotonic() - start < 30
        # The cap grows with max_members (256 bytes a member past the 32 MiB floor).
        result = extract(spool, length, work / "out", max_members=200_000)
    assert (result.files, result.directories) == (8_200, 239)
