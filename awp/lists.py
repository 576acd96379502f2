"""Parsers for the two list files. Every error names file, line and field.

simple-portknock-list:    PORT:KNOCK,KNOCK,...           e.g. 22:7001,1234,9876
advanced-portknock-list:  PORT,KNOCKPORT,OPEN,CLOSE      e.g. 22,2000,opensecret,closesecret

Blank lines and lines whose first non-blank character is '#' are ignored. Nothing else may
follow the fields on a line (no trailing comments). Errors about the advanced list never
show field values, so that a secret cannot leak into a terminal or a log.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from awp.errors import ConfigError
from awp.model import AdvancedDoor, Origin, Secret, SimpleDoor
from awp.textfile import read_text

MAX_KNOCKS = 16
SECRET_MIN_BYTES = 8
SECRET_MAX_BYTES = 128
_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line that is not blank or a comment."""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip(" \t")
        if stripped and not stripped.startswith("#"):
            yield number, line


def parse_port(token: str, field: str, where: Origin, *, show: bool = True) -> int:
    """A port number: ASCII digits, no sign, no leading zero, 1-65535."""
    shown = f' "{token}"' if show else ""
    if token == "":
        raise ConfigError(f"{field} is missing", path=where.path, line=where.line)
    if not _PORT_RE.fullmatch(token):
        raise ConfigError(f"{field}{shown} is not a port number (1-65535)", path=where.path, line=where.line)
    if len(token) > 1 and token.startswith("0"):
        raise ConfigError(f"{field}{shown} has a leading zero", path=where.path, line=where.line)
    port = int(token)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{field}{shown} is out of range 1-65535", path=where.path, line=where.line)
    return port


# --- simple list -------------------------------------------------------------------------


def load_simple(path: Path) -> tuple[SimpleDoor, ...]:
    return parse_simple(read_text(path, what="simple knock list"), str(path))


def parse_simple(text: str, path: str) -> tuple[SimpleDoor, ...]:
    doors = tuple(_simple_line(line, Origin(path, number)) for number, line in content_lines(text))
    _refuse_duplicate_ports(doors)
    return doors


def _simple_line(line: str, where: Origin) -> SimpleDoor:
    line = line.strip(" \t")
    _refuse_inline_whitespace(line, where)
    if line.count(":") != 1:
        raise ConfigError('expected PORT:KNOCK,KNOCK,... with exactly one ":"', path=where.path, line=where.line)
    port_text, knocks_text = line.split(":")
    port = parse_port(port_text, "protected port", where)
    if not knocks_text:
        raise ConfigError("knock sequence is empty", path=where.path, line=where.line)
    tokens = knocks_text.split(",")
    if len(tokens) > MAX_KNOCKS:
        raise ConfigError(f"knock sequence has {len(tokens)} knocks; at most {MAX_KNOCKS} are allowed",
                          path=where.path, line=where.line)
    knocks = tuple(_knock(tok, i, where) for i, tok in enumerate(tokens, start=1))
    _check_sequence(port, knocks, where)
    return SimpleDoor(port=port, knocks=knocks, origin=where)


def _knock(token: str, index: int, where: Origin) -> int:
    if token == "":
        raise ConfigError(f"knock {index} is empty (stray comma?)", path=where.path, line=where.line)
    return parse_port(token, f"knock {index}", where)


def _check_sequence(port: int, knocks: tuple[int, ...], where: Origin) -> None:
    seen: dict[int, int] = {}
    for index, knock in enumerate(knocks, start=1):
        if knock == port:
            raise ConfigError(f"knock {index} ({knock}) is the protected port itself",
                              path=where.path, line=where.line)
        if knock in seen:
            how = "twice in a row" if seen[knock] == index - 1 else f"again (first as knock {seen[knock]})"
            raise ConfigError(f"knock {index} ({knock}) appears {how}; each knock port may be used once",
                              path=where.path, line=where.line)
        seen[knock] = index


def _refuse_inline_whitespace(line: str, where: Origin) -> None:
    if " " in line or "\t" in line:
        what = "comments must be on a line of their own" if "#" in line else "unexpected whitespace"
        raise ConfigError(what, path=where.path, line=where.line)


def _refuse_duplicate_ports(doors) -> None:
    first: dict[int, Origin] = {}
    for door in doors:
        if door.port in first:
            raise ConfigError(f"protected port {door.port} is already listed on line {first[door.port].line}",
                              path=door.origin.path, line=door.origin.line)
        first[door.port] = door.origin


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
        raise ConfigError(f"advanced knock list is owned by uid {st.st_uid}, not root", path=str(path))
    if st.st_mode & 0o077:
        raise ConfigError(f"advanced knock list has mode {stat.S_IMODE(st.st_mode):04o}; it holds "
                          "secrets and must not be accessible by group or others (chmod 600)", path=str(path))


def parse_advanced(text: str, path: str) -> tuple[AdvancedDoor, ...]:
    doors = tuple(_advanced_line(line, Origin(path, number)) for number, line in content_lines(text))
    _refuse_duplicate_ports(doors)
    return doors


def _advanced_line(line: str, where: Origin) -> AdvancedDoor:
    fields = line.lstrip(" \t").split(",")
    if len(fields) != 4:
        raise ConfigError(f"expected 4 comma-separated fields PORT,KNOCKPORT,OPENSECRET,CLOSESECRET, "
                          f"found {len(fields)}", path=where.path, line=where.line)
    port = parse_port(fields[0], "protected port (field 1)", where, show=False)
    knock = parse_port(fields[1], "knock port (field 2)", where, show=False)
    if knock == port:
        raise ConfigError("knock port (field 2) is the protected port itself", path=where.path, line=where.line)
    opener = _secret(fields[2], "open secret (field 3)", where)
    closer = _secret(fields[3], "close secret (field 4)", where)
    if opener == closer:
        raise ConfigError("open secret and close secret are the same", path=where.path, line=where.line)
    return AdvancedDoor(port=port, knock_port=knock, open_secret=opener, close_secret=closer, origin=where)


def _secret(token: str, field: str, where: Origin) -> Secret:
    data = token.encode("utf-8")
    if not data:
        raise ConfigError(f"{field} is empty", path=where.path, line=where.line)
    if token != token.strip():
        raise ConfigError(f"{field} has leading or trailing whitespace", path=where.path, line=where.line)
    if len(data) < SECRET_MIN_BYTES:
        raise ConfigError(f"{field} is shorter than {SECRET_MIN_BYTES} bytes", path=where.path, line=where.line)
    if len(data) > SECRET_MAX_BYTES:
        raise ConfigError(f"{field} is longer than {SECRET_MAX_BYTES} bytes", path=where.path, line=where.line)
    return Secret(data)
