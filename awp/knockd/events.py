"""What the listener decided about one packet, handed to every observer.

The listener makes one Decision per packet it handles and passes it to its observers in
order: the log line, the per-door counters in the state file, the ban counter, door
commands, the fleet. Observers are small callables `observer(decision) -> None` that must
not block (queue work, never run it inline) and must not raise: `notify` logs and drops an
observer's exception so one broken observer cannot stop knocks being handled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    time: float  # wall clock, seconds
    src: str  # the knocker's address as the kernel saw it
    knock_port: int
    port: int | None  # the protected port, None when the knock port is not a door's
    mode: str  # "advanced" or "simple"
    action: str  # "open", "close", "nothing-to-close" or "reject"
    reason: str  # "ok" for accepted; else the reject reason (bad-mac, replay, skew, ...)
    mac: str = ""  # the MAC's first 8 hex digits (not a secret: it is on the wire), or ""
    expires_in: int | None = None  # an open's lifetime in seconds
    detail: str = ""  # extra key=value text for the log line, e.g. "offset=+3"

    @property
    def accepted(self) -> bool:
        return self.action != "reject"


Observer = Callable[[Decision], None]


def notify(observers: Iterable[Observer], decision: Decision) -> None:
    for observer in observers:
        try:
            observer(decision)
        except Exception:  # an observer's bug must not stop the listener
            log.exception("observer %r failed on a decision", observer)
