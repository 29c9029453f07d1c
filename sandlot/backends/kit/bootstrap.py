"""How a driver starts, wherever it runs: its source, its bootstrap and the start-up's limits.

The local backend binds :data:`DRIVER_SRC` into the sandbox; a backend that
reaches its driver through a remote process (:mod:`sandlot.backends.kit.remote`)
ships the same files as :func:`driver_bundle` and starts them with
:data:`BOOTSTRAP`. Where things are inside a sandbox (the workdir, the driver's
directory, the user the code runs as) is defined once in
:mod:`sandlot.driver.farside`, which the far side reads as well.
"""

from __future__ import annotations

import io
import zipfile
from functools import cache
from pathlib import Path

DRIVER_SRC = Path(__file__).resolve().parent.parent.parent / "driver"
START_TIMEOUT = 60.0  # seconds the far side has to say hello (an image pull may be slow)
OWNER_TIMEOUT = 60.0  # seconds of silence from the host after which the driver ends itself


class IsolationWarning(UserWarning):
    """Sandboxes on this machine run with fewer protections than asked for."""


# Run by the far side's python3 -I -c: read the driver package, unpack it privately, start it.
BOOTSTRAP = """\
import io, os, shutil, sys, tempfile, zipfile
def take(n):
    b = bytearray()
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            raise SystemExit("sandlot: the host closed the stream during start-up")
        b += c
    return bytes(b)
d = tempfile.mkdtemp(prefix="sandlot-stream-")
try:
    zipfile.ZipFile(io.BytesIO(take(int.from_bytes(take(8), "big")))).extractall(d)
    sys.path.insert(0, d)
    from sandlot_driver.farside import main
except BaseException:
    shutil.rmtree(d, True)
    raise
main(d)
"""


@cache
def driver_bundle() -> bytes:
    """The driver package as a zip (``sandlot_driver/...``), without caches."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(DRIVER_SRC.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            bundle.write(path, f"sandlot_driver/{path.relative_to(DRIVER_SRC)}")
    return out.getvalue()
