"""One parameter list for a method that passes its arguments on to another.

A blocking twin's constructor hands its arguments to the async class's, and
``AsyncSandbox.exec`` hands its own to ``exec_stream``: writing the parameters
out again in each is how they drift apart. ``same_parameters`` declares them
once, for the type checker (through ``ParamSpec``), ``inspect`` and ``help()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def same_parameters(
    source: Callable[Concatenate[Any, P], Any],
) -> Callable[[Callable[Concatenate[S, ...], R]], Callable[Concatenate[S, P], R]]:
    """A method that takes the parameters of the method ``source``.

    ``@same_parameters(AsyncSandboxPool.__init__)`` over ``def __init__(self,
    *args, **kwargs)``: the type checker, ``inspect`` and ``help()`` see the
    parameters of ``source`` (the method keeps its own return type and
    docstring), and the body passes the arguments on.
    """

    def take(method: Callable[Concatenate[S, ...], R]) -> Callable[Concatenate[S, P], R]:
        own = inspect.signature(method).return_annotation
        method.__signature__ = inspect.signature(source).replace(  # type: ignore[attr-defined]
            return_annotation=own
        )
        return method

    return take
