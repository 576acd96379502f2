"""`awp knockd`: read knocks through NFLOG, check them, grant or revoke in the kernel.

Nothing is ever sent back to a knocker. Grants go through the backend's grant store
(awp.backend.Grants), which keeps them in the kernel with their own expiry, so they expire
even if this process dies. The grant store and the replay cache are constructor arguments:
the unit tests run the listener against stores in memory.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from functools import partial

from awp import otp
from awp.backend import Grants, select
from awp.errors import AwpError, ListenerError
from awp.knockd.actions import CommandRunner
from awp.knockd.ban import ban_observer
from awp.knockd.commands import DoorCommands
from awp.knockd.control import take_pidfile
from awp.knockd import events
from awp.knockd.decisionlog import DecisionCounters, DecisionLog
from awp.knockd.events import Decision, Observer, notify
from awp.knockd.logdest import use_settings
from awp.knockd.nflog import AdaptiveBatching, NflogSocket, Packet
from awp.knockd.replay import ReplayCache
from awp.knockd.verify import SKEW, ExpectedMacs, Verdict, check, explain
from awp.load import load_config
from awp.model import Config, commanded_simple_ports
from awp.paths import Root

log = logging.getLogger(__name__)
# The NFLOG socket's buffer (the kernel doubles it): ~0.1-0.2 s of a flood in batched messages.
# Bigger does not let more knocks through when the listener is slower than the flood (what
# it cannot read is dropped either way), it only makes a knock that got in wait behind more
# junk: with 16 MiB a knock that made it waited seconds and missed a client's patience.
RCVBUF = 2 << 20
RECV_BATCH = 256  # netlink messages read in one go before the loop's housekeeping


class Listener:
    def __init__(self, config: Config, grants: Grants, replay: ReplayCache,
                 observers: tuple[Observer, ...] | list[Observer] = (), gate=None):
        self.grants = grants
        self.replay = replay
        self.observers = list(observers)  # each gets every Decision (awp.knockd.events)
        self.gate = gate  # gate(verdict, packet, now) -> verdict, before accepting (the fleet's claim)
        self.fleet = None  # awp.fleet.node.Fleet, in fleet mode
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.config = config
        self.doors = {d.knock_port: d for d in config.active_advanced}
        self.expected = ExpectedMacs()  # the secrets may have changed
        commanded = set(commanded_simple_ports(config))  # simple doors whose opening NFLOG hands over
        self.commanded = {d.port: d for d in config.active_simple if d.port in commanded}

    def handle(self, packet: Packet, now: float) -> Verdict | None:
        if packet.prefix:  # a simple door's sequence completed, seen by the kernel
            self._simple_open(packet, now)
            return None
        minute = otp.minute_of(now)
        verdict = check(packet, self.doors, self.replay, minute, now, self.expected)
        if verdict.action in ("open", "close") and self.gate is not None:
            verdict = self.gate(verdict, packet, now)  # never for a repeat: its MAC was claimed already
        if verdict.action == "repeat":  # the client sent its knock again: done already, not an attack
            notify(self.observers, Decision(now, packet.src, packet.dport, verdict.door.port, "advanced", "repeat",
                                            "repeat", verdict.mac_prefix))
            return verdict
        if verdict.action == "reject":
            port = verdict.door.port if verdict.door else None
            why = partial(explain, verdict, packet, minute) if verdict.reason == "bad-mac" else None
            notify(self.observers, Decision(now, packet.src, packet.dport, port, "advanced", "reject",
                                            verdict.reason, verdict.mac_prefix, explain=why))
            return verdict
        saved = self._remember(verdict, minute, now)
        try:
            action, expires = self._grant(packet, verdict)
        finally:
            if saved:
                self._sync_replay()
        notify(self.observers, Decision(now, packet.src, packet.dport, verdict.door.port, "advanced", action,
                                        "ok", verdict.mac_prefix, expires))
        return verdict

    def _simple_open(self, packet: Packet, now: float) -> None:
        door = self.commanded.get(packet.dport)
        if door is None:
            log.debug("simple open of a door without commands port=%d src=%s", packet.dport, packet.src)
            return
        # the kernel decided (its "awp open" LOG line is the log): only the observers that ask
        # for simple opens (door commands) get them, not the knock log or its counters
        wanting = [o for o in self.observers if getattr(o, "simple_opens", False)]
        notify(wanting, Decision(now, str(packet.src), door.knocks[-1], door.port, "simple", "open", "ok",
                                 expires_in=self.config.settings.open_window))

    def _remember(self, verdict: Verdict, minute: int, now: float) -> bool:
        """Journal the MAC before the grant (made durable after it: see ReplayCache.add)."""
        try:
            self.replay.add(verdict.mac, verdict.minute, minute, now, sync=False)
            return True
        except OSError as exc:
            log.error("replay cache not saved (%s: %s); a restart distrusts it if a grant is newer", self.replay.path, exc.strerror)

    def _sync_replay(self) -> None:
        try:
            self.replay.sync()
        except OSError as exc:
            log.error("replay cache not synced (%s: %s)", self.replay.path, exc.strerror)

    def _grant(self, packet: Packet, verdict: Verdict) -> tuple[str, int | None]:
        """Apply an accepted knock; returns the action taken and an open's lifetime."""
        door = verdict.door
        if verdict.action == "open":
            expires = self.config.settings.autoclose
            self.grants.open(door.port, packet.src, expires)
            return "open", expires
        if self.grants.close(door.port, packet.src):
            return "close", None
        return "nothing-to-close", None


def run_listener(root: Root) -> int:
    """Foreground loop until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
    lock = take_pidfile(root.pidfile, "listener")
    flags = {"reload": False, "stop": False}
    signal.signal(signal.SIGHUP, lambda *_: flags.__setitem__("reload", True))
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: flags.__setitem__("stop", True))
    config = load_config(root)
    grants = select(config.settings.backend).grants(config)
    replay = open_replay_cache(root, config, grants, time.time())
    use_settings(config.settings)
    decision_log = DecisionLog()  # the log lines (awp.knockd.decisionlog), then the counters
    listener = Listener(config, grants, replay, [decision_log, DecisionCounters(time.time())])
    listener.observers.append(ban_observer(lambda: listener.config))  # acts only while FW_PORTKNOCK_BAN is on
    commands = DoorCommands(config, CommandRunner())  # on_open / on_close (awp.knockd.commands)
    listener.observers.append(commands)
    sock = _open(listener.config)
    fleet = _start_fleet(root, listener)  # applies every live grant of the fleet before ready
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)  # ready: awp -s -f waits for this
    log.info("listener started pid=%d doors=%d group=%d", os.getpid(), len(listener.doors),
             listener.config.settings.nflog_group)
    beat = _heartbeat(root, lock, listener, 0.0)
    batching = AdaptiveBatching()
    try:
        while not flags["stop"]:
            packets = sock.receive(timeout=fleet.poll if fleet else 1.0,  # fleet: drain grants soon
                                   max_reads=RECV_BATCH)
            if flags["reload"]:  # before handling: a knock sent after awp -s -f sees the new doors
                flags["reload"] = False
                sock = _reload(root, listener, sock)
            for packet in packets:
                _handle_one(listener, packet)
            if fleet:
                _drain(listener)
            batching.update(sock, len(packets), time.monotonic())
            beat = _heartbeat(root, lock, listener, beat)
    finally:
        if fleet:
            fleet.stop()
        commands.stop()
        sock.close()
        decision_log.close()  # the summary of the last, short period
        log.info("listener stopped pid=%d", os.getpid())
        os.close(lock)
    return 0


def open_replay_cache(root: Root, config: Config, grants: Grants, now: float) -> ReplayCache:
    """Load the cache; if it cannot be trusted, fail closed (see awp.knockd.replay)."""
    replay = ReplayCache(root.replay_cache)
    trust = replay.load()
    minute = otp.minute_of(now)
    if not trust.trusted:
        replay.distrust(trust.reason, minute, SKEW)
    else:
        try:
            lifetime = config.settings.autoclose
            replay.check_grants([now - (lifetime - left) for _, _, left in grants.list()], minute, SKEW)
        except (AwpError, OSError) as exc:
            replay.distrust(f"cannot read the grants to check {root.replay_cache}: {exc}", minute, SKEW)
    if replay.floor >= 0:
        log.warning("replay cache not trusted: %s; accepting only knocks made after minute %d "
                    "(from %s UTC on)", replay.trust.reason, replay.floor,
                    time.strftime("%H:%M:%S", time.gmtime((replay.floor + 1) * 60)))
    return replay


def _heartbeat(root: Root, lock: int, listener: Listener, last: float) -> float:
    """At most once a second: touch the pidfile (the supervisor watches its age), let the
    observers tick (the log's summary) and write the state `awp status` shows."""
    now = time.time()
    if now - last < 1.0:
        return last
    os.utime(lock)
    events.tick(listener.observers, now)
    replay = listener.replay
    if replay.floor >= 0 and otp.minute_of(now) > replay.floor + SKEW:
        replay.floor = -1
        log.info("replay cache trusted again: every knock it may have missed has expired")
    state = {"pid": os.getpid(), "heartbeat": int(now),
             "replay_cache": {"trusted": replay.floor < 0, "reason": replay.trust.reason,
                              "floor_minute": replay.floor if replay.floor >= 0 else None},
             **events.state(listener.observers)}
    if listener.fleet:
        state["fleet"] = listener.fleet.state()
    try:
        write_state(root.listener_state, state)
    except OSError as exc:
        log.debug("cannot write %s: %s", root.listener_state, exc)
    return now


def write_state(path, state: dict) -> None:
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def _handle_one(listener: Listener, packet: Packet) -> None:
    """One packet; a failure (say, a door's grant list removed by a re-apply) is logged and
    the listener carries on."""
    try:
        listener.handle(packet, time.time())
    except (AwpError, OSError) as exc:
        log.error("knock not handled src=%s knock_port=%d: %s", packet.src, packet.dport, exc)


def _start_fleet(root: Root, listener: Listener):
    """Fleet mode (awp.fleet): the replay claim as the gate, accepted grants published by an
    observer, and the fleet's live grants applied before the listener says it is ready."""
    from awp.fleet.node import Fleet, fleet_settings

    fs = fleet_settings(root, listener.config.settings)
    if fs is None:
        return None
    fleet = Fleet(fs)
    listener.fleet, listener.gate = fleet, fleet.gate
    listener.observers.append(fleet.observe)
    fleet.start()
    _drain(listener)
    return fleet


def _restart_on_fleet_change(old, new) -> None:
    """The fleet client is built at start: a change of its settings ends this listener (as
    SIGTERM does), and the supervisor or systemd starts it again with them."""
    if any(getattr(old, f) != getattr(new, f) for f in ("fleet", "node", "fleet_required")):
        log.warning("fleet settings changed: the listener restarts to apply them")
        os.kill(os.getpid(), signal.SIGTERM)


def _drain(listener: Listener) -> None:
    listener.fleet.drain(listener.grants, {d.port for d in listener.doors.values()}, time.time())


def _open(config: Config) -> NflogSocket:
    group = config.settings.nflog_group
    try:
        return NflogSocket(group, copy_range=256, rcvbuf=RCVBUF)
    except OSError as exc:
        raise ListenerError(f"cannot bind NFLOG group {group}: {exc}") from None


def _reload(root: Root, listener: Listener, sock: NflogSocket) -> NflogSocket:
    try:
        config = load_config(root)
    except AwpError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)
        return sock
    old_group = listener.config.settings.nflog_group
    _restart_on_fleet_change(listener.config.settings, config.settings)
    listener.configure(config)
    for observer in listener.observers:
        if isinstance(observer, DoorCommands):
            observer.configure(config)
    listener.grants = select(config.settings.backend).grants(config)
    use_settings(config.settings)
    log.info("listener reloaded doors=%d", len(listener.doors))
    if config.settings.nflog_group != old_group:
        sock.close()
        return _open(config)
    return sock
