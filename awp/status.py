"""What awp has in the kernel: doors, sources mid-sequence, open doors and grants, time left."""

from __future__ import annotations

from dataclasses import dataclass

from awp.backend.recent import KernelClock, RecentLists
from awp.compile.iptables import grant_list, open_list, shared_stage_list, stage_list
from awp.model import Config


@dataclass(frozen=True)
class SourceState:
    port: int
    source: str
    state: str  # "knocking 2/5", "open", "granted"
    seconds_left: int


def door_sources(config: Config, lists: RecentLists, clock: KernelClock) -> list[SourceState]:
    s = config.settings
    found: list[SourceState] = []
    for door in config.active_simple:
        n = len(door.knocks)
        for stage in range(1, n):
            shared = {e.address for e in lists.entries(shared_stage_list(stage))
                      if clock.age(e) < s.step_timeout}
            for e in lists.entries(stage_list(door, stage)):
                if e.address in shared and clock.age(e) < s.step_timeout:
                    found.append(_state(door.port, e, f"knocking {stage}/{n}", s.step_timeout, clock))
        found += [_state(door.port, e, "open", s.open_window, clock)
                  for e in lists.entries(open_list(door.port)) if clock.age(e) < s.open_window]
    for door in config.active_advanced:
        found += [_state(door.port, e, "granted", s.autoclose, clock)
                  for e in lists.entries(grant_list(door.port)) if clock.age(e) < s.autoclose]
    return sorted(found, key=lambda x: (x.port, x.source))


def _state(port: int, entry, label: str, lifetime: int, clock: KernelClock) -> SourceState:
    return SourceState(port, str(entry.address), label, int(lifetime - clock.age(entry)))
