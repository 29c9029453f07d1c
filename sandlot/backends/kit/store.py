"""The host side of named volumes that a backend needs: where they live, and a mount's source.

The user's API (:class:`sandlot.volumes.Volume`: create, list, copy in and out)
sits above the sandbox and uses this module; a backend that mounts volumes
only asks :func:`mount_source` for the directory behind a mount.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...config import VolumeMount, check_volume_name
from ...errors import ConfigError


def volumes_root() -> Path:
    """``$SANDLOT_VOLUMES``, else ``$XDG_DATA_HOME/sandlot/volumes`` (``~/.local/share``),
    as an absolute path with its links resolved (the operator's, not a sandbox's: what
    lies below it, a sandbox may write, and is opened without following links)."""
    if env := os.environ.get("SANDLOT_VOLUMES"):
        return Path(os.path.realpath(env))
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(os.path.realpath(os.path.join(base, "sandlot", "volumes")))


def checked_name(name: str) -> str:
    """``name`` if it may name a volume, else a ConfigError that says why."""
    try:
        return check_volume_name(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def missing(name: str) -> ConfigError:
    """The error for a volume ``name`` that does not exist, saying how to create it."""
    return ConfigError(
        f"volume {name!r} does not exist; create it with 'sandlot volume create {name}' "
        "or Volume.create(name)"
    )


def mount_source(spec: VolumeMount) -> Path:
    """The host directory behind a volume mount, checked to exist (for backends)."""
    path = volumes_root() / checked_name(spec.name)
    if not path.is_dir():
        raise missing(spec.name)
    return path
