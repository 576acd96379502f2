"""The awp root directory and the files in it. Nothing outside the root is used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "/var/awp"


@dataclass(frozen=True)
class Root:
    base: Path

    @classmethod
    def resolve(cls, cli_value: str | None) -> Root:
        """--root wins over AWP_ROOT, which wins over the default."""
        return cls(Path(cli_value or os.environ.get("AWP_ROOT") or DEFAULT_ROOT))

    @property
    def config(self) -> Path:
        return self.base / "etc" / "config"

    @property
    def simple_list(self) -> Path:
        return self.base / "etc" / "firewall" / "simple-portknock-list"

    @property
    def advanced_list(self) -> Path:
        return self.base / "etc" / "firewall" / "advanced-portknock-list"

    @property
    def fleet_key(self) -> Path:
        return self.base / "etc" / "fleet.key"

    @property
    def fleet_auth(self) -> Path:
        return self.base / "etc" / "fleet.auth"

    @property
    def door_options(self) -> Path:
        return self.base / "etc" / "firewall" / "portknock-doors"

    @property
    def pidfile(self) -> Path:
        return self.base / "var" / "run" / "awp-knockd.pid"

    @property
    def listener_state(self) -> Path:
        return self.base / "var" / "run" / "awp-knockd.state"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.base / "var" / "run" / "awp-supervisor.pid"

    @property
    def lock(self) -> Path:
        return self.base / "var" / "run" / "awp.lock"

    @property
    def replay_cache(self) -> Path:
        return self.base / "var" / "lib" / "replay-cache"

    @property
    def listener_log(self) -> Path:
        return self.base / "var" / "log" / "awp-knockd.log"
