"""One atomic apply: compile every family, validate all, then load them in order.

If a later family fails, the families already loaded are put back from their snapshots, so
the running firewall is left exactly as it was. Nothing is remembered outside the kernel.
"""

from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from awp.backend import Backend
from awp.backend.iptables import IptablesBackend, detect_variant
from awp.backend.runner import Runner, run
from awp.compile import KernelState, Ruleset
from awp.errors import ApplyError
from awp.model import Config

log = logging.getLogger(__name__)
FAMILIES = (4, 6)


@dataclass(frozen=True)
class Plan:
    backend: Backend
    snapshot: str
    current: KernelState
    desired: Ruleset
    text: str

    @property
    def changed(self) -> bool:
        c = self.current
        return not (c.digest == self.desired.tag and c.chains == self.desired.names and c.hook == bool(self.desired.chains))


def backends(variant: str, runner: Runner = run) -> list[Backend]:
    chosen = detect_variant(runner) if variant == "auto" else variant
    return [IptablesBackend(family, chosen, runner) for family in FAMILIES]


def plan(config: Config, targets: list[Backend]) -> list[Plan]:
    plans = []
    for backend in targets:
        try:
            snapshot = backend.snapshot()
        except ApplyError:
            if backend.family == 6 and not config.settings.ipv6:
                log.info("skipped family=ipv6: FW_PORTKNOCK_IPV6 is off and ip6tables is unusable")
                continue
            raise
        current = backend.state(snapshot)
        desired = backend.compile(config)
        plans.append(Plan(backend, snapshot, current, desired, backend.render(desired, current)))
    return plans


def execute(plans: list[Plan]) -> list[Plan]:
    """Validate every changed family, then load them in order; roll back on failure."""
    todo = [p for p in plans if p.changed]
    for p in todo:
        p.backend.test(p.text)
    done: list[Plan] = []
    for p in todo:
        try:
            p.backend.load(p.text)
        except ApplyError:
            roll_back(done)
            raise
        log.info("loaded family=ipv%d chains=%d digest=%s", p.backend.family, len(p.desired.chains),
                 p.desired.tag or "none")
        done.append(p)
    return todo


def roll_back(done: list[Plan]) -> None:
    """Put the families in `done` back as their snapshots had them."""
    for p in reversed(done):
        try:
            p.backend.rollback(p.snapshot)
            log.warning("rolled back family=ipv%d", p.backend.family)
        except ApplyError as exc:
            log.error("rollback failed family=ipv%d: %s", p.backend.family, exc)


@contextmanager
def exclusive(lock_path: Path):
    """One apply at a time per awp root (flock on DIR/var/run/awp.lock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ApplyError(f"another awp command holds {lock_path}; try again") from None
        yield
