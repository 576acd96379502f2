"""Two observers of the listener's decisions (awp.knockd.events): the log line, and the
per-door counters `awp status` shows.

Each decision is one line, the same keys in the same order, so that grep, awk and fail2ban
can rely on it (awp(8), LOGGING):

    knock accepted decision=open reason=ok src=198.18.1.2 knock_port=2000 port=2222 mode=advanced mac=ab12cd34 expires_in=3600
    knock rejected decision=reject reason=skew src=198.18.1.2 knock_port=2000 port=2222 mode=advanced mac=ab12cd34 offset=+180

Accepted knocks are always written (each needs a secret). Rejects are written within the
budget of awp.knockd.ratelog, and once a minute a summary line counts the rest.
"""

from __future__ import annotations

import logging

from awp.knockd.events import Decision
from awp.knockd.ratelog import RejectBudget

log = logging.getLogger(__name__)
# Rejects whose MAC is right for the source: a client repeating its knock, or the listener's
# own caution after a restart, or (fleet mode) a MAC another node of the fleet accepted first.
# Logged at info, not as a warning: they are not attacks on this node's secrets.
QUIET = frozenset({"replay", "untrusted-cache", "fleet-replay"})


def line(d: Decision) -> str:
    """The decision's log line (keys in a fixed order; a value never holds a space)."""
    words = "knock accepted" if d.accepted else "knock rejected"
    text = (f"{words} decision={d.action} reason={d.reason} src={d.src} knock_port={d.knock_port} "
            f"port={'-' if d.port is None else d.port} mode={d.mode} mac={d.mac or '-'}")
    if d.expires_in is not None:
        text += f" expires_in={d.expires_in}"
    return text + (f" {d.detail}" if d.detail else "")


class DecisionLog:
    """The log-line observer. tick() writes the minute's summary; close() the last one."""

    def __init__(self, logger: logging.Logger = log, budget: RejectBudget | None = None):
        self.logger = logger
        self.budget = budget or RejectBudget()

    def __call__(self, d: Decision) -> None:
        if d.action == "repeat":  # a client repeating an accepted knock: nothing new, no attack
            self.logger.debug("%s", line(d))
        elif d.accepted:
            self.logger.info("%s", line(d))
        elif self.budget.allow(d.src, d.reason):
            level = logging.INFO if d.reason in QUIET else logging.WARNING
            self.logger.log(level, "%s", line(d.refined()))

    def tick(self, now: float | None = None) -> None:
        self._summary(self.budget.roll())

    def close(self) -> None:
        self._summary(self.budget.roll(force=True))

    def _summary(self, text: str | None) -> None:
        if text:
            self.logger.warning("%s", text)


class DecisionCounters:
    """Accepted and rejected knocks per door since the listener started, for the state file:
    {"decisions": {"since": epoch, "doors": {"<port>": {"open": n, "close": n,
    "nothing-to-close": n, "rejected": {"<reason>": n}}}, "unknown-port": n}}.
    Bounded: one entry per protected port the configuration names, reasons from the code."""

    def __init__(self, since: float):
        self.since = int(since)
        self.doors: dict[int, dict] = {}  # by protected port; state() writes the keys as strings
        self.unknown_port = 0

    def __call__(self, d: Decision) -> None:
        if d.port is None or d.reason == "unknown-port":
            self.unknown_port += 1
            return
        door = self.doors.get(d.port)
        if door is None:
            door = self.doors[d.port] = {"open": 0, "close": 0, "nothing-to-close": 0, "rejected": {}}
        if d.action != "reject":
            door[d.action] = door.get(d.action, 0) + 1
        else:
            rejected = door["rejected"]
            rejected[d.reason] = rejected.get(d.reason, 0) + 1

    def state(self) -> dict:
        doors = {str(port): {**counts, "rejected": dict(counts["rejected"])} for port, counts in self.doors.items()}
        return {"decisions": {"since": self.since, "doors": doors, "unknown-port": self.unknown_port}}
