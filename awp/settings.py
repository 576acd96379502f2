"""Settings: DIR/etc/config, read with configobj and validated against awp/configspec.ini."""

from __future__ import annotations

import ipaddress
import re
from importlib import resources
from pathlib import Path

from configobj import ConfigObj, ConfigObjError, flatten_errors
from configobj import validate as vdt

from awp.errors import ConfigError
from awp.model import Settings
from awp.textfile import read_text

# Values of FW_PORTKNOCK_BACKEND before the nftables backend, when both meant iptables.
OLD_BACKEND_NAMES = {"nft": "iptables-nft", "legacy": "iptables-legacy"}

_KEYS = {
    "FW_PORTKNOCK": "enabled",
    "FW_PORTKNOCK_SIMPLE": "simple",
    "FW_PORTKNOCK_ADVANCED": "advanced",
    "FW_PORTKNOCK_IPV6": "ipv6",
    "FW_PORTKNOCK_STRICT": "strict",
    "FW_PORTKNOCK_STEP_TIMEOUT": "step_timeout",
    "FW_PORTKNOCK_OPEN_WINDOW": "open_window",
    "FW_PORTKNOCK_AUTOCLOSE": "autoclose",
    "FW_PORTKNOCK_ALLOW": "allow",
    "FW_PORTKNOCK_BACKEND": "backend",
    "FW_PORTKNOCK_SET_SIZE": "set_size",
    "FW_PORTKNOCK_NFLOG_GROUP": "nflog_group",
    "FW_PORTKNOCK_KERNEL_LOG": "kernel_log",
    "FW_PORTKNOCK_STEALTH": "stealth",
    "FW_PORTKNOCK_PKNOCK_COMPAT": "pknock_compat",
    "FW_PORTKNOCK_FLEET": "fleet",
    "FW_PORTKNOCK_NODE": "node",
    "FW_PORTKNOCK_FLEET_REQUIRED": "fleet_required",
    "FW_PORTKNOCK_SYSLOG": "syslog",
    "FW_PORTKNOCK_BAN": "ban",
    "FW_PORTKNOCK_BAN_AFTER": "ban_after",
    "FW_PORTKNOCK_BAN_WINDOW": "ban_window",
    "FW_PORTKNOCK_BAN_TIME": "ban_time",
}


def _yesno(value):
    text = _scalar(value).strip().lower()
    if text not in ("yes", "no"):
        raise vdt.ValidateError(f'must be "yes" or "no", not "{_scalar(value)}"')
    return text == "yes"


def _number(value, min=None, max=None):  # noqa: A002 - configspec argument names
    text = _scalar(value)
    if not re.fullmatch(r"[0-9]{1,9}", text, re.ASCII):
        raise vdt.ValidateError(f'must be a whole number, not "{_scalar(value)}"')
    number = int(text)
    low, high = int(min), int(max)
    if not low <= number <= high:
        raise vdt.ValidateError(f"{number} is out of range {low}-{high}")
    return number


def _networks(value):
    nets = []
    for token in _scalar(value).replace(",", " ").split():
        try:
            nets.append(ipaddress.ip_network(token, strict=False))
        except ValueError:
            raise vdt.ValidateError(f'"{token}" is not an IP address or network') from None
    return tuple(nets)


def _fleet_url(value):
    """Empty (fleet off), or redis://HOST[:PORT][/DB] or rediss://...; credentials belong in
    DIR/etc/fleet.auth, never here, and no message echoes the value (it could hold one)."""
    text = _scalar(value).strip()
    if not text:
        return ""
    if "@" in text:
        raise vdt.ValidateError("must not hold a user or password: put them in DIR/etc/fleet.auth")
    match = re.fullmatch(r"rediss?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(?:/[0-9]{1,2})?",
                         text, re.ASCII)
    if not match:
        raise vdt.ValidateError("must be redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB]")
    if not 1 <= int(match.group(2) or 6379) <= 65535:
        raise vdt.ValidateError(f"port {match.group(2)} is out of range 1-65535")
    return text


def _node(value):
    text = _scalar(value).strip()
    if text and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text, re.ASCII):
        raise vdt.ValidateError("must be 1-64 letters, digits, '.', '_' or '-' (empty: the host name)")
    return text


def _scalar(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _validator() -> vdt.Validator:
    return vdt.Validator({"yesno": _yesno, "number": _number, "networks": _networks,
                          "fleet_url": _fleet_url, "node": _node})


def _spec() -> list[str]:
    text = resources.files("awp").joinpath("configspec.ini").read_text(encoding="utf-8")
    return text.splitlines()


def load_settings(path: Path) -> Settings:
    """Parse and validate the settings file. A missing file is an error."""
    text = read_text(path, what="settings file")
    return parse_settings(text, str(path))


def parse_settings(text: str, path: str) -> Settings:
    lines = text.split("\n")
    try:
        conf = ConfigObj(lines, configspec=_spec(), interpolation=False, file_error=False)
    except ConfigObjError as exc:
        raise _parse_error(exc, lines, path) from None
    _refuse_unknown(conf, lines, path)
    result = conf.validate(_validator(), preserve_errors=True)
    if result is not True:
        _raise_first(conf, result, lines, path)
    values = {attr: conf[key] for key, attr in _KEYS.items()}
    if values["backend"] in OLD_BACKEND_NAMES:  # one release of grace, with a warning (checks.py)
        values["backend_alias"] = values["backend"]
        values["backend"] = OLD_BACKEND_NAMES[values["backend"]]
    return Settings(**values)


def _refuse_unknown(conf: ConfigObj, lines: list[str], path: str) -> None:
    for section in conf.sections:
        raise ConfigError(f'unknown section "[{section}]"', path=path, line=_line_of(lines, f"[{section}"))
    for key in conf.scalars:
        if key not in _KEYS:
            raise ConfigError(f"unknown setting {key}", path=path, line=_line_of(lines, key))


def _raise_first(conf, result, lines: list[str], path: str) -> None:
    for _sections, key, error in flatten_errors(conf, result):
        reason = str(error) if error is not False else "is missing"
        raise ConfigError(f"{key}: {reason}", path=path, line=_line_of(lines, key))


def _parse_error(exc: ConfigObjError, lines: list[str], path: str) -> ConfigError:
    """configobj's first error, with its line and the key on that line."""
    first = (getattr(exc, "errors", None) or [exc])[0]
    line = getattr(first, "line_number", None)
    key = _key_on(lines, line)
    what = "duplicate setting" if "Duplicate" in str(first) else "cannot parse settings"
    return ConfigError(f"{key}: {what}" if key else f"{what}: {_first_line(first)}", path=path, line=line)


def _key_on(lines: list[str], line: int | None) -> str | None:
    if not line or line > len(lines):
        return None
    match = re.match(r"\s*([A-Za-z0-9_]+)\s*=", lines[line - 1])
    return match.group(1) if match else None


def _line_of(lines: list[str], key: str) -> int | None:
    pattern = re.compile(r"\s*" + re.escape(key) + (r"\s*=" if not key.startswith("[") else ""))
    for number, line in enumerate(lines, start=1):
        if pattern.match(line):
            return number
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
