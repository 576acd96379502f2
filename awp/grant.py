"""`awp grant` and `awp revoke`: an admin opens or closes an advanced door for one source by
hand, through the same kernel grant store the listener writes (awp.backend.Grants), so a
hand grant expires in the kernel exactly as a knock's does.

Only advanced doors take hand grants. A simple door's kernel state is an open window (a
few seconds to connect, FW_PORTKNOCK_OPEN_WINDOW), not a grant with a lifetime, so a grant
there would mean something else on each backend; awp refuses it (awp(8), GRANTS).

A small record (DIR/var/lib/awp/grants-by-hand, JSON) remembers who granted what until when, so
`awp status` can tell a hand grant from a knock's; the kernel stays the only authority on
whether a grant exists and how long it has left.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass

from awp.backend import Address, SourceState, select
from awp.errors import AwpError, EnvironmentProblem, UsageError
from awp.load import load_config
from awp.model import Config
from awp.paths import Root

log = logging.getLogger(__name__)
RECORD_SLACK = 3  # seconds a kernel grant's time left may differ from the record's
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
_SECONDS_RE = re.compile(r"[0-9]{1,7}", re.ASCII)
_ADDR_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}", re.ASCII)


@dataclass(frozen=True)
class Granted:
    port: int
    source: str
    seconds: int
    note: str | None = None  # a warning for the admin (the kernel does not hold this configuration)


def parse_address(text: str) -> Address:
    """A single unicast IPv4 or IPv6 address, written plainly (no prefix, zone or host name)."""
    try:
        if not _ADDR_RE.fullmatch(text):
            raise ValueError
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an IPv4 or IPv6 address") from None
    if addr.is_unspecified or addr.is_multicast or (addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255")):
        raise UsageError(f"{addr} is not a single source address")
    if addr.version == 6 and addr.ipv4_mapped:
        raise UsageError(f"{addr} is an IPv4-mapped address; give the IPv4 address {addr.ipv4_mapped}")
    return addr


def parse_port(text: str) -> int:
    if not _PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise UsageError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_seconds(text: str | None, autoclose: int) -> int:
    """--for SECONDS: 1 to FW_PORTKNOCK_AUTOCLOSE (a knock's lifetime); default that lifetime."""
    if text is None:
        return autoclose
    if not _SECONDS_RE.fullmatch(text) or not 1 <= int(text) <= autoclose:
        raise UsageError(f"--for {text!r}: give whole seconds from 1 to FW_PORTKNOCK_AUTOCLOSE ({autoclose})")
    return int(text)


def _door_port(config: Config, port: int, addr: Address) -> int:
    if any(d.port == port for d in config.active_advanced):
        if addr.version == 6 and not config.settings.ipv6:
            raise UsageError(f"{addr} is IPv6 and FW_PORTKNOCK_IPV6 is off")
        return port
    if any(d.port == port for d in config.active_simple):
        raise UsageError(f"port {port} is a simple door: grants go to advanced doors only (a simple door "
                         "opens for FW_PORTKNOCK_OPEN_WINDOW seconds after its sequence; see awp(8), GRANTS)")
    doors = sorted(d.port for d in config.active_advanced)
    raise UsageError(f"port {port} is no advanced door"
                     + (f" (advanced doors: {', '.join(map(str, doors))})" if doors else
                        " (no advanced door is active: FW_PORTKNOCK_ADVANCED off or an empty list)"))


def grant(root: Root, address: str, port: str, seconds: str | None, user: str, runner=None) -> Granted:
    config = load_config(root)
    addr = parse_address(address)
    door = _door_port(config, parse_port(port), addr)
    ttl = parse_seconds(seconds, config.settings.autoclose)
    backend = select(config.settings.backend, runner)
    store = backend.grants(config)
    if ttl != config.settings.autoclose and not getattr(store, "ttl_per_grant", False):
        raise EnvironmentProblem(f"--for {ttl}: the {config.settings.backend} backend gives every grant "
                                 f"FW_PORTKNOCK_AUTOCLOSE ({config.settings.autoclose} s), as xt_recent keeps only "
                                 "when a source was last seen; --for needs the nftables backend")
    store.open(door, addr, ttl)
    _audit(root, f"awp grant by=admin user={user} src={addr} port={door} expires_in={ttl}s")
    _record(root, door, str(addr), {"by": "admin", "user": user, "until": int(time.time()) + ttl})
    return Granted(door, str(addr), ttl, _unapplied(config, backend))


def _unapplied(config: Config, backend) -> str | None:
    """The grant is in the kernel, but is the door? Not if the lists were edited since the
    last apply."""
    from awp.workflow import resolve_stealth

    try:
        if not backend.plan(resolve_stealth(config, backend)).changed:
            return None
    except AwpError:
        return None
    return "the kernel's rules differ from the configuration (edited since the last awp -s -f?): " \
           "the grant only works if the kernel's rules have this door"


def revoke(root: Root, address: str, port: str, user: str, runner=None) -> bool:
    """True: a grant was there and is gone; False: there was none (not an error)."""
    config = load_config(root)
    addr = parse_address(address)
    door = _door_port(config, parse_port(port), addr)
    store = select(config.settings.backend, runner).grants(config)
    done = store.close(door, addr)
    _audit(root, f"awp revoke by=admin user={user} src={addr} port={door} result={'revoked' if done else 'none'}")
    _record(root, door, str(addr), None)
    return done


def _audit(root: Root, line: str) -> None:
    """The decision's one log line, to stderr (logging) and to the listener's log, where
    every knock decision is, so one file shows who got in and why."""
    log.info("%s", line)
    path = root.listener_log
    if not path.parent.is_dir():
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{stamp} awp.grant: {line}\n")
    except OSError as exc:
        log.warning("cannot append to %s: %s", path, exc.strerror)


def admin_name() -> str:
    """Who ran the command: the sudo user, else the login name, else the uid."""
    name = os.environ.get("SUDO_USER") or os.environ.get("LOGNAME") or os.environ.get("USER")
    return name if name and re.fullmatch(r"[A-Za-z0-9._-]{1,32}", name, re.ASCII) else f"uid{os.getuid()}"


# --- the record of hand grants (for status only) ------------------------------------------


def _records_path(root: Root):
    return root.base / "var" / "lib" / "awp" / "grants-by-hand"


def records(root: Root) -> dict[str, dict]:
    """"port source" -> {"by", "until"}; nothing if the file is missing or unreadable."""
    try:
        with open(_records_path(root), "rb") as fh:
            doc = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _record(root: Root, port: int, source: str, entry: dict | None) -> None:
    now = time.time()
    found = {k: v for k, v in records(root).items()
             if isinstance(v, dict) and isinstance(v.get("until"), int) and v["until"] > now}
    key = f"{port} {source}"
    if entry is None:
        found.pop(key, None)
    else:
        found[key] = entry
    path = _records_path(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump(found, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s (status will not tell this grant was by hand)", path, exc.strerror)


def label_hand_grants(sources: tuple[SourceState, ...], found: dict[str, dict], now: float) -> tuple:
    """Relabel "granted" sources whose kernel time left matches a hand grant's record (a later
    knock from the same source resets the time, and then the grant is the knock's)."""
    out = []
    for s in sources:
        rec = found.get(f"{s.port} {s.source}")
        if s.state == "granted" and isinstance(rec, dict) and isinstance(rec.get("until"), int) \
                and abs((rec["until"] - now) - s.seconds_left) <= RECORD_SLACK:
            s = SourceState(s.port, s.source, f"granted by {rec.get('by', 'admin')}", s.seconds_left)
        out.append(s)
    return tuple(out)


