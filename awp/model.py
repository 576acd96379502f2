"""The model: frozen dataclasses built by the parsers, read by the compiler."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Origin:
    """Where a door was written: list file and line number."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class SimpleDoor:
    """Protected TCP port opened by TCP SYNs to `knocks`, in order."""

    port: int
    knocks: tuple[int, ...]
    origin: Origin


@dataclass(frozen=True)
class Secret:
    """A shared secret. Its repr and str never show the value."""

    value: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class AdvancedDoor:
    """Protected TCP port opened and closed by one-time passwords on UDP `knock_port`."""

    port: int
    knock_port: int
    open_secret: Secret
    close_secret: Secret
    origin: Origin


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    simple: bool = True
    advanced: bool = False
    ipv6: bool = True
    strict: bool = False
    step_timeout: int = 15
    open_window: int = 30
    autoclose: int = 3600
    allow: tuple[Network, ...] = ()
    backend: str = "auto"  # auto, nftables, iptables-nft or iptables-legacy
    set_size: int = 131072  # nftables: elements each state set holds
    backend_alias: str | None = None  # the deprecated value the settings file used, if any
    nflog_group: int = 4747
    kernel_log: bool = True
    stealth: str = "auto"  # auto, drop or reject: what knock and closed protected ports answer
    pknock_compat: bool = False
    fleet: str = ""  # redis:// or rediss:// URL of the fleet store; "" = no fleet (awp(8), FLEET)
    node: str = ""  # this node's name in the fleet; "" = the host name
    fleet_required: bool = False  # refuse opens while the fleet store is unreachable


@dataclass(frozen=True)
class Config:
    """Everything awp -s -f applies: validated settings and doors."""

    settings: Settings
    simple: tuple[SimpleDoor, ...] = ()
    advanced: tuple[AdvancedDoor, ...] = ()

    @property
    def active_simple(self) -> tuple[SimpleDoor, ...]:
        s = self.settings
        return self.simple if (s.enabled and s.simple) else ()

    @property
    def active_advanced(self) -> tuple[AdvancedDoor, ...]:
        s = self.settings
        return self.advanced if (s.enabled and s.advanced) else ()
