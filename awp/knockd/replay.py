"""The replay cache: the MACs already accepted, so each is accepted only once. It fails closed.

The file (DIR/var/lib/replay-cache, root-owned, 0600) starts with a header that carries
when it was written and a SHA-256 of the entries, so truncation, emptying, corruption or
junk put in front of it are all seen:

    # awp replay cache v1 written=<unix seconds> sha256=<hex of the lines below>
    <minute> <mac hex>

A cache that cannot be trusted (missing while grants exist, older than a live grant,
corrupt, unreadable, not a regular file, wrong owner or mode) must not let through a MAC
the listener may have accepted before: it raises `floor`, and every MAC of a minute up to
the floor counts as seen. A MAC of minute m is accepted at most until the server's minute
m + SKEW, so every MAC accepted before a start at minute M has a minute <= M + SKEW; with
the floor there, only MACs made after the start get in, and once the server's minute is
past floor + SKEW the rule excludes nothing and the cache is trusted again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = "# awp replay cache v1"
_HEADER_RE = re.compile(r"# awp replay cache v1 written=([0-9]{1,12}) sha256=([0-9a-f]{64})", re.ASCII)
_LINE_RE = re.compile(r"([0-9]{1,10}) ([0-9a-f]{64})", re.ASCII)
_MINUTE_MAX = 0xFFFFFFFF
GRANT_GRACE = 2.0  # seconds between a grant and the cache write that follows it
MIN_FREE_BYTES = 64 * 1024  # a file system with less free space is reported as full


@dataclass(frozen=True)
class Trust:
    trusted: bool
    reason: str  # "ok", "missing", or why it is not trusted (names the path)
    written: float | None = None  # unix time the file was written, per its header


class ReplayCache:
    """Bounded (`max_entries`), persisted on every add, pruned after `lifetime_minutes`."""

    def __init__(self, path: Path, max_entries: int = 4096, lifetime_minutes: int = 3):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self.lifetime_minutes = lifetime_minutes
        self.floor = -1  # MACs of minutes <= floor count as seen (an untrusted cache)
        self.trust = Trust(True, "missing")
        self._entries: dict[str, int] = {}
        self._accepted_at: dict[str, float] = {}  # in memory only: when this process accepted it

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> Trust:
        """Read the file without blocking or following links; never raises."""
        self._entries = {}
        try:
            raw = _read_regular(self.path, (self.max_entries + 2) * 80)
        except FileNotFoundError:
            self.trust = Trust(True, "missing")
            self._load_journal()
            return self.trust
        except (OSError, ValueError) as exc:
            self.trust = Trust(False, f"{self.path}: {_why(exc)}")
            return self.trust
        self.trust = self._parse(raw.decode("ascii", "replace"))
        self._load_journal()
        self._evict_to(self.max_entries)
        return self.trust

    def distrust(self, reason: str, now_minute: int, skew: int) -> None:
        """Count every MAC the listener may have accepted before `now_minute` as seen."""
        self.trust = Trust(False, reason, self.trust.written)
        self.floor = max(self.floor, now_minute + skew)

    def check_grants(self, grant_times: list[float], now_minute: int, skew: int) -> Trust:
        """A live grant made after the file was last written means the file lost entries."""
        if not self.trust.trusted or not grant_times:
            return self.trust
        written = self.trust.written
        if written is None:
            self.distrust(f"{self.path} is missing while grants exist", now_minute, skew)
        elif max(grant_times) > written + GRANT_GRACE:
            self.distrust(f"{self.path} is older than a live grant", now_minute, skew)
        return self.trust

    def seen(self, mac_hex: str, minute: int | None = None) -> bool:
        """Whether this MAC was (or, from an untrusted cache, may have been) accepted."""
        return mac_hex in self._entries or (minute is not None and minute <= self.floor)

    def accepted_within(self, mac_hex: str, now: float, seconds: float) -> bool:
        """Whether this process accepted the MAC at most `seconds` before `now` (a repeat)."""
        at = self._accepted_at.get(mac_hex)
        return at is not None and 0.0 <= now - at <= seconds

    def add(self, mac_hex: str, minute: int, now_minute: int, at: float | None = None,
            sync: bool = True) -> None:
        """Remember an accepted MAC (accepted at `at`, seconds), prune and bound the cache,
        and persist it (rewritten, renamed into place, fsynced).

        sync=False is the listener's fast path: the entry is only appended to the journal
        (`<path>.journal`, one line, no rename, no fsync: tens of microseconds where the
        rewrite takes milliseconds on ext4), and `sync()` after the grant does the rewrite
        and removes the journal. The entry is in a file before the grant either way, so a
        crash of the listener loses nothing; a power failure before sync() could, and it
        takes the grant (kernel state) with it. load() reads the journal's entries as seen
        (they only ever add MACs, so a journal cannot make the cache accept more)."""
        self._prune(now_minute)
        self._entries.pop(mac_hex, None)
        self._evict_to(self.max_entries - 1)
        self._entries[mac_hex] = minute
        if at is not None:
            self._accepted_at[mac_hex] = at
        if sync:
            self._persist()
        else:
            self._journal(f"{minute} {mac_hex}\n")

    def sync(self) -> None:
        """Write the whole cache durably and drop the journal (after add(..., sync=False))."""
        self._persist()
        _unlink_quietly(str(self.journal))

    @property
    def journal(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

    def _journal(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.journal, flags, 0o600)
        try:
            os.write(fd, line.encode("ascii"))
        finally:
            os.close(fd)

    def _load_journal(self) -> None:
        """Entries a listener journaled and did not get to sync: all of them count as seen.
        A journal that is not a private regular file distrusts the cache."""
        try:
            raw = _read_regular(self.journal, (self.max_entries + 2) * 80)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.trust = Trust(False, f"{self.journal}: {_why(exc)}", self.trust.written)
            return
        for line in raw.decode("ascii", "replace").split("\n"):
            m = _LINE_RE.fullmatch(line)
            if m is not None and int(m.group(1)) <= _MINUTE_MAX:  # a line cut by a crash is skipped
                self._entries[m.group(2)] = int(m.group(1))

    def _parse(self, text: str) -> Trust:
        head, _, body = text.partition("\n")
        match = _HEADER_RE.fullmatch(head)
        lines = [line for line in body.split("\n") if line]
        skipped = 0
        for line in lines:
            m = _LINE_RE.fullmatch(line)
            if m is None or int(m.group(1)) > _MINUTE_MAX:
                skipped += 1
                continue
            self._entries[m.group(2)] = int(m.group(1))
        if match is None:
            return Trust(False, f"{self.path} has no valid header (emptied, truncated or not awp's)")
        if hashlib.sha256(body.encode()).hexdigest() != match.group(2) or skipped:
            return Trust(False, f"{self.path} does not match its checksum (corrupt or edited)")
        return Trust(True, "ok", float(match.group(1)))

    def _prune(self, now_minute: int) -> None:
        oldest_kept = now_minute - self.lifetime_minutes
        self._entries = {k: m for k, m in self._entries.items() if m >= oldest_kept}
        self._accepted_at = {k: t for k, t in self._accepted_at.items() if k in self._entries}

    def _evict_to(self, limit: int) -> None:
        excess = len(self._entries) - limit
        if excess <= 0:
            return
        log.warning("replay cache full: forgetting the %d oldest entries", excess)
        by_age = sorted(self._entries.items(), key=lambda item: item[1])
        self._entries = dict(by_age[excess:])
        self._accepted_at = {k: t for k, t in self._accepted_at.items() if k in self._entries}

    def _persist(self) -> None:
        body = "".join(f"{m} {h}\n" for h, m in self._entries.items())
        digest = hashlib.sha256(body.encode()).hexdigest()
        text = f"{HEADER} written={int(time.time())} sha256={digest}\n{body}"
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(directory)


def _read_regular(path: Path, limit: int) -> bytes:
    """Open without following a link or blocking on a FIFO; only a root-owned 0600 file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if st.st_uid != os.geteuid():
            raise ValueError(f"is owned by uid {st.st_uid}, not {os.geteuid()}")
        if st.st_mode & 0o077:
            raise ValueError(f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0600")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "is a symbolic link"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


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


def path_problem(path: Path) -> str | None:
    """What is wrong with the cache's path (not its content), or None; never blocks."""
    for parent in reversed(path.parents):
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            return None  # created on the first write
        except OSError as exc:
            return f"{parent}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode) and parent != path.parents[2] and parent.is_relative_to(path.parents[2]):
            return f"{parent} is a symbolic link; awp does not follow links in its state directory"
        if not stat.S_ISDIR(os.stat(parent).st_mode):
            return f"{parent} is not a directory"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _writable(path.parent) if path.parent.is_dir() else None
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link; awp does not follow links in its state directory"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (remove it; awp writes it anew)"
    return _writable(path.parent)


def _writable(directory: Path) -> str | None:
    """A read-only or full file system, seen before the first knock needs to be recorded."""
    if not os.access(directory, os.W_OK):
        return f"{directory} is not writable (a read-only file system?)"
    fs = os.statvfs(directory)
    if fs.f_flag & os.ST_RDONLY:
        return f"{directory} is on a read-only file system"
    if fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
        return f"the file system of {directory} is full"
    return None
