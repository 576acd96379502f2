"""Human-paced knocks under a spoofed SYN flood at the door's first knock port, on awp
(nftables, iptables-nft), the bare nftables recipe and the naive xt_recent chain.

    sudo .venv/bin/python bench/flood_bench.py [--quick]

Client 2 floods the first knock port of a 4-knock door with raw SYNs from 65,535 distinct
spoofed sources (198.19.0.1-198.19.255.255, round robin) at each rate (`max`: as fast as
the sender goes). After 1 s of it, H people on client 1 (each from an address of their
own, starting 0.2 s apart) knock the door with 1 s between knocks, then connect (polls for
2 s after the last knock). How many get in? Every step has a fresh ruleset and ends when
the people are done, so a flood lasts at most about 9 s (bounded at 20 s and in count).

It prints figures and asserts nothing. bench/README.md explains every column.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import addresses
from benchlib import (run_bench, CpuSample, Knocker, Lab, Sender, fmt, link_rx, median, progress, steer_rx,
                      table)
from rulesets import LEGIT_PORT, make_doors
from subjects import all_subjects

MAX = -1
FLOOD_SPORT = 40002
GAP = 1.0  # seconds between a person's knocks
BOUND = 2.0  # seconds a person polls after the last knock
WARMUP = 1.0
STAGGER = 0.2
FLOOD_LIMIT = 20.0
MAX_PPS = 2_000_000  # only bounds the packet count of an unpaced flood


@dataclass(frozen=True)
class Plan:
    rates: tuple[int, ...]  # 0: no flood (the control), MAX: unpaced
    people: int


def make_plan(quick: bool) -> Plan:
    return Plan((10000, MAX), 3) if quick else Plan((0, 10000, 50000, MAX), 5)


def rate_label(rate: int) -> str:
    return {0: "none", MAX: "max"}.get(rate, str(rate))


class Flood:
    def __init__(self, lab: Lab, plan: Plan):
        self.lab, self.plan = lab, plan
        self.server, self.flooder = lab.server, lab.clients[1]
        self.people = addresses.extra(plan.people)
        addresses.add_addresses(lab.clients[0], self.people)
        self.knockers = [Knocker(lab.clients[0]) for _ in self.people]
        self.door = make_doors(1)[0]

    def close(self) -> None:
        for k in self.knockers:
            k.close()

    def sender(self, rate: int) -> Sender | None:
        if not rate:
            return None
        seconds = min(FLOOD_LIMIT, WARMUP + STAGGER * self.plan.people + GAP * 3 + BOUND + 3)
        pps = 0 if rate == MAX else rate
        return Sender(self.flooder, {"mode": "spoof", "first": str(addresses.FLOOD_FIRST),
                                     "sources": addresses.FLOOD_SOURCES, "ports": [self.door[1][0]],
                                     "sport": FLOOD_SPORT, "dst": self.lab.server_ip4(self.flooder), "rate": pps,
                                     "count": int(seconds * (pps or MAX_PPS)), "seconds": seconds})

    def knock_all(self) -> list[dict]:
        dst = self.lab.server_ip4(self.lab.clients[0])
        for knocker, src in zip(self.knockers, self.people):
            knocker.start({"kind": "tcp", "dst": dst, "port": LEGIT_PORT, "knocks": list(self.door[1]),
                           "src": src, "gap": GAP, "bound": BOUND, "poll": 0.005})
            time.sleep(STAGGER)
        return [k.result() for k in self.knockers]

    def step(self, subject, rate: int) -> dict:
        row = {"subject": subject.name, "rate": rate}
        loaded = subject.load([self.door])
        if not loaded.ok:
            return {**row, "error": loaded.error}
        try:
            rx0, cpu0 = link_rx(self.server, "awp-c2")[0], CpuSample.read()
            sender = self.sender(rate)
            try:
                time.sleep(WARMUP if sender else 0)
                people = self.knock_all()
            finally:
                out = sender.stop() if sender else None
            row["cpu"] = CpuSample.read().since(cpu0)
            if out:
                got = link_rx(self.server, "awp-c2")[0] - rx0
                row.update(sent_pps=out["sent"] / out["elapsed"], delivered_pps=got / out["elapsed"],
                           lost_pct=100.0 * max(0, out["sent"] - got) / max(1, out["sent"]))
            row["people"] = people
            state = subject.state()
            row["held"], row["refused"] = state.knocked.get(1, 0), state.refused
        finally:
            subject.unload()
        return row


def measure(lab: Lab, workdir: str, plan: Plan) -> dict:
    lab.server.serve_tcp(LEGIT_PORT)
    steering = steer_rx(lab)
    addresses.route_pools(lab)
    flood = Flood(lab, plan)
    rows = []
    try:
        for subject in all_subjects(lab.server, workdir):
            for rate in plan.rates:
                progress(f"{subject.name}: flood {rate_label(rate)}")
                rows.append(flood.step(subject, rate))
    finally:
        flood.close()
    return {"steering": steering, "rows": rows}


def report(results: dict, plan: Plan) -> None:
    print(results["steering"])
    print(f"\n2. {plan.people} people knock a 4-knock door ({GAP:.0f} s between knocks) while 65,535 spoofed sources "
          "flood its first knock port")
    rows = []
    for r in results["rows"]:
        if "error" in r:
            rows.append([r["subject"], rate_label(r["rate"]), *["-"] * 7, f"did not load: {r['error']}"])
            continue
        ok = [p["ms"] - 3 * GAP * 1000 for p in r["people"] if p["ok"]]
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "-"
        rows.append([r["subject"], rate_label(r["rate"]), fmt(r.get("sent_pps"), ".0f"),
                     fmt(r.get("delivered_pps"), ".0f"), fmt(r.get("lost_pct"), ".1f"),
                     fmt(r["cpu"]["softirq_pct"], ".0f"), f"{len(ok)}/{len(r['people'])}", fmt(median(ok)),
                     str(r["held"]), refused])
    print(table(["ruleset", "flood pps", "sent pps", "delivered pps", "lost %", "cpu0 softirq %", "people in",
                 "median ms after last knock", "sources at 1 knock", "refused (awp counters)"], rows))


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, name="flood_bench", title="awp flood benchmark", doc=__doc__, quick_help="3 people, 10,000 SYN/s and max only (under 2 minutes)",
                     make_plan=make_plan, measure=measure, report=report, clients=2)


if __name__ == "__main__":
    sys.exit(main())
