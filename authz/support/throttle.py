"""A warning worth an operator's eye, written at most once an interval however often it
happens (a misconfigured proxy sends every request that way)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Says when the next occurrence may be written, and how many were held back since the
    last one that was. Owned by whoever writes the warning, never shared module state."""

    def __init__(self, interval_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._last: float | None = None
        self._held = 0

    def due(self) -> int | None:
        """For one occurrence: None when it is held back; otherwise how many were held
        back since the last one let through (the caller writes it now)."""
        now = self._monotonic()
        if self._last is not None and now - self._last < self._interval_s:
            self._held += 1
            return None
        self._last = now
        held, self._held = self._held, 0
        return held
