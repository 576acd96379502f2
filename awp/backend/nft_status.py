"""`awp status` on nftables: the state sets' elements with the time the kernel says is left."""

from __future__ import annotations

from awp.backend import Inspection, SourceState
from awp.backend.nft_bans import ban_status
from awp.compile.nftables import pos_set
from awp.model import Config


def inspect(backend, config: Config) -> Inspection:
    sizes = {d.port: len(d.knocks) for d in config.active_simple}
    sources: list[SourceState] = []
    longest = max(sizes.values(), default=1)
    extra = {p for o in config.options for p in o.all_ports if p != o.port}
    for family in (4, 6):
        position = {}
        for k in range(1, longest):
            position.update({e["key"]: (k, e["expires"]) for e in backend.elements(pos_set(k, family))})
        for e in backend.elements(f"progress{family}"):
            port = e["value"] >> 16
            if port in sizes and e["key"] in position:
                done, left = position[e["key"]]
                sources.append(SourceState(port, str(e["key"]), f"knocking {done}/{sizes[port]}", left))
        for kind, label in (("open", "open"), ("grant", "granted")):
            for e in backend.elements(f"{kind}{family}"):
                addr, port = e["key"]
                if int(port) not in extra:  # a door's other ports (portknock-doors) mirror its own
                    sources.append(SourceState(int(port), str(addr), label, e["expires"]))
    counters = backend.counters()
    ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
    doors = {p: (counters[f"in_{p}"], counters[f"drop_{p}"]) for p in ports
             if f"in_{p}" in counters and f"drop_{p}" in counters}
    refused = {name.removeprefix("refused_"): counters.get(name, 0) for name in ("refused_progress", "refused_open")}
    plan = backend.plan(config)
    return Inspection(backend.name, tuple(sorted(sources, key=lambda s: (s.port, s.source))), doors, refused,
                      not plan.changed, ("inet awp table",) if plan.changed else (), **ban_status(backend, config))
