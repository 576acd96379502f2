"""Knock-to-open latency, simple and advanced knocks, on awp (nftables, iptables-nft)
against the bare nftables recipe (and the naive xt_recent chain for simple knocks).

    sudo .venv/bin/python bench/latency_bench.py [--quick]

Each ruleset holds two doors: 2222 behind a 4-knock TCP sequence, and 2223 behind an
advanced knock on UDP 2000 (awp: the listener checks a one-time password built by
tests/unit/pknock_ref.py and writes a grant; bare nftables: any datagram to UDP 2000 adds
the source, the same path without the listener and the MAC). A trial: the clock starts,
the knocks leave back to back, then client 1 tries to connect every 1 ms; the figure is
the time to the first completed connect. Every trial comes from a source address of its
own (198.18.32.10 upwards), so each starts closed. Trials run in two blocks, rulesets in
turn forward then backward, so a drift of the shared machine hits all of them alike.

It prints figures and asserts nothing. bench/README.md explains every column.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import addresses
from benchlib import run_bench, HERE, PYTHON, Knocker, Lab, fmt, median, p95, progress, ratio, steer_rx, table
from rulesets import LEGIT_PORT, make_doors
from subjects import OPEN_SECRET, Awp, all_subjects

ADV_PORT, ADV_KNOCK = 2223, 2000
POLL = 0.001
BOUND = {"simple": 2.0, "advanced": 3.0}
GOAL = 1.2
PARTS = HERE / "advanced_parts.py"
PART_REPS = 50


@dataclass(frozen=True)
class Plan:
    trials: int  # per ruleset and kind, split over two blocks


def make_plan(quick: bool) -> Plan:
    return Plan(20) if quick else Plan(100)


class Latency:
    def __init__(self, lab: Lab, plan: Plan):
        self.lab, self.plan = lab, plan
        self.client = lab.clients[0]
        self.sources = addresses.extra(2 * plan.trials)
        addresses.add_addresses(self.client, self.sources)
        self.knocker = Knocker(self.client)
        self.door = make_doors(1)[0]
        self.dst = lab.server_ip4(self.client)

    def request(self, kind: str, src: str) -> dict:
        if kind == "simple":
            return {"kind": "tcp", "dst": self.dst, "port": LEGIT_PORT, "knocks": list(self.door[1]), "src": src,
                    "bound": BOUND[kind], "poll": POLL}
        return {"kind": "udp", "dst": self.dst, "port": ADV_PORT, "knock_port": ADV_KNOCK, "secret": OPEN_SECRET,
                "src": src, "bound": BOUND[kind], "poll": POLL}

    def block(self, subject, block: int, found: dict) -> None:
        kinds = ("simple",) if subject.name.startswith("naive") else ("simple", "advanced")
        loaded = subject.load([self.door], [(ADV_PORT, ADV_KNOCK)] if "advanced" in kinds else [])
        if not loaded.ok:
            found.setdefault(subject.name, {})["error"] = loaded.error
            return
        try:
            half = self.plan.trials // 2
            for k, kind in enumerate(kinds):
                first = k * self.plan.trials + block * half
                trials = [self.knocker.trial(self.request(kind, src)) for src in self.sources[first:first + half]]
                found.setdefault(subject.name, {}).setdefault(kind, []).extend(trials)
            if block == 0 and isinstance(subject, Awp):
                found[subject.name]["parts"] = self.parts(subject)
        finally:
            subject.unload()


    def parts(self, subject) -> dict:
        """advanced_parts.py in the server namespace, against the loaded awp root."""
        proc = self.lab.server.run([PYTHON, PARTS, subject.root, PART_REPS], timeout=120)
        return json.loads(proc.stdout)


def measure(lab: Lab, workdir: str, plan: Plan) -> dict:
    lab.server.serve_tcp(LEGIT_PORT)
    lab.server.serve_tcp(ADV_PORT)
    steering = steer_rx(lab)
    addresses.route_pools(lab)
    bench = Latency(lab, plan)
    subjects = all_subjects(lab.server, workdir)
    found: dict = {}
    try:
        for block, order in enumerate((subjects, subjects[::-1])):
            for subject in order:
                progress(f"block {block + 1}: {subject.name}")
                bench.block(subject, block, found)
    finally:
        bench.knocker.close()
    return {"steering": steering, "found": found, "order": [s.name for s in subjects]}


def figures(trials: list[dict]) -> dict:
    ok = [t["ms"] for t in trials if t["ok"]]
    return {"n": len(trials), "ok": len(ok), "median": median(ok), "p95": p95(ok)}


def report(results: dict, plan: Plan) -> None:
    print(results["steering"])
    print(f"\n3. knock-to-open latency: first knock sent -> first completed connect (polls every {POLL * 1000:.0f} ms), "
          f"{plan.trials} trials per ruleset and kind")
    ref = {kind: figures(results["found"].get("bare nftables", {}).get(kind, [])) for kind in BOUND}
    rows = []
    for kind in BOUND:
        for name in results["order"]:
            got = results["found"].get(name, {})
            if "error" in got:
                rows.append([kind, name, "-", "-", "-", "-", "-", f"did not load: {got['error']}"])
                continue
            if kind not in got:
                continue
            f = figures(got[kind])
            rows.append([kind, name, f"{f['ok']}/{f['n']}", fmt(f["median"]), fmt(f["p95"]),
                         ratio(f["median"], ref[kind]["median"]), ratio(f["p95"], ref[kind]["p95"]), ""])
    print(table(["knock", "ruleset", "opened", "median ms", "p95 ms", "median / bare nftables",
                 "p95 / bare nftables", ""], rows))
    print(f"   goal: awp within {GOAL}x of bare nftables. advanced on bare nftables = any datagram to udp/{ADV_KNOCK} "
          "adds the source in the kernel (no listener, no MAC)")
    print(f"\n   where an advanced knock's time goes in the listener (medians of {PART_REPS}, in process, "
          "server namespace, bench/advanced_parts.py):")
    rows = []
    for name, got in results["found"].items():
        if p := got.get("parts"):
            total = figures(got["advanced"])["median"]
            known = p["nflog_awp_ms"] + p["check_ms"] + p["replay_add_nosync_ms"] + p["grant_open_ms"]
            rows.append([name, fmt(p["nflog_awp_ms"]), fmt(p["nflog_old_ms"]), fmt(p["check_ms"], ".3f"),
                         fmt(p["replay_add_nosync_ms"]), fmt(p["replay_add_ms"]), fmt(p["grant_open_ms"]),
                         fmt(total), fmt(total - known)])
    print(table(["backend", "NFLOG as awp asks ms", "NFLOG qthresh 100 ms", "MAC check ms", "replay add ms",
                 "with fsync ms", "grant open ms", "knock median ms", "rest ms"], rows))
    print("   NFLOG as awp asks: qthresh 1 (a lone knock is sent at once); qthresh 100 with a 1 cs flush timer "
          "is what awp asked before issue 7; replay add: the cache file rewritten and renamed before the grant "
          "(fsynced after it; 'with fsync' is that cost, no longer on the knock's path); rest: the knock's median "
          "minus those (scheduling, polls, Python)")


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, name="latency_bench", title="awp latency benchmark", doc=__doc__, quick_help="20 trials per ruleset and kind (under 2 minutes)",
                     make_plan=make_plan, measure=measure, report=report, clients=1)


if __name__ == "__main__":
    sys.exit(main())
