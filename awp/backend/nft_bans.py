"""FW_PORTKNOCK_BAN on nftables: `ban4` / `ban6` elements with their own timeout.

The kernel adds simple-mode bans itself (the `fail` chain); the listener adds advanced-mode
bans here, in-process through libnftables where it loads (as grants are written). A ban
expires in the kernel even if no awp process runs.
"""

from __future__ import annotations

from awp.backend import Address
from awp.compile.nftables import BAN_COUNTERS, FAMILY, TABLE
from awp.errors import EnvironmentProblem

T = f"{FAMILY} {TABLE}"


class NftBans:
    def __init__(self, backend):
        from awp.backend.nft_grants import NftGrants

        self.backend = backend
        self._writer = NftGrants(backend)  # its libnftables context, or the nft program

    def ban(self, src: Address, seconds: int) -> None:
        """Add, or renew to exactly `seconds` left."""
        name = f"ban{src.version}"
        result = self._writer._run(f"add element {T} {name} {{ {src} }}\ndelete element {T} {name} {{ {src} }}\n"
                                   f"add element {T} {name} {{ {src} timeout {max(1, int(seconds))}s }}\n")
        if result.returncode != 0:
            raise EnvironmentProblem(f"cannot ban {src}: {result.stderr.strip()[:200]} "
                                     '(is FW_PORTKNOCK_BAN="yes" applied? run awp -s -f)')

    def list(self) -> list[tuple[str, int]]:
        """(source, seconds left) of every banned source, as the kernel reports it."""
        found = [(str(e["key"]), e["expires"]) for family in (4, 6) for e in self.backend.elements(f"ban{family}")]
        return sorted(found)


def ban_status(backend, config) -> dict:
    """Inspection's ban fields: the banned sources and the kernel's two ban counters."""
    if not config.settings.ban:
        return {}
    counters = backend.counters()
    return {"banned": tuple(NftBans(backend).list()),
            "ban_counters": {"dropped": counters.get(BAN_COUNTERS[0], 0), "kernel_bans": counters.get(BAN_COUNTERS[1], 0)}}
