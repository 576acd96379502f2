"""The fleet key (DIR/etc/fleet.key) and the Redis credentials (DIR/etc/fleet.auth).

Both are root-owned regular files that group and others cannot touch (mode 600 or 400), read
without following a symbolic link. Messages name the file and the reason, never the content.

    fleet.key   64 hex digits (32 random bytes) and a newline; the same on every node
    fleet.auth  "user = NAME" and "password = SECRET" lines (# comments); optional
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from awp.errors import ConfigError

KEY_BYTES = 32
_KEY_RE = re.compile(r"[0-9a-f]{64}\n?", re.ASCII)
_AUTH_RE = re.compile(r"(user|password)\s*=\s*(\S+)", re.ASCII)
MAX_BYTES = 4096


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: str | None = field(default=None, repr=False)


def load_key(path: Path) -> bytes:
    text = _read_private(path, "fleet key", required=True, fix=f"write one with: awp fleet-key")
    if not _KEY_RE.fullmatch(text):
        raise ConfigError("fleet key must be 64 lowercase hex digits on one line; write a new one with "
                          "awp fleet-key (and copy it to every node)", path=str(path))
    return bytes.fromhex(text[:64])


def load_credentials(path: Path) -> Credentials:
    """The ACL user and password for Redis; no file: no credentials."""
    text = _read_private(path, "fleet credentials file", required=False)
    if text is None:
        return Credentials()
    values: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _AUTH_RE.fullmatch(line)
        if not match:  # never echo the line: it may be the password
            raise ConfigError('expected "user = NAME" or "password = SECRET"', path=str(path), line=number)
        values[match.group(1)] = match.group(2)
    return Credentials(values.get("user"), values.get("password"))


def write_key(path: Path) -> None:
    """A new random key, written atomically: root-owned, mode 600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_private(path: Path, what: str, required: bool, fix: str = "") -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        if not required:
            return None
        raise ConfigError(f"{what} does not exist (FW_PORTKNOCK_FLEET is set); {fix}", path=str(path)) from None
    except OSError as exc:
        reason = "is a symbolic link; refusing it" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
        raise ConfigError(f"{what} {reason}", path=str(path)) from None
    try:
        _check_private(os.fstat(fd), path, what)
        raw = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{what} is larger than {MAX_BYTES} bytes", path=str(path))
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not ASCII text", path=str(path)) from None


def _check_private(st: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} is not a regular file", path=str(path))
    if st.st_uid != 0:
        raise ConfigError(f"{what} is owned by uid {st.st_uid}, not root: fix it with: chown root {path}",
                          path=str(path))
    if st.st_mode & 0o077:
        raise ConfigError(f"{what} has mode {stat.S_IMODE(st.st_mode):04o}; group and others must have no "
                          f"access: fix it with: chmod 600 {path}", path=str(path))
