"""Parsers for the two list files. Every error names file, line and field.

simple-portknock-list:    PORT:KNOCK,KNOCK,...           e.g. 22:7001,1234,9876
advanced-portknock-list:  PORT,KNOCKPORT,OPEN,CLOSE      e.g. 22,2000,opensecret,closesecret

Blank lines and lines whose first non-blank character is '#' are ignored. One line may hold
several doors separated by blanks (spaces or tabs), as in `22:1,2,3 23:4,5,6`: no field ever
contains a blank, so a blank always ends a door. A blank beside a ':' or ',' and anything after
the doors (trailing comments included) are refused. Errors about the advanced list never show
field values, so that a secret cannot leak into a terminal or a log.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from awp.errors import ConfigError
from awp.model import AdvancedDoor, Origin, Secret, SimpleDoor
from awp.textfile import read_text

MAX_KNOCKS = 16
SECRET_MAX_BYTES = 128
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
_BLANKS = re.compile(r"[ \t]+")
_ADVANCED_FIELDS = ("protected port (field 1)", "knock port (field 2)", "open secret (field 3)",
                    "close secret (field 4)")


@dataclass(frozen=True)
class Spot:
    """Where a door is read: file, line, and which door on that line if it holds several."""

    path: str
    line: int
    door: int | None = None

    @property
    def origin(self) -> Origin:
        return Origin(self.path, self.line)

    def error(self, message: str) -> ConfigError:
        prefix = f"door {self.door} on this line: " if self.door else ""
        return ConfigError(prefix + message, path=self.path, line=self.line)


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line that is not blank or a comment."""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip(" \t")
        if stripped and not stripped.startswith("#"):
            yield number, line


def parse_port(token: str, field: str, where: Spot | Origin, *, show: bool = True) -> int:
    """A port number: ASCII digits, no sign, no leading zero, 1-65535."""
    spot = where if isinstance(where, Spot) else Spot(where.path, where.line)
    shown = f' "{token}"' if show else ""
    if token == "":
        raise spot.error(f"{field} is missing")
    if not _PORT_RE.fullmatch(token):
        raise spot.error(f"{field}{shown} is not a port number (1-65535)")
    if len(token) > 1 and token.startswith("0"):
        raise spot.error(f"{field}{shown} has a leading zero")
    port = int(token)
    if not 1 <= port <= 65535:
        raise spot.error(f"{field}{shown} is out of range 1-65535")
    return port


def split_doors(line: str, spot: Spot, field_at) -> list[tuple[str, Spot]]:
    """The doors written on one line, each with its Spot (numbered if the line has several).

    `line` has no leading blank. field_at(text) names the field that ends `text`, the part of a
    door before a blank; a blank beside a separator or at the end is refused with that name."""
    _refuse_blank_beside(line, spot, field_at)
    tokens = _BLANKS.split(line)
    if any(token.startswith("#") for token in tokens):
        raise spot.error("comments must be on a line of their own")
    many = len(tokens) > 1
    return [(token, replace(spot, door=i if many else None)) for i, token in enumerate(tokens, start=1)]


def _refuse_blank_beside(line: str, spot: Spot, field_at) -> None:
    for m in _BLANKS.finditer(line):
        before, after = line[m.start() - 1:m.start()], line[m.end():m.end() + 1]
        if before in ":," or after in ":," or not after:  # not after: the end of the line
            head = line[:m.start()]
            door = len(_BLANKS.split(head))
            token = _BLANKS.split(head)[-1]
            where = replace(spot, door=door if (door > 1 or m.end() < len(line)) else None)
            raise where.error(f"{field_at(token)} has whitespace next to it; blanks separate "
                              "doors and never appear inside one")


# --- simple list -------------------------------------------------------------------------


def load_simple(path: Path) -> tuple[SimpleDoor, ...]:
    return parse_simple(read_text(path, what="simple knock list"), str(path))


def parse_simple(text: str, path: str) -> tuple[SimpleDoor, ...]:
    found = [(_simple_door(token, spot), spot) for number, line in content_lines(text)
             for token, spot in split_doors(line.strip(" \t"), Spot(path, number), _simple_field)]
    _refuse_duplicate_ports(found)
    return tuple(door for door, _ in found)


def _simple_field(text: str) -> str:
    """The field that ends `text`, a beginning of PORT:KNOCK,KNOCK,..."""
    if ":" not in text:
        return "protected port"
    return f"knock {text.split(':', 1)[1].count(',') + 1}"


def _simple_door(token: str, spot: Spot) -> SimpleDoor:
    if token.count(":") != 1:
        raise spot.error('expected PORT:KNOCK,KNOCK,... with exactly one ":"')
    port_text, knocks_text = token.split(":")
    port = parse_port(port_text, "protected port", spot)
    if not knocks_text:
        raise spot.error("knock sequence is empty")
    tokens = knocks_text.split(",")
    if len(tokens) > MAX_KNOCKS:
        raise spot.error(f"knock sequence has {len(tokens)} knocks; at most {MAX_KNOCKS} are allowed")
    steps = [_knock(tok, i, spot) for i, tok in enumerate(tokens, start=1)]
    knocks = tuple(knock for knock, _ in steps)
    _check_sequence(port, knocks, spot)
    udp = frozenset(knock for knock, proto in steps if proto == "udp")
    return SimpleDoor(port=port, knocks=knocks, origin=spot.origin, udp=udp)


def _knock(token: str, index: int, spot: Spot) -> tuple[int, str]:
    """A knock port and its protocol: 2002 or 2002/tcp (a TCP SYN), 2002/udp (a datagram).
    AEO's lists hold digits only, so the suffix never changes what an AEO list means."""
    if token == "":
        raise spot.error(f"knock {index} is empty (stray comma?)")
    proto = "tcp"
    if "/" in token:
        token, proto = token.split("/", 1)
        if proto not in ("tcp", "udp"):
            raise spot.error(f'knock {index} has protocol "{proto}"; write /tcp or /udp (TCP if none)')
    return parse_port(token, f"knock {index}", spot), proto


def _check_sequence(port: int, knocks: tuple[int, ...], spot: Spot) -> None:
    seen: dict[int, int] = {}
    for index, knock in enumerate(knocks, start=1):
        if knock == port:
            raise spot.error(f"knock {index} ({knock}) is the protected port itself")
        if knock in seen:
            how = "twice in a row" if seen[knock] == index - 1 else f"again (first as knock {seen[knock]})"
            raise spot.error(f"knock {index} ({knock}) appears {how}; each knock port may be used once")
        seen[knock] = index


def _refuse_duplicate_ports(found) -> None:
    """found: (door, spot) pairs in file order."""
    first: dict[int, Spot] = {}
    for door, spot in found:
        if door.port in first:
            earlier = first[door.port]
            where = (f"on this line (door {earlier.door})" if earlier.line == spot.line
                     else f"on line {earlier.line}")
            raise spot.error(f"protected port {door.port} is already listed {where}")
        first[door.port] = spot


# --- advanced list -----------------------------------------------------------------------


def load_advanced(path: Path) -> tuple[AdvancedDoor, ...]:
    check_secret_file(path)
    return parse_advanced(read_text(path, what="advanced knock list"), str(path))


def check_secret_file(path: Path) -> None:
    """The advanced list holds secrets: a regular root-owned file nobody else can read."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConfigError("advanced knock list does not exist", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read advanced knock list: {exc.strerror}", path=str(path)) from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError("advanced knock list is a symbolic link; refusing it", path=str(path))
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("advanced knock list is not a regular file", path=str(path))
    if st.st_uid != 0:
        raise ConfigError(f"advanced knock list is owned by uid {st.st_uid}, not root; it holds secrets: "
                          f"fix it with: chown root {path}", path=str(path))
    if st.st_mode & 0o077:
        raise ConfigError(f"advanced knock list has mode {stat.S_IMODE(st.st_mode):04o}; it holds secrets and "
                          f"must not be accessible by group or others: fix it with: chmod 600 {path}",
                          path=str(path))


def parse_advanced(text: str, path: str) -> tuple[AdvancedDoor, ...]:
    found = [(_advanced_door(token, spot), spot) for number, line in content_lines(text)
             for token, spot in split_doors(line.lstrip(" \t"), Spot(path, number), _advanced_field)]
    _refuse_duplicate_ports(found)
    return tuple(door for door, _ in found)


def _advanced_field(text: str) -> str:
    """The field that ends `text`, a beginning of PORT,KNOCKPORT,OPENSECRET,CLOSESECRET."""
    index = text.count(",")
    return _ADVANCED_FIELDS[index] if index < len(_ADVANCED_FIELDS) else f"field {index + 1}"


def _advanced_door(token: str, spot: Spot) -> AdvancedDoor:
    fields = token.split(",")
    if len(fields) != 4:
        raise spot.error(f"expected 4 comma-separated fields PORT,KNOCKPORT,OPENSECRET,CLOSESECRET, "
                         f"found {len(fields)} (a secret cannot contain a comma or a blank)")
    port = parse_port(fields[0], _ADVANCED_FIELDS[0], spot, show=False)
    knock = parse_port(fields[1], _ADVANCED_FIELDS[1], spot, show=False)
    if knock == port:
        raise spot.error("knock port (field 2) is the protected port itself")
    opener = _secret(fields[2], _ADVANCED_FIELDS[2], spot)
    closer = _secret(fields[3], _ADVANCED_FIELDS[3], spot)
    if opener == closer:
        raise spot.error("open secret and close secret are the same")
    return AdvancedDoor(port=port, knock_port=knock, open_secret=opener, close_secret=closer, origin=spot.origin)


def _secret(token: str, field: str, spot: Spot) -> Secret:
    """The secret's UTF-8 bytes, 1 to SECRET_MAX_BYTES. Short ones draw a warning (checks.py)."""
    data = token.encode("utf-8")
    if not data:
        raise spot.error(f"{field} is empty")
    if token != token.strip():
        raise spot.error(f"{field} has leading or trailing whitespace")
    if len(data) > SECRET_MAX_BYTES:
        raise spot.error(f"{field} is longer than {SECRET_MAX_BYTES} bytes")
    return Secret(data)
