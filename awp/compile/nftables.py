"""Config -> NftRuleset for the native nftables backend: one `inet awp` table. Pure.

Its own intermediate representation (not iptables' chains): sets with a size and per-element
timeouts hold every source's state, and every door's transitions are elements of anonymous
maps, so neither the number of chains nor the work per packet grows with the doors. See
docs/design.md.

Per-source state (family f = 4 or 6, each a set or map of that family's addresses):

    progress<f>  map addr : mark   mid-sequence: door port << 16 | knocks done (step timeout)
    scan<f>      addr . mark       hit a door's second knock out of turn: (src, door id)
    open<f>      addr . port       completed a simple door (open window)
    grant<f>     addr . port       advanced-mode grant, written by the listener (autoclose)

nft cannot compare a map lookup's result with anything, so the knock-port chains copy the
source's progress (or the door's id) into the packet mark and match on that. Only packets to
knock ports reach those chains, and awp drops every one of them, so no mark awp wrote
leaves its table.
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
STATE_SETS = ("progress", "scan", "open", "grant")
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
    """The eight state sets, defined whatever the modes (so a mode toggle keeps the others')."""
    found = []
    for family, (_, addr) in ADDR.items():
        found.append(NftSet(f"progress{family}", addr, size, "mark"))
        found.append(NftSet(f"scan{family}", f"{addr} . mark", size))  # (source, door id)
        found += [NftSet(f"{kind}{family}", f"{addr} . inet_service", size) for kind in STATE_SETS[2:]]
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


def anon(items) -> str:
    """An anonymous set: one hash lookup however many elements."""
    return "{ " + ", ".join(items) + " }"


def vmap(entries: dict) -> str:
    return "vmap " + anon(f"{key} : goto {chain}" for key, chain in sorted(entries.items()))


class _Builder:
    """A fixed set of chains, whatever the number of doors; maps hold every door's
    transitions.

    `meta mark` carries a source's progress (or a door's id) between rules: it is written only
    in chains that every packet leaves through a drop (knock ports), never on a packet awp
    lets through."""

    def __init__(self, config: Config, simple: tuple[SimpleDoor, ...], advanced: tuple[AdvancedDoor, ...]):
        self.s = config.settings
        self.families = (4, 6) if self.s.ipv6 else (4,)
        self.simple = simple
        self.advanced = advanced
        self.out: list[NftChain] = []

    def chains(self) -> tuple[NftChain, ...]:
        """Dispatch by port through verdict maps only: nft loads a map of thousands of ports
        in a few milliseconds, but a plain set of as many ports is some 30 times slower."""
        entry = [] if self.s.ipv6 else ["meta nfproto ipv6 return"]
        if self.simple:
            entry.append(f"tcp dport {vmap({k: 'knock' for d in self.simple for k in d.knocks})}")
            # any other SYN from a source mid-sequence (a protected port too) resets it
            entry += [f"{SYN} {ADDR[f][0]} saddr @progress{f} jump forget" for f in self.families]
            self._simple_chains()
        protected = sorted({d.port for d in self.simple} | {d.port for d in self.advanced})
        self._protected(protected)
        entry.append(f"tcp dport {vmap({p: 'protected' for p in protected})}")
        if self.advanced:
            entry.append(f"udp dport {vmap({d.knock_port: 'knock_udp' for d in self.advanced})}")
            self._knock_udp()
        return (NftChain("input", tuple(entry), True), *sorted(self.out, key=lambda c: c.name))

    def _add(self, name: str, *rules: str) -> str:
        self.out.append(NftChain(name, tuple(rules)))
        return name

    def _each(self, template: str) -> list[str]:
        """One rule per family: `$a` is ip or ip6, `$f` is 4 or 6."""
        return [template.replace("$a", ADDR[f][0]).replace("$f", str(f)) for f in self.families]

    # --- simple mode --------------------------------------------------------------------

    def _simple_chains(self) -> None:
        self._add("forget", *self._each("delete @progress$f { $a saddr : 0x0 }"))
        self._add("knock", *self._each(f"{SYN} $a saddr @progress$f goto mid"), "goto idle")
        self._mid()
        self._idle()
        step = self.s.step_timeout
        for chain in ("start", "advance"):
            forget = "delete @progress$f { $a saddr : 0x0 } " if chain == "advance" else ""
            self._add(chain, *self._each(forget + f"add @progress$f {{ $a saddr timeout {step}s : meta mark }} drop"),
                      "counter name refused_progress drop")
        self._complete()

    def _mid(self) -> None:
        """A SYN to a knock port from a source mid-sequence: retransmit, advance, complete, or
        forget and go on as a source that is not mid-sequence (the knock may start a door)."""
        rules = self._each("meta mark set $a saddr map @progress$f")
        again = [f"{progress_mark(d.port, m)} . {k}" for d in self.simple for m, k in enumerate(d.knocks[:-1], 1)]
        if again:
            rules.append(f"meta mark . tcp dport {anon(again)} drop")
        done = [f"{progress_mark(d.port, len(d.knocks) - 1)} . {d.knocks[-1]}" for d in self.simple
                if len(d.knocks) > 1]
        if done:
            rules.append(f"meta mark . tcp dport {anon(done)} goto complete")
        steps = [f"{progress_mark(d.port, m - 1)} . {d.knocks[m - 1]} : {progress_mark(d.port, m)}"
                 for d in self.simple for m in range(2, len(d.knocks))]
        if steps:
            rules.append(f"meta mark set meta mark . tcp dport map {anon(steps)} goto advance")
        self._add("mid", *rules, "jump forget", "goto idle")

    def _idle(self) -> None:
        """A knock port from a source not mid-sequence: the door's first knock starts it, its
        second knock out of turn (what scans and their reordered retries do) bars the door
        from that source for a step timeout. `meta mark` := the door's id."""
        step = self.s.step_timeout
        firsts = {d.knocks[0]: d for d in self.simple}
        seconds = {d.knocks[1]: d for d in self.simple if len(d.knocks) > 1}
        door_id = {k: progress_mark(d.port, 0) for k, d in (*firsts.items(), *seconds.items())}
        targets = {**{k: "first" for k in firsts}, **{k: "second" for k in seconds}}
        self._add("idle", f"{SYN.replace('==', '!=')} drop",
                  f"meta mark set tcp dport map {anon(f'{k} : {v}' for k, v in sorted(door_id.items()))}",
                  f"tcp dport {vmap(targets)}", "drop")
        if seconds:
            self._add("second", *self._each(f"update @scan$f {{ $a saddr . meta mark timeout {step}s }}"), "drop")
        rules = self._each("$a saddr . meta mark @scan$f drop")
        single = [f"{progress_mark(d.port, 0)} . {d.knocks[0]}" for d in self.simple if len(d.knocks) == 1]
        if single:
            rules.append(f"meta mark . tcp dport {anon(single)} goto complete")
        starts = [f"{d.knocks[0]} : {progress_mark(d.port, 1)}" for d in self.simple if len(d.knocks) > 1]
        if starts:
            rules.append(f"meta mark set tcp dport map {anon(starts)} goto start")
        self._add("first", *rules, "drop")

    def _complete(self) -> None:
        """The last knock of a door: the source may connect for an open window. The knock's
        destination port is rewritten to the protected port (the packet is dropped anyway),
        so one rule keys the open set and the kernel's log line says DPT=<protected port>."""
        ends = [f"{progress_mark(d.port, len(d.knocks) - 1)} . {d.knocks[-1]} : {d.port}" for d in self.simple]
        rules = [f"tcp dport set meta mark . tcp dport map {anon(ends)}"]
        rules += self._each("delete @progress$f { $a saddr : 0x0 }")
        rules += self._each(f"update @open$f {{ $a saddr . tcp dport timeout {self.s.open_window}s }} meta mark set 0x1")
        rules.append("meta mark != 0x1 counter name refused_open drop")
        if self.s.kernel_log:
            rules.append(f'{OPEN_LOG_RATE} log prefix "awp open "')
        self._add("complete", *rules, "drop")

    # --- protected ports and advanced knock ports -----------------------------------------

    def _protected(self, ports: list[int]) -> None:
        rules = ["ct state established,related accept"]
        for family in self.families:
            nets = [str(n) for n in self.s.allow if n.version == family]
            if nets:
                rules.append(f"{ADDR[family][0]} saddr {anon(nets)} accept")
        let_in = "counter name tcp dport map " + anon(f'{p} : "in_{p}"' for p in ports)
        for kind, doors in (("open", self.simple), ("grant", self.advanced)):
            if doors:
                rules += self._each(f"{SYN} ct state new $a saddr . tcp dport @{kind}$f {let_in} accept")
        dropped = "counter name tcp dport map " + anon(f'{p} : "drop_{p}"' for p in ports)
        self._add("protected", *rules, f"{dropped} drop")

    def _knock_udp(self) -> None:
        log = f"log group {self.s.nflog_group} snaplen {NFLOG_SNAPLEN}"
        self._add("knock_udp", f"udp length {KNOCK_UDP_LENGTH} {log} drop", f"{MISFIT_RATE} {log} drop", "drop")


def door_counters(config: Config) -> tuple[str, ...]:
    ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
    return tuple(name for port in ports for name in (f"in_{port}", f"drop_{port}"))
