"""What the listener decided about one packet, handed to every observer.

The listener makes one Decision per packet it handles and passes it to its observers in
order: the log line, the per-door counters in the state file, the ban counter, door
commands, the fleet. Observers are small callables `observer(decision) -> None` that must
not block (queue work, never run it inline) and must not raise: `notify` logs and drops an
observer's exception so one broken observer cannot stop knocks being handled.

An observer may also have `tick(now)`, called about once a second from the listener's loop
(a periodic summary, expiries), and `state() -> dict`, whose keys go into the state file
`awp status` reads (awp.knockd.decisionlog.DecisionCounters writes "decisions").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Decision:
    """Immutable by convention (refined() makes a new one). Not a frozen dataclass: one is
    made for every datagram of a flood, and a frozen one's __init__ costs 1.5 us against
    0.2 us (bench/fuzz_bench.py --junk)."""

    time: float  # wall clock, seconds
    src: str  # the knocker's address as the kernel saw it
    knock_port: int
    port: int | None  # the protected port, None when the knock port is not a door's
    mode: str  # "advanced" or "simple"
    action: str  # "open", "close", "nothing-to-close", "repeat" (a client sent an accepted knock again) or "reject"
    reason: str  # "ok" for accepted; else the reject reason (bad-mac, replay, skew, ...)
    mac: str = ""  # the MAC's first 8 hex digits (not a secret: it is on the wire), or ""
    expires_in: int | None = None  # an open's lifetime in seconds
    detail: str = ""  # extra key=value text for the log line, e.g. "offset=+180"
    # A bad MAC may be clock skew; telling costs more MACs, so only an observer that will
    # write the line asks: explain() -> (reason, detail). See refined().
    explain: Callable[[], tuple[str, str]] | None = field(default=None, compare=False, repr=False)

    @property
    def accepted(self) -> bool:
        return self.action != "reject"

    def refined(self) -> Decision:
        """This decision with the costly reason worked out (reason=skew offset=+180)."""
        if self.explain is None:
            return self
        reason, detail = self.explain()
        return replace(self, reason=reason, detail=detail, explain=None)


Observer = Callable[[Decision], None]


def notify(observers: Iterable[Observer], decision: Decision) -> None:
    for observer in observers:
        try:
            observer(decision)
        except Exception:  # an observer's bug must not stop the listener
            log.exception("observer %r failed on a decision", observer)


def tick(observers: Iterable[Observer], now: float) -> None:
    """The periodic hook: observer.tick(now) for the observers that have one."""
    for observer in observers:
        hook = getattr(observer, "tick", None)
        if hook is None:
            continue
        try:
            hook(now)
        except Exception:
            log.exception("observer %r failed on tick", observer)


def state(observers: Iterable[Observer]) -> dict:
    """The state-file keys of every observer that has state()."""
    merged: dict = {}
    for observer in observers:
        hook = getattr(observer, "state", None)
        if hook is None:
            continue
        try:
            merged.update(hook())
        except Exception:
            log.exception("observer %r failed on state", observer)
    return merged
