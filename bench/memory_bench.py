"""Kernel memory used by full nftables sets of awp's kinds: bytes per element, and the cost
of a full 131,072-element set (FW_PORTKNOCK_SET_SIZE's default).

    sudo .venv/bin/python bench/memory_bench.py [--quick]

Part a, control plane: in the server namespace, a table of this script's own holds one
set of the kind awp uses (`size 131072; flags dynamic,timeout`), filled by `nft -f` with N
elements with a timeout; kernel memory is read before, after (2 s later: the hash table
grows in a worker) and after `delete table`. Part b, packet path: awp itself (nftables
backend, one door) and N spoofed sources from client 2 sending its first knock, so awp's
progress4 map fills the way a flood fills it.

Kernel memory = SUnreclaim + VmallocUsed of /proc/meminfo: slab objects (the elements) and
large kmallocs (a hash table's bucket array is a kvmalloc: pages, or vmalloc when memory
is fragmented) both count there. Which slab caches grew comes from /proc/slabinfo. Both
are for the whole machine, and other work on it moves them too: each figure is the median
of R fills, and the `freed` column shows the memory coming back when the set goes.

It prints figures and asserts nothing. bench/README.md explains every column.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import addresses
from benchlib import run_bench, Lab, Sender, fmt, progress, steer_rx, table
from rulesets import make_doors
from subjects import SET_SIZE, Awp

TABLE = "inet awpbenchmem"
SETTLE = 2.0
V4, V6 = ipaddress.IPv4Address("198.18.64.0"), ipaddress.IPv6Address("2001:2:0:100::")
KINDS = {  # name: (awp's set it stands for, declaration, element i)
    "map ipv4_addr : mark": ("progress4", "map m { type ipv4_addr : mark; ",
                             lambda i: f"{V4 + i} timeout 600s : 0x08ae0001"),
    "set ipv4_addr . inet_service": ("scan4, open4, grant4", "set m { type ipv4_addr . inet_service; ",
                                     lambda i: f"{V4 + i} . 2222 timeout 600s"),
    "map ipv6_addr : mark": ("progress6", "map m { type ipv6_addr : mark; ",
                             lambda i: f"{V6 + i} timeout 600s : 0x08ae0001"),
    "set ipv6_addr . inet_service": ("scan6, open6, grant6", "set m { type ipv6_addr . inet_service; ",
                                     lambda i: f"{V6 + i} . 2222 timeout 600s"),
}
CHUNK = 1000
TOTAL = "SUnreclaim+VmallocUsed"


@dataclass(frozen=True)
class Plan:
    counts: tuple[int, ...]
    reps: int
    flood_rate: int


def make_plan(quick: bool) -> Plan:
    return Plan((100_000,), 1, 25000) if quick else Plan((100_000, SET_SIZE), 3, 25000)


def kernel_bytes() -> dict[str, int]:
    """Bytes in slab objects per cache (active objects x size), and meminfo's total."""
    found = {}
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        found[f[0]] = found.get(f[0], 0) + int(f[1]) * int(f[3])
    meminfo = {k: int(v.split()[0]) * 1024 for k, v in
               (line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())}
    found[TOTAL] = meminfo["SUnreclaim"] + meminfo["VmallocUsed"]
    return found


def delta(before: dict, after: dict) -> tuple[int, list[tuple[str, int]]]:
    """meminfo's change, and the slab caches that changed most."""
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if k != TOTAL}
    top = sorted(((k, v) for k, v in diff.items() if v), key=lambda kv: -abs(kv[1]))[:2]
    return after[TOTAL] - before[TOTAL], top


def fill_script(kind: str, n: int) -> str:
    _, decl, elem = KINDS[kind]
    lines = [f"add table {TABLE}", f"add {decl.split(' ', 1)[0]} {TABLE} {decl.split(' ', 1)[1]}"
             f"size {SET_SIZE}; flags dynamic,timeout; }}"]
    for start in range(0, n, CHUNK):
        items = ", ".join(elem(i) for i in range(start, min(n, start + CHUNK)))
        lines.append(f"add element {TABLE} m {{ {items} }}")
    return "\n".join(lines) + "\n"


def control_plane(server, kind: str, n: int) -> dict:
    script = fill_script(kind, n)
    before = kernel_bytes()
    server.run(["nft", "-f", "-"], input=script, timeout=300)
    time.sleep(SETTLE)
    full = kernel_bytes()
    server.run(["nft", "delete", "table", *TABLE.split()])
    time.sleep(SETTLE)
    used, top = delta(before, full)
    return {"used": used, "freed": -delta(full, kernel_bytes())[0], "top": top}


def packet_path(lab: Lab, workdir: str, n: int, rate: int) -> dict:
    awp = Awp(lab.server, workdir, "nftables")
    door = make_doors(1)[0]
    if not awp.load([door]).ok:
        return {"error": "awp did not load"}
    try:
        before = kernel_bytes()
        Sender(lab.clients[1], {"mode": "spoof", "first": str(addresses.CAPACITY_FIRST), "sources": n,
                                "ports": [door[1][0]], "dst": lab.server_ip4(lab.clients[1]), "rate": rate,
                                "count": n, "seconds": n / rate + 10}).wait()
        time.sleep(SETTLE)
        full = kernel_bytes()
        held = awp.state().knocked.get(1, 0)
    finally:
        awp.unload()
    time.sleep(SETTLE)
    used, top = delta(before, full)
    return {"used": used, "freed": -delta(full, kernel_bytes())[0], "top": top, "held": held}


def median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["used"])
    return {**ordered[len(ordered) // 2], "range": (ordered[0]["used"], ordered[-1]["used"])}


def measure(lab: Lab, workdir: str, plan: Plan) -> dict:
    steer_rx(lab)
    rows = []
    for kind in KINDS:
        for n in plan.counts:
            progress(f"a: {kind}, {n} elements x {plan.reps}")
            rows.append({"kind": kind, "n": n, **median_run([control_plane(lab.server, kind, n)
                                                              for _ in range(plan.reps)])})
    n = plan.counts[0]
    progress(f"b: awp progress4 filled by {n} spoofed first knocks x {plan.reps}")
    runs = [packet_path(lab, workdir, n, plan.flood_rate) for _ in range(plan.reps)]
    good = [r for r in runs if "error" not in r]
    path = {"n": n, **median_run(good)} if good else {"n": n, "error": runs[0]["error"]}
    return {"rows": rows, "path": path}


def element_bytes(r: dict) -> str:
    """Bytes per element in the slab cache that grew most (the elements themselves)."""
    name, grew = r["top"][0] if r["top"] else ("", 0)
    return f"{grew / r['n']:.0f} ({name})" if grew > 0 else "-"


def mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def report(results: dict, plan: Plan) -> None:
    print(f"\n6. kernel memory of full sets (median of {plan.reps} fills; {TOTAL} of /proc/meminfo, whole machine)")
    rows = []
    for r in results["rows"]:
        lo, hi = r["range"]
        top = ", ".join(f"{k} {v / 2**20:+.1f}" for k, v in r["top"])
        rows.append([r["kind"], KINDS[r["kind"]][0], str(r["n"]), mib(r["used"]), f"{mib(lo)}-{mib(hi)}",
                     fmt(r["used"] / r["n"], ".0f"), element_bytes(r), mib(r["freed"]), top])
    p = results["path"]
    if "error" not in p:
        top = ", ".join(f"{k} {v / 2**20:+.1f}" for k, v in p["top"])
        lo, hi = p["range"]
        rows.append([f"awp progress4 via {p['n']} spoofed knocks ({p['held']} held)", "progress4", str(p["n"]),
                     mib(p["used"]), f"{mib(lo)}-{mib(hi)}", fmt(p["used"] / p["n"], ".0f"), element_bytes(p),
                     mib(p["freed"]), top])
    print(table(["set (control plane fill unless said)", "awp sets", "elements", "MiB", "range", "bytes/element",
                 "of which element objects", "freed MiB", "slab caches that grew most (MiB)"], rows))
    full = {r["kind"]: r["used"] for r in results["rows"] if r["n"] == SET_SIZE}
    if len(full) == len(KINDS):
        kinds = list(KINDS)
        total = full[kinds[0]] + 3 * full[kinds[1]] + full[kinds[2]] + 3 * full[kinds[3]]
        print(f"   all eight of awp's state sets full ({SET_SIZE} each: progress, scan, open, grant for IPv4 and IPv6): "
              f"{mib(total)} MiB")


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, name="memory_bench", title="awp kernel memory benchmark", doc=__doc__, quick_help="100,000 elements, one fill each (under 2 minutes)",
                     make_plan=make_plan, measure=measure, report=report, clients=2)


if __name__ == "__main__":
    sys.exit(main())
