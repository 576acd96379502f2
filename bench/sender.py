"""Bounded traffic generator, run inside a client namespace by the benchmarks.

    python sender.py '{"mode": "syn", "src": "198.18.2.2", "dst": "198.18.2.1",
                       "ports": "scan", "rate": 10000, "count": 200000, "seconds": 20}'

mode "syn":  raw TCP SYNs from src:sport; "ports" is "scan" (1, 2, ... 65535, 1, 2, ...)
             or a list of ports sent round-robin.
mode "junk": UDP datagrams of 64 random hex digits and a newline (an awp advanced-mode
             knock that is well formed but carries a wrong MAC) to dst:port.
mode "spoofjunk": the junk datagrams of mode "junk" (65 bytes, hex-looking), each from one of
             `sources` spoofed addresses counted up from `first` (whole IPv4+UDP headers);
             with "b64": N, N random base64 characters instead (the size and look of an
             fwknop SPA packet).
mode "spoof": raw TCP SYNs from `sources` distinct addresses counted up from `first`
             (spoofed: IP_HDRINCL), one per source for each of "ports" in turn: all sources
             hit ports[0], then all hit ports[1], ... (benchmarks keep them in 198.18.0.0/15).

rate is packets per second (0: as fast as one CPU can send). The sender always stops at
`count` packets or after `seconds`, whichever comes first, and earlier when a line arrives
on stdin or stdin closes. It prints "ready" when its packets are built and it starts
sending, then one JSON line: packets sent, send errors (ENOBUFS or EAGAIN: the packet never
left this namespace), elapsed seconds. Stdlib only.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import select
import socket
import struct
import sys
import time

MAX_COUNT = 20_000_000
MAX_SOURCES = 1 << 17  # a spoof pool; 198.18.0.0/15 holds 2 ** 17 addresses
MAX_SECONDS = 120.0
STOP_CHECK = 0.01  # seconds between two looks at stdin
SLEEP = 0.0001  # pacing: the sender wakes up about every 0.15 ms and sends what is due
SO_SNDBUFFORCE = 32
SEND_BUFFER = 64 << 20


def checksum_base(src: str, dst: str, sport: int, seq: int) -> int:
    """One's-complement sum of the pseudo-header and a SYN header with dport 0, csum 0."""
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    header = struct.pack("!HHIIHHHH", sport, 0, seq, 0, 0x5002, 1024, 0, 0)
    data = pseudo + header
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def syn_packet(base: int, sport: int, dport: int, seq: int) -> bytes:
    total = base + dport
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return struct.pack("!HHIIHHHH", sport, dport, seq, 0, 0x5002, 1024, ~total & 0xFFFF, 0)


def syn_packets(a: dict) -> list[bytes]:
    ports = range(1, 65536) if a["ports"] == "scan" else a["ports"]
    sport, seq = a.get("sport", 40000), 0x5A5A0001
    base = checksum_base(a["src"], a["dst"], sport, seq)
    return [syn_packet(base, sport, p, seq) for p in ports]


def spoof_packets(a: dict) -> list[bytes]:
    """IPv4 header (checksum, id and length left to the kernel) + SYN, for every (port, source)."""
    first = struct.unpack("!I", socket.inet_aton(a["first"]))[0]
    sources = min(int(a["sources"]), MAX_SOURCES)
    dst, sport, seq = socket.inet_aton(a["dst"]), a.get("sport", 40000), 0x5A5A0001
    base = checksum_base("0.0.0.0", a["dst"], sport, seq)
    packets = []
    for port in a["ports"]:
        for n in range(first, first + sources):
            src = struct.pack("!I", n)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, socket.IPPROTO_TCP, 0, src, dst)
            packets.append(ip + syn_packet(base + (n >> 16) + (n & 0xFFFF), sport, port, seq))
    return packets


MAX_PAYLOAD = 1400


def junk_payload(a: dict) -> bytes:
    """64 random hex digits and a newline, or "b64" random base64 characters."""
    if a.get("b64"):
        size = min(int(a["b64"]), MAX_PAYLOAD)
        return base64.b64encode(os.urandom(size))[:size]
    return os.urandom(32).hex().encode() + b"\n"


def spoofjunk_packets(a: dict) -> list[bytes]:
    """IPv4 + UDP (checksum 0: none, as IPv4 allows) + junk_payload(), one datagram per source."""
    first = struct.unpack("!I", socket.inet_aton(a["first"]))[0]
    sources = min(int(a["sources"]), MAX_SOURCES)
    dst, sport = socket.inet_aton(a["dst"]), a.get("sport", 40000)
    packets = []
    for n in range(first, first + sources):
        payload = junk_payload(a)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         struct.pack("!I", n), dst)
        udp = struct.pack("!HHHH", sport, a["port"], 8 + len(payload), 0)
        packets.append(ip + udp + payload)
    return packets


def junk_packets(pool: int = 4096) -> list[bytes]:
    return [os.urandom(32).hex().encode() + b"\n" for _ in range(pool)]


def open_socket(a: dict) -> tuple[socket.socket, tuple]:
    if a["mode"] in ("spoof", "spoofjunk"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
        addr = (a["dst"], 0)
    elif a["mode"] == "syn":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        sock.bind((a["src"], 0))
        addr = (a["dst"], 0)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((a["src"], a.get("sport", 0)))
        addr = (a["dst"], a["port"])
    _big_send_buffer(sock)
    return sock, addr


def _big_send_buffer(sock: socket.socket) -> None:
    """A veth hands the very skb to the peer, still charged to this socket until the server
    has processed it; with the default buffer the server's backlog would hold only a few
    hundred of our packets and the rest would fail here (ENOBUFS). A real scanner is not
    held back by the server's queue, so let ours fill it (and overflow it) too."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def stop_requested() -> bool:
    return bool(select.select([sys.stdin], [], [], 0)[0])


def send_loop(sock, addr, packets: list[bytes], rate: float, count: int, seconds: float) -> dict:
    sent = errors = i = 0
    n = len(packets)
    start = time.perf_counter()
    next_check = start
    while sent < count:
        now = time.perf_counter()
        elapsed = now - start
        if elapsed >= seconds:
            break
        if now >= next_check:
            if stop_requested():
                break
            next_check = now + STOP_CHECK
        due = min(count, int(elapsed * rate) + 1) if rate else min(count, sent + 256)
        if due <= sent:
            time.sleep(SLEEP)
            continue
        while sent < due:
            try:
                sock.sendto(packets[i], addr)
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                errors += 1
            i = i + 1 if i + 1 < n else 0
            sent += 1
    return {"sent": sent, "errors": errors, "elapsed": time.perf_counter() - start}


def main() -> int:
    a = json.loads(sys.argv[1])
    if "cpu" in a:
        os.sched_setaffinity(0, {a["cpu"]})
    build = {"syn": syn_packets, "spoof": spoof_packets, "junk": lambda _: junk_packets(),
             "spoofjunk": spoofjunk_packets}[a["mode"]]
    packets = build(a)
    count = min(int(a["count"]), MAX_COUNT)
    seconds = min(float(a["seconds"]), MAX_SECONDS)
    sock, addr = open_socket(a)
    print("ready", flush=True)  # the packets are built: sending starts now
    with sock:
        result = send_loop(sock, addr, packets, float(a.get("rate", 0)), count, seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
