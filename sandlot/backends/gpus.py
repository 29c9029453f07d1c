"""GPU pass-through for local sandboxes: which devices, and how to show them.

Every ``/dev/nvidia*`` node is bound into the sandbox (CUDA enumerates devices
through the control node, so hiding a node breaks it); ``CUDA_VISIBLE_DEVICES``
selects the ones the config asked for.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from functools import cache

from ..errors import ConfigError


@cache
def inventory() -> list[tuple[int, str]]:
    """The machine's NVIDIA GPUs as (index, name), from nvidia-smi or /dev."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            found = []
            for line in out.splitlines():
                index, _, name = line.partition(",")
                if index.strip().isdigit():
                    found.append((int(index), name.strip()))
            if found:
                return found
        except (OSError, subprocess.TimeoutExpired):
            pass
    nodes = [p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)]
    return sorted((int(p.removeprefix("/dev/nvidia")), "NVIDIA GPU") for p in nodes)


def select(gpu: int | str | None) -> list[int]:
    """Indices of the GPUs ``gpu`` asks for; ConfigError if the machine lacks them."""
    if gpu is None:
        return []
    gpus = inventory()
    if not gpus:
        raise ConfigError(
            f"gpu={gpu!r} was asked for, but this machine shows no NVIDIA GPU "
            "(no nvidia-smi output, no /dev/nvidiaN); use gpu=None"
        )
    indices = [i for i, _ in gpus]
    if isinstance(gpu, int):
        if gpu > len(gpus):
            raise ConfigError(f"gpu={gpu} asks for more GPUs than the {len(gpus)} here")
        return indices[:gpu]
    if gpu == "all":
        return indices
    if re.fullmatch(r"\d+(,\d+)*", gpu):
        wanted = [int(x) for x in gpu.split(",")]
        unknown = [i for i in wanted if i not in indices]
        if unknown:
            raise ConfigError(f"gpu={gpu!r}: no GPU with index {unknown}; here: {indices}")
        return wanted
    named = [i for i, name in gpus if gpu.lower() in name.lower()]
    if not named:
        raise ConfigError(f"gpu={gpu!r}: no GPU of that name; here: {[n for _, n in gpus]}")
    return named[:1]


def visible_devices_env(gpu: int | str | None) -> dict[str, str]:
    """The environment that shows the selected GPUs to CUDA (hides all when none)."""
    if gpu is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in select(gpu))}


def bwrap_args(gpu: int | str | None) -> list[str]:
    """bubblewrap arguments that pass the NVIDIA device nodes and driver state in."""
    if gpu is None:
        return []
    args: list[str] = []
    for node in sorted(glob.glob("/dev/nvidia*")):
        args += ["--dev-bind", node, node]
    for path in ("/sys", "/proc/driver/nvidia"):
        args += ["--ro-bind-try", path, path]
    return args
