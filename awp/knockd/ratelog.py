"""How many reject lines a flood may write: a budget per period, and the period's summary.

At most `burst` reject lines per period in all, and at most `per_source` from any one source
(so one brute-forcing source is still seen by fail2ban while a flood from 65,535 spoofed
sources costs `burst` lines). Everything else is counted, and once per period one summary
line says how many were suppressed, which sources sent the most and why they were refused.

Memory is bounded whatever arrives: at most `max_sources` addresses are counted by name in a
period; rejects from further sources count as `untracked`. Pure apart from the clock, which is
an argument (the unit tests pass a fake one).
"""

from __future__ import annotations

import heapq
import time

PERIOD = 60.0
BURST = 120  # as many as the 20 per 10 s before, in one minute
PER_SOURCE = 30
MAX_SOURCES = 4096
TOP = 5


class RejectBudget:
    def __init__(self, period: float = PERIOD, burst: int = BURST, per_source: int = PER_SOURCE,
                 max_sources: int = MAX_SOURCES, top: int = TOP, clock=time.monotonic):
        self.period, self.burst, self.per_source = period, burst, per_source
        self.max_sources, self.top, self.clock = max_sources, top, clock
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self.start = now
        self.rejected = self.logged = self.untracked = 0
        self.sources: dict = {}  # address (any hashable; str() in the summary) -> [rejects, lines written]
        self.reasons: dict[str, int] = {}

    def allow(self, src, reason: str) -> bool:
        """Count one reject; whether its line may be written."""
        self.rejected += 1
        if len(self.reasons) < 64 or reason in self.reasons:  # reasons come from the code: a few
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
        counts = self.sources.get(src)
        if counts is None:
            if len(self.sources) >= self.max_sources:
                self.untracked += 1
                return self._spend(None)
            counts = self.sources[src] = [0, 0]
        counts[0] += 1
        return self._spend(counts)

    def _spend(self, counts: list[int] | None) -> bool:
        if self.logged >= self.burst or (counts is not None and counts[1] >= self.per_source):
            return False
        self.logged += 1
        if counts is not None:
            counts[1] += 1
        return True

    def roll(self, force: bool = False) -> str | None:
        """Once the period is over (or with force): its summary line, if it refused anything,
        and a fresh period."""
        now = self.clock()
        if not force and now - self.start < self.period:
            return None
        text = self.summary(now) if self.rejected else None
        self._reset(now)
        return text

    def summary(self, now: float) -> str:
        top = heapq.nlargest(self.top, self.sources.items(), key=lambda item: item[1][0])
        reasons = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))
        return (f"knock summary period={round(now - self.start)} rejected={self.rejected} "
                f"logged={self.logged} suppressed={self.rejected - self.logged} "
                f"sources={len(self.sources)} untracked={self.untracked} "
                f"top_src={','.join(f'{_host(src)}:{n[0]}' for src, n in top) or '-'} "
                f"reasons={','.join(f'{r}:{n}' for r, n in reasons) or '-'}")


def _host(src) -> str:
    """An IPv6 address in brackets, so that ':count' stays readable: [2001:2::7]:40."""
    text = str(src)
    return f"[{text}]" if ":" in text else text
