"""The listener's fleet client.

The packet path (the listener's thread) only ever does one Redis call per accepted knock, the
replay claim, with a socket timeout of store.PACKET_TIMEOUT; while the store is unreachable it
makes none. Two threads do the rest, each with its own connection:

    consumer   (re)connects, catches up on every live grant, then XREAD BLOCKs on the stream
               and queues each verified message of another node for the listener's thread
    publisher  sends this node's accepted opens and closes; while the store is down they wait
               in a bounded queue and go out when it is back (opens that expired are dropped)

The listener's thread applies queued grants to its own kernel (drain), so only that thread
ever touches the grant store.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import logging
import math
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace

from awp.fleet import store
from awp.fleet.keys import Credentials
from awp.fleet.message import BadMessage, GrantMessage, verify
from awp.knockd.verify import SKEW

log = logging.getLogger(__name__)
DEGRADED_LOG_INTERVAL = 60.0
RETRY = 1.0  # seconds between two reconnects
CATCH_UP_BOUND = 3.0  # the most a start waits for the first catch-up
MAC_MARGIN = 60  # seconds a claim outlives its MAC (for nodes whose clocks differ a little)
OUTBOX_MAX = 10000
SEEN_MAX = 20000
PUBLISH_BATCH = 200
PUBLISHED = frozenset({"open", "close", "nothing-to-close"})  # the Decisions that go to the fleet
SWITCH_INTERVAL = 0.0005  # s: the packet path gets the GIL back soon after its Redis reply


@dataclass(frozen=True)
class FleetSettings:
    url: str
    node: str
    required: bool
    key: bytes = field(repr=False)
    credentials: Credentials = Credentials()
    ca_file: str | None = None


def node_name(configured: str) -> str:
    return configured or socket.gethostname().split(".")[0] or "localhost"


def fleet_settings(root, settings) -> FleetSettings | None:
    """The fleet of these settings, its key and credentials read and checked (ConfigError
    names the file and the reason); None without FW_PORTKNOCK_FLEET."""
    from awp.fleet.keys import load_credentials, load_key

    if not settings.fleet:
        return None
    ca = root.base / "etc" / "fleet-ca.pem"
    return FleetSettings(settings.fleet, node_name(settings.node), settings.fleet_required,
                         load_key(root.fleet_key), load_credentials(root.fleet_auth),
                         str(ca) if ca.exists() else None)


class Fleet:
    poll = 0.02  # s: the listener's NFLOG receive timeout in fleet mode, so it drains grants soon

    def __init__(self, fs: FleetSettings, connect=store.connect):
        self.fs = fs
        self.node = fs.node
        self._connect = connect
        self.packet_r = connect(fs.url, fs.credentials, store.PACKET_TIMEOUT, fs.ca_file)
        self.up = False
        self.down_reason = "not connected yet"
        self.down_since: float | None = time.time()
        self.last_sync: float | None = None
        self.inbox: queue.Queue[GrantMessage] = queue.Queue()
        self.outbox: collections.deque[GrantMessage] = collections.deque(maxlen=OUTBOX_MAX)
        self.remote: dict[str, GrantMessage] = {}  # field -> the open another node made (for status)
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.accepted: collections.deque[tuple[str, int]] = collections.deque(maxlen=OUTBOX_MAX)  # (mac, minute)
        self.ignored = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tried = threading.Event()  # the first catch-up ended, well or not
        self._last_degraded_log = 0.0
        self._threads: list[threading.Thread] = []

    # --- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads and wait (at most CATCH_UP_BOUND) for the first catch-up, so the
        listener applies every live grant (drain) before it says it is ready."""
        sys.setswitchinterval(SWITCH_INTERVAL)
        for target in (self._consume, self._publish):
            thread = threading.Thread(target=target, name=f"fleet-{target.__name__[1:]}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._tried.wait(CATCH_UP_BOUND):
            self._degraded(f"no catch-up within {CATCH_UP_BOUND:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(store.WORKER_TIMEOUT + 1.0)

    # --- the packet path (listener thread) -------------------------------------------------

    def gate(self, verdict, packet, now: float):
        """Before a knock is accepted: the fleet-wide replay claim. Returns the verdict, or a
        reject: fleet-replay (another node accepted this MAC) or fleet-unreachable (an open,
        with FW_PORTKNOCK_FLEET_REQUIRED, while the store cannot be reached)."""
        if self.up:
            try:
                if store.claim(self.packet_r, verdict.mac, self.node, _claim_ms(verdict.minute, now)):
                    self.accepted.append((verdict.mac, verdict.minute))
                    return verdict
                return replace(verdict, action="reject", reason="fleet-replay")
            except store.Error as exc:
                self._lost(f"replay claim failed: {_why(exc)}")
        self._degraded(self.down_reason)
        if self.fs.required and verdict.action == "open":
            return replace(verdict, action="reject", reason="fleet-unreachable")
        self.accepted.append((verdict.mac, verdict.minute))  # claimed once the store is back
        return verdict

    def observe(self, decision) -> None:
        """Observer (awp.knockd.events): queue each accepted open or close for the fleet (a
        close that found nothing here too: the grant may live on another node). Never a
        reject, nor a "repeat" (the client's copy of a knock accepted already: its grant went
        out with the first), nor a simple door's open (simple-mode state stays on the node)."""
        if decision.mode != "advanced" or decision.port is None or decision.action not in PUBLISHED:
            return
        action = "open" if decision.action == "open" else "close"
        expires = int(decision.time + decision.expires_in) if action == "open" else 0
        msg = GrantMessage.new(self.node, action, decision.port, decision.src, expires, decision.time)
        self.remote.pop(msg.key, None)  # this node's own grant now
        self.outbox.append(msg)
        self._wake.set()

    def drain(self, grants, ports: set[int], now: float) -> None:
        """Apply the queued messages of other nodes with their remaining lifetime, and close
        the other nodes' grants that ended (xt_recent cannot hold a per-grant lifetime)."""
        for _ in range(self.inbox.qsize()):
            try:
                self._apply(self.inbox.get_nowait(), grants, ports, now)
            except queue.Empty:
                break
        for field, msg in list(self.remote.items()):
            if msg.expires <= now:
                del self.remote[field]
                self._kernel(grants.close, msg.port, ipaddress.ip_address(msg.src))

    def _apply(self, msg: GrantMessage, grants, ports: set[int], now: float) -> None:
        if msg.port not in ports:
            log.warning("fleet grant ignored from=%s port=%d src=%s: no advanced door for that port here",
                        msg.node, msg.port, msg.src)
            return
        src = ipaddress.ip_address(msg.src)
        if msg.action == "close":
            self.remote.pop(msg.key, None)
            self._kernel(grants.close, msg.port, src)
            log.info("fleet grant applied action=close port=%d src=%s from=%s", msg.port, msg.src, msg.node)
            return
        left = math.ceil(msg.expires - now)
        if left <= 0:
            return
        self._kernel(grants.open, msg.port, src, left)
        if msg.node != self.node:
            self.remote[msg.key] = msg
        log.info("fleet grant applied action=open port=%d src=%s from=%s expires_in=%ds latency_ms=%d",
                 msg.port, msg.src, msg.node, left, max(0, int(now * 1000) - msg.sent))

    @staticmethod
    def _kernel(call, *args) -> None:
        from awp.errors import AwpError
        try:
            call(*args)
        except (AwpError, OSError) as exc:
            log.error("fleet grant not applied port=%d src=%s: %s", args[0], args[1], exc)

    def state(self) -> dict:
        """For the listener's state file (`awp status`)."""
        return {"node": self.node, "store": self.fs.url, "connected": self.up, "required": self.fs.required,
                "degraded": None if self.up else self.down_reason,
                "down_since": None if self.up else self.down_since,
                "last_sync": self.last_sync, "unsent": len(self.outbox), "ignored_messages": self.ignored,
                "remote_grants": [{"port": m.port, "source": m.src, "node": m.node, "expires": m.expires}
                                  for m in sorted(self.remote.values(), key=lambda m: (m.port, m.src))]}

    # --- health ---------------------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        if self.up:
            self.up = False
            self.down_since = time.time()
            self._last_degraded_log = 0.0
        self.down_reason = reason
        self._degraded(reason)

    def _degraded(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_degraded_log >= DEGRADED_LOG_INTERVAL:
            self._last_degraded_log = now
            log.warning("fleet degraded store=%s node=%s reason=%s: knocks use this node's replay cache "
                        "and grants%s", self.fs.url, self.node, reason,
                        "; opens are refused (FW_PORTKNOCK_FLEET_REQUIRED)" if self.fs.required else "")

    # --- consumer thread ----------------------------------------------------------------------

    def _consume(self) -> None:
        r = self._connect(self.fs.url, self.fs.credentials, store.WORKER_TIMEOUT, self.fs.ca_file)
        after = None
        while not self._stop.is_set():
            try:
                if after is None or not self.up:  # a start, or a failure seen by another thread
                    after = self._catch_up(r)
                    continue
                for entry_id, line in store.read(r, after):
                    after = entry_id
                    self._receive(line, live=False)
                self.last_sync = time.time()
            except Exception as exc:  # noqa: BLE001 - the thread must live on: Redis errors, and bugs
                if not isinstance(exc, store.Error):
                    log.exception("fleet consumer failed")
                after = None
                self._lost(_why(exc))
                self._tried.set()
                self._stop.wait(RETRY)

    def _catch_up(self, r) -> str:
        """Every live grant (this node's too: a reboot may have emptied its kernel), then the
        stream from where it stood before the read, so nothing falls between the two."""
        after = store.last_id(r)
        self._reclaim(r)
        lines = store.live(r)
        for line in lines:
            self._receive(line, live=True)
        was_down = self.down_since
        self.up, self.down_since, self.last_sync = True, None, time.time()
        log.info("fleet connected store=%s node=%s live_grants=%d%s", self.fs.url, self.node, len(lines),
                 f" after {time.time() - was_down:.0f} s degraded" if was_down and self._synced_once else "")
        self._synced_once = True
        self._tried.set()
        self._wake.set()  # the publisher sends what waited
        return after

    _synced_once = False

    def _reclaim(self, r) -> None:
        """Claim again the MACs this node accepted that may still be valid: those accepted
        while the store was down, and all of them if the store came back empty."""
        now = time.time()
        valid = [(mac, minute) for mac, minute in list(self.accepted) if _claim_ms(minute, now) > 0]
        if valid:
            store.claim_many(r, valid, self.node, [_claim_ms(minute, now) for _, minute in valid])

    def _receive(self, line: str, live: bool) -> None:
        try:
            msg = verify(self.fs.key, line)
        except BadMessage as exc:
            self.ignored += 1
            log.warning("fleet message ignored reason=%s: it does not verify under the fleet key", exc.args[0])
            return
        if (msg.node == self.node and not (live and not self._synced_once)) or msg.id in self.seen:
            return
        self.seen[msg.id] = None
        while len(self.seen) > SEEN_MAX:
            self.seen.popitem(last=False)
        self.inbox.put(msg)

    # --- publisher thread ---------------------------------------------------------------------

    def _publish(self) -> None:
        r = self._connect(self.fs.url, self.fs.credentials, store.WORKER_TIMEOUT, self.fs.ca_file)
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            while self.outbox and self.up and not self._stop.is_set():
                if not self._publish_batch(r):
                    break

    def _publish_batch(self, r) -> bool:
        """Up to PUBLISH_BATCH waiting grants in one MULTI; opens that ended are dropped."""
        now = time.time()
        batch = list(itertools.islice(self.outbox, PUBLISH_BATCH))
        live = [m for m in batch if m.action == "close" or m.expires > now]
        try:
            if live:
                store.publish(r, [(m.sign(self.fs.key), m.key, m.action, m.expires) for m in live], now)
        except Exception as exc:  # noqa: BLE001 - as in _consume
            if not isinstance(exc, store.Error):
                log.exception("fleet publisher failed")
            self._lost(f"publish failed: {_why(exc)}")
            return False
        for _ in batch:
            self.outbox.popleft()
        return True


def _claim_ms(minute: int, now: float) -> int:
    """How long a claim on a MAC of `minute` must live: until the MAC cannot be valid (the
    end of minute + SKEW), plus a margin for clocks that differ a little between nodes."""
    return int(((minute + SKEW + 1) * 60 + MAC_MARGIN - now) * 1000)


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text[:120]}" if text else exc.__class__.__name__


KEY_CHECK_TIMEOUT = 1.0  # s: `awp check` waits this long for the fleet's store, no more
KEY_CHECK_SAMPLE = 50  # the newest grant messages it reads


def compare_key(fs: FleetSettings, connect=store.connect) -> tuple[str, int, int]:
    """`awp check`'s look at whether this node's fleet key is the fleet's: the newest grant
    messages in the store (its stream and the live grants) verified under the key.
    ("agrees" | "differs" | "no-messages" | "unreachable", verified, read). A key that
    verifies nothing while the store holds messages is another fleet's key (or the store
    holds only forgeries: either way this node would ignore every grant of the fleet)."""
    try:
        r = connect(fs.url, fs.credentials, KEY_CHECK_TIMEOUT, fs.ca_file)
        lines = [fields.get("m", "") for _id, fields in r.xrevrange(store.LOG, count=KEY_CHECK_SAMPLE)]
        lines += store.live(r)[:KEY_CHECK_SAMPLE]
    except (store.Error, OSError) as exc:
        log.debug("fleet key not compared: %s", exc)
        return "unreachable", 0, 0
    if not lines:
        return "no-messages", 0, 0
    verified = 0
    for line in lines:
        try:
            verify(fs.key, line)
            verified += 1
        except BadMessage:
            continue
    return ("agrees" if verified else "differs"), verified, len(lines)
