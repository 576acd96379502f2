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
    """Protected TCP port opened by knocks to `knocks`, in order: a TCP SYN, or any UDP
    datagram for the knock ports in `udp` (written 2002/udp in the list)."""

    port: int
    knocks: tuple[int, ...]
    origin: Origin
    udp: frozenset[int] = frozenset()

    def proto(self, knock: int) -> str:
        return "udp" if knock in self.udp else "tcp"

    def knock_text(self, knock: int) -> str:
        return f"{knock}/udp" if knock in self.udp else str(knock)


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
class Endpoint:
    """An inner host's address and TCP port (a door's forward target)."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class DoorOptions:
    """One section of DIR/etc/firewall/portknock-doors: what a door does besides its port."""

    port: int  # the door's protected port, as in its list
    ports: tuple[tuple[int, int], ...] = ()  # every protected port of the door: (low, high) ranges
    forward: Endpoint | None = None  # DNAT the knocker's connections to this inner host (IPv4)
    forward6: Endpoint | None = None
    on_open: tuple[str, ...] = ()  # argv, run without a shell (helper "actions")
    on_close: tuple[str, ...] = ()
    run_as: str = "nobody"
    timeout: int = 10
    origin: Origin | None = None  # the section's line
    lines: tuple[tuple[str, int], ...] = ()  # (key, line) of each key written

    @property
    def all_ports(self) -> tuple[int, ...]:
        return tuple(p for low, high in (self.ports or ((self.port, self.port),)) for p in range(low, high + 1))

    @property
    def extra_ranges(self) -> tuple[tuple[int, int], ...]:
        """The door's protected ports other than its own, as ranges."""
        out = []
        for low, high in self.ports:
            if low <= self.port <= high:
                out += [r for r in ((low, self.port - 1), (self.port + 1, high)) if r[0] <= r[1]]
            else:
                out.append((low, high))
        return tuple(out)

    @property
    def forwarded(self) -> bool:
        return self.forward is not None

    def origin_of(self, key: str) -> Origin | None:
        """Where `key` was written (file and line), else the section."""
        for name, line in self.lines:
            if name == key and self.origin:
                return Origin(self.origin.path, line)
        return self.origin

    def describe(self) -> str:
        """A short line for status and dry-run: what the door does besides its port."""
        parts = []
        if self.extra_ranges:
            parts.append("ports " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports))
        if self.forward:
            parts.append(f"forward {self.forward}")
        if self.forward6:
            parts.append(f"forward6 {self.forward6}")
        if self.on_open:
            parts.append(f"on_open {self.on_open[0]}")
        if self.on_close:
            parts.append(f"on_close {self.on_close[0]}")
        if self.on_open or self.on_close:
            parts.append(f"run_as {self.run_as} timeout {self.timeout}s")
        return "; ".join(parts)


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
    syslog: bool = False  # advanced mode: the listener's lines to syslog too (authpriv)
    ban: bool = False  # bar a source that fails ban_after times within ban_window s, for ban_time s
    ban_after: int = 5
    ban_window: int = 60
    ban_time: int = 600


@dataclass(frozen=True)
class Config:
    """Everything awp -s -f applies: validated settings and doors."""

    settings: Settings
    simple: tuple[SimpleDoor, ...] = ()
    advanced: tuple[AdvancedDoor, ...] = ()
    options: tuple[DoorOptions, ...] = ()  # DIR/etc/firewall/portknock-doors, by door port

    def options_for(self, port: int) -> DoorOptions | None:
        for found in self.options:
            if found.port == port:
                return found
        return None

    def door_ports(self, port: int) -> tuple[int, ...]:
        """Every protected port of the door whose own port is `port`."""
        found = self.options_for(port)
        return found.all_ports if found else (port,)

    @property
    def active_simple(self) -> tuple[SimpleDoor, ...]:
        s = self.settings
        return self.simple if (s.enabled and s.simple) else ()

    @property
    def active_advanced(self) -> tuple[AdvancedDoor, ...]:
        s = self.settings
        return self.advanced if (s.enabled and s.advanced) else ()


def commanded_simple_ports(config: Config) -> tuple[int, ...]:
    """Active simple doors with a command (on_open or on_close): their completion is handed
    to the listener (NFLOG), which runs the commands."""
    found = []
    for door in config.active_simple:
        options = config.options_for(door.port)
        if options and (options.on_open or options.on_close):
            found.append(door.port)
    return tuple(sorted(found))


def needs_listener(config: Config) -> bool:
    """Advanced doors, or simple doors with commands."""
    return bool(config.active_advanced or commanded_simple_ports(config))

