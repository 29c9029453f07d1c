"""Time per agent step of each framework adapter, beside that framework's default executor.

    uv run python benchmarks/integrations_bench.py                    # every adapter
    uv run python benchmarks/integrations_bench.py smolagents --rounds 6 --steps 20

Each adapter has a module in ``benchmarks/integrations/`` that runs the framework's
own agent loop with its scripted model, once with sandlot and once with the
framework's default executor, and returns the seconds each step took. The two
sides alternate round by round in this one process, so drift on the machine falls
on both alike; the table gives both p50s and p95s and the sandlot/default ratios.
Where a default executor is not isolated (most run code in the agent's own
process), its figure is a floor, not a rival for safety.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Protocol

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import console, header, versus, versus_columns

#: The adapters, in the order the table lists them: name -> module in benchmarks/integrations/.
ADAPTERS: dict[str, str] = {
    "openai-agents": "openai_agents",
    "smolagents": "smolagents",
    "deepagents": "deepagents",
    "rlms": "rlms",
    "mcp": "mcp_pydantic_ai",
}


class Adapter(Protocol):
    """What a module in ``benchmarks/integrations/`` provides."""

    #: The framework, as the table names it.
    FRAMEWORK: str
    #: The framework's default executor, as the table names it (with "unisolated" if so).
    DEFAULT: str

    def steps(self, side: str, count: int) -> list[float]:
        """Seconds per agent step for ``count`` steps; ``side`` is "sandlot" or "default"."""
        ...


def measure(adapter: Adapter, rounds: int, count: int) -> dict[str, list[float]]:
    """Both sides' step times, alternating which goes first from round to round."""
    got: dict[str, list[float]] = {"sandlot": [], "default": []}
    for turn in range(rounds):
        for side in ("sandlot", "default") if turn % 2 else ("default", "sandlot"):
            got[side].extend(adapter.steps(side, count))
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help=f"adapters to run (default: all of {ADAPTERS})")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of the two sides")
    parser.add_argument("--steps", type=int, default=20, help="agent steps a side per round")
    args = parser.parse_args()
    unknown = [name for name in args.only if name not in ADAPTERS]
    if unknown:
        parser.error(f"unknown adapters {unknown}; choose from {list(ADAPTERS)}")
    header("time per agent step, sandlot beside each framework's default executor")
    table = Table(title="time per agent step (ms)", title_justify="left")
    table.add_column("framework")
    table.add_column("default executor")
    for column in versus_columns("sandlot", "default"):
        table.add_column(column, justify="right")
    for name in args.only or ADAPTERS:
        adapter: Adapter = importlib.import_module(f"integrations.{ADAPTERS[name]}")  # type: ignore[assignment]
        got = measure(adapter, args.rounds, args.steps)
        table.add_row(adapter.FRAMEWORK, adapter.DEFAULT, *versus(got["sandlot"], got["default"]))
    console.print(table)


if __name__ == "__main__":
    main()
