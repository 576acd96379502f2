"""The listener's checks, in a row, cheapest first: door -> size -> hex -> time window and MAC
-> replay. Pure apart from the replay cache; each packet gets exactly one Verdict.

A MAC already accepted is a replay, except within REPEAT_WINDOW seconds of its acceptance:
then it is the client repeating its datagram (knock.sh --repeat, `awp knock --repeat`) in
case the first was lost, and the verdict is "repeat": no second grant, not a reject. The MAC
covers the source address and was just checked against this packet's source, so a repeat
comes from the address that knocked (or from one spoofing it, who gains nothing: the grant
is that address's already)."""

from __future__ import annotations

from dataclasses import dataclass, field

from awp import otp
from awp.knockd.replay import ReplayCache
from awp.knockd.nflog import Packet
from awp.model import AdvancedDoor

SKEW = 1  # minutes either side of the server's minute that are accepted
SKEW_REPORT = 3  # a MAC this far off is reported as clock skew rather than a bad MAC
REPEAT_WINDOW = 5.0  # seconds after its acceptance that the same MAC is a client's repeat


@dataclass(slots=True)
class Verdict:
    """Immutable by convention; not frozen for the cost of its __init__ (see events.Decision)."""

    action: str  # "open", "close", "repeat" (of an accepted knock: nothing to do) or "reject"
    reason: str  # "ok", "repeat", "unknown-port", "malformed", "bad-mac", "skew", "replay", "untrusted-cache"
    door: AdvancedDoor | None
    mac: str = field(default="", repr=False)
    minute: int | None = None

    @property
    def mac_prefix(self) -> str:
        return self.mac[:8]


class ExpectedMacs:
    """The first 4 bytes of the 6 MACs a door would accept from a source in the current
    minute (2 secrets x 3 minutes), computed on the source's first datagram of the minute.

    Under a flood from a set of spoofed sources each sends many datagrams a minute; this makes
    all but the first a table lookup and a substring test instead of 6 MACs (the listener's
    biggest cost per datagram). A datagram whose first 4 bytes match is checked in full, in
    constant time, by the usual path; one that matches none cannot be right (a junk datagram
    passes the test about 6 in 2^32 times and only costs the full check then).

    Flat memory: one preallocated table of `slots` slots (48 bytes each, 6 MiB for the
    default 131,072), each (knock port, source) with two candidate slots from Python's
    per-process randomized hash; a newcomer takes an empty one or else one of the two. With
    one slot each (the first version, 65,536 slots) a flood from 65,535 sources found its
    own entry only about 1 time in e, since most slots were shared; with two choices at half
    load nearly every source keeps one. Wiped when the minute changes. A flood from more
    sources than slots costs what it cost without the table, never more memory."""

    SLOT = 48  # 1 used flag + 2 port + 16 address + 6 x 4 prefix bytes, padded
    KEY = 19
    PREFIXES = 24

    def __init__(self, slots: int = 131_072):
        if slots < 1 or slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.mask = slots - 1
        self.minute: int | None = None
        self.table: bytearray | None = None  # allocated on first use
        self.heads: dict[int, bytes] = {}  # a key's first 3 bytes by knock port (the doors' few)

    def __len__(self) -> int:
        """Slots in use (for tests and the benchmark; walks the table)."""
        t = self.table
        return 0 if t is None else sum(1 for i in range(0, len(t), self.SLOT) if t[i])

    def could_match(self, door: AdvancedDoor, packet: Packet, mac: str, now_minute: int) -> bool:
        t = self.table
        if t is None or now_minute != self.minute:
            t = self._new_minute(now_minute)
        packed = packet.src.packed
        head = self.heads.get(packet.dport)
        if head is None:
            head = self.heads[packet.dport] = b"\1" + packet.dport.to_bytes(2, "big")  # used flag, knock port
        key = head + (packed if len(packed) == 16 else packed + _PAD12)
        h = hash(key)
        at, other = (h & self.mask) * self.SLOT, (h >> 32 & self.mask) * self.SLOT
        if t[at : at + self.KEY] == key:
            prefixes = t[at + self.KEY : at + self.KEY + self.PREFIXES]
        elif t[other : other + self.KEY] == key:
            prefixes = t[other + self.KEY : other + self.KEY + self.PREFIXES]
        else:
            prefixes = b"".join(otp.mac_digest(secret.value, packed, m)[:4]
                                for secret in (door.open_secret, door.close_secret)
                                for m in range(now_minute - SKEW, now_minute + SKEW + 1) if 0 <= m <= 0xFFFFFFFF)
            if len(prefixes) == self.PREFIXES:  # not at the ends of the uint32 minute range
                if t[at] and (not t[other] or prefixes[0] & 1):  # an empty one, else either
                    at = other
                t[at : at + self.KEY + self.PREFIXES] = key + prefixes
        return bytes.fromhex(mac[:8]) in prefixes

    def _new_minute(self, now_minute: int) -> bytearray:
        if self.table is None:
            self.table = bytearray((self.mask + 1) * self.SLOT)
        elif self.minute is not None:
            self.table[:] = bytes(len(self.table))
        self.minute = now_minute
        return self.table


_PAD12 = bytes(12)  # an IPv4 address fills 4 of a slot's 16 address bytes


def check(packet: Packet, doors: dict[int, AdvancedDoor], replay: ReplayCache, now_minute: int,
          now: float | None = None, expected: ExpectedMacs | None = None) -> Verdict:
    """`now` (seconds) tells a client's repeat from a replay; without it every seen MAC is a
    replay. `expected` rules out most wrong MACs without computing any (see ExpectedMacs)."""
    door = doors.get(packet.dport)
    if door is None:
        return Verdict("reject", "unknown-port", None)
    if packet.length != len(packet.payload):
        return Verdict("reject", "malformed", door)
    mac = otp.parse_payload(packet.payload)
    if mac is None:
        return Verdict("reject", "malformed", door)
    if expected is not None and not expected.could_match(door, packet, mac, now_minute):
        return Verdict("reject", "bad-mac", door, mac)
    action, minute = _match(mac, door, packet, now_minute)
    if minute is None:
        return Verdict("reject", "bad-mac", door, mac)
    if replay.seen(mac):
        if now is not None and replay.accepted_within(mac, now, REPEAT_WINDOW):
            return Verdict("repeat", "repeat", door, mac, minute)
        return Verdict("reject", "replay", door, mac)
    if replay.seen(mac, minute):  # an untrusted cache: this minute may have been accepted before
        return Verdict("reject", "untrusted-cache", door, mac, minute)
    return Verdict(action, "ok", door, mac, minute)


def _match(mac: str, door: AdvancedDoor, packet: Packet, now_minute: int) -> tuple[str, int | None]:
    for action, secret in (("open", door.open_secret), ("close", door.close_secret)):
        minute = otp.match_minute(mac, secret.value, packet.src, now_minute, SKEW)
        if minute is not None:
            return action, minute
    return "reject", None


def explain(verdict: Verdict, packet: Packet, now_minute: int) -> tuple[str, str]:
    """The reason to log and its detail: a bad MAC that is right for a minute a little outside
    the window is clock skew, reported with the measured offset in seconds ("offset=+180":
    the knocker's clock is 3 minutes ahead). Costs 14 more MACs, so the listener asks only for
    lines it will log."""
    if verdict.reason != "bad-mac":
        return verdict.reason, ""
    for secret in (verdict.door.open_secret, verdict.door.close_secret):
        minute = otp.match_minute(verdict.mac, secret.value, packet.src, now_minute, SKEW_REPORT)
        if minute is not None:
            return "skew", f"offset={(minute - now_minute) * 60:+d}"
    return "bad-mac", ""
