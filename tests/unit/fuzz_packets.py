"""Hostile datagrams for the listener's packet path, shared by tests/unit/test_fuzz.py (a
bounded count in CI) and bench/fuzz_bench.py (a million and more).

Every datagram is wrapped the way the kernel hands it over (an NFLOG netlink message holding
the IP packet) so the parser runs too. None of them may open anything: the MACs are wrong, or
right for another source, minute or secret, or valid ones with one bit flipped in the 64 hex
digits (a flip of the 65th byte would still be a valid knock: like xt_pknock, any 65th byte
is accepted). Deterministic for a seed.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from collections.abc import Iterator

from pknock_ref import ref_payload

KNOCK_PORT, OTHER_PORT = 2000, 2001
SERVER4, SERVER6 = "198.18.1.1", "2001:2::1"
MSG_PACKET = (4 << 8) | 0  # NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET
NFULA_PAYLOAD = 9


def _align4(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 4)


def ip_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> tuple[int, bytes]:
    """(family, IP + UDP bytes) of one datagram, as NFLOG copies it."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if ":" in src:
        head = struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, ipaddress.IPv6Address(src).packed,
                           ipaddress.IPv6Address(dst).packed)
        return socket.AF_INET6, head + udp
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return socket.AF_INET, head + udp


def nflog_message(family: int, ip: bytes) -> bytes:
    attr = _align4(struct.pack("=HH", 4 + len(ip), NFULA_PAYLOAD) + ip)
    body = struct.pack("!BBH", family, 0, 4747) + attr
    return _align4(struct.pack("=IHHII", 16 + len(body), MSG_PACKET, 0, 0, 0) + body)


class Fuzzer:
    """fuzzer.messages(n) yields n netlink buffers, each holding one hostile datagram (or,
    for the "mutated message" kind, a damaged message that may hold none)."""

    def __init__(self, open_secret: str, close_secret: str, now: float, seed: int = 7):
        self.secrets = (open_secret, close_secret)
        self.now = now
        self.rnd = random.Random(seed)
        self.kinds = (self.random_bytes, self.hex_junk, self.flipped_mac, self.other_source,
                      self.other_minute, self.wrong_secret, self.other_port, self.mutated_message)

    def src(self) -> str:
        r = self.rnd
        if r.random() < 0.2:
            return f"2001:2::{r.randrange(1, 0xFFFF):x}"
        return f"198.19.{r.randrange(256)}.{r.randrange(1, 255)}"

    def message(self) -> bytes:
        return self.rnd.choice(self.kinds)()

    def messages(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield self.message()

    def wrap(self, src: str, payload: bytes, dport: int = KNOCK_PORT) -> bytes:
        dst = SERVER6 if ":" in src else SERVER4
        return nflog_message(*ip_udp(src, dst, self.rnd.randrange(1, 65536), dport, payload))

    def valid(self, src: str, minute_offset: int = 0, secret: str | None = None) -> bytes:
        secret = secret or self.rnd.choice(self.secrets)
        return ref_payload(secret, src, self.now + 60 * minute_offset)

    # --- the kinds -------------------------------------------------------------------------

    def random_bytes(self) -> bytes:
        r = self.rnd
        length = r.choice((0, 1, 63, 64, 65, 66, r.randrange(300)))
        return self.wrap(self.src(), r.randbytes(length))

    def hex_junk(self) -> bytes:
        r = self.rnd
        return self.wrap(self.src(), r.randbytes(32).hex().encode() + r.choice((b"\n", b"\0", b"", b"x")))

    def flipped_mac(self) -> bytes:
        src = self.src()
        payload = bytearray(self.valid(src))
        bit = self.rnd.randrange(64 * 8)
        payload[bit // 8] ^= 1 << (bit % 8)
        return self.wrap(src, bytes(payload))

    def other_source(self) -> bytes:
        """A valid knock of one address, sent from another (never the same: a draw of the
        same address twice is a valid knock, which the million-datagram bench did find)."""
        src, owner = self.src(), self.src()
        while owner == src:
            owner = self.src()
        return self.wrap(src, self.valid(owner))

    def other_minute(self) -> bytes:
        src = self.src()
        return self.wrap(src, self.valid(src, self.rnd.choice((-5, -4, -3, -2, 2, 3, 4, 5))))

    def wrong_secret(self) -> bytes:
        src = self.src()
        return self.wrap(src, self.valid(src, secret=self.rnd.choice(self.secrets) + "x"))

    def other_port(self) -> bytes:
        src = self.src()
        return self.wrap(src, self.valid(src), dport=self.rnd.choice((OTHER_PORT, 1, 65535)))

    def mutated_message(self) -> bytes:
        """A wrong-secret knock's netlink message with bytes changed, cut or added."""
        r = self.rnd
        src = self.src()
        raw = bytearray(self.wrap(src, self.valid(src, secret="not-a-door-secret")))
        for _ in range(r.randrange(1, 6)):
            what = r.random()
            if what < 0.6:
                raw[r.randrange(len(raw))] = r.randrange(256)
            elif what < 0.8:
                del raw[r.randrange(len(raw)):]
                if not raw:
                    break
            else:
                raw += r.randbytes(r.randrange(1, 40))
        return bytes(raw)
