"""A tour of one sandbox: REPL state, a host tool, a process, files, and the walls.

Run it with ``uv run python examples/quickstart.py``.
"""

from __future__ import annotations

import time

import sandlot


def llm_query(prompt: str) -> str:
    """Stand-in for a language model the host can reach and the sandbox cannot."""
    return f"(host answered {len(prompt)} characters)"


def main() -> None:
    """Start a sandbox, use each part of it, and show what it cannot reach."""
    config = sandlot.SandboxConfig(memory_mb=512, timeout=600, env={"MODE": "demo"})
    started = time.perf_counter()
    with sandlot.Sandbox(config, tools={"llm_query": llm_query}) as sb:
        print(f"sandbox ready in {(time.perf_counter() - started) * 1000:.0f} ms")
        r = sb.run_code("import math\nx = 41\nprint('hi from the REPL')\nx + 1")
        print("run_code:", r.stdout.strip(), "| value:", r.value)
        print("state persists:", sb.run_code("x").value)
        print("host tool:", sb.run_code("llm_query('what is in the context?')").value)
        p = sb.exec("python", "-c", "import os; print(os.environ['MODE'], os.getcwd())")
        print("exec:", p.returncode, p.stdout.strip())
        sb.files.write("data/in.txt", b"hello file")
        print("files:", [f.name for f in sb.files.list("data")], sb.files.read("data/in.txt"))
        walls = sb.run_code(
            "import socket, os\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1); net = 'open'\n"
            "except OSError as e:\n    net = f'blocked ({type(e).__name__})'\n"
            "(net, os.getuid(), os.path.exists('/root/.bashrc'))"
        )
        print("network, user id, host home visible:", walls.value)
        bad = sb.run_code("1 / 0")
        print("errors come back as data:", bad.error)


if __name__ == "__main__":
    main()
