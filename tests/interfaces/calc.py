"""An interface with awkward signatures, state, errors, binary values and concurrency."""

import threading
import time
from typing import Literal

from sandlot import expose, models

STATE = {"calls": 0, "running": 0, "peak": 0}
_lock = threading.Lock()


class Local:
    """A type the session cannot import."""


@expose
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    STATE["calls"] += 1
    return a + b


@expose(concurrent=True)
def awkward(
    x: "Local",
    /,
    y: list[int] | None = None,
    *rest: float,
    flag: Literal["a", "b"] = "a",
    sentinel=object(),  # noqa: B008 - a default that has no source form
    **extra: str,
) -> "Local | None":
    """Take every kind of parameter and echo what arrived."""
    return {
        "x": x,
        "y": y,
        "rest": list(rest),
        "flag": flag,
        "sentinel_is_default": type(sentinel) is object,
        "extra": extra,
    }


@expose
def fail(message: str) -> None:
    """Raise, so the caller sees a remote traceback."""
    raise ValueError(f"failed on purpose: {message}")


@expose
def echo(value: object) -> object:
    """Return the value as it arrived (bytes, arrays, nested data)."""
    return value


@expose
def unsendable() -> object:
    """Return something that cannot cross."""
    return threading.Lock()


def _slow() -> int:
    with _lock:
        STATE["running"] += 1
        STATE["peak"] = max(STATE["peak"], STATE["running"])
    time.sleep(0.2)
    with _lock:
        STATE["running"] -= 1
    return STATE["peak"]


@expose
def serial_slow() -> int:
    """Sleep 0.2 s; calls run one at a time."""
    return _slow()


@expose(concurrent=True)
def parallel_slow() -> int:
    """Sleep 0.2 s; calls may overlap."""
    return _slow()


@expose
def reset_peak() -> None:
    """Forget the concurrency seen so far."""
    STATE["peak"] = 0


@expose
def model_info() -> dict:
    """What the config's load_code loaded, reached both ways."""
    return {"global": model, "registry": models.get("toy"), "tokens": tokenizer("a b c")}  # noqa: F821


@expose
def calls() -> int:
    """How many times add ran in this sandbox (state persists across calls)."""
    return STATE["calls"]


def hidden() -> str:
    """Not exposed: no caller may reach it."""
    return "secret"


@expose
def arange(n: int) -> object:
    """numpy.arange(n) (needs numpy in the serving sandbox)."""
    import numpy

    return numpy.arange(n)
