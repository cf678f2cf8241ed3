"""Driving the generators long work is written as (ARCHITECTURE.md: long work yields progress).

A generator yields progress events and *returns* its result; these two helpers are the only
places that drive one by hand, for the command line, tests, benchmarks and nested jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
E = TypeVar("E")


def run_to_end(gen: Generator[E, Any, T], on_event: Callable[[E], object] | None = None) -> T:
    """Drive ``gen`` to its end, passing each event to ``on_event``; return its result. The
    generator is closed however this ends (an error, Ctrl-C in ``on_event``), so its own
    ``finally`` blocks run at once."""
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if on_event is not None:
                on_event(ev)
    finally:
        gen.close()


def relay(gen: Generator[Any, Any, T], wrap: Callable[[Any], E]) -> Generator[E, None, T]:
    """Yield ``wrap(event)`` for each event of ``gen``; return its result (``yield from`` with
    the events re-shaped)."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        yield wrap(ev)


def duration_text(seconds: float) -> str:
    """A time left as people say it: ``45 s``, ``12 min``, ``1 h 52 min``."""
    s = max(0, int(round(seconds)))
    if s < 90:
        return f"{s} s"
    m = int(round(s / 60))
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60} min"
