"""Advanced-mode grants as `grant4` / `grant6` elements with their own timeout.

Written in-process through libnftables (no fork per knock); where the library is missing,
through the `nft` program. A grant expires in the kernel even if no awp process runs.
"""

from __future__ import annotations

import logging

from awp.backend import Address
from awp.compile.nftables import FAMILY, TABLE
from awp.errors import EnvironmentProblem

log = logging.getLogger(__name__)
T = f"{FAMILY} {TABLE}"


def _set(src: Address) -> str:
    return f"grant{src.version}"


class NftGrants:
    """A grant to a door with more ports (portknock-doors) is one element per port: nft looks
    up `saddr . dport` only; list() shows the door's own port."""

    ttl_per_grant = True  # each element has its own timeout: `awp grant --for` works

    def __init__(self, backend, config=None):
        self.backend = backend
        self.config = config
        self._nft = None
        from awp.backend.libnft import Nft
        if Nft.available():
            self._nft = Nft()

    def _run(self, commands: str):
        if self._nft is not None:
            return self._nft.run(commands)
        return self.backend.runner(["nft", "-f", "-"], commands)

    def _ports(self, port: int) -> tuple[int, ...]:
        return self.config.door_ports(port) if self.config is not None else (port,)

    def open(self, port: int, src: Address, ttl: int) -> None:
        """Add or refresh: the element ends up with exactly `ttl` seconds left."""
        commands = ""
        for p in self._ports(port):
            elem = f"{T} {_set(src)} {{ {src} . {p} }}"
            commands += (f"add element {elem}\ndelete element {elem}\n"
                         f"add element {T} {_set(src)} {{ {src} . {p} timeout {max(1, int(ttl))}s }}\n")
        result = self._run(commands)
        if result.returncode != 0:
            raise EnvironmentProblem(f"cannot write the grant for port {port}: {result.stderr.strip()[:200]} "
                                     "(run awp -s -f first?)")

    def close(self, port: int, src: Address) -> bool:
        elem = f"{T} {_set(src)} {{ {src} . {port} }}"
        if self._run(f"get element {elem}").returncode != 0:
            return False
        closed = self._run(f"delete element {elem}").returncode == 0
        for p in self._ports(port):
            if p != port:
                self._run(f"delete element {T} {_set(src)} {{ {src} . {p} }}")  # absent: no matter
        return closed

    def _own(self, port: int) -> bool:
        return not any(port != o.port and port in o.all_ports for o in self.config.options)

    def list(self) -> list[tuple[int, str, int]]:
        found = []
        for family in (4, 6):
            for e in self.backend.elements(f"grant{family}"):
                addr, port = e["key"]
                if self.config is not None and not self._own(int(port)):
                    continue  # another port of a door: the door's own element says it
                found.append((int(port), str(addr), e["expires"]))
        return sorted(found)
