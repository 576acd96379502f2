"""Thin appliers between awp and the kernel. Runners are injected so tests can record.

apply.py speaks to a backend only through this surface, so a native nftables backend (one
`nft -f` transaction, sets with a size and timeouts instead of xt_recent lists) can be added
beside the iptables one without touching the parsers, the model or the CLI.
"""

from __future__ import annotations

from typing import Protocol

from awp.compile.ruleset import KernelState, Ruleset
from awp.model import Config


class Backend(Protocol):
    family: int

    @property
    def tool(self) -> str: ...

    def snapshot(self) -> str: ...

    def state(self, snapshot: str | None = None) -> KernelState: ...

    def compile(self, config: Config) -> Ruleset: ...

    def render(self, desired: Ruleset, current: KernelState) -> str: ...

    def rollback(self, snapshot: str) -> None: ...

    def test(self, text: str) -> None: ...

    def load(self, text: str) -> None: ...
