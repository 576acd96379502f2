"""`awp status` on the iptables backends: xt_recent lists, rule counters, and a re-plan."""

from __future__ import annotations

from awp.backend import Inspection, SourceState
from awp.backend.counters import door_counters, forwarded_counters
from awp.backend.recent import KernelClock, RecentLists, kernel_clock
from awp.backend.xt_bans import ban_status
from awp.compile.iptables import DOOR_BITS, door_bit_list, forwards, grant_list, open_list, shared_stage_list
from awp.model import Config


def inspect(backend, config: Config, lists: RecentLists | None = None) -> Inspection:
    sources = door_sources(config, lists or RecentLists(), kernel_clock())
    totals: dict[int, tuple[int, int]] = {}
    door_of = {p: d.port for d in (*config.active_simple, *config.active_advanced) for p in config.door_ports(d.port)}
    for table in backend.tables:
        for port, c in door_counters(table).items():
            port = door_of.get(port, port)  # a door's other ports count for the door
            accepted, dropped = totals.get(port, (0, 0))
            totals[port] = (accepted + c.accepted, dropped + c.dropped)
        if forwards(config, table.family):  # connections DNATed to an inner host never reach INPUT
            for port, n in forwarded_counters(table).items():
                accepted, dropped = totals.get(port, (0, 0))
                totals[port] = (accepted + n, dropped)
    plan = backend.plan(config)
    differs = tuple(f"IPv{p.table.family}" + ("" if p.table.table == "filter" else f" {p.table.table}")
                    for p in plan.steps if p.changed)
    return Inspection(backend.name, tuple(sources), totals, {}, not differs, differs,
                      **ban_status(backend, config, lists))


def door_sources(config: Config, lists: RecentLists, clock: KernelClock) -> list[SourceState]:
    s = config.settings
    found: list[SourceState] = []
    door_of = _started_doors(lists)
    for door in config.active_simple:
        n = len(door.knocks)
        for stage in range(1, n):
            for e in lists.entries(shared_stage_list(stage)):
                if door_of.get(e.address) == door.port and clock.age(e) < s.step_timeout:
                    found.append(_state(door.port, e, f"knocking {stage}/{n}", s.step_timeout, clock))
        found += [_state(door.port, e, "open", s.open_window, clock)
                  for e in lists.entries(open_list(door.port)) if clock.age(e) < s.open_window]
    for door in config.active_advanced:
        found += [_state(door.port, e, "granted", s.autoclose, clock)
                  for e in lists.entries(grant_list(door.port)) if clock.age(e) < s.autoclose]
    return sorted(found, key=lambda x: (x.port, x.source))


def _started_doors(lists: RecentLists) -> dict:
    """source -> protected port of the door it started last, from the awp-b<bit> lists."""
    ports: dict = {}
    for bit in range(DOOR_BITS):
        for e in lists.entries(door_bit_list(bit)):
            ports[e.address] = ports.get(e.address, 0) | (1 << bit)
    return ports


def _state(port: int, entry, label: str, lifetime: int, clock: KernelClock) -> SourceState:
    return SourceState(port, str(entry.address), label, int(lifetime - clock.age(entry)))
