"""Backends by name: where sandboxes run.

Every layer that makes sandboxes (``AsyncSandbox``, pools, ``RLM``,
``SandlotInterpreter``, sessions, the CLI's ``--backend``) takes ``backend=``:
a :class:`~sandlot.backends.base.Backend` object, a registered name, or None
for ``$SANDLOT_BACKEND``, else ``"local"`` (bubblewrap sandboxes on this
machine). ``"ssh"`` reaches the host named by ``$SANDLOT_SSH_HOST``
(:class:`~sandlot.backends.ssh.SSHBackend`), ``"modal"`` runs sandboxes on
Modal (:mod:`sandlot.backends.modal`). A package adds a backend with :func:`register`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Backend

BackendSpec: TypeAlias = "str | Backend | None"
DEFAULT = "local"
ENV_VAR = "SANDLOT_BACKEND"


def _local() -> Backend:
    from .local import LocalBackend  # imported on use: it needs the whole config layer

    return LocalBackend()


def _ray() -> Backend:
    from .ray import RayBackend  # imported on use: Ray is an extra (sandlot[ray])

    return RayBackend()


def _ssh() -> Backend:
    from .ssh import SSHBackend

    return SSHBackend.from_env()  # a host is needed: $SANDLOT_SSH_HOST, else a ConfigError


def _modal() -> Backend:
    from .modal import ModalBackend  # imported on use: Modal is an extra (sandlot[modal])

    return ModalBackend()


_factories: dict[str, Callable[[], Backend]] = {
    "local": _local,
    "ray": _ray,
    "ssh": _ssh,
    "modal": _modal,
}


def register(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``backend=name`` (and ``SANDLOT_BACKEND=name``) build a backend with ``factory``."""
    if not name.isidentifier():
        raise ConfigError(f"backend name {name!r} must be an identifier")
    _factories[name] = factory


def names() -> list[str]:
    """The registered backend names."""
    return sorted(_factories)


def resolve(spec: BackendSpec) -> Backend:
    """The backend ``spec`` names: itself, a registered name, or the default."""
    if spec is not None and not isinstance(spec, str):
        return spec
    name = spec or os.environ.get(ENV_VAR) or DEFAULT
    factory = _factories.get(name)
    if factory is None:
        where = f" (from ${ENV_VAR})" if spec is None else ""
        raise ConfigError(
            f"unknown backend {name!r}{where}; the backends here: {', '.join(names())}"
        )
    return factory()
