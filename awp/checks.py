"""Checks across doors and lists, and warnings about weak sequences.

Errors (ConfigError) make a configuration unusable. Warnings are printed by `awp check` and
`awp -s -f`; with FW_PORTKNOCK_STRICT="yes" they refuse the configuration instead.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from awp.errors import ConfigError, StrictRefused
from awp.model import AdvancedDoor, Config, Origin, SimpleDoor

log = logging.getLogger(__name__)

MIN_KNOCKS = 3
SECRET_WEAK_BYTES = 8  # shorter secrets draw a warning
SECRET_ADVICE_BYTES = 16  # what the warning recommends, in random bytes
PKNOCK_SECRET_MAX = 31  # iptables (libxt_pknock) cuts an xt_pknock secret to this many bytes


@dataclass(frozen=True)
class Finding:
    origin: Origin | None
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}" if self.origin else self.message


def check_config(config: Config, listening: frozenset[tuple[str, int]] = frozenset()) -> list[Finding]:
    """Raise ConfigError for conflicts; return warnings (refused instead when strict)."""
    _refuse_port_conflicts(config)
    _refuse_bad_commands(config)
    warnings = [*_settings_warnings(config), *_sequence_warnings(config), *_secret_warnings(config),
                *_listening_warnings(config, listening), *_empty_warnings(config)]
    if warnings and config.settings.strict:
        first = warnings[0]
        raise StrictRefused(f"{first.message} (FW_PORTKNOCK_STRICT is on)",
                            path=first.origin.path if first.origin else None,
                            line=first.origin.line if first.origin else None)
    return warnings


def _refuse_port_conflicts(config: Config) -> None:
    """Every port has one role: one door's protected port, or one door's knock port."""
    roles: dict[tuple[str, int], tuple[str, Origin]] = {}

    def claim(proto: str, port: int, role: str, origin: Origin) -> None:
        key = (proto, port)
        if key in roles:
            other_role, other = roles[key]
            raise ConfigError(f"{role} {port} is already used as {other_role} at {other}",
                              path=origin.path, line=origin.line)
        roles[key] = (role, origin)

    for door in config.active_simple:
        claim("tcp", door.port, "protected port", door.origin)
    for door in config.active_advanced:
        claim("tcp", door.port, "protected port", door.origin)
    for door in config.active_simple:
        for knock in door.knocks:
            claim(door.proto(knock), knock, "knock port", door.origin)
    numbers = {k: d for d in config.active_simple for k in d.knocks}
    for door in config.active_advanced:
        if ("tcp", door.knock_port) in roles:
            role, other = roles[("tcp", door.knock_port)]
            raise ConfigError(f"knock port (field 2) is already used as {role} at {other}",
                              path=door.origin.path, line=door.origin.line)
        claim("udp", door.knock_port, "knock port", door.origin)
    for door in config.active_simple:  # a simple knock port number means one knock, TCP or UDP
        for knock in door.knocks:
            other = numbers[knock]
            if other is not door and other.proto(knock) != door.proto(knock):
                raise ConfigError(f"knock port {knock} is a {door.proto(knock).upper()} knock here and a "
                                  f"{other.proto(knock).upper()} knock at {other.origin}; use another port",
                                  path=door.origin.path, line=door.origin.line)
    _refuse_option_conflicts(config, claim)


def _refuse_option_conflicts(config: Config, claim) -> None:
    """Every section of the door options file names a door; its extra ports are nobody else's."""
    doors = {d.port: d for d in (*config.active_simple, *config.active_advanced)}
    for options in config.options:
        if options.port not in doors:
            raise ConfigError(f"[{options.port}]: port {options.port} is no door's protected port in the "
                              "lists of the modes that are on", path=options.origin.path, line=options.origin.line)
    for options in config.options:
        where = options.origin_of("ports")
        for low, high in options.extra_ranges:
            for port in range(low, high + 1):
                claim("tcp", port, f"[{options.port}] ports: protected port", where)


def _settings_warnings(config: Config) -> list[Finding]:
    found = []
    old = config.settings.backend_alias
    if old is not None:
        found.append(Finding(None, f'FW_PORTKNOCK_BACKEND="{old}" is deprecated and will be refused in the '
                                   f'next release; write FW_PORTKNOCK_BACKEND="{config.settings.backend}"'))
    for version, everyone in ((4, "0.0.0.0/0"), (6, "::/0")):
        nets = [n for n in config.settings.allow if n.version == version]
        if nets and list(ipaddress.collapse_addresses(nets)) == [ipaddress.ip_network(everyone)]:
            found.append(Finding(None, f"FW_PORTKNOCK_ALLOW covers every IPv{version} address ({everyone}): "
                                       f"every door is open to all of IPv{version}, knock or not"))
    s = config.settings
    if s.ban and s.enabled and not s.allow:
        found.append(Finding(None, "FW_PORTKNOCK_BAN is on and FW_PORTKNOCK_ALLOW is empty: anyone who sends "
                                   "failed knocks with your address as their source can bar you from every "
                                   "knock port; put your management network in FW_PORTKNOCK_ALLOW (awp(8), BAN)"))
    return found


def _sequence_warnings(config: Config) -> list[Finding]:
    found = []
    for door in config.active_simple:
        if len(door.knocks) < MIN_KNOCKS:
            found.append(Finding(door.origin, f"door {door.port}: only {len(door.knocks)} knock(s); "
                                              f"use at least {MIN_KNOCKS}"))
        if is_scan_completable(door):
            found.append(Finding(door.origin, f"door {door.port}: knocks {_seq(door)} are in "
                                              "ascending or descending order, so a port scan in "
                                              "order (nmap -r) could open this door"))
    return found


def _secret_warnings(config: Config) -> list[Finding]:
    """Short secrets, and (for xt_pknock clients) secrets longer than xt_pknock keeps. The
    messages give lengths and field numbers, never a secret."""
    found = []
    for door in config.active_advanced:
        for field, secret in _secrets(door):
            size = len(secret.value)
            if size < SECRET_WEAK_BYTES:
                found.append(Finding(door.origin, f"door {door.port}: {_short_secret(field, size)}"))
            if config.settings.pknock_compat and size > PKNOCK_SECRET_MAX:
                found.append(Finding(door.origin, f"door {door.port}: {_long_for_pknock(field, size)}"))
    return found + _reused_secrets(config)


def _reused_secrets(config: Config) -> list[Finding]:
    """A secret used in two places (two doors, or one door's open and another's close): a
    knock made for one opens or closes the other too, and one leak costs both. Compared by
    digest, so no secret is kept or shown; the warning names both places."""
    import hashlib

    first: dict[bytes, tuple[AdvancedDoor, str]] = {}
    found = []
    for door in config.active_advanced:
        for field, secret in _secrets(door):
            key = hashlib.sha256(secret.value).digest()
            if key in first:
                other, other_field = first[key]
                found.append(Finding(door.origin, f"door {door.port}: {field} is the same as the {other_field} "
                                                  f"of door {other.port} ({other.origin}): a knock for one door "
                                                  "works on the other, and one leak opens both; give every door "
                                                  "its own secrets (awp secret)"))
            else:
                first[key] = (door, field)
    return found


def _short_secret(field: str, size: int) -> str:
    return (f"{field} is only {size} byte{'' if size == 1 else 's'}: one captured knock is enough to "
            "guess a short secret offline, and cheaply (a knock is HMAC-SHA256 over a message anyone "
            f"can rebuild); use at least {SECRET_ADVICE_BYTES} random bytes, e.g. openssl rand -hex "
            f"{SECRET_ADVICE_BYTES}")


def _long_for_pknock(field: str, size: int) -> str:
    return (f"{field} is {size} bytes, but iptables cuts xt_pknock secrets to {PKNOCK_SECRET_MAX}: an "
            f"xt_pknock host given it uses only its first {PKNOCK_SECRET_MAX} bytes, so one client cannot "
            "open both (FW_PORTKNOCK_PKNOCK_COMPAT is on); use at most "
            f"{PKNOCK_SECRET_MAX} bytes, e.g. openssl rand -hex 15")


def _secrets(door: AdvancedDoor):
    return (("open secret (field 3)", door.open_secret), ("close secret (field 4)", door.close_secret))


def is_scan_completable(door: SimpleDoor) -> bool:
    """True if a scanner walking ports in order (and retrying the filtered ones in order) can
    complete the sequence: any strictly ascending or descending sequence of 2+ knocks."""
    k = door.knocks
    if len(k) < 2:
        return False  # a single knock is reported as too short instead
    pairs = list(zip(k, k[1:]))
    return all(a < b for a, b in pairs) or all(a > b for a, b in pairs)


def _listening_warnings(config: Config, listening: frozenset[tuple[str, int]]) -> list[Finding]:
    found = []
    for door in config.active_simple:
        for knock in door.knocks:
            if ("tcp", knock) in listening:
                found.append(Finding(door.origin, f"door {door.port}: knock port {knock} is a "
                                                  "listening TCP socket on this host; awp drops its "
                                                  "new connections"))
    for door in config.active_advanced:
        if ("udp", door.knock_port) in listening:
            found.append(Finding(door.origin, f"door {door.port}: knock port {door.knock_port} is a bound "
                                              "UDP socket on this host; awp drops its packets"))
    return found


def _empty_warnings(config: Config) -> list[Finding]:
    s = config.settings
    found = []
    if s.enabled and s.simple and not config.simple:
        found.append(Finding(None, "simple mode is on but the simple knock list has no doors"))
    if s.enabled and s.advanced and not config.advanced:
        found.append(Finding(None, "advanced mode is on but the advanced knock list has no doors"))
    return found


def _seq(door: SimpleDoor) -> str:
    return ",".join(str(k) for k in door.knocks)


# --- what is listening on this host (this network namespace) ---------------------------------

_PROC = {"tcp": ("/proc/net/tcp", "/proc/net/tcp6"), "udp": ("/proc/net/udp", "/proc/net/udp6")}
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


def listening_sockets(read=lambda p: Path(p).read_text()) -> frozenset[tuple[str, int]]:
    """(proto, port) of listening TCP and bound unconnected UDP sockets of this namespace."""
    found: set[tuple[str, int]] = set()
    for proto, paths in _PROC.items():
        state = _TCP_LISTEN if proto == "tcp" else _UDP_UNCONNECTED
        for path in paths:
            try:
                found |= {(proto, port) for port in parse_proc_net(read(path), state)}
            except OSError:
                log.debug("cannot read %s", path)
    return frozenset(found)


def parse_proc_net(text: str, state: str) -> set[int]:
    ports = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[3] == state and ":" in cols[1]:
            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# --- door commands (on_open, on_close of portknock-doors) ---------------------------------


def _refuse_bad_commands(config: Config) -> None:
    """A door command's program exists, is a file its run_as user may execute, and nobody
    but root (or that user) can change it or a directory above it; its user exists."""
    import pwd

    active = {d.port for d in (*config.active_simple, *config.active_advanced)}
    for options in config.options:
        if options.port not in active:
            continue
        for key in ("on_open", "on_close"):
            argv = getattr(options, key)
            if not argv:
                continue
            where = options.origin_of(key)
            try:
                user = pwd.getpwnam(options.run_as)
            except KeyError:
                where = options.origin_of("run_as")
                raise ConfigError(f"[{options.port}] run_as: no such user {options.run_as!r} on this host",
                                  path=where.path, line=where.line) from None
            problem = command_problem(argv[0], user.pw_uid, _groups(user), user.pw_name)
            if problem:
                raise ConfigError(f"[{options.port}] {key}: {problem}", path=where.path, line=where.line)


def _groups(user) -> frozenset[int]:
    import os

    return frozenset(os.getgrouplist(user.pw_name, user.pw_gid))


def command_problem(program: str, uid: int, gids: frozenset[int], name: str = "") -> str | None:
    """Why `program` may not be run as uid (None if it may)."""
    import os
    import stat

    name = name or f"uid {uid}"
    try:
        real = os.path.realpath(program, strict=True)
        st = os.stat(real)
    except OSError as exc:
        return f"{program}: {exc.strerror.lower() if exc.strerror else 'cannot be read'}"
    if not stat.S_ISREG(st.st_mode):
        return f"{program} is not a regular file"
    if not _may(st, uid, gids, 0o1):
        return f"{program} is not executable by user {name}"
    trusted = (0, uid)
    if st.st_uid not in trusted:
        return f"{real} belongs to user {st.st_uid}, who could change it: it must be root's"
    if st.st_mode & 0o022:
        return f"{real} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it"
    parent = os.path.dirname(real)
    while True:
        dst = os.stat(parent)
        if not _may(dst, uid, gids, 0o1):
            return f"directory {parent} cannot be entered by user {name}, who runs {program}"
        sticky = dst.st_mode & stat.S_ISVTX
        if dst.st_uid not in trusted or (dst.st_mode & 0o022 and not sticky):
            return f"directory {parent} is writable by others: {program} could be replaced"
        if parent == "/":
            return None
        parent = os.path.dirname(parent)


def _may(st, uid: int, gids: frozenset[int], bit: int) -> bool:
    """Whether uid (in gids) has permission `bit` (1 = x) by st's mode; root needs any x bit."""
    if uid == 0:
        return bool(st.st_mode & 0o111)
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def listener_notes(config: Config) -> list[str]:
    """What `awp check` says about the listener beyond advanced mode."""
    from awp.model import commanded_simple_ports

    return [f"simple door {port} has commands (portknock-doors): the listener runs for it, "
            "and awp -s -f starts it" for port in commanded_simple_ports(config)]


# --- where a forwarding door sends its knockers (portknock-doors `forward`) -------------------


def route_kind(address, runner=None) -> str:
    """"local" (an address of this host), "none" (no route) or "route", as `ip route get`
    says in this network namespace; "unknown" where `ip` cannot tell."""
    from awp.backend.runner import run
    from awp.errors import EnvironmentProblem

    try:
        result = (runner or run)(["ip", "-j", "route", "get", str(address)])
    except EnvironmentProblem:
        return "unknown"
    if result.returncode != 0:
        return "none" if "unreachable" in result.stderr.lower() else "unknown"
    try:
        import json
        routes = json.loads(result.stdout or "[]")
    except ValueError:
        return "unknown"
    if any(r.get("type") in ("local", "broadcast", "multicast") for r in routes):
        return "local"
    return "route" if routes else "none"


def check_forwards(config: Config, route=route_kind) -> list[Finding]:
    """Refuse a forward to an address of this host (that is a local port, not an inner host)
    or to one no route reaches; `route(address)` says which (I/O: not in the parser)."""
    active = {d.port for d in (*config.active_simple, *config.active_advanced)}
    found = []
    for options in config.options:
        if options.port not in active:
            continue
        for key in ("forward", "forward6"):
            target = getattr(options, key)
            if target is None:
                continue
            where = options.origin_of(key)
            kind = route(target.address)
            if kind == "local":
                raise ConfigError(f"[{options.port}] {key}: {target.address} is an address of this host; a forward "
                                  "goes to another (inner) host, a local port needs no forward",
                                  path=where.path, line=where.line)
            if kind == "none":
                raise ConfigError(f"[{options.port}] {key}: no route to {target.address} (ip route get); the "
                                  "inner host must be reachable from this host", path=where.path, line=where.line)
            if kind == "unknown":
                found.append(Finding(where, f"[{options.port}] {key}: cannot tell whether {target.address} is "
                                            "reachable (ip route get failed)"))
    return found
