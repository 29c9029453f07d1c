"""Start the driver: on the socket descriptor given as the first argument, or with
``--stdio`` on its stdin and stdout."""

import sys

from .server import serve, serve_stdio

if __name__ == "__main__":
    if sys.argv[1:] == ["--stdio"]:
        serve_stdio()
    else:
        serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
