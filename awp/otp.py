"""One-time passwords compatible with xt_pknock's UDP mode, and the replay cache.

Wire format of a knock (one UDP datagram):

    payload = lowercase hex of HMAC-SHA256(key = secret bytes (UTF-8),
                                           msg = source address bytes
                                                 + uint32 little-endian minute)

The source address is the one the server sees: 4 bytes in network order for IPv4,
16 bytes for IPv6 (awp's extension; xt_pknock is IPv4 only). The minute is
int(unix_time // 60). The 64 hex characters are followed by one byte, 65 bytes
in all, as xt_pknock expects: clients send a newline or a NUL, and like xt_pknock
awp accepts any byte there. awp also accepts the bare 64 bytes. Anything else is
malformed.

Everything here is pure except ReplayCache, which persists to one file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import struct
import tempfile
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address

MAC_LEN = 64
TRAILERS = (b"\n", b"\0")
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_CACHE_LINE = re.compile(r"([0-9]{1,10}) ([0-9a-f]{64})", re.ASCII)
_MINUTE_MAX = 0xFFFFFFFF


def minute_of(t: float) -> int:
    """Minutes since the Unix epoch for the time `t` (seconds)."""
    return int(t // 60)


def mac_hex(secret: bytes, addr: Address, minute: int) -> str:
    """The 64 lowercase hex characters of the MAC for `addr` in `minute`."""
    if not 0 <= minute <= _MINUTE_MAX:
        raise ValueError("minute out of the uint32 range")
    message = addr.packed + struct.pack("<I", minute)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def build_payload(secret: bytes, addr: Address, minute: int, trailer: bytes = b"\n") -> bytes:
    """The datagram a client sends: the MAC and `trailer` (newline, NUL, or b"" for bare)."""
    if trailer not in TRAILERS + (b"",):
        raise ValueError("trailer must be b'\\n', b'\\0' or b''")
    return mac_hex(secret, addr, minute).encode("ascii") + trailer


def parse_payload(data: bytes) -> str | None:
    """The hex MAC in a datagram, or None if it is malformed.

    Accepted: 64 lowercase hex bytes followed by any one byte (65 bytes: xt_pknock reads
    only the first 64, and its clients send a newline or a NUL), or the bare 64 hex bytes.
    """
    if len(data) == MAC_LEN + 1:
        data = data[:MAC_LEN]
    if len(data) != MAC_LEN or not _HEX64.fullmatch(data):
        return None
    return data.decode("ascii")


def match_minute(
    candidate_hex: str, secret: bytes, addr: Address, now_minute: int, skew: int = 1
) -> int | None:
    """The minute in [now - skew, now + skew] whose MAC equals the candidate, else None.

    Every minute of the window is computed and compared in constant time, so the
    time taken does not depend on which minute (if any) matched.
    """
    candidate = candidate_hex.encode("ascii", "replace")
    found = None
    for minute in range(now_minute - skew, now_minute + skew + 1):
        if not 0 <= minute <= _MINUTE_MAX:
            continue
        expected = mac_hex(secret, addr, minute).encode("ascii")
        if hmac.compare_digest(candidate, expected):
            found = minute
    return found


class ReplayCache:
    """The MACs already accepted, so each is accepted only once.

    Bounded (`max_entries`) and persisted to `path`, one line per entry
    (`<minute> <mac_hex>`), rewritten atomically with mode 0600 on every add.
    An entry is dropped once its minute is older than now - `lifetime_minutes`:
    with a skew of one minute a MAC of minute m is never valid after m + 1, so the
    default of 3 keeps it one minute longer than needed.
    """

    def __init__(self, path: Path, max_entries: int = 4096, lifetime_minutes: int = 3):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self.lifetime_minutes = lifetime_minutes
        self._entries: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Read the file. Missing: empty cache. Corrupt lines are skipped with a warning."""
        self._entries = {}
        try:
            with open(self.path, "rb") as f:
                raw = f.read(self._max_file_bytes())
        except FileNotFoundError:
            return
        skipped = self._load_lines(raw.decode("ascii", "replace").splitlines())
        if skipped:
            log.warning("replay cache %s: skipped %d corrupt line(s)", self.path, skipped)
        self._evict_to(self.max_entries)

    def seen(self, mac_hex: str) -> bool:
        """Whether this MAC was already accepted (and not yet forgotten)."""
        return mac_hex in self._entries

    def add(self, mac_hex: str, minute: int, now_minute: int) -> None:
        """Remember an accepted MAC, prune and bound the cache, and persist it."""
        self._prune(now_minute)
        self._entries.pop(mac_hex, None)
        self._evict_to(self.max_entries - 1)
        self._entries[mac_hex] = minute
        self._persist()

    def _max_file_bytes(self) -> int:
        return (self.max_entries + 1) * 80

    def _load_lines(self, lines: list[str]) -> int:
        skipped = 0
        for line in lines:
            m = _CACHE_LINE.fullmatch(line)
            if m is None or int(m.group(1)) > _MINUTE_MAX:
                skipped += 1
                continue
            self._entries[m.group(2)] = int(m.group(1))
        return skipped

    def _prune(self, now_minute: int) -> None:
        oldest_kept = now_minute - self.lifetime_minutes
        self._entries = {k: m for k, m in self._entries.items() if m >= oldest_kept}

    def _evict_to(self, limit: int) -> None:
        excess = len(self._entries) - limit
        if excess <= 0:
            return
        log.warning("replay cache full: forgetting the %d oldest entries", excess)
        by_age = sorted(self._entries.items(), key=lambda item: item[1])
        self._entries = dict(by_age[excess:])

    def _persist(self) -> None:
        text = "".join(f"{m} {h}\n" for h, m in self._entries.items())
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        prefix = f".{self.path.name}."
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=prefix, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        os.chmod(self.path, 0o600)
        _fsync_dir(self.path.parent)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some filesystems refuse to fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
