"""The door options file, DIR/etc/firewall/portknock-doors (configobj). Optional.

One section per door, named by the door's protected port in either list:

    [22]
    ports = 22, 443, 8000-8010     # more protected ports, opened by the same knock
    [2222]
    forward = 198.18.2.2:22        # after a knock, the knocker's connections go there
    forward6 = [2001:2::2]:22
    on_open = /usr/bin/logger -t awp opened   # split with shlex, run without a shell
    on_close = /usr/bin/logger -t awp closed
    run_as = nobody
    timeout = 10

Every value is parsed and validated here (pure: no I/O). What needs the host (a route to the
inner address, whether it is one of this host's own) is checked by awp.checks. Every error
names the file, the line and the field.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path

from configobj import ConfigObj, ConfigObjError

from awp.errors import ConfigError
from awp.lists import parse_port
from awp.model import DoorOptions, Endpoint, Origin
from awp.textfile import read_text

KEYS = ("ports", "forward", "forward6", "on_open", "on_close", "run_as", "timeout")
DEFAULT_RUN_AS = "nobody"
DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 300
MAX_DOOR_PORTS = 256  # protected ports of one door, its own included
_RANGE_RE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})", re.ASCII)
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)
_TIMEOUT_RE = re.compile(r"[0-9]{1,3}", re.ASCII)
_SECTION_RE = re.compile(r"\s*\[\s*([^\]]*?)\s*\]")
_KEY_RE = re.compile(r"\s*([^=\s]+)\s*=")


def load_door_options(path: Path) -> tuple[DoorOptions, ...]:
    """The options of every door; () when the file does not exist (it is optional)."""
    if not path.exists():
        return ()
    return parse_door_options(read_text(path, what="door options file"), str(path))


def parse_door_options(text: str, path: str) -> tuple[DoorOptions, ...]:
    lines = text.split("\n")
    try:
        conf = ConfigObj(lines, list_values=False, interpolation=False, file_error=False)
    except ConfigObjError as exc:
        first = (getattr(exc, "errors", None) or [exc])[0]
        what = "duplicate section or key" if "Duplicate" in str(first) else "cannot parse"
        raise ConfigError(what, path=path, line=getattr(first, "line_number", None)) from None
    where = _Lines(lines, path)
    for key in conf.scalars:
        raise where.error(None, key, f'"{key}" is outside a section; begin with a door\'s section, as [22]')
    return tuple(sorted((_door(name, conf[name], where) for name in conf.sections), key=lambda o: o.port))


class _Lines:
    """Line numbers of sections and keys, for errors (configobj does not keep them)."""

    def __init__(self, lines: list[str], path: str):
        self.path = path
        self.text = lines
        self.keys: dict[tuple[str | None, str], int] = {}
        self.sections: dict[str, int] = {}
        section = None
        for number, line in enumerate(lines, start=1):
            head = _SECTION_RE.match(line)
            if head and not line.lstrip().startswith("#"):
                section = head.group(1).strip("[] ")
                self.sections.setdefault(section, number)
                continue
            key = _KEY_RE.match(line)
            if key and not line.lstrip().startswith("#"):
                self.keys.setdefault((section, key.group(1)), number)

    def line(self, section: str | None, key: str | None) -> int | None:
        if key is None:
            return self.sections.get(section or "")
        return self.keys.get((section, key), self.sections.get(section or ""))

    def error(self, section: str | None, key: str | None, message: str) -> ConfigError:
        field = f"[{section}] {key}: " if (section and key) else (f"[{section}]: " if section else "")
        return ConfigError(field + message, path=self.path, line=self.line(section, key))


def _door(name: str, section, where: _Lines) -> DoorOptions:
    line = where.line(name, None) or 0
    origin = Origin(where.path, line)
    if not re.fullmatch(r"[0-9]{1,5}", name, re.ASCII):
        raise where.error(name, None, "a section is named by a door's protected port, as [22]")
    port = parse_port(name, "section", origin)
    for sub in section.sections:
        raise where.error(name, None, f'sub-section "[[{sub}]]" is not allowed')
    for key in section.scalars:
        if key not in KEYS:
            raise where.error(name, key, f'unknown option "{key}" (known: {", ".join(KEYS)})')
    values = {key: section[key] for key in section.scalars}
    fields = lambda key: _Field(where, name, key)  # noqa: E731
    options = DoorOptions(
        port=port,
        ports=_ports(values.get("ports"), port, fields("ports")),
        forward=_endpoint(values.get("forward"), 4, fields("forward")),
        forward6=_endpoint(values.get("forward6"), 6, fields("forward6")),
        on_open=_command(values.get("on_open"), fields("on_open")),
        on_close=_command(values.get("on_close"), fields("on_close")),
        run_as=_user(values.get("run_as"), fields("run_as")),
        timeout=_timeout(values.get("timeout"), fields("timeout")),
        origin=origin,
        lines=tuple((key, where.line(name, key) or line) for key in section.scalars),
    )
    if options.forward6 and not options.forward:
        raise where.error(name, "forward6", "forward6 needs forward (the IPv4 inner host) as well")
    if options.forwarded and len(options.all_ports) > 1:
        raise where.error(name, "ports", "a forwarded door has one port; give the other ports their own doors")
    return options


class _Field:
    def __init__(self, where: _Lines, section: str, key: str):
        self.where, self.section, self.key = where, section, key

    def error(self, message: str) -> ConfigError:
        return self.where.error(self.section, self.key, message)

    @property
    def origin(self) -> Origin:
        return Origin(self.where.path, self.where.line(self.section, self.key) or 0)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def _ports(value: str | None, own: int, field: _Field) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint (low, high) ranges, the door's own port included."""
    ranges = [(own, own)]
    if value is not None:
        text = _unquote(value)
        if not text:
            raise field.error("is empty")
        for index, token in enumerate((t.strip() for t in text.split(",")), start=1):
            ranges.append(_range(token, index, field))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for low, high in ranges:
        if merged and low <= merged[-1][1]:
            if (low, high) != (own, own) and merged[-1] != (own, own):
                raise field.error(f"port {low} is listed twice (ranges overlap)")
            if high > merged[-1][1]:  # the door's own port inside a range: fine
                merged[-1] = (merged[-1][0], high)
            continue
        merged.append((low, high))
    count = sum(high - low + 1 for low, high in merged)
    if count > MAX_DOOR_PORTS:
        raise field.error(f"{count} ports; a door has at most {MAX_DOOR_PORTS}")
    return tuple(merged)


def _range(token: str, index: int, field: _Field) -> tuple[int, int]:
    name = f"port {index}"
    if token == "":
        raise field.error(f"{name} is empty (stray comma?)")
    match = _RANGE_RE.fullmatch(token)
    if match:
        low = parse_port(match.group(1), f"[{field.section}] ports: {name}", field.origin)
        high = parse_port(match.group(2), f"[{field.section}] ports: {name}", field.origin)
        if low >= high:
            raise field.error(f'{name} "{token}" is not a range LOW-HIGH with LOW below HIGH')
        return low, high
    port = parse_port(token, f"[{field.section}] ports: {name}", field.origin)
    return port, port


def _endpoint(value: str | None, version: int, field: _Field) -> Endpoint | None:
    if value is None:
        return None
    text = _unquote(value)
    shape = "198.18.2.2:22" if version == 4 else "[2001:2::2]:22"
    match = (re.fullmatch(r"([0-9.]+):([0-9]+)", text, re.ASCII) if version == 4
             else re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)", text, re.ASCII))
    if not match:
        raise field.error(f'"{text}" is not HOST:PORT of an IPv{version} address, as {shape}')
    try:
        address = ipaddress.ip_address(match.group(1))
    except ValueError:
        raise field.error(f'"{match.group(1)}" is not an IPv{version} address') from None
    if address.version != version:
        raise field.error(f'"{match.group(1)}" is not an IPv{version} address')
    if address.is_unspecified or address.is_multicast or address.is_loopback or address.is_link_local \
            or (version == 4 and address == ipaddress.IPv4Address("255.255.255.255")):
        raise field.error(f"{address} cannot be an inner host (unspecified, multicast, loopback or link-local)")
    port = parse_port(match.group(2), f"[{field.section}] {field.key}: port", field.origin)
    return Endpoint(address, port)


def _command(value: str | None, field: _Field) -> tuple[str, ...]:
    """argv for execve: shlex words, never a shell; the program is an absolute path. configobj
    ends the value at a '#' even inside quotes, so a command line may hold none."""
    if value is None:
        return ()
    line = field.where.line(field.section, field.key)
    if line and "#" in field.where.text[line - 1].split("=", 1)[1]:
        raise field.error("a command line cannot hold # (it begins a comment, even in quotes); "
                          "put a comment on a line of its own")
    try:
        argv = tuple(shlex.split(value, comments=False, posix=True))
    except ValueError as exc:
        raise field.error(f"cannot split the command line: {exc}") from None
    if not argv or not argv[0]:
        raise field.error("is empty")
    program = argv[0]
    if not program.startswith("/") or "/../" in program + "/" or "//" in program:
        raise field.error(f'the program must be an absolute path, as /usr/bin/logger, not "{program}"')
    return argv


def _user(value: str | None, field: _Field) -> str:
    if value is None:
        return DEFAULT_RUN_AS
    user = _unquote(value)
    if not _USER_RE.fullmatch(user):
        raise field.error(f'"{user}" is not a user name')
    if user == "root":
        raise field.error("commands never run as root; name an unprivileged user (default nobody)")
    return user


def _timeout(value: str | None, field: _Field) -> int:
    if value is None:
        return DEFAULT_TIMEOUT
    text = _unquote(value)
    if not _TIMEOUT_RE.fullmatch(text) or not 1 <= int(text) <= MAX_TIMEOUT:
        raise field.error(f'"{text}" is not a number of seconds 1-{MAX_TIMEOUT}')
    return int(text)
