"""Config -> Ruleset for iptables (IPv4 or IPv6). Pure: no I/O, no globals.

See docs/design.md for the chain layout. In short: every TCP packet is dispatched by port
through a binary tree of --dport ranges to a per-port leaf, so a packet never walks every
door; xt_recent lists hold each source's progress in the kernel.
"""

from __future__ import annotations

from collections.abc import Callable

from awp.compile.ruleset import ENTRY, NAT_ENTRY, Chain, Rule, Ruleset, with_digest
from awp.compile.tree import port_tree
from awp.model import AdvancedDoor, Config, SimpleDoor, commanded_simple_ports

PROG = "awp-prog"
BAN = "awp-ban"  # FW_PORTKNOCK_BAN: sources barred from every knock port (--seconds BAN_TIME)
FAIL = "awp-fail"  # failed simple knocks, counted with --hitcount BAN_AFTER --seconds BAN_WINDOW
KNOCK_LOG_LIMIT = ("-m", "limit", "--limit", "10/min", "--limit-burst", "20")
NFLOG_COPY = 256
# What `-m length` compares for a knock datagram, with 64 or 65 bytes of payload: IPv4, the
# total length (20-byte header without options + 8 UDP + payload); IPv6, the payload length
# plus the 40-byte header (no extension headers + 8 UDP + payload). Other datagrams still reach
# the listener (it logs them as malformed), but at most MISFIT_RATE a second.
KNOCK_IP_LENGTH = {4: "92:93", 6: "112:113"}  # 20 + 8 + 64..65, 40 + 8 + 64..65
MISFIT_RATE = ("-m", "limit", "--limit", "20/sec", "--limit-burst", "40")
# A knock's first 4 payload bytes are lowercase hex digits (see HEX_PREFIX in
# awp/compile/nftables.py). u32 reads from the IP header; the knock's length above already
# rules out IPv4 options and IPv6 extension headers, so the payload is at 28 and 48.
_HEX = "=0x30:0x39,0x61:0x66"
_BYTE = ("{}>>24&0xFF", "{}>>16&0xFF", "{}>>8&0xFF", "{}&0xFF")  # the 4 bytes of the word at an offset
KNOCK_PREFIX = {fam: "&&".join(b.format(off) + _HEX for b in _BYTE) for fam, off in ((4, 28), (6, 48))}


def compile_family(config: Config, family: int) -> Ruleset:
    """awp's whole ruleset for one family; empty when nothing is active."""
    simple = tuple(sorted(config.active_simple, key=lambda d: d.port))
    advanced = tuple(sorted(config.active_advanced, key=lambda d: d.port))
    if family == 6 and not config.settings.ipv6:
        simple, advanced = (), ()
    if not simple and not advanced:
        return Ruleset(family, ())
    builder = _Builder(config, family, simple, advanced)
    return with_digest(Ruleset(family, builder.chains()))


def forwards(config: Config, family: int) -> list[tuple[str, int, object]]:
    """(kind, door port, inner host) of every active door that forwards in `family`:
    kind "open" for a simple door, "grant" for an advanced one."""
    if family == 6 and not config.settings.ipv6:
        return []
    found = []
    for kind, doors in (("open", config.active_simple), ("grant", config.active_advanced)):
        for door in sorted(doors, key=lambda d: d.port):
            options = config.options_for(door.port)
            target = options and (options.forward if family == 4 else options.forward6)
            if target:
                found.append((kind, door.port, target))
    return found


def compile_nat(config: Config, family: int) -> Ruleset:
    """The nat table's part (AWP-PREROUTING): the knocker's new connections to a forwarding
    door's port go to the inner host, source unchanged. Empty when no door forwards."""
    rules = []
    for kind, port, target in forwards(config, family):
        name, seconds = ((open_list(port), config.settings.open_window) if kind == "open"
                         else (grant_list(port), config.settings.autoclose))
        rules.append(Rule(("-p", "tcp", "--syn", "--dport", str(port),
                           *_recent(name, "--rcheck", "--seconds", str(seconds)),
                           "-j", "DNAT", "--to-destination", str(target))))
    if not rules:
        return Ruleset(family, (), table="nat")
    return with_digest(Ruleset(family, (Chain(NAT_ENTRY, tuple(rules)),), table="nat"))


def forward_chain(config: Config, family: int) -> Chain | None:
    """AWP-FORWARD (filter): the flows awp sent on to an inner host pass this host."""
    rules = tuple(Rule(("-p", "tcp", "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", str(port),
                        "--ctreplsrc", str(target.address), "--ctreplsrcport", str(target.port), "-j", "ACCEPT"))
                  for _, port, target in forwards(config, family))
    return Chain("AWP-FORWARD", tuple(dict.fromkeys(rules))) if rules else None


DOOR_BITS = 16  # a door's identity is its protected port, kept bit by bit in awp-b<bit>


def door_bit_list(bit: int) -> str:
    return f"awp-b{bit}"


def door_bits(port: int) -> tuple[tuple[int, bool], ...]:
    """(bit, set?) for each of the 16 bits of the protected port."""
    return tuple((bit, bool(port >> bit & 1)) for bit in range(DOOR_BITS))


def shared_stage_list(stage: int) -> str:
    return f"awp-s{stage}"


def scan_list(port: int) -> str:
    return f"awp{port}-scan"


def open_list(port: int) -> str:
    return f"awp{port}-open"


def grant_list(port: int) -> str:
    return f"awpa{port}"


def _recent(name: str, *op: str) -> tuple[str, ...]:
    return ("-m", "recent", "--name", name, *op)


class _Builder:
    def __init__(self, config: Config, family: int, simple, advanced):
        self.s = config.settings
        self.commanded = frozenset(commanded_simple_ports(config))
        self.config = config
        self.family = family
        self.simple: tuple[SimpleDoor, ...] = simple
        self.advanced: tuple[AdvancedDoor, ...] = advanced
        self.out: list[Chain] = []

    def chains(self) -> tuple[Chain, ...]:
        entry: list[Rule] = []
        udp_knocks = any(d.udp for d in self.simple)
        if self.simple:
            entry.append(self._rule("-p", "tcp", "--syn", *self._fresh(PROG), "-g", "AWP-PROG"))
        entry.append(self._rule("-p", "tcp", "-g", self._idle_tree()))
        if udp_knocks:  # every datagram to a UDP knock port is a step; others never reset
            entry.append(self._rule("-p", "udp", *self._fresh(PROG), "-g", "AWP-UPROG"))
        if self.advanced or udp_knocks:
            entry.append(self._rule("-p", "udp", "-g", self._udp_tree()))
        if self.simple:
            self._progress_chains()
        forward = forward_chain(self.config, self.family)
        if forward:
            self.out.append(forward)
        if self.s.ban:
            self._ban_chains()
        return (Chain(ENTRY, tuple(entry)), *sorted(self.out, key=lambda c: c.name))

    # --- trees -------------------------------------------------------------------------

    def _idle_tree(self) -> str:
        leaves: dict[int, Callable[[], tuple[Rule, ...]]] = {}
        for door in (*self.simple, *self.advanced):  # every port of a door checks the door's lists
            for port in self.config.door_ports(door.port):
                leaves[port] = lambda p=door.port: self._protected_leaf(p)
        leaves.update(self._idle_knock_leaves("tcp"))
        return self._tree("AWP-IDLE", "tcp", "AWP-I", leaves)

    def _idle_knock_leaves(self, proto: str) -> dict[int, Callable[[], tuple[Rule, ...]]]:
        """Knock ports of `proto` for a source not mid-sequence: a door's first knock starts
        it, its second bars the door for a step (scans), any other is denied."""
        leaves: dict[int, Callable[[], tuple[Rule, ...]]] = {}
        for door in self.simple:
            if door.proto(door.knocks[0]) == proto:
                leaves[door.knocks[0]] = lambda d=door: (*self._banned(), *self._first_knock_leaf(d))
            if len(door.knocks) > 1 and door.proto(door.knocks[1]) == proto:
                leaves[door.knocks[1]] = lambda p=door.port: (*self._banned(), *self._second_knock_leaf(p, proto))
            for knock in door.knocks[2:]:
                if door.proto(knock) == proto:
                    leaves[knock] = lambda: (*self._banned(), self._deny(proto))
        return leaves

    def _udp_tree(self) -> str:
        leaves = {d.knock_port: lambda: (*self._banned(), *self._knock_udp_leaf()) for d in self.advanced}
        leaves.update(self._idle_knock_leaves("udp"))
        return self._tree("AWP-UDP", "udp", "AWP-U", leaves)

    def _tree(self, root: str, proto: str, leaf_prefix: str, leaves) -> str:
        for port, make in leaves.items():
            self.out.append(Chain(f"{leaf_prefix}{port}", make()))
        nodes = port_tree(sorted(leaves), root, f"{root}-", lambda p: f"{leaf_prefix}{p}")
        for name, branches in nodes:
            rules = tuple(self._rule("-p", proto, "-m", proto, "--dport", rng, "-g", target)
                          for rng, target in branches)
            self.out.append(Chain(name, rules))
        return root

    # --- simple mode -------------------------------------------------------------------

    def _progress_chains(self) -> None:
        leaves, udp_leaves = {}, {}
        for door in self.simple:
            for m, knock in enumerate(door.knocks, start=1):
                if knock in door.udp:  # its leaf counts a failure itself, before it resets
                    udp_leaves[knock] = lambda d=door, m=m: (*self._banned(), *self._progress_leaf(d, m))
                else:
                    leaves[knock] = lambda d=door, m=m: (*self._banned(), *self._progress_leaf(d, m), *self._failed())
                self.out.append(Chain(self._advance_name(door, m), self._advance(door, m)))
        self._tree("AWP-PTREE", "tcp", "AWP-P", leaves)
        if udp_leaves:
            # a datagram to a UDP knock port from a source mid-sequence: its progress leaf
            # (AWP-UP<port>) advances, ignores a retransmit, or resets and treats it as idle;
            # a datagram to another port falls out of the tree and is not awp's
            self._tree("AWP-UPTREE", "udp", "AWP-UP", udp_leaves)
            self.out.append(Chain("AWP-UPROG", (self._rule("-j", "AWP-UPTREE"), self._rule("-g", "AWP-UDP"))))
        longest = max(len(d.knocks) for d in self.simple)
        reset = [self._rule(*_recent(PROG, "--remove"))]
        reset += [self._rule(*_recent(shared_stage_list(k), "--remove")) for k in range(1, longest)]
        self.out.append(Chain("AWP-RESET", tuple(reset)))
        self.out.append(Chain("AWP-PROG", (self._rule("-j", "AWP-PTREE"), self._rule("-j", "AWP-RESET"),
                                           self._rule("-g", "AWP-IDLE"))))

    def _first_knock_leaf(self, door: SimpleDoor) -> tuple[Rule, ...]:
        """Start the sequence, unless the source hit a second knock out of turn lately."""
        proto = door.proto(door.knocks[0])
        step = self._step(proto)
        scanned = (*step, *self._fresh(scan_list(door.port)))
        failed = (self._rule(*scanned, "-j", "AWP-FAIL"),) if self.s.ban else ()
        return (*failed, self._rule(*scanned, *self._deny_target(proto)),
                self._rule(*step, "-g", self._advance_name(door, 1)), self._deny(proto))

    def _second_knock_leaf(self, port: int, proto: str = "tcp") -> tuple[Rule, ...]:
        """A second knock from a source that did not just knock the first is what port scans
        (and their reordered retries) do: such a source may not start this door for a step
        timeout, so no retry order can complete it."""
        step = self._step(proto)
        return (self._rule(*step, *_recent(scan_list(port), "--set")),
                *((self._rule(*step, "-j", "AWP-FAIL"),) if self.s.ban else ()), self._deny(proto))

    @staticmethod
    def _step(proto: str) -> tuple[str, ...]:
        """What a knock is: a TCP SYN, or any UDP datagram."""
        return ("-p", "tcp", "--syn") if proto == "tcp" else ("-p", "udp")

    def _progress_leaf(self, door: SimpleDoor, m: int) -> tuple[Rule, ...]:
        """Mid-sequence source knocking door.knocks[m-1]: advance, or ignore a retransmit."""
        rules = []
        proto = door.proto(door.knocks[m - 1])
        if m >= 2:
            rules.append(self._rule(*self._at_stage(door, m - 1), "-g", self._advance_name(door, m)))
        if m < len(door.knocks):
            rules.append(self._rule(*self._reject_proto(proto), *self._at_stage(door, m),
                                    *self._deny_target(proto)))
        if proto == "udp":  # not a step of the source's door: reset, then as a source not mid-sequence
            rules += [*self._failed(), self._rule("-j", "AWP-RESET"), self._rule("-g", f"AWP-U{door.knocks[m - 1]}")]
        return tuple(rules)

    def _at_stage(self, door: SimpleDoor, stage: int) -> tuple[str, ...]:
        """Source completed `stage` knocks (fresh) and the door it started is this one."""
        match = [*self._fresh(shared_stage_list(stage))]
        for bit, one in door_bits(door.port):
            match += ["-m", "recent", *(() if one else ("!",)), "--rcheck", "--name", door_bit_list(bit)]
        return tuple(match)

    def _fresh(self, name: str) -> tuple[str, ...]:
        return _recent(name, "--rcheck", "--seconds", str(self.s.step_timeout))

    def _advance_name(self, door: SimpleDoor, m: int) -> str:
        return f"AWP-A{door.port}-{m}"

    def _advance(self, door: SimpleDoor, m: int) -> tuple[Rule, ...]:
        rules = []
        if m == 1:
            rules += [self._rule(*_recent(door_bit_list(bit), "--set" if one else "--remove"))
                      for bit, one in door_bits(door.port)]
        else:
            rules.append(self._rule(*_recent(shared_stage_list(m - 1), "--remove")))
        if m < len(door.knocks):
            rules += [self._rule(*_recent(name, "--set")) for name in (shared_stage_list(m), PROG)]
        else:
            rules += [self._rule(*_recent(PROG, "--remove")), self._rule(*_recent(open_list(door.port), "--set"))]
            if self.s.kernel_log:
                rules.append(self._rule(*KNOCK_LOG_LIMIT, "-j", "LOG", "--log-prefix", f"awp open port={door.port} "))
            if door.port in self.commanded:  # the listener runs the door's commands
                rules.append(self._rule("-j", "NFLOG", "--nflog-group", str(self.s.nflog_group), "--nflog-prefix",
                                        f"awp-open {door.port}", "--nflog-size", str(NFLOG_COPY)))
        return (*rules, self._deny(door.proto(door.knocks[m - 1])))

    # --- FW_PORTKNOCK_BAN ---------------------------------------------------------------

    def _banned(self) -> tuple[Rule, ...]:
        """First in every knock port's leaf: AWP-BAN denies a banned source's packet."""
        return (self._rule("-j", "AWP-BAN"),) if self.s.ban else ()

    def _failed(self) -> tuple[Rule, ...]:
        """After the rules of a mid-sequence knock port's leaf: the knock did not fit, the
        sequence is about to be reset; that is a failure."""
        return (self._rule("-j", "AWP-FAIL"),) if self.s.ban else ()

    def _ban_chains(self) -> None:
        """AWP-BAN: a source of the allowlist returns, a banned one gets what every knock gets
        (the rules' packet counters are what awp status shows). AWP-FAIL: one failure more;
        the BAN_AFTER-th within BAN_WINDOW seconds bans (AWP-BAN-ADD: the rule's counter is the
        number of bans the kernel made) and forgets the failures."""
        s = self.s
        spare = tuple(self._rule("-s", str(net), "-j", "RETURN") for net in s.allow if net.version == self.family)
        banned = _recent(BAN, "--rcheck", "--seconds", str(s.ban_time))
        protos = ("tcp", "udp") if s.stealth == "reject" else (None,)
        checks = tuple(self._rule(*(("-p", p) if p else ()), *banned, *self._deny_target(p or "tcp")) for p in protos)
        self.out.append(Chain("AWP-BAN", (*spare, *checks)))
        if not self.simple:
            return
        count = _recent(FAIL, "--rcheck", "--seconds", str(s.ban_window), "--hitcount", str(s.ban_after))
        self.out.append(Chain("AWP-FAIL", (*spare, self._rule(*_recent(FAIL, "--set")),
                                           self._rule(*count, "-j", "AWP-BAN-ADD"))))
        self.out.append(Chain("AWP-BAN-ADD", (self._rule(*_recent(FAIL, "--remove")),
                                              self._rule(*_recent(BAN, "--set")))))

    # --- protected ports and advanced knock ports ---------------------------------------

    def _protected_leaf(self, port: int) -> tuple[Rule, ...]:
        rules = [self._rule("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")]
        rules += [self._rule("-s", str(net), "-j", "ACCEPT") for net in self.s.allow if net.version == self.family]
        new_syn = ("-p", "tcp", "--syn", "-m", "conntrack", "--ctstate", "NEW")
        if any(d.port == port for d in self.simple):
            seconds = str(self.s.open_window)
            rules.append(self._rule(*new_syn, *_recent(open_list(port), "--rcheck", "--seconds", seconds), "-j", "ACCEPT"))
        if any(d.port == port for d in self.advanced):
            seconds = str(self.s.autoclose)
            rules.append(self._rule(*new_syn, *_recent(grant_list(port), "--rcheck", "--seconds", seconds), "-j", "ACCEPT"))
        return (*rules, self._deny())

    def _knock_udp_leaf(self) -> tuple[Rule, ...]:
        """Each datagram is logged once: NFLOG does not end rule processing, so a knock-sized
        one is dropped right after its NFLOG rule, before the misfits' rule can log it again."""
        nflog = ("-j", "NFLOG", "--nflog-group", str(self.s.nflog_group), "--nflog-size", str(NFLOG_COPY))
        knock_sized = ("-m", "length", "--length", KNOCK_IP_LENGTH[self.family],
                       "-m", "u32", "--u32", KNOCK_PREFIX[self.family])
        deny = self._deny_target("udp")
        return (self._rule(*knock_sized, *nflog), self._rule(*knock_sized, *deny),
                self._rule(*MISFIT_RATE, *nflog), self._rule(*deny))

    def _deny(self, proto: str = "tcp") -> Rule:
        """What every packet to a knock port or a closed protected port gets: what an unused
        port of this host answers (FW_PORTKNOCK_STEALTH), whatever the packet holds.
        iptables takes a tcp-reset only in a rule that matches -p tcp."""
        return self._rule(*self._reject_proto(proto), *self._deny_target(proto))

    def _reject_proto(self, proto: str = "tcp") -> tuple[str, ...]:
        return ("-p", proto) if self.s.stealth == "reject" else ()

    def _deny_target(self, proto: str = "tcp") -> tuple[str, ...]:
        if self.s.stealth != "reject":
            return ("-j", "DROP")
        icmp = "icmp-port-unreachable" if self.family == 4 else "icmp6-port-unreachable"
        return ("-j", "REJECT", "--reject-with", "tcp-reset" if proto == "tcp" else icmp)

    @staticmethod
    def _rule(*args: str) -> Rule:
        return Rule(tuple(args))
