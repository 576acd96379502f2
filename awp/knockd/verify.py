"""The listener's checks, in a row, cheapest first: door -> size -> hex -> time window and MAC
-> replay. Pure apart from the replay cache; each packet gets exactly one Verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from awp import otp
from awp.knockd.replay import ReplayCache
from awp.knockd.nflog import Packet
from awp.model import AdvancedDoor

SKEW = 1  # minutes either side of the server's minute that are accepted
SKEW_REPORT = 3  # a MAC this far off is reported as clock skew rather than a bad MAC


@dataclass(frozen=True)
class Verdict:
    action: str  # "open", "close" or "reject"
    reason: str  # "ok", "unknown-port", "malformed", "bad-mac", "skew", "replay", "untrusted-cache"
    door: AdvancedDoor | None
    mac: str = field(default="", repr=False)
    minute: int | None = None

    @property
    def mac_prefix(self) -> str:
        return self.mac[:8]


def check(packet: Packet, doors: dict[int, AdvancedDoor], replay: ReplayCache, now_minute: int) -> Verdict:
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
        return Verdict("reject", "bad-mac", door, mac)
    if replay.seen(mac):
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
