"""Start the driver on the channel file descriptor given as the first argument."""

import sys

from .server import serve

if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
