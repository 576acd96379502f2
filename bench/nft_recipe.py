"""The bare nftables peer: the nftables wiki's port-knocking recipe, written out for many
doors. Pure text generation (an `nft -f` script), no I/O.

The wiki's example keeps a set of candidates, `ip saddr . next port` with a timeout: a knock
on k1 adds (source . k2); a knock on k(m) by a source holding (source . k(m)) adds
(source . k(m+1)); the last knock adds the source to a clients set, which the protected
port accepts. One rule per knock and family, one block of rules per door, every packet
walking every door's block. Written here as:

    table inet knockrecipe
      set candidates4 { type ipv4_addr . inet_service; size S; flags dynamic,timeout; }
      set clients4    { type ipv4_addr . inet_service; size S; flags dynamic,timeout; }
      (and candidates6, clients6 for ip6)
      chain input (hook input, priority filter - 10, policy accept), per door P, k1..kn:
        tcp dport P ct state established,related accept
        tcp dport P ip saddr . tcp dport @clients4 accept               (and ip6)
        tcp dport P drop
        tcp dport k1 add @candidates4 { ip saddr . k2 timeout T }        (and ip6)
        tcp dport km ip saddr . tcp dport @candidates4
                     add @candidates4 { ip saddr . k(m+1) timeout T }    (and ip6)
        tcp dport kn ip saddr . tcp dport @candidates4
                     add @clients4 { ip saddr . P timeout W }            (and ip6)
        tcp dport { k1, ..., kn } drop

Where it departs from the wiki's text, so that it does what awp does and nothing more:
the clients set is keyed by (source . protected port), so one pair of sets serves every
door (the wiki's has one door and keys clients by address); knocks are dropped (the wiki
lets them on to the closed port, which answers with a reset); the protected port drops
rather than resets; no log rule; timeouts are the benchmark's step timeout and open window
(the wiki's are 1 s and 10 s); and the sets get an explicit `size` equal to awp's
FW_PORTKNOCK_SET_SIZE (without one, as in the wiki, nft gives a dynamic set 65,535
elements). As in the wiki, a wrong knock resets nothing and a used candidate is not
deleted: it stays until its timeout, so a source at knock m holds m candidates.

`udp_door(P, K)` is the one-packet version, the bare peer of an advanced-mode knock: a UDP
datagram to K adds (source . P) to the clients set, no listener, no MAC.
"""

from __future__ import annotations

TABLE = "inet knockrecipe"
FAMILIES = {4: "ip", 6: "ip6"}
Door = tuple[int, tuple[int, ...]]


def declarations(size: int) -> list[str]:
    return [f"add set {TABLE} {kind}{f} {{ type ipv{f}_addr . inet_service; size {size}; flags dynamic,timeout; }}"
            for kind in ("candidates", "clients") for f in FAMILIES]


def protected(port: int) -> list[str]:
    rules = [f"tcp dport {port} ct state established,related accept"]
    rules += [f"tcp dport {port} {a} saddr . tcp dport @clients{f} accept" for f, a in FAMILIES.items()]
    return rules + [f"tcp dport {port} drop"]


def knocks(port: int, seq: tuple[int, ...], step: int, window: int) -> list[str]:
    rules = []
    for m, knock in enumerate(seq):
        for f, a in FAMILIES.items():
            held = "" if m == 0 else f" {a} saddr . tcp dport @candidates{f}"
            last = m == len(seq) - 1
            target = (f"@clients{f} {{ {a} saddr . {port} timeout {window}s }}" if last
                      else f"@candidates{f} {{ {a} saddr . {seq[m + 1]} timeout {step}s }}")
            rules.append(f"tcp dport {knock}{held} add {target}")
    return rules + [f"tcp dport {{ {', '.join(map(str, seq))} }} drop"]


def udp_door(port: int, knock_port: int, window: int) -> list[str]:
    rules = [f"udp dport {knock_port} add @clients{f} {{ {a} saddr . {port} timeout {window}s }}"
             for f, a in FAMILIES.items()]
    return [*protected(port), *rules, f"udp dport {knock_port} drop"]


def ruleset(doors: list[Door], step: int, window: int, size: int,
            udp_doors: tuple[tuple[int, int], ...] = ()) -> str:
    """`nft -f` text creating the table for `doors` (in this order) and `udp_doors`."""
    lines = [f"add table {TABLE}", f"flush table {TABLE}", *declarations(size),
             f"add chain {TABLE} input {{ type filter hook input priority filter - 10; policy accept; }}"]
    rules = []
    for port, seq in doors:
        rules += protected(port) + knocks(port, seq, step, window)
    for port, knock_port in udp_doors:
        rules += udp_door(port, knock_port, window)
    lines += [f"add rule {TABLE} input {rule}" for rule in rules]
    return "\n".join(lines) + "\n"


def removal() -> str:
    return f"delete table {TABLE}\n"
