"""Reading small text files safely: bounded, strict UTF-8, no control characters."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from awp.errors import ConfigError

MAX_FILE_BYTES = 256 * 1024
_ALLOWED_CONTROLS = {"\t", "\n"}


def read_text(path: Path, *, limit: int = MAX_FILE_BYTES, what: str = "file") -> str:
    """Read a whole file, at most `limit` bytes, as strict UTF-8.

    A UTF-8 BOM is dropped and CRLF line endings are accepted. Other control
    characters (NUL included) are refused with the line they are on.
    """
    raw = _read_bounded(path, limit, what)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("invalid UTF-8", path=str(path), line=line) from None
    text = text.replace("\r\n", "\n")
    _refuse_controls(path, text)
    return text


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", path=str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} is not a regular file", path=str(path))
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", path=str(path)) from None
    if len(raw) > limit:
        raise ConfigError(f"{what} is larger than {limit} bytes; refusing to read it", path=str(path))
    return raw


def _refuse_controls(path: Path, text: str) -> None:
    for number, line in enumerate(text.split("\n"), start=1):
        for ch in line:
            if (ord(ch) < 32 or ord(ch) == 127) and ch not in _ALLOWED_CONTROLS:
                raise ConfigError(
                    f"control character U+{ord(ch):04X} is not allowed", path=str(path), line=number
                )
