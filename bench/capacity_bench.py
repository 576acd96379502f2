"""Capacity: how many sources can hold progress (mid-sequence) and grants at once, on awp
(nftables, iptables-nft), the bare nftables recipe and the naive xt_recent chain.

    sudo .venv/bin/python bench/capacity_bench.py [--quick]

N distinct spoofed sources (198.18.64.0 upwards, raw SYNs from client 2) knock one 4-knock
door in rounds: every source sends knock 1, then every source knock 2, then knock 3. The
kernel's state is read (sources at 3 of 4 knocks), and half of a sample of the N sources,
real addresses of client 1, send knock 4 and connect: did their progress survive the
crowd? Then every source sends knock 4, the state is read again (sources let in), and the
other half of the sample connects without knocking: did their grant survive? Rounds are
paced (a rate the server's receive CPU keeps up with; `lost` says if it did not), and the
step timeout and open window are 300 s, so nothing expires while N sources knock. A last
run gives awp nftables sets of 65,536 (FW_PORTKNOCK_SET_SIZE) at the largest N, to show
what a full set does.

It prints figures and asserts nothing. bench/README.md explains every column.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import addresses
from benchlib import run_bench, Knocker, Lab, Sender, fmt, link_rx, progress, steer_rx, table
from rulesets import LEGIT_PORT, make_doors
from subjects import Awp, Timing, all_subjects

TIMING = Timing(step=300, window=300)
CROWD_SPORT = 40001
SMALL_SET = 65536  # one more awp run at the largest N, with sets too small for it: what a full set does


@dataclass(frozen=True)
class Plan:
    counts: tuple[int, ...]
    sample: int  # sample sources per N (half test progress, half test grants)
    rate: int  # crowd SYNs per second


def make_plan(quick: bool) -> Plan:
    return Plan((1000, 10000), 10, 25000) if quick else Plan((1000, 10000, 100000), 20, 25000)


class Capacity:
    def __init__(self, lab: Lab, plan: Plan):
        self.lab, self.plan = lab, plan
        self.server, self.sampler, self.crowd = lab.server, lab.clients[0], lab.clients[1]
        self.knocker = Knocker(self.sampler)
        self.door = make_doors(1)[0]

    def round(self, n: int, port: int) -> dict:
        """Every one of the n sources sends one SYN to port; what left and what arrived."""
        rx0 = link_rx(self.server, "awp-c2")[0]
        sender = Sender(self.crowd, {"mode": "spoof", "first": str(addresses.CAPACITY_FIRST), "sources": n,
                                     "ports": [port], "sport": CROWD_SPORT,
                                     "dst": self.lab.server_ip4(self.crowd), "rate": self.plan.rate,
                                     "count": n, "seconds": n / self.plan.rate + 10})
        out = sender.wait()
        time.sleep(0.2)  # the server's backlog drains
        return {"sent": out["sent"], "errors": out["errors"], "delivered": link_rx(self.server, "awp-c2")[0] - rx0}

    def connect(self, src: str, knocks: list[int]) -> bool:
        request = {"kind": "tcp", "dst": self.lab.server_ip4(self.sampler), "port": LEGIT_PORT, "knocks": knocks,
                   "src": src, "bound": 0.5, "poll": 0.002}
        return self.knocker.trial(request)["ok"]

    def measure(self, subject, n: int) -> dict:
        idx = addresses.sample(n, self.plan.sample)
        progress_probe = [addresses.capacity_source(i) for i in idx[0::2]]
        grant_probe = [addresses.capacity_source(i) for i in idx[1::2]]
        row = {"subject": subject.name, "n": n}
        loaded = subject.load([self.door])
        if not loaded.ok:
            return {**row, "error": loaded.error}
        try:
            rounds = [self.round(n, port) for port in self.door[1][:3]]
            start = time.monotonic()
            state = subject.state()
            row["read_s"] = time.monotonic() - start
            row["held"] = state.knocked.get(3, 0)
            row["progress_ok"] = sum(self.connect(src, [self.door[1][3]]) for src in progress_probe)
            rounds.append(self.round(n, self.door[1][3]))
            state = subject.state()
            row["open"] = state.open
            row["grant_ok"] = sum(self.connect(src, []) for src in grant_probe)
            row["refused"] = state.refused
        finally:
            subject.unload()
        sent, got = sum(r["sent"] for r in rounds), sum(r["delivered"] for r in rounds)
        row.update(probes=(len(progress_probe), len(grant_probe)), lost_pct=100.0 * max(0, sent - got) / max(1, sent),
                   send_errors=sum(r["errors"] for r in rounds))
        return row


def measure(lab: Lab, workdir: str, plan: Plan) -> dict:
    lab.server.serve_tcp(LEGIT_PORT)
    steering = steer_rx(lab)
    addresses.route_pools(lab)
    probes = sorted({addresses.capacity_source(i) for n in plan.counts for i in addresses.sample(n, plan.sample)})
    addresses.add_addresses(lab.clients[0], probes)
    bench = Capacity(lab, plan)
    rows = []
    small = Awp(lab.server, workdir, "nftables", TIMING, set_size=SMALL_SET)
    small.name = f"awp nftables, set size {SMALL_SET}"
    runs = [(s, plan.counts) for s in all_subjects(lab.server, workdir, TIMING)] + [(small, plan.counts[-1:])]
    try:
        for subject, counts in runs:
            for n in counts:
                progress(f"{subject.name}: {n} sources")
                rows.append(bench.measure(subject, n))
    finally:
        bench.knocker.close()
    return {"steering": steering, "rows": rows}


def refused_text(r: dict) -> str:
    refused = r.get("refused") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(refused.items())) if refused else "-"


def report(results: dict, plan: Plan) -> None:
    print(results["steering"])
    print(f"\n1. capacity: N spoofed sources knock one 4-knock door in rounds ({plan.rate} SYN/s); "
          "kernel state and a sample that connects")
    rows = []
    for r in results["rows"]:
        if "error" in r:
            rows.append([r["subject"], str(r["n"]), *["-"] * 8, f"did not load: {r['error']}"])
            continue
        a, b = r["probes"]
        rows.append([r["subject"], str(r["n"]), str(r["held"]), fmt(r["held"] / r["n"]), f"{r['progress_ok']}/{a}",
                     str(r["open"]), fmt(r["open"] / r["n"]), f"{r['grant_ok']}/{b}", fmt(r["lost_pct"], ".1f"),
                     fmt(r["read_s"], ".1f"), refused_text(r)])
    print(table(["ruleset", "sources", "at 3/4 knocks", "held/N", "sample completes", "let in", "open/N",
                 "sample connects", "lost %", "state read s", "refused (awp counters)"], rows))
    print("   state read s: reading the kernel's state after 3 knocks (awp: `awp status --json`; bare nftables: "
          "nft -j list set; naive: /proc/net/xt_recent)")


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, name="capacity_bench", title="awp capacity benchmark", doc=__doc__, quick_help="1,000 and 10,000 sources only (under 2 minutes)",
                     make_plan=make_plan, measure=measure, report=report, clients=2)


if __name__ == "__main__":
    sys.exit(main())
