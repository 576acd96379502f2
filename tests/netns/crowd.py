"""Many sources from one client namespace: real sockets bound to extra addresses, and
spoofed SYNs from a raw socket. Plain module (no pytest); the programs run inside the client
namespace (python -c SCRIPT), everything bounded in count, rate and time.

Addresses, all in 198.18.0.0/15 and outside the lab's links (198.18.<i>.0/24):

    198.19.0.0/17     bound sources: /32 addresses on the client's eth0 (crowd.bind_sources)
    198.19.128.0/17   spoofed sources of raw SYNs (crowd.spoofed_syns); never assigned

The server routes 198.19.0.0/16 back through that client (crowd.route_back).
"""

from __future__ import annotations

import ipaddress
import json
import sys

BOUND = ipaddress.ip_network("198.19.0.0/17")
SPOOFED = ipaddress.ip_network("198.19.128.0/17")
MAX_SOURCES = 4096  # bound addresses per client
MAX_SYNS = 70_000  # spoofed SYNs per call
MAX_RATE = 20_000  # spoofed SYNs per second


def route_back(lab, client) -> None:
    """The server reaches 198.19.0.0/16 through `client` (replies to bound sources)."""
    lab.server.run(["ip", "route", "add", "198.19.0.0/16", "via", client.ip4])


def bind_sources(lab, client, count: int) -> list[str]:
    """Add `count` /32 addresses of BOUND to the client's eth0; returns them."""
    if not 1 <= count <= MAX_SOURCES:
        raise ValueError(f"1..{MAX_SOURCES} sources, not {count}")
    addrs = [str(BOUND.network_address + 1 + i) for i in range(count)]
    batch = "".join(f"addr add {a}/32 dev eth0\n" for a in addrs)
    client.run(["ip", "-batch", "-"], input=batch)
    route_back(lab, client)
    return addrs


KNOCKS = r"""
import json, socket, sys, time
a = json.loads(sys.stdin.read())
for port in a["ports"]:  # every source's knock k before any source's knock k+1
    socks = []
    for src in a["sources"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.setblocking(False)
        s.connect_ex((a["dst"], port))
        socks.append(s)
    time.sleep(a["gap"])
    for s in socks:  # closed well before the first SYN retransmit (1 s)
        s.close()
"""

CONNECTS = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
a = json.loads(sys.stdin.read())
def one(src):
    try:
        with socket.create_connection((a["dst"], a["port"]), timeout=a["timeout"],
                                      source_address=(src, 0)) as s:
            return s.makefile("rb").readline(100) == b"awp-test-ok\n"
    except OSError:
        return False
with ThreadPoolExecutor(max_workers=32) as pool:
    ok = list(pool.map(one, a["sources"]))
print(json.dumps([src for src, good in zip(a["sources"], ok) if good]))
"""

DATAGRAMS = r"""
import json, socket, sys
a = json.loads(sys.stdin.read())
for src, payload in a["sends"]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.sendto(bytes.fromhex(payload), (a["dst"], a["port"]))
"""

# IPv4 + TCP SYN, source addresses base+0 .. base+count-1, at most `rate` per second.
RAW_SYNS = r"""
import json, socket, struct, sys, time
a = json.loads(sys.argv[1])
assert a["count"] <= %d and a["rate"] <= %d and a["limit"] <= 60
def checksum(data):
    if len(data) %% 2:
        data += b"\0"
    total = sum(struct.unpack("!%%dH" %% (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
dst = socket.inet_aton(a["dst"])
base = struct.unpack("!I", socket.inet_aton(a["base"]))[0]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent, start = 0, time.monotonic()
while sent < a["count"] and time.monotonic() - start < a["limit"]:
    src = struct.pack("!I", base + sent)
    sport = 1024 + sent %% 60000
    tcp = struct.pack("!HHIIBBHHH", sport, a["dport"], sent, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sent & 0xFFFF, 0, 64,
                     socket.IPPROTO_TCP, 0, src, dst)
    s.sendto(ip + tcp, (a["dst"], 0))
    sent += 1
    ahead = sent / a["rate"] - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 3)}))
""" % (MAX_SYNS, MAX_RATE)


def knock_all(client, dst: str, sources: list[str], ports, gap: float = 0.05) -> None:
    """Every source sends one SYN to each port in turn (real sockets, bound)."""
    spec = {"dst": dst, "sources": sources, "ports": list(ports), "gap": gap}
    client.run([sys.executable, "-c", KNOCKS], input=json.dumps(spec),
               timeout=30 + len(spec["ports"]) * (gap + len(sources) / 1000))


def connect_all(client, dst: str, port: int, sources: list[str], timeout: float = 3.0) -> list[str]:
    """A real connect (banner read) from each source; returns those that got in."""
    spec = {"dst": dst, "port": port, "sources": sources, "timeout": timeout}
    out = client.run([sys.executable, "-c", CONNECTS], input=json.dumps(spec),
                     timeout=30 + timeout * (len(sources) / 32 + 1))
    return json.loads(out.stdout)


def datagrams(client, dst: str, port: int, sends: list[tuple[str, bytes]]) -> None:
    """One UDP datagram per (bound source, payload)."""
    spec = {"dst": dst, "port": port, "sends": [(src, p.hex()) for src, p in sends]}
    client.run([sys.executable, "-c", DATAGRAMS], input=json.dumps(spec), timeout=60)


def spoofed_syns(client, dst: str, dport: int, count: int, rate: int = 5000,
                 base: str = str(SPOOFED.network_address + 1), limit: float = 30.0) -> dict:
    """`count` SYNs to dst:dport, each from its own spoofed SPOOFED source."""
    if ipaddress.ip_address(base) not in SPOOFED or count > SPOOFED.num_addresses - 2:
        raise ValueError(f"spoofed sources must stay in {SPOOFED}")
    spec = {"dst": dst, "dport": dport, "count": count, "rate": rate, "base": base, "limit": limit}
    out = client.run([sys.executable, "-c", RAW_SYNS, json.dumps(spec)], timeout=limit + 30)
    return json.loads(out.stdout)
