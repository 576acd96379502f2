"""Rate-limited logging for rejected knocks, so a flood cannot flood the log."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most `burst` lines per `period` seconds; the rest are counted and summarised."""

    def __init__(self, logger: logging.Logger, burst: int = 20, period: float = 10.0, clock=time.monotonic):
        self.logger = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self.window_start = clock()
        self.emitted = 0
        self.suppressed = 0

    def allow(self) -> bool:
        """Whether the next line may be logged now; a refused one is counted as suppressed."""
        self._roll()
        if self.emitted < self.burst:
            self.emitted += 1
            return True
        self.suppressed += 1
        return False


    def flush(self) -> None:
        self._roll()

    def _roll(self) -> None:
        now = self.clock()
        if now - self.window_start < self.period:
            return
        if self.suppressed:
            self.logger.warning("knock rejected suppressed=%d lines in the last %.0fs", self.suppressed,
                                now - self.window_start)
        self.window_start, self.emitted, self.suppressed = now, 0, 0
