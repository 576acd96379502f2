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
    ttl_per_grant = True  # each element has its own timeout: `awp grant --for` works

    def __init__(self, backend):
        self.backend = backend
        self._nft = None
        from awp.backend.libnft import Nft
        if Nft.available():
            self._nft = Nft()

    def _run(self, commands: str):
        if self._nft is not None:
            return self._nft.run(commands)
        return self.backend.runner(["nft", "-f", "-"], commands)

    def open(self, port: int, src: Address, ttl: int) -> None:
        """Add or refresh: the element ends up with exactly `ttl` seconds left."""
        elem = f"{T} {_set(src)} {{ {src} . {port} }}"
        result = self._run(f"add element {elem}\ndelete element {elem}\n"
                           f"add element {T} {_set(src)} {{ {src} . {port} timeout {max(1, int(ttl))}s }}\n")
        if result.returncode != 0:
            raise EnvironmentProblem(f"cannot write the grant for port {port}: {result.stderr.strip()[:200]} "
                                     "(run awp -s -f first?)")

    def close(self, port: int, src: Address) -> bool:
        elem = f"{T} {_set(src)} {{ {src} . {port} }}"
        if self._run(f"get element {elem}").returncode != 0:
            return False
        return self._run(f"delete element {elem}").returncode == 0

    def list(self) -> list[tuple[int, str, int]]:
        found = []
        for family in (4, 6):
            for e in self.backend.elements(f"grant{family}"):
                addr, port = e["key"]
                found.append((int(port), str(addr), e["expires"]))
        return sorted(found)
