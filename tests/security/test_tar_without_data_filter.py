"""The driver unpacks tar streams (uploads, restores, a fork's workdir) on a Python without
``tarfile``'s ``data`` filter (3.11 before 3.11.4, as Debian 12's system Python, which a
host that is not root often runs its sandboxes with) as that filter would.

The driver's own unpacking is called here directly, with the filter taken away, on the
streams a hostile snapshot or upload could carry; ``tests/test_not_root.py`` forks a
sandbox on such a Python.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandlot.driver import fileops


@pytest.fixture(autouse=True)
def no_data_filter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delattr(tarfile, "data_filter")
    yield


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> list[bytes]:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return [out.getvalue()]


def _member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def test_files_directories_and_links_inside_are_unpacked_without_set_user_id(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    stream = _tar(
        (_member("d", tarfile.DIRTYPE, mode=0o777), b""),
        (_member("d/f.txt", mode=0o4777), b"data"),
        (_member("d/link", tarfile.SYMTYPE, linkname="f.txt"), b""),
        (_member("g.txt", mode=0o644), b"more"),
        (_member("hard", tarfile.LNKTYPE, linkname="g.txt"), b""),
    )
    assert fileops.put_tar(str(dest), iter(stream)) == {"members": 5}
    assert (dest / "d" / "f.txt").read_text() == "data"
    assert os.readlink(dest / "d" / "link") == "f.txt"
    assert (dest / "hard").read_text() == "more"
    assert (dest / "d" / "f.txt").stat().st_mode & 0o7777 == 0o755  # no set-user-ID, no o+w
    assert (dest / "d").stat().st_mode & 0o022 == 0


@pytest.mark.parametrize(
    ("member", "says"),
    [
        (_member("/abs.txt"), "outside the destination"),
        (_member("../up.txt"), "outside the destination"),
        (_member("out", tarfile.SYMTYPE, linkname="/etc/passwd"), "links outside"),
        (_member("out", tarfile.SYMTYPE, linkname="../../up"), "links outside"),
        (_member("hard", tarfile.LNKTYPE, linkname="../up.txt"), "links outside"),
        (_member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "special file"),
        (_member("fifo", tarfile.FIFOTYPE), "special file"),
    ],
    ids=["absolute", "dot-dot", "link-absolute", "link-up", "hard-link-up", "device", "fifo"],
)
def test_names_and_links_outside_and_special_files_are_refused(
    tmp_path: Path, member: tarfile.TarInfo, says: str
) -> None:
    dest = tmp_path / "a" / "dest"
    with pytest.raises(ValueError, match=says):
        fileops.put_tar(str(dest), iter(_tar((member, b"x"))))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "dest"]


def test_a_link_planted_earlier_does_not_carry_a_later_member_outside(tmp_path: Path) -> None:
    """A directory of the destination swapped for a link to outside (by a sandbox's code,
    between two uploads): a member through it resolves outside and is refused."""
    dest = tmp_path / "dest"
    (tmp_path / "outside").mkdir()
    dest.mkdir()
    (dest / "d").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="outside the destination"):
        fileops.put_tar(str(dest), iter(_tar((_member("d/x.txt"), b"x"))))
    assert list((tmp_path / "outside").iterdir()) == []
