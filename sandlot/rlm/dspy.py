"""The DSPy interpreter's first import path, kept for code written against it.

The adapter lives in :mod:`sandlot.integrations.dspy`; this module re-exports
its public names, so ``from sandlot.rlm.dspy import SandlotInterpreter`` gives
the same class.
"""

from ..integrations.dspy import SandlotInterpreter, SandlotInterpreterFactory

__all__ = ["SandlotInterpreter", "SandlotInterpreterFactory"]
