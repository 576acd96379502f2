"""The ban for failed advanced knocks (FW_PORTKNOCK_BAN): an observer of the listener's
decisions (awp.knockd.events) that counts each source's failed knocks and, at the
FW_PORTKNOCK_BAN_AFTER-th within FW_PORTKNOCK_BAN_WINDOW seconds, bars the source from every
knock port in the kernel for FW_PORTKNOCK_BAN_TIME seconds, through the backend's ban store
(awp.backend.Bans). The kernel counts simple-mode failures itself (the compilers' ban rules);
this counts only what the listener rejects. Sources in FW_PORTKNOCK_ALLOW are never counted.

Memory is bounded: at most MAX_SOURCES sources are followed, each with at most
FW_PORTKNOCK_BAN_AFTER timestamps; past that the source that failed least recently is
forgotten (a flood from many spoofed addresses then delays a real attacker's ban, it cannot
grow the listener). Bans are written by one worker thread from a bounded queue, so a decision
never waits for the kernel.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Callable

from awp.knockd.events import Decision
from awp.model import Config, Settings

log = logging.getLogger(__name__)

# Reasons that count as a failure. Not counted: "replay" (the MAC covers the source address,
# so a replayed MAC comes from, or is spoofed as, the address that knocked validly: counting
# it could only ever ban the rightful knocker, e.g. for a client's repeated packets),
# "untrusted-cache" (the listener's own state after a restart), "unknown-port" (a knock
# port that a reload has just taken away).
COUNTED = frozenset({"bad-mac", "skew", "malformed"})
MAX_SOURCES = 8192
QUEUE_SIZE = 1024


class FailureCounter:
    """Failures per source in a sliding window: `fail` says when a source reaches `after`
    failures within `window` seconds (and then forgets it, so it counts again from zero)."""

    def __init__(self, after: int, window: float, max_sources: int = MAX_SOURCES):
        self.after, self.window, self.max_sources = after, window, max_sources
        self._times: OrderedDict[str, tuple[float, ...]] = OrderedDict()  # least recent first
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._times)

    def fail(self, src, now: float) -> bool:
        recent = tuple(t for t in self._times.pop(src, ()) if now - t < self.window) + (now,)
        if len(recent) >= self.after:
            return True
        self._times[src] = recent[-(self.after - 1):]
        if len(self._times) > self.max_sources:
            self._times.popitem(last=False)
            self.evicted += 1
        return False


def allowlisted(src, settings: Settings) -> bool:
    if not settings.allow:
        return False
    addr = src if isinstance(src, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(src)
    return any(addr.version == net.version and addr in net for net in settings.allow)


class Banner:
    """The observer. `config_of()` is the listener's configuration now (a reload may turn the
    ban on or off, or change its numbers); `store_of(config)` is the backend's ban store."""

    def __init__(self, config_of: Callable[[], Config], store_of: Callable[[Config], object],
                 clock: Callable[[], float] = time.monotonic, thread: bool = True):
        self.config_of, self.store_of, self.clock = config_of, store_of, clock
        self.counter: FailureCounter | None = None
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.dropped = 0  # bans not written because the queue was full
        self._thread = thread
        self._worker: threading.Thread | None = None

    def __call__(self, decision: Decision) -> None:
        config = self.config_of()
        s = config.settings
        if not s.ban or decision.accepted or decision.mode != "advanced" or decision.reason not in COUNTED:
            return
        if allowlisted(decision.src, s):
            return
        counter = self._counter(s)
        if counter.fail(decision.src, self.clock()):  # keyed by the address as the listener has it
            self._submit((config, decision))

    def _counter(self, s: Settings) -> FailureCounter:
        if self.counter is None or (self.counter.after, self.counter.window) != (s.ban_after, s.ban_window):
            self.counter = FailureCounter(s.ban_after, s.ban_window)
        return self.counter

    def _submit(self, item) -> None:
        if not self._thread:
            self._ban(*item)
            return
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8, ...: a bounded log
                log.warning("ban not written src=%s: %d bans queued already (dropped=%d)",
                            item[1].src, QUEUE_SIZE, self.dropped)
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="awp-ban", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            self._ban(*self.queue.get())

    def _ban(self, config: Config, decision: Decision) -> None:
        s = config.settings
        addr = ipaddress.ip_address(str(decision.src))
        try:
            self.store_of(config).ban(addr, s.ban_time)
        except Exception as exc:  # noqa: BLE001 - the kernel refusing must not stop the worker
            log.error("ban not written src=%s: %s", addr, exc)
            return
        log.warning("source banned src=%s mode=advanced failures=%d window=%ds ban_time=%ds reason=%s "
                    "knock_port=%d", addr, s.ban_after, s.ban_window, s.ban_time, decision.reason,
                    decision.knock_port)


def ban_observer(config_of: Callable[[], Config]) -> Banner:
    """The Banner the listener runs: bans go to the ban store of the configured backend."""
    from awp.backend import select

    stores: dict[str, object] = {}

    def store_of(config: Config):
        name = config.settings.backend
        if name not in stores:
            stores[name] = select(name).bans(config)
        return stores[name]

    return Banner(config_of, store_of)
