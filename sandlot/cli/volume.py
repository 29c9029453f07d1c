"""``sandlot volume``: named volumes, directories that outlive sandboxes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..console import expected_errors, fail, group
from ..errors import SandboxError
from ..volumes import Volume

volume_app = group(
    "Named volumes: directories that outlive sandboxes (SandboxConfig(volumes=...))."
)


VolumeArg = Annotated[str, typer.Argument(metavar="NAME", help="The volume's name.")]


def _shown(name: str) -> str:
    """A name from a sandbox, safe for a terminal: control characters written as escapes."""
    if name.isprintable():
        return name
    return name.encode("unicode_escape", "backslashreplace").decode("ascii")


def _size(n: int) -> str:
    """Bytes as a short human size ("?" for an unknown one)."""
    if n < 0:
        return "?"
    size, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


@volume_app.command("create")
def volume_create(name: VolumeArg) -> None:
    """Create an empty volume."""
    with expected_errors():
        volume = Volume.create(name)
    typer.echo(f"created volume {volume.name} ({volume.path})")


@volume_app.command("list")
def volume_list() -> None:
    """The volumes on this host, with their sizes."""
    with expected_errors():
        found = Volume.list()
    if not found:
        typer.echo("no volumes (create one with: sandlot volume create NAME)")
        return
    table = Table("name", "size", "modified")
    for info in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.modified))
        table.add_row(info.name, _size(info.size), when)
    Console(highlight=False).print(table)


@volume_app.command("ls")
def volume_ls(
    name: VolumeArg,
    path: Annotated[str, typer.Argument(help="A directory in the volume.")] = "/",
) -> None:
    """List a directory of a volume."""
    with expected_errors():
        entries = Volume.from_name(name).ls(path)
    for entry in entries:
        suffix = "/" if entry.type == "dir" else (" -> (link)" if entry.type == "link" else "")
        size = "" if entry.type != "file" else _size(entry.size)
        typer.echo(f"{size:>12}  {_shown(entry.name)}{suffix}")


@volume_app.command("put")
def volume_put(
    name: VolumeArg,
    local: Annotated[Path, typer.Argument(exists=True, help="A host file or directory.")],
    remote: Annotated[str, typer.Argument(help="Where in the volume.")] = "/",
) -> None:
    """Copy a host file or directory into a volume."""
    with expected_errors():
        Volume.from_name(name).put(local, remote)
    typer.echo(f"put {local} into {name}:{remote}")


@volume_app.command("get")
def volume_get(
    name: VolumeArg,
    remote: Annotated[str, typer.Argument(help="A file or directory in the volume.")],
    local: Annotated[
        Path | None, typer.Argument(help="Where on the host (default: its name, here).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace what is at the host path already.")
    ] = False,
) -> None:
    """Copy a file or directory out of a volume (regular files and directories only)."""
    target = local if local is not None else Path.cwd() / (PurePosixPath(remote).name or name)
    if os.path.lexists(target) and not force:
        fail(f"{target} exists; add --force to replace it")
    with expected_errors():
        try:
            result = Volume.from_name(name).get(remote, target)
        except OSError as exc:
            if isinstance(exc, SandboxError):
                raise
            fail(f"cannot write {target}: {exc}")
    typer.echo(f"got {result.files} file(s), {_size(result.size)}, into {result.path}")


@volume_app.command("rm")
def volume_rm(
    name: VolumeArg,
    path: Annotated[
        str | None, typer.Argument(help="A path in the volume; without one, the whole volume.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Remove a directory and its contents.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete a whole volume unasked.")
    ] = False,
) -> None:
    """Remove a path from a volume, or (without a path) delete the volume."""
    with expected_errors():
        volume = Volume.from_name(name)
        if path is not None:
            volume.remove(path, recursive=recursive)
            typer.echo(f"removed {name}:{path}")
            return
        size = _size(volume.size())
        if not yes:
            if not sys.stdin.isatty():
                fail(f"deleting volume {name!r} ({size}) needs --yes")
            typer.confirm(f"Delete volume {name!r} and all it holds ({size})?", abort=True)
        volume.delete()
    typer.echo(f"deleted volume {name} ({size})")
