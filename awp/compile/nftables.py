"""Config -> NftRuleset for the native nftables backend: one `inet awp` table. Pure.

Its own intermediate representation (not iptables' chains): sets with a size and per-element
timeouts hold every source's state, and `vmap` dispatch by port keeps the per-packet cost
independent of the number of doors. See docs/design.md, "Simple mode in nftables".

Per-source state (family f = 4 or 6, each a set or map of that family's addresses):

    start<f>     map addr : mark   made a door's first knock: door port << 16 | 1 (step timeout)
    progress<f>  map addr : mark   further on: door port << 16 | knocks done (step timeout)
    scan<f>      addr . port       hit a door's second knock out of turn: (src, first knock)
    open<f>      addr . port       completed a simple door (open window)
    grant<f>     addr . port       advanced-mode grant, written by the listener (autoclose)

A map lookup's result cannot be compared directly in nft, so a knock port's progress chain
copies the source's progress into the packet mark and compares that. Only SYNs to knock
ports reach that chain, and awp drops every one of them, so no mark leaves awp's table.

A full map refuses new entries (counted in refused_progress); entries already in keep their
place. First knocks, which anyone can send from spoofed addresses, go to start<f> only, so a
flood fills that map and not progress<f>, into which a source moves with its second knock.
One map would not do: moving a source on deletes its entry and adds a new one, and the kernel
frees a deleted entry's slot only at its next garbage collection, so in a full map the add
that follows fails and the source would lose its place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from awp.model import AdvancedDoor, Config, SimpleDoor

TABLE = "awp"
FAMILY = "inet"
PRIORITY = "filter - 10"  # before iptables-nft's filter INPUT: knocks are consumed first
DIGEST_TAG = "awp:digest="
SYN = "tcp flags & (fin | syn | rst | ack) == syn"
ADDR = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
STATE_MAPS = ("start", "progress")  # addr : mark
STATE_SETS = (*STATE_MAPS, "scan", "open", "grant")
REFUSED = ("refused_progress", "refused_open")  # named counters: a full set refused an entry
KNOCK_UDP_LENGTH = "72-73"  # UDP header + 64 hex bytes + an optional 65th byte
NFLOG_SNAPLEN = 256
MISFIT_RATE = "limit rate 20/second burst 40 packets"
OPEN_LOG_RATE = "limit rate 10/minute burst 20 packets"


@dataclass(frozen=True)
class NftSet:
    name: str
    key: str  # nft type, e.g. "ipv4_addr . inet_service"
    size: int
    data: str | None = None  # a map's value type

    def declaration(self) -> str:
        kind = "map" if self.data else "set"
        value = f" : {self.data}" if self.data else ""
        return (f"add {kind} {FAMILY} {TABLE} {self.name} {{ type {self.key}{value}; "
                f"size {self.size}; flags dynamic,timeout; }}")


@dataclass(frozen=True)
class NftChain:
    name: str
    rules: tuple[str, ...]
    base: bool = False  # the one base chain, hooked at input


@dataclass(frozen=True)
class NftRuleset:
    """Everything awp keeps in `inet awp`; no chains means: remove the table."""

    sets: tuple[NftSet, ...] = ()
    counters: tuple[str, ...] = ()
    chains: tuple[NftChain, ...] = ()
    digest: str | None = None
    flush_sets: tuple[str, ...] = ()  # sets of a mode that is off: their state is dropped

    @property
    def empty(self) -> bool:
        return not self.chains


def state_sets(size: int) -> tuple[NftSet, ...]:
    """The ten state sets and maps, defined whatever the modes (so a mode toggle keeps the
    others')."""
    found = []
    for family, (_, addr) in ADDR.items():
        found += [NftSet(f"{kind}{family}", addr, size, "mark") for kind in STATE_MAPS]
        found += [NftSet(f"{kind}{family}", f"{addr} . inet_service", size)
                  for kind in STATE_SETS if kind not in STATE_MAPS]
    return tuple(found)


def progress_mark(port: int, done: int) -> str:
    """The progress value of a source that has done `done` knocks of the door of `port`."""
    return f"0x{port << 16 | done:08x}"


def compile_nft(config: Config) -> NftRuleset:
    simple = tuple(sorted(config.active_simple, key=lambda d: d.port))
    advanced = tuple(sorted(config.active_advanced, key=lambda d: d.port))
    if not simple and not advanced:
        return NftRuleset()
    chains = _Builder(config, simple, advanced).chains()
    flush = tuple(f"{kind}{f}" for f in ADDR for kind in STATE_SETS
                  if (kind == "grant" and not advanced) or (kind != "grant" and not simple))
    counters = (*REFUSED, *door_counters(config))
    return _with_digest(NftRuleset(state_sets(config.settings.set_size), counters, chains, None, flush))


def _with_digest(ruleset: NftRuleset) -> NftRuleset:
    text = "\n".join([*(s.declaration() for s in ruleset.sets), *ruleset.counters, *ruleset.flush_sets,
                      *(f"{c.name} {c.base} {r}" for c in ruleset.chains for r in c.rules)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    entry, *rest = ruleset.chains
    tagged = (*entry.rules[:-1], f'{entry.rules[-1]} comment "{DIGEST_TAG}{digest}"')
    return NftRuleset(ruleset.sets, ruleset.counters, (NftChain(entry.name, tagged, True), *rest),
                      digest, ruleset.flush_sets)


def vmap(entries: dict[int, str]) -> str:
    """An anonymous verdict map over ports: one hash lookup however many doors there are."""
    return "vmap { " + ", ".join(f"{port} : goto {chain}" for port, chain in sorted(entries.items())) + " }"


class _Builder:
    def __init__(self, config: Config, simple: tuple[SimpleDoor, ...], advanced: tuple[AdvancedDoor, ...]):
        self.s = config.settings
        self.families = (4, 6) if self.s.ipv6 else (4,)
        self.simple = simple
        self.advanced = advanced
        self.out: list[NftChain] = []

    def chains(self) -> tuple[NftChain, ...]:
        entry = [] if self.s.ipv6 else ["meta nfproto ipv6 return"]
        if self.simple:
            entry += [f"{SYN} {ADDR[f][0]} saddr @{kind}{f} jump progress"
                      for f in self.families for kind in STATE_MAPS]
            self._progress()
        tcp = self._tcp_leaves()
        if self.advanced:
            entry.append(f"udp dport {vmap(self._udp_leaves())}")
        entry.append(f"tcp dport {vmap(tcp)}")
        return (NftChain("input", tuple(entry), True), *sorted(self.out, key=lambda c: c.name))

    def _add(self, name: str, *rules: str) -> str:
        self.out.append(NftChain(name, tuple(rules)))
        return name

    def _each(self, template: str) -> list[str]:
        """One rule per family: `{a}` is ip or ip6, `{f}` is 4 or 6."""
        return [template.format(a=ADDR[f][0], f=f) for f in self.families]

    # --- dispatch of TCP by port ----------------------------------------------------------

    def _tcp_leaves(self) -> dict[int, str]:
        leaves: dict[int, str] = {}
        for door in self.simple:
            leaves[door.knocks[0]] = self._first_knock(door)
            if len(door.knocks) > 1:
                leaves[door.knocks[1]] = self._add(f"knock_{door.knocks[1]}", *self._each(
                    f"{SYN} update @scan{{f}} {{{{ {{a}} saddr . {door.knocks[0]} timeout {self.s.step_timeout}s }}}}"),
                    "drop")
            for knock in door.knocks[2:]:
                leaves[knock] = self._add(f"knock_{knock}", "drop")
        for port in sorted({d.port for d in self.simple} | {d.port for d in self.advanced}):
            leaves[port] = self._protected(port)
        return leaves

    def _first_knock(self, door: SimpleDoor) -> str:
        """Start the sequence unless the source hit the second knock out of turn lately (what
        scanners and their reordered retries do)."""
        scanned = self._each("{a} saddr . tcp dport @scan{f} drop")  # keyed by the door's first knock
        return self._add(f"knock_{door.knocks[0]}", f"{SYN.replace('==', '!=')} drop", *scanned,
                         f"goto {self._advance(door, 1)}")

    # --- progress of sources mid-sequence ------------------------------------------------

    def _progress(self) -> None:
        entries = {}
        for door in self.simple:
            for m, knock in enumerate(door.knocks, start=1):
                entries[knock] = self._progress_leaf(door, m)
        self._add("forget", *self._each(_FORGET))
        self._add("progress", f"tcp dport {vmap(entries)}", "jump forget")

    def _progress_leaf(self, door: SimpleDoor, m: int) -> str:
        """A mid-sequence source knocking door.knocks[m-1]: advance, ignore a retransmit, or
        reset (and go on to the idle dispatch, where this knock may start a door)."""
        rules = ["meta mark set 0x0", *(rule for kind in STATE_MAPS
                                        for rule in self._each(f"meta mark set {{a}} saddr map @{kind}{{f}}"))]
        if m >= 2:
            rules.append(f"meta mark {progress_mark(door.port, m - 1)} goto {self._advance(door, m)}")
        if m < len(door.knocks):
            rules.append(f"meta mark {progress_mark(door.port, m)} drop")
        return self._add(f"progress_{door.knocks[m - 1]}", *rules, "jump forget")

    def _advance(self, door: SimpleDoor, m: int) -> str:
        name = f"advance_{door.port}_{m}"
        if any(c.name == name for c in self.out):
            return name
        step = self.s.step_timeout
        if m < len(door.knocks):
            mark = progress_mark(door.port, m)
            into = "start" if m == 1 else "progress"
            forget = "" if m == 1 else _FORGET + " "
            rules = self._each(forget + f"add @{into}{{f}} {{{{ {{a}} saddr timeout {step}s : {mark} }}}} drop")
            return self._add(name, *rules, "counter name refused_progress drop")
        then = f"goto {self._opened(door.port)}" if self.s.kernel_log else "drop"
        rules = self._each(_FORGET)
        rules += self._each(f"update @open{{f}} {{{{ {{a}} saddr . {door.port} timeout {self.s.open_window}s }}}} "
                            + then)
        return self._add(name, *rules, "counter name refused_open drop")

    def _opened(self, port: int) -> str:
        return self._add(f"opened_{port}", f'{OPEN_LOG_RATE} log prefix "awp open port={port} "', "drop")

    # --- protected ports and advanced knock ports -----------------------------------------

    def _protected(self, port: int) -> str:
        rules = ["ct state established,related accept"]
        for family in self.families:
            nets = [str(n) for n in self.s.allow if n.version == family]
            if nets:
                rules.append(f"{ADDR[family][0]} saddr {{ {', '.join(nets)} }} accept")
        new = f"{SYN} ct state new"
        if any(d.port == port for d in self.simple):
            rules += self._each(f"{new} {{a}} saddr . tcp dport @open{{f}} counter name in_{port} accept")
        if any(d.port == port for d in self.advanced):
            rules += self._each(f"{new} {{a}} saddr . tcp dport @grant{{f}} counter name in_{port} accept")
        return self._add(f"port_{port}", *rules, f"counter name drop_{port} drop")

    def _udp_leaves(self) -> dict[int, str]:
        log = f"log group {self.s.nflog_group} snaplen {NFLOG_SNAPLEN}"
        self._add("knock_udp", f"udp length {KNOCK_UDP_LENGTH} {log} drop", f"{MISFIT_RATE} {log} drop", "drop")
        return {d.knock_port: "knock_udp" for d in self.advanced}


_FORGET = " ".join(f"delete @{kind}{{f}} {{{{ {{a}} saddr : 0x0 }}}}" for kind in STATE_MAPS)  # per family


def door_counters(config: Config) -> tuple[str, ...]:
    ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
    return tuple(name for port in ports for name in (f"in_{port}", f"drop_{port}"))
