"""Text files shipped inside the package that the host never runs as Python.

The viewers' scripts and styles (``rlm/viewer/``, ``experiment/viewer/``) go
into the pages they write; the code in an ``in_sandbox/`` folder is sent, as
text, to a sandbox's REPL. Keeping them as files lets each be read and linted
as what it is; loading them through :mod:`importlib.resources` finds them in a
wheel or a zip as well as in a source tree.
"""

from __future__ import annotations

from importlib.resources import files


def package_text(package: str, path: str) -> str:
    """The UTF-8 text of ``path`` (``/``-separated, relative) inside ``package``."""
    return files(package).joinpath(*path.split("/")).read_text(encoding="utf-8")
