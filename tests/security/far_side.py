"""A hostile far side for StreamBackend: run as ``python far_side.py MODE PIDFILE``.

It stands where ``ssh HOST python3 -c BOOTSTRAP`` would, writes its PID to
PIDFILE, and answers the host's start-up as MODE says, wrongly:

- ``garbage``: text instead of frames, forever;
- ``huge``: a frame prefix that announces a 2 GiB header;
- ``silent``: reads what the host sends and never answers;
- ``bad_hello``: a well-formed frame that is not a hello;
- ``flood``: a proper hello, then endless random bytes where the driver's
  ``ready`` should come.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time


def frame(header: dict[str, object]) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("!II", len(head), 0) + head


def write_forever(data: bytes) -> None:
    while True:
        os.write(1, data)


def main() -> None:
    mode, pidfile = sys.argv[1], sys.argv[2]
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    if mode == "garbage":
        write_forever(b"Welcome to the far side! " * 4096)
    elif mode == "huge":
        os.write(1, struct.pack("!II", 1 << 31, 0))
        time.sleep(60)
    elif mode == "silent":
        while os.read(0, 1 << 16):
            pass
        time.sleep(60)
    elif mode == "bad_hello":
        os.write(1, frame({"t": "ready", "ok": True, "pid": 1}))
        time.sleep(60)
    elif mode == "flood":
        hello = {"t": "hello", "v": 1, "bwrap": True, "problem": "", "root": False}
        os.write(1, frame({**hello, "python": "3", "workdir": "/w"}))
        write_forever(os.urandom(1 << 16))


main()
