"""Time limits: a point on the monotonic clock after which work should stop."""

from __future__ import annotations

import math
import time


def clock() -> float:
    """Seconds on the monotonic clock (a seam: tests replace it with a deterministic one)."""
    return time.monotonic()


class Deadline:
    """A point in time, on ``clock``, after which work should stop."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else clock() + seconds

    def remaining(self) -> float:
        return math.inf if self.end is None else self.end - clock()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def within(self, seconds: float) -> Deadline:
        """The earlier of this deadline and ``seconds`` from now."""
        return Deadline(max(0.0, min(seconds, self.remaining())))
