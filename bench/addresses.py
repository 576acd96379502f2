"""The benchmarks' address plan, all inside 198.18.0.0/15 (RFC 2544 benchmarking space).

    198.18.<i>.0/24      the lab's link to client i (harness.Lab): 198.18.<i>.2 is client i
    198.18.32.0/19       extra real sources of client 1: one per latency trial or human knocker
    198.18.64.0-
    198.19.255.255       capacity: N spoofed knockers (up to 114,688 addresses); a sample of
                         them are real addresses of client 1 too, so they can connect
    198.19.0.1-
    198.19.255.255       the flood: 65,535 spoofed sources (a subrange of the capacity pool,
                         never used by the same run step)

The server routes 198.18.32.0/19, 198.18.64.0/18, 198.18.128.0/17 and 198.19.0.0/16 via
client 1, so its answers to any of these addresses go to client 1's link: the real ones
are answered, the spoofed ones are dropped there.
"""

from __future__ import annotations

import ipaddress

EXTRA_FIRST = ipaddress.IPv4Address("198.18.32.10")
EXTRA_COUNT = 8000
CAPACITY_FIRST = ipaddress.IPv4Address("198.18.64.0")
CAPACITY_COUNT = 114_688
FLOOD_FIRST = ipaddress.IPv4Address("198.19.0.1")
FLOOD_SOURCES = 65_535
ROUTED_VIA_CLIENT1 = ("198.18.32.0/19", "198.18.64.0/18", "198.18.128.0/17", "198.19.0.0/16")


def extra(n: int) -> list[str]:
    """The first n extra real sources of client 1."""
    if not 0 <= n <= EXTRA_COUNT:
        raise ValueError(f"at most {EXTRA_COUNT} extra sources, not {n}")
    return [str(EXTRA_FIRST + i) for i in range(n)]


def capacity_source(i: int) -> str:
    if not 0 <= i < CAPACITY_COUNT:
        raise ValueError(f"capacity source {i} is outside the pool")
    return str(CAPACITY_FIRST + i)


def sample(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included."""
    if k >= n:
        return list(range(n))
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def route_pools(lab) -> None:
    """Server: answers to every pool go to client 1's link."""
    gateway = lab.clients[0].ip4
    for prefix in ROUTED_VIA_CLIENT1:
        lab.server.run(["ip", "route", "replace", prefix, "via", gateway])


def add_addresses(host, addrs: list[str]) -> None:
    """addrs become /32 addresses of host's eth0 (one `ip -batch`)."""
    if addrs:
        script = "".join(f"addr add {a}/32 dev eth0\n" for a in addrs)
        host.run(["ip", "-batch", "-"], input=script, timeout=120)


def del_addresses(host, addrs: list[str]) -> None:
    if addrs:
        script = "".join(f"addr del {a}/32 dev eth0\n" for a in addrs)
        host.run(["ip", "-force", "-batch", "-"], input=script, timeout=120, check=False)
