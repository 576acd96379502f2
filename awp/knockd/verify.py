"""The listener's checks, in a row, cheapest first: door -> size -> hex -> time window and MAC
-> replay. Pure apart from the replay cache; each packet gets exactly one Verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from awp import otp
from awp.knockd.nflog import Packet
from awp.model import AdvancedDoor

SKEW = 1  # minutes either side of the server's minute that are accepted
SKEW_REPORT = 3  # a MAC this far off is reported as clock skew rather than a bad MAC


@dataclass(frozen=True)
class Verdict:
    action: str  # "open", "close" or "reject"
    reason: str  # "ok", "unknown-port", "malformed", "bad-mac", "skew", "replay"
    door: AdvancedDoor | None
    mac: str = field(default="", repr=False)
    minute: int | None = None

    @property
    def mac_prefix(self) -> str:
        return self.mac[:8]


def check(packet: Packet, doors: dict[int, AdvancedDoor], replay: otp.ReplayCache, now_minute: int) -> Verdict:
    door = doors.get(packet.dport)
    if door is None:
        return Verdict("reject", "unknown-port", None)
    if packet.length != len(packet.payload):
        return Verdict("reject", "malformed", door)
    mac = otp.parse_payload(packet.payload)
    if mac is None:
        return Verdict("reject", "malformed", door)
    action, minute = _match(mac, door, packet, now_minute)
    if minute is None:
        reason = "skew" if _off_by_more(mac, door, packet, now_minute) else "bad-mac"
        return Verdict("reject", reason, door, mac)
    if replay.seen(mac):
        return Verdict("reject", "replay", door, mac)
    return Verdict(action, "ok", door, mac, minute)


def _match(mac: str, door: AdvancedDoor, packet: Packet, now_minute: int) -> tuple[str, int | None]:
    for action, secret in (("open", door.open_secret), ("close", door.close_secret)):
        minute = otp.match_minute(mac, secret.value, packet.src, now_minute, SKEW)
        if minute is not None:
            return action, minute
    return "reject", None


def _off_by_more(mac: str, door: AdvancedDoor, packet: Packet, now_minute: int) -> bool:
    """Whether the MAC is right but for a minute outside the accepted window."""
    for secret in (door.open_secret, door.close_secret):
        found = otp.match_minute(mac, secret.value, packet.src, now_minute, SKEW_REPORT)
        if found is not None:
            return True
    return False
