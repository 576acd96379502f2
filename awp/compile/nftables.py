"""Config -> NftRuleset for the native nftables backend: one `inet awp` table. Pure.

Its own intermediate representation (not iptables' chains): sets with a size and per-element
timeouts hold every source's state, and every door's transitions are elements of anonymous
maps, so neither the number of chains nor the work per packet grows with the doors. See
docs/design.md.

Per-source state (family f = 4 or 6, each a set or map of that family's addresses):

    progress<f>  map addr : mark   mid-sequence on the door with this id (port << 16)
    pos<k>_<f>   addr              has done k knocks of that door (k < its length)
    scan<f>      addr . mark       hit a door's second knock out of turn: (src, door id)
    open<f>      addr . port       completed a simple door (open window)
    grant<f>     addr . port       advanced-mode grant, written by the listener (autoclose)
    ban<f>       addr              barred from every knock port (FW_PORTKNOCK_BAN only)
    fail<f>      addr              failed simple knocks, a packet limit per element (ban only)

Every entry has the step timeout, the open window or autoclose as its own timeout. nft cannot
compare a map lookup's result with anything, so the knock-port chains copy the door's id
into the packet mark and match on that. Only packets to
knock ports reach those chains, and awp drops every one of them, so no mark awp wrote
leaves its table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from awp.lists import MAX_KNOCKS
from awp.model import AdvancedDoor, Config, SimpleDoor, commanded_simple_ports

OPEN_NFLOG_PREFIX = "awp-open "  # awp.knockd.nflog.OPEN_PREFIX

TABLE = "awp"
FAMILY = "inet"
PRIORITY = "filter - 10"  # before iptables-nft's filter INPUT: knocks are consumed first
DIGEST_TAG = "awp:digest="
SYN = "tcp flags & (fin | syn | rst | ack) == syn"
ADDR = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}
REFUSED = ("refused_progress", "refused_open")  # named counters: a full set refused an entry
BAN_COUNTERS = ("ban_dropped", "bans")  # packets from banned sources denied; bans the kernel made
KNOCK_UDP_LENGTH = "72-73"  # UDP header + 64 hex bytes + an optional 65th byte
# A knock's first HEX_PREFIX payload bytes are lowercase hex digits: random knock-sized junk
# passes 1 in 16 ** 4 and falls to the misfits' rate-limited rule, before it costs the
# listener a message and six MACs. Junk that looks like a knock still gets through (only the
# MAC tells it apart).
HEX_PREFIX = 4
HEX_DIGIT = "{ 0x30-0x39, 0x61-0x66 }"
KNOCK_PREFIX = " ".join(f"@th,{64 + 8 * i},8 {HEX_DIGIT}" for i in range(HEX_PREFIX))
NFLOG_SNAPLEN = 256
NAT_PRIORITY = "dstnat"
EXTRA_PER_RULE = 16  # open<f> updates per rule for the extra ports of a door
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
    base: bool = False  # the entry chain, hooked at input
    hook: str = ""  # another base chain's declaration: "type nat hook prerouting priority dstnat"


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


def state_sets(size: int, positions: int) -> tuple[NftSet, ...]:
    """The state sets, defined whatever the modes (so a mode toggle keeps the others')."""
    found = []
    for family, (_, addr) in ADDR.items():
        found.append(NftSet(f"progress{family}", addr, size, "mark"))
        found += [NftSet(pos_set(k, family), addr, size) for k in range(1, positions + 1)]
        found.append(NftSet(f"scan{family}", f"{addr} . mark", size))  # (source, door id)
        found += [NftSet(f"{kind}{family}", f"{addr} . inet_service", size) for kind in ("open", "grant")]
    return tuple(found)


def ban_sets(size: int) -> tuple[NftSet, ...]:
    """FW_PORTKNOCK_BAN only: the banned sources, and the simple-mode failures being counted."""
    return tuple(NftSet(f"{kind}{family}", addr, size) for family, (_, addr) in ADDR.items()
                 for kind in ("ban", "fail"))


def pos_set(k: int, family: int) -> str:
    """Sources that have done k knocks of the door progress<f> names."""
    return f"pos{k}_{family}"


def door_id(port: int) -> str:
    """A door's id in progress<f>, scan<f> and the packet mark: its protected port << 16."""
    return f"0x{port << 16:08x}"


def compile_nft(config: Config) -> NftRuleset:
    simple = tuple(sorted(config.active_simple, key=lambda d: d.port))
    advanced = tuple(sorted(config.active_advanced, key=lambda d: d.port))
    if not simple and not advanced:
        return NftRuleset()
    chains = _Builder(config, simple, advanced).chains()
    sets = state_sets(config.settings.set_size, MAX_KNOCKS - 1)  # all: a door change keeps them
    flush = tuple(s.name for s in sets if (not advanced if s.name.startswith("grant") else not simple))
    counters = (*REFUSED, *door_counters(config))
    if config.settings.ban:
        sets += ban_sets(config.settings.set_size)
        counters += BAN_COUNTERS
    return _with_digest(NftRuleset(sets, counters, chains, None, flush))


def _with_digest(ruleset: NftRuleset) -> NftRuleset:
    text = "\n".join([*(s.declaration() for s in ruleset.sets), *ruleset.counters, *ruleset.flush_sets,
                      *(f"{c.name} {c.base}{' ' + c.hook if c.hook else ''} {r}"
                        for c in ruleset.chains for r in c.rules)])
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
    in chains that every packet leaves through a drop or reject (knock ports), never on a packet awp
    lets through."""

    def __init__(self, config: Config, simple: tuple[SimpleDoor, ...], advanced: tuple[AdvancedDoor, ...]):
        self.s = config.settings
        self.config = config
        self.families = (4, 6) if self.s.ipv6 else (4,)
        self.simple = simple
        self.advanced = advanced
        self.out: list[NftChain] = []
        # what every packet to a knock port or a closed protected port gets, whatever it holds:
        # what an unused port of this host answers (FW_PORTKNOCK_STEALTH)
        reject = self.s.stealth == "reject"
        # UDP knocks (2002/udp): the knock chains see both protocols, so they read the port
        # as `th dport`, and a rejecting deny picks the answer by protocol in chain `deny`
        self.udp = any(d.udp for d in simple)
        self.dport = "th dport" if self.udp else "tcp dport"
        self.deny = ("goto deny" if self.udp else "reject with tcp reset") if reject else "drop"
        self.deny_udp = "reject with icmpx port-unreachable" if reject else "drop"

    def chains(self) -> tuple[NftChain, ...]:
        """Dispatch by port through verdict maps only: nft loads a map of thousands of ports
        in a few milliseconds, but a plain set of as many ports is some 30 times slower."""
        entry = [] if self.s.ipv6 else ["meta nfproto ipv6 return"]
        if self.simple:
            for proto in ("tcp", "udp"):
                knocks = {k: "knock" for d in self.simple for k in d.knocks if d.proto(k) == proto}
                if knocks:
                    entry.append(f"{proto} dport {vmap(knocks)}")
            # any other SYN from a source mid-sequence (a protected port too) resets it
            entry += [f"{SYN} {ADDR[f][0]} saddr @progress{f} jump forget" for f in self.families]
            self._simple_chains()
        doors = sorted({d.port for d in self.simple} | {d.port for d in self.advanced})
        self._protected(doors)
        ports = [p for door in doors for p in self.config.door_ports(door)]
        entry.append(f"tcp dport {vmap({p: 'protected' for p in ports})}")
        if self.advanced:
            entry.append(f"udp dport {vmap({d.knock_port: 'knock_udp' for d in self.advanced})}")
            self._knock_udp()
        self._forward()
        return (NftChain("input", tuple(entry), True), *sorted(self.out, key=lambda c: c.name))

    def _add(self, name: str, *rules: str) -> str:
        self.out.append(NftChain(name, tuple(rules)))
        return name

    def _each(self, template: str) -> list[str]:
        """One rule per family: `$a` is ip or ip6, `$f` is 4 or 6."""
        return [template.replace("$a", ADDR[f][0]).replace("$f", str(f)) for f in self.families]

    # --- simple mode --------------------------------------------------------------------

    def _simple_chains(self) -> None:
        longest = max(len(d.knocks) for d in self.simple)
        forget = self._each("delete @progress$f { $a saddr : 0x0 }")
        # positions beyond the longest door are read by no rule, and expire within a step
        forget += [r for k in range(1, longest) for r in self._each(f"delete @{pos_set(k, '$f')} {{ $a saddr }}")]
        self._add("forget", *forget)
        steps = self._each(f"{SYN} $a saddr @progress$f goto mid")
        if self.udp:  # every datagram to a UDP knock port is a step
            steps += self._each("meta l4proto udp $a saddr @progress$f goto mid")
        self._add("knock", *self._banned(self.deny), *steps, "goto idle")
        if self.deny == "goto deny":
            self._add("deny", "meta l4proto tcp reject with tcp reset", self.deny_udp)
        self._mid()
        self._idle()
        self._start()
        for m in range(1, longest):
            self._at(m)
        for m in sorted({len(d.knocks) for d in self.simple} - {1}):
            self._add(f"last_{m}", *self._each(f"$a saddr @{pos_set(m - 1, '$f')} goto complete"),
                      *self._failed(), "jump forget", "goto idle")
        self._complete()
        if self.s.ban:
            self._fail()

    def _mid(self) -> None:
        """A SYN to a knock port from a source mid-sequence: `meta mark` := its door; the
        knock's position in that door decides (at_<m>, last_<n>); any other knock forgets
        the source, which goes on as one that is not mid-sequence (it may start a door)."""
        where = {f"{door_id(d.port)} . {k}": f"at_{m}" for d in self.simple for m, k in enumerate(d.knocks[:-1], 1)}
        where.update({f"{door_id(d.port)} . {d.knocks[-1]}": f"last_{len(d.knocks)}"
                      for d in self.simple if len(d.knocks) > 1})
        rules = self._each("meta mark set $a saddr map @progress$f")
        if where:
            rules.append(f"meta mark . {self.dport} {vmap(where)}")
        self._add("mid", *rules, *self._failed(), "jump forget", "goto idle")

    def _at(self, m: int) -> None:
        """Knock m of the source's door, not its last: a retransmit of it changes nothing; after
        knock m - 1 it moves the source on. The move adds to pos<m> before it deletes from
        pos<m-1>, and never re-adds to progress<f> (a deleted entry's slot is freed only at
        the kernel's next garbage collection): a flood of first knocks that fills progress<f>
        and pos1 cannot stop a source that is further on."""
        step = self.s.step_timeout
        rules = self._each(f"$a saddr @{pos_set(m, '$f')} {self.deny}")
        if m >= 2:
            rules += self._each(f"$a saddr @{pos_set(m - 1, '$f')} goto advance_{m}")
            self._add(f"advance_{m}", *self._each(
                f"add @{pos_set(m, '$f')} {{ $a saddr timeout {step}s }} delete @{pos_set(m - 1, '$f')} {{ $a saddr }} "
                f"update @progress$f {{ $a saddr timeout {step}s : meta mark }} {self.deny}"),
                f"counter name refused_progress {self.deny}")
        self._add(f"at_{m}", *rules, *self._failed(), "jump forget", "goto idle")

    def _idle(self) -> None:
        """A knock port from a source not mid-sequence: the door's first knock starts it, its
        second knock out of turn (what scans and their reordered retries do) bars the door
        from that source for a step timeout. `meta mark` := the door's id."""
        step = self.s.step_timeout
        firsts = {d.knocks[0]: d for d in self.simple}
        seconds = {d.knocks[1]: d for d in self.simple if len(d.knocks) > 1}
        ids = {k: door_id(d.port) for k, d in (*firsts.items(), *seconds.items())}
        targets = {**{k: "first" for k in firsts}, **{k: "second" for k in seconds}}
        self._add("idle", f"{SYN.replace('==', '!=')} {self.deny}",
                  f"meta mark set {self.dport} map {anon(f'{k} : {v}' for k, v in sorted(ids.items()))}",
                  f"{self.dport} {vmap(targets)}", self.deny)
        if seconds:
            self._add("second", *self._each(f"update @scan$f {{ $a saddr . meta mark timeout {step}s }}"),
                      *self._failed(), self.deny)
        rules = self._each("$a saddr . meta mark @scan$f jump fail") if self.s.ban else []
        rules += self._each(f"$a saddr . meta mark @scan$f {self.deny}")
        single = [f"{door_id(d.port)} . {d.knocks[0]}" for d in self.simple if len(d.knocks) == 1]
        if single:
            rules.append(f"meta mark . {self.dport} {anon(single)} goto complete")
        self._add("first", *rules, "goto start")

    def _start(self) -> None:
        step = self.s.step_timeout
        self._add("start", *self._each(f"add @{pos_set(1, '$f')} {{ $a saddr timeout {step}s }} "
                                       f"add @progress$f {{ $a saddr timeout {step}s : meta mark }} {self.deny}"),
                  f"counter name refused_progress {self.deny}")

    def _complete(self) -> None:
        """The last knock of a door: the source may connect for an open window. To key the
        open set with the protected port in one rule for every door, the knock's destination
        port is set to the protected port and, once the set is updated and the line logged
        (DPT=<protected port>), back to the knock port, so an answer (a reset) comes from the
        port the knock went to. A door with commands (on_open, on_close) also hands the
        opening to the listener through NFLOG, prefix "awp-open <port>"."""
        ends = [f"{door_id(d.port)} . {d.knocks[-1]} : {d.port}" for d in self.simple]
        back = [f"{d.port} : {d.knocks[-1]}" for d in self.simple]
        protos = ("tcp", "udp") if self.udp else ("tcp",)
        rules = [f"{p} dport set meta mark . {p} dport map {anon(ends)}" for p in protos]
        rules.append("jump forget")
        rules += self._each(f"update @open$f {{ $a saddr . {self.dport} timeout {self.s.open_window}s }} "
                            "meta mark set 0x1")
        if self.s.kernel_log:
            rules.append(f'meta mark 0x1 {OPEN_LOG_RATE} log prefix "awp open "')
        rules += self._open_extra_ports()
        rules += [f'meta mark 0x1 th dport {port} log group {self.s.nflog_group} snaplen {NFLOG_SNAPLEN} '
                  f'prefix "{OPEN_NFLOG_PREFIX}{port}"' for port in commanded_simple_ports(self.config)]
        rules += [f"{p} dport set {p} dport map {anon(back)}" for p in protos]
        rules.append(f"meta mark != 0x1 counter name refused_open {self.deny}")
        self._add("complete", *rules, self.deny)

    def _open_extra_ports(self) -> list[str]:
        """A door with more ports (portknock-doors) opens each of them too: nft cannot look up
        `saddr . <constant>` in a set, so each port gets its own open<f> element."""
        rules = []
        for door in self.simple:
            extra = [p for p in self.config.door_ports(door.port) if p != door.port]
            for i in range(0, len(extra), EXTRA_PER_RULE):
                for f in self.families:
                    a = ADDR[f][0]
                    adds = " ".join(f"update @open{f} {{ {a} saddr . {p} timeout {self.s.open_window}s }}"
                                    for p in extra[i:i + EXTRA_PER_RULE])
                    rules.append(f"meta mark 0x1 {self.dport} {door.port} {adds}")
        return rules

    # --- protected ports and advanced knock ports -----------------------------------------

    def _protected(self, doors: list[int]) -> None:
        """Every port of every door (its own and those of portknock-doors); the counters of a
        door count all of its ports."""
        rules = ["ct state established,related accept"]
        for family in self.families:
            nets = [str(n) for n in self.s.allow if n.version == family]
            if nets:
                rules.append(f"{ADDR[family][0]} saddr {anon(nets)} accept")
        ports = sorted((p, door) for door in doors for p in self.config.door_ports(door))
        let_in = "counter name tcp dport map " + anon(f'{p} : "in_{door}"' for p, door in ports)
        for kind, doors in (("open", self.simple), ("grant", self.advanced)):
            if doors:
                rules += self._each(f"{SYN} ct state new $a saddr . tcp dport @{kind}$f {let_in} accept")
        dropped = "counter name tcp dport map " + anon(f'{p} : "drop_{door}"' for p, door in ports)
        self._add("protected", *rules, f"{dropped} {self.deny}")

    def _forward(self) -> None:
        """Doors with `forward` (portknock-doors): the knocker's new connections to the door's
        port are sent on to the inner host, unchanged in source (no masquerade: the inner
        host routes back through this one); everyone else still meets the protected chain."""
        dnat, accept = [], []
        for kind, doors in (("open", self.simple), ("grant", self.advanced)):
            for door in doors:
                options = self.config.options_for(door.port)
                if options is None or options.forward is None:
                    continue
                for family, target in ((4, options.forward), (6, options.forward6)):
                    if target is None or family not in self.families:
                        continue
                    a = ADDR[family][0]
                    dnat.append(f"tcp dport {door.port} {SYN} {a} saddr . tcp dport @{kind}{family} "
                                f'counter name "in_{door.port}" dnat {a} to {target}')
                    accept.append(f"meta l4proto tcp ct status dnat ct original proto-dst {door.port} "
                                  f"ct reply {a} saddr {target.address} ct reply proto-src {target.port} accept")
        if dnat:
            self.out.append(NftChain("door_dnat", tuple(dnat), hook=f"type nat hook prerouting priority {NAT_PRIORITY}; "
                                                                "policy accept;"))
            self.out.append(NftChain("door_forward", tuple(dict.fromkeys(accept)),
                                     hook=f"type filter hook forward priority {PRIORITY}; policy accept;"))

    def _knock_udp(self) -> None:
        log = f"log group {self.s.nflog_group} snaplen {NFLOG_SNAPLEN}"
        deny = self.deny_udp
        self._add("knock_udp", *self._banned(deny), f"udp length {KNOCK_UDP_LENGTH} {KNOCK_PREFIX} {log} {deny}", f"{MISFIT_RATE} {log} {deny}", deny)


    # --- FW_PORTKNOCK_BAN -------------------------------------------------------------------

    def _banned(self, deny: str) -> list[str]:
        """First on every knock port: a banned source gets what every knock gets, and nothing
        else happens (no progress, no NFLOG). A source of the allowlist never is (even one
        banned before it was added)."""
        if not self.s.ban:
            return []
        rules = []
        for family in self.families:
            nets = [str(n) for n in self.s.allow if n.version == family]
            spare = f" {ADDR[family][0]} saddr != {anon(nets)}" if nets else ""
            rules.append(f"{ADDR[family][0]} saddr @ban{family}{spare} counter name ban_dropped {deny}")
        return rules

    def _failed(self) -> list[str]:
        return ["jump fail"] if self.s.ban else []

    def _fail(self) -> None:
        """A failed simple knock (it resets a sequence, or trips the scan guard). The element
        of fail<f> lives FW_PORTKNOCK_BAN_WINDOW seconds from the source's first failure (`add`
        never refreshes it), and its packet limit lets BAN_AFTER - 1 failures through: the
        refill, 1 a week, adds less than one in a window of at most a day. The BAN_AFTER-th
        failure goes over the limit and the rest of the rule runs: ban, forget, count."""
        s = self.s
        rules = [f"{ADDR[f][0]} saddr {anon(str(n) for n in s.allow if n.version == f)} return"
                 for f in self.families if any(n.version == f for n in s.allow)]
        rules += self._each(f"add @fail$f {{ $a saddr timeout {s.ban_window}s limit rate over 1/week burst "
                            f"{s.ban_after - 1} packets }} add @ban$f {{ $a saddr timeout {s.ban_time}s }} "
                            "delete @fail$f { $a saddr } counter name bans")
        self._add("fail", *rules)


def door_counters(config: Config) -> tuple[str, ...]:
    ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
    return tuple(name for port in ports for name in (f"in_{port}", f"drop_{port}"))
