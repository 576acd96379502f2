"""Packet counters of the protected-port leaves, for `awp status`.

On legacy (x_tables) hosts they are read in-process with python-iptables; it drives only
the legacy interface, so on nf_tables hosts they come from `iptables-nft-save -c`, whose
output is parsed instead. Both give the same numbers (tests/netns/test_counters.py).

A door that forwards lets the knocker's connections in through the nat table: its DNAT
rules in AWP-PREROUTING (which see a connection's first packet only) count them, read with
`iptables-save -c -t nat` on both variants, and only while a door forwards (on x_tables
reading the nat table would load it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from awp.backend.restore import IptablesTable

_LEAF = re.compile(r"AWP-I([0-9]+)$")
_SAVE_LINE = re.compile(r"\[([0-9]+):[0-9]+\] -A (AWP-I[0-9]+) (.*)$")
_DNAT_LINE = re.compile(r"\[([0-9]+):[0-9]+\] -A AWP-PREROUTING .*--dport ([0-9]+) .*-j DNAT ")


@dataclass(frozen=True)
class DoorCounters:
    port: int
    accepted: int  # new connections let in by a knock (open window or grant)
    dropped: int  # packets to the port that were dropped


def summarize(leaves: dict[str, list[tuple[bool, int]]]) -> dict[int, DoorCounters]:
    """leaves: chain -> [(is a knock-granted ACCEPT, packets)] in rule order; last rule is DROP."""
    found = {}
    for chain, rules in leaves.items():
        match = _LEAF.match(chain)
        if not match or not rules or not any(granted for granted, _ in rules):
            continue  # not a protected-port leaf
        port = int(match.group(1))
        found[port] = DoorCounters(port, sum(p for granted, p in rules if granted), rules[-1][1])
    return found


def from_save(text: str) -> dict[int, DoorCounters]:
    leaves: dict[str, list[tuple[bool, int]]] = {}
    for line in text.splitlines():
        match = _SAVE_LINE.match(line)
        if match:
            granted = "-m recent" in match.group(3) and "-j ACCEPT" in match.group(3)
            leaves.setdefault(match.group(2), []).append((granted, int(match.group(1))))
    return summarize(leaves)


def from_iptc(family: int) -> dict[int, DoorCounters]:
    """Legacy x_tables only: python-iptables cannot see nf_tables rules."""
    import iptc  # imported here: it loads libiptc, which only the legacy path needs

    table = iptc.Table(iptc.Table.FILTER) if family == 4 else iptc.Table6(iptc.Table6.FILTER)
    table.refresh()
    leaves = {}
    for chain in table.chains:
        if _LEAF.match(chain.name):
            leaves[chain.name] = [(_granted(rule), rule.get_counters()[0]) for rule in chain.rules]
    return summarize(leaves)


def _granted(rule) -> bool:
    return rule.target.name == "ACCEPT" and any(m.name == "recent" for m in rule.matches)


def door_counters(backend: IptablesTable) -> dict[int, DoorCounters]:
    if backend.variant == "legacy":
        return from_iptc(backend.family)
    result = backend.runner([f"{backend.tool}-save", "-c", "-t", "filter"])
    return from_save(result.stdout) if result.returncode == 0 else {}


def forwarded_from_save(text: str) -> dict[int, int]:
    """Connections sent on to an inner host, by door port, from `iptables-save -c -t nat`."""
    found: dict[int, int] = {}
    for line in text.splitlines():
        match = _DNAT_LINE.match(line)
        if match:
            port = int(match.group(2))
            found[port] = found.get(port, 0) + int(match.group(1))
    return found


def forwarded_counters(backend: IptablesTable) -> dict[int, int]:
    """The filter table `backend`'s family: its nat table's forwarded connections by door port."""
    result = backend.runner([f"{backend.tool}-save", "-c", "-t", "nat"])
    return forwarded_from_save(result.stdout) if result.returncode == 0 else {}
