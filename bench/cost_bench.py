"""Per-packet cost with 1 and 1,000 doors: awp (nftables, iptables-nft), the bare nftables
recipe and the naive xt_recent chain, against no ruleset at all.

    sudo .venv/bin/python bench/cost_bench.py [--quick]

Client 2 sends TCP SYNs from its own address as fast as it can (bounded in time and count)
to one port no door uses, in the middle of the doors' port range: traffic that is not a
knock, from a source that is not mid-sequence, walks whatever the ruleset makes every
packet walk. The server's receive path runs on CPU 0 (RPS), so `delivered pps` with CPU 0
saturated is what that ruleset lets one CPU take, and CPU 0's softirq time over delivered
packets is the cost of one packet. Each configuration is flooded R times (median shown);
`none` is measured first and last, to show the drift of the shared machine.

It prints figures and asserts nothing. bench/README.md explains every column.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

from benchlib import run_bench, CpuSample, Lab, Sender, fmt, link_rx, progress, ratio, steer_rx, table
from rulesets import free_port, make_doors
from subjects import Nothing, all_subjects

SPORT = 40000
MAX_PPS = 2_000_000  # only bounds the count of the unpaced flood


@dataclass(frozen=True)
class Plan:
    doors: tuple[int, ...]
    floods: int  # per configuration
    seconds: float


def make_plan(quick: bool) -> Plan:
    return Plan((1, 1000), 1, 2.0) if quick else Plan((1, 1000), 3, 3.0)


class Cost:
    def __init__(self, lab: Lab, plan: Plan):
        self.lab, self.plan = lab, plan
        self.server, self.flooder = lab.server, lab.clients[1]
        self.doors = make_doors(max(plan.doors))
        self.port = free_port(self.doors)

    def flood(self) -> dict:
        s = self.plan.seconds
        rx0, cpu0 = link_rx(self.server, "awp-c2")[0], CpuSample.read()
        out = Sender(self.flooder, {"mode": "syn", "src": self.flooder.ip4, "sport": SPORT,
                                    "dst": self.lab.server_ip4(self.flooder), "ports": [self.port], "rate": 0,
                                    "count": int(s * MAX_PPS), "seconds": s}).wait()
        time.sleep(0.1)  # the backlog drains
        got, cpu = link_rx(self.server, "awp-c2")[0] - rx0, CpuSample.read().since(cpu0)
        time.sleep(0.5)  # CPU 0 settles before the next flood
        return {"sent_pps": out["sent"] / out["elapsed"], "delivered_pps": got / out["elapsed"],
                "us_per_pkt": cpu["softirq_s"] * 1e6 / max(1, got), "busy_pct": cpu["busy_pct"]}

    def config(self, subject, n: int) -> dict:
        row = {"subject": subject.name, "doors": n}
        loaded = subject.load(self.doors[:n])
        if not loaded.ok:
            return {**row, "error": loaded.error}
        try:
            floods = [self.flood() for _ in range(self.plan.floods)]
        finally:
            subject.unload()
        for key in ("sent_pps", "delivered_pps", "us_per_pkt", "busy_pct"):
            row[key] = statistics.median(f[key] for f in floods)
        row["spread"] = (min(f["us_per_pkt"] for f in floods), max(f["us_per_pkt"] for f in floods))
        return row


def measure(lab: Lab, workdir: str, plan: Plan) -> dict:
    steering = steer_rx(lab)
    bench = Cost(lab, plan)
    rows = [bench.config(Nothing(), 0)]
    for n in plan.doors:
        for subject in all_subjects(lab.server, workdir):
            progress(f"{subject.name}: {n} door(s)")
            rows.append(bench.config(subject, n))
    rows.append(bench.config(Nothing(), 0))
    return {"steering": steering, "rows": rows, "port": bench.port}


def report(results: dict, plan: Plan) -> None:
    print(results["steering"])
    print(f"\n4. cost of one packet: unpaced SYNs from one source to port {results['port']} (no door uses it), "
          f"{plan.floods} x {plan.seconds:.0f} s per configuration (medians)")
    rows, none = [], results["rows"][0]
    for r in results["rows"]:
        name = "none" if r["subject"] == "none" else f"{r['subject']} {r['doors']}"
        if "error" in r:
            rows.append([name, *["-"] * 8, f"did not load: {r['error']}"])
            continue
        lo, hi = r["spread"]
        rows.append([name, fmt(r["sent_pps"], ".0f"), fmt(r["delivered_pps"], ".0f"), fmt(r["busy_pct"], ".0f"),
                     fmt(r["us_per_pkt"]), f"{lo:.2f}-{hi:.2f}", fmt(r["us_per_pkt"] - none["us_per_pkt"]),
                     ratio(r["us_per_pkt"], none["us_per_pkt"]), ratio(r["delivered_pps"], none["delivered_pps"]), ""])
    print(table(["ruleset doors", "sent pps", "delivered pps", "cpu0 busy %", "softirq us/pkt", "range",
                 "over none", "us/pkt / none", "delivered / none", ""], rows))
    by = {(r["subject"], r["doors"]): r for r in results["rows"] if "error" not in r}
    lo, hi = min(plan.doors), max(plan.doors)
    for name in [r["subject"] for r in results["rows"] if r["doors"] == lo]:
        a, b = by.get((name, lo)), by.get((name, hi))
        if a and b:
            print(f"   {name}: us/pkt at {hi} doors / at {lo} = {ratio(b['us_per_pkt'], a['us_per_pkt'])}, "
                  f"delivered at {hi} / at {lo} = {ratio(b['delivered_pps'], a['delivered_pps'])}")


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, name="cost_bench", title="awp per-packet cost benchmark", doc=__doc__, quick_help="one 2 s flood per configuration (under 2 minutes)",
                     make_plan=make_plan, measure=measure, report=report, clients=2)


if __name__ == "__main__":
    sys.exit(main())
