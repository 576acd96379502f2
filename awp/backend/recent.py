"""xt_recent lists through /proc/net/xt_recent: read for status, written for advanced grants.

The lists live in the kernel with their own timestamps, so a grant still expires (the rule
checks it with --seconds) even when no awp process is running.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
import time
from dataclasses import dataclass
from pathlib import Path

from awp.errors import EnvironmentProblem

PROC = Path("/proc/net/xt_recent")
_ENTRY_RE = re.compile(r"src=(\S+) ttl: \d+ last_seen: (\d+)")
_KNOWN_HZ = (100, 250, 300, 1000)


@dataclass(frozen=True)
class Entry:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    last_seen: int  # jiffies


def parse_entries(text: str) -> list[Entry]:
    found = []
    for line in text.splitlines():
        match = _ENTRY_RE.match(line.strip())
        if match:
            found.append(Entry(ipaddress.ip_address(match.group(1)), int(match.group(2))))
    return found


class RecentLists:
    def __init__(self, proc: Path = PROC):
        self.proc = proc

    def entries(self, name: str) -> list[Entry]:
        try:
            return parse_entries((self.proc / name).read_text())
        except FileNotFoundError:
            return []

    def add(self, name: str, address) -> None:
        """Add or refresh `address` (its last_seen becomes now)."""
        self._write(name, f"+{address}\n")

    def remove(self, name: str, address) -> None:
        self._write(name, f"-{address}\n")

    def _write(self, name: str, command: str) -> None:
        try:
            with open(self.proc / name, "w") as fh:
                fh.write(command)
        except FileNotFoundError:
            raise EnvironmentProblem(f"xt_recent list {name} does not exist; run awp -s -f first") from None
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write xt_recent list {name}: {exc.strerror}") from None


@dataclass(frozen=True)
class KernelClock:
    jiffies: int
    hz: int

    def age(self, entry: Entry) -> float:
        """Seconds since the entry was last seen."""
        return max(0, self.jiffies - entry.last_seen) / self.hz


def kernel_clock(timer_list: Path = Path("/proc/timer_list"), config: Path = Path("/proc/config.gz")) -> KernelClock:
    first = _jiffies(timer_list)
    hz = _config_hz(config)
    if hz is None:
        start = time.monotonic()
        time.sleep(0.2)
        later = _jiffies(timer_list)
        hz = _nearest_hz((later - first) / (time.monotonic() - start))
        first = later
    return KernelClock(first, hz)


def _jiffies(timer_list: Path) -> int:
    try:
        with open(timer_list) as fh:
            for line in fh:
                if line.startswith("jiffies:"):
                    return int(line.split()[1])
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {timer_list}: {exc.strerror}") from None
    raise EnvironmentProblem(f"no jiffies line in {timer_list}")


def _config_hz(config: Path) -> int | None:
    try:
        with gzip.open(config, "rt") as fh:
            for line in fh:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=")[1])
    except OSError:
        return None
    return None


def _nearest_hz(measured: float) -> int:
    return min(_KNOWN_HZ, key=lambda hz: abs(hz - measured))


class RecentGrants:
    """Advanced-mode grants as xt_recent entries, one list per door (`awpa<port>`).

    xt_recent keeps only a last-seen time: the rule checks it with --seconds
    FW_PORTKNOCK_AUTOCLOSE, so every grant lives exactly that long whatever `ttl` says."""

    ttl_per_grant = False  # one lifetime per door; `awp grant --for` is refused here

    def __init__(self, config, lists: RecentLists | None = None):
        self.config = config
        self.lists = lists or RecentLists()

    def open(self, port: int, src, ttl: int) -> None:
        from awp.compile.iptables import grant_list
        self.lists.add(grant_list(port), src)

    def close(self, port: int, src) -> bool:
        from awp.compile.iptables import grant_list
        present = any(e.address == src for e in self.lists.entries(grant_list(port)))
        if present:
            self.lists.remove(grant_list(port), src)
        return present

    def list(self) -> list[tuple[int, str, int]]:
        from awp.backend.xt_status import door_sources
        return [(s.port, s.source, s.seconds_left)
                for s in door_sources(self.config, self.lists, kernel_clock()) if s.state == "granted"]
