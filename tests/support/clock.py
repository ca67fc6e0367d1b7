"""Clocks a test sets: time stands still, or moves only when told."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.tokens import NOW


def fixed_clock(at: float = NOW) -> Callable[[], float]:
    return lambda: at


class FakeClock:
    """A clock that moves only when the test advances it."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
