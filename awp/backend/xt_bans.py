"""FW_PORTKNOCK_BAN on the iptables backends: the xt_recent list `awp-ban`.

The rule checks it with --seconds FW_PORTKNOCK_BAN_TIME, so a ban lasts exactly that long
from its last write whatever `seconds` says, and ends in the kernel even if no awp process
runs. Like every xt_recent list it holds at most ip_list_tot sources (awp(8), LIMITS): a
full list forgets the least recently banned source.
"""

from __future__ import annotations

import re

from awp.backend.recent import KernelClock, RecentLists, kernel_clock
from awp.compile.iptables import BAN

# iptables-save -c lines of the ban chains: the deny rules of AWP-BAN, the jump to AWP-BAN-ADD
_SAVE_LINE = re.compile(r"\[([0-9]+):[0-9]+\] -A (AWP-BAN|AWP-FAIL) (.*)$")


class RecentBans:
    def __init__(self, config, lists: RecentLists | None = None):
        self.config = config
        self.lists = lists or RecentLists()

    def ban(self, src, seconds: int) -> None:
        self.lists.add(BAN, src)

    def list(self, clock: KernelClock | None = None) -> list[tuple[str, int]]:
        lifetime = self.config.settings.ban_time
        clock = clock or kernel_clock()
        return sorted((str(e.address), int(lifetime - clock.age(e))) for e in self.lists.entries(BAN)
                      if clock.age(e) < lifetime)


def counters_from_save(text: str) -> dict[str, int]:
    found = {"dropped": 0, "kernel_bans": 0}
    for line in text.splitlines():
        match = _SAVE_LINE.match(line)
        if not match:
            continue
        packets, chain, rule = int(match.group(1)), match.group(2), match.group(3)
        if chain == "AWP-BAN" and "-j RETURN" not in rule:
            found["dropped"] += packets
        elif chain == "AWP-FAIL" and "-j AWP-BAN-ADD" in rule:
            found["kernel_bans"] += packets
    return found


def _counters_iptc(family: int) -> dict[str, int]:
    """Legacy x_tables: python-iptables, as awp.backend.counters reads the door counters."""
    import iptc

    table = iptc.Table(iptc.Table.FILTER) if family == 4 else iptc.Table6(iptc.Table6.FILTER)
    table.refresh()
    found = {"dropped": 0, "kernel_bans": 0}
    for chain in table.chains:
        for rule in chain.rules if chain.name in ("AWP-BAN", "AWP-FAIL") else ():
            target = rule.target.name
            if chain.name == "AWP-BAN" and target != "RETURN":
                found["dropped"] += rule.get_counters()[0]
            elif chain.name == "AWP-FAIL" and target == "AWP-BAN-ADD":
                found["kernel_bans"] += rule.get_counters()[0]
    return found


def ban_counters(table) -> dict[str, int]:
    if table.variant == "legacy":
        return _counters_iptc(table.family)
    result = table.runner([f"{table.tool}-save", "-c", "-t", "filter"])
    return counters_from_save(result.stdout) if result.returncode == 0 else {"dropped": 0, "kernel_bans": 0}


def ban_status(backend, config, lists: RecentLists | None = None, clock: KernelClock | None = None) -> dict:
    """Inspection's ban fields, both families' counters summed."""
    if not config.settings.ban:
        return {}
    totals = {"dropped": 0, "kernel_bans": 0}
    for table in backend.tables:
        counts = ban_counters(table)
        totals = {k: totals[k] + counts.get(k, 0) for k in totals}
    return {"banned": tuple(RecentBans(config, lists).list(clock)), "ban_counters": totals}
