"""The seam between awp and the kernel: one Backend per atomic transaction.

A backend owns every kernel detail: what it compiles to, how it loads it whole or not at
all, how it puts the previous state back, the grants the listener writes, and what status
reads. Nothing outside awp/backend/ knows a chain, list or set name, or a /proc path.

    nftables          one `inet awp` table, one `nft -f` transaction for both families
    iptables-nft      two iptables-restore tables (IPv4, IPv6) with per-table rollback,
    iptables-legacy   on the nf_tables or the legacy x_tables kernel interface
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from awp.model import Config

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAMES = ("nftables", "iptables-nft", "iptables-legacy")


@dataclass(frozen=True)
class Plan:
    """What an apply would do. `text` is exactly what would be loaded (awp -s -f --dry-run)."""

    backend: str
    changed: bool
    text: str
    steps: tuple = field(default=(), repr=False)  # the backend's own, opaque to the workflow


@dataclass(frozen=True)
class SourceState:
    port: int
    source: str
    state: str  # "knocking 2/5", "open", "granted"
    seconds_left: int


@dataclass(frozen=True)
class Inspection:
    """What status shows, as the kernel reports it."""

    backend: str
    sources: tuple[SourceState, ...] = ()
    counters: dict[int, tuple[int, int]] = field(default_factory=dict)  # port -> (let in, dropped)
    refused: dict[str, int] = field(default_factory=dict)  # "progress", "open": refused, set full
    matches: bool = True  # the kernel holds exactly what the configuration compiles to
    differs: tuple[str, ...] = ()  # what does not match ("IPv4", "inet awp table", ...)
    banned: tuple[tuple[str, int], ...] = ()  # FW_PORTKNOCK_BAN: (source, seconds left)
    ban_counters: dict[str, int] = field(default_factory=dict)  # "dropped", "kernel_bans"; {}: ban off


class Grants(Protocol):
    """Advanced-mode grants, held by the kernel with their own expiry. The listener writes
    them for knocks, `awp grant` and `awp revoke` for an admin (awp.grant)."""

    ttl_per_grant: bool  # open() honours `ttl`; False: every grant lives FW_PORTKNOCK_AUTOCLOSE

    def open(self, port: int, src: Address, ttl: int) -> None: ...

    def close(self, port: int, src: Address) -> bool: ...  # False: nothing was open

    def list(self) -> list[tuple[int, str, int]]: ...  # (port, source, seconds left)


class Bans(Protocol):
    """FW_PORTKNOCK_BAN: sources barred from every knock port, held by the kernel with their
    own expiry (the listener adds the advanced-mode ones; the kernel adds simple-mode ones)."""

    def ban(self, src: Address, seconds: int) -> None: ...

    def list(self) -> list[tuple[str, int]]: ...  # (source, seconds left)


class Backend(Protocol):
    name: str
    max_doors: int | None  # the most doors it loads in reasonable time (None: no limit)

    def plan(self, config: Config) -> Plan: ...

    def apply(self, plan: Plan) -> None: ...  # all or nothing; raises ApplyError

    def rollback(self, plan: Plan) -> None: ...  # undo an applied plan

    def grants(self, config: Config) -> Grants: ...

    def bans(self, config: Config) -> Bans: ...

    def inspect(self, config: Config) -> Inspection: ...

    def advice(self, config: Config) -> list[str]: ...  # what other tables do to awp's ports

    def unused_port_answer(self) -> str: ...  # "drop" or "reject": what the host's unused ports do


def select(choice: str, runner=None) -> Backend:
    """The backend for FW_PORTKNOCK_BACKEND (`auto`: nftables where `nft` works)."""
    from awp.backend.iptables import IptablesBackend, detect_variant
    from awp.backend.nftables import NftablesBackend, nft_usable
    from awp.backend.runner import run

    runner = runner or run
    if choice == "auto":
        choice = "nftables" if nft_usable(runner) else f"iptables-{detect_variant(runner)}"
    if choice == "nftables":
        return NftablesBackend(runner)
    return IptablesBackend(choice.removeprefix("iptables-"), runner)
