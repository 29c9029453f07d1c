"""The former home of the SSH backend, kept because the documentation named it.

``SSHBackend`` and ``StreamBackend`` live in :mod:`sandlot.backends.ssh`; the
machinery they share with the Modal backend lives in :mod:`sandlot.backends.kit`.
"""

from .ssh import SSHBackend, StreamBackend

__all__ = ["SSHBackend", "StreamBackend"]
