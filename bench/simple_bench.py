"""awp simple-mode benchmark: knock-to-open latency, knocks during a port scan, the cost of
one packet, and apply time; awp side by side with the naive linear xt_recent chain of
naive.py, loaded in turn into the same throwaway server namespace.

    sudo .venv/bin/python bench/simple_bench.py [--quick] [--backend legacy|nft]

It prints figures and asserts nothing. Progress goes to stderr, results to stdout.
bench/README.md explains every column.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from benchlib import (CpuSample, Knocker, Lab, Sender, fmt, link_rx, ratio, revision, steer_rx,
                      summarize, table)
from rulesets import (LEGIT_PORT, AwpRules, BaselineRules, NaiveRules, count_rules, forget, free_port,
                      make_doors)

MAX = -1  # scan rate: as fast as the sender can go
SCANNER_SPORT = 40000


@dataclass(frozen=True)
class Plan:
    trials: int  # section a
    knocks: int  # legitimate knocks per scan rate (section b)
    rates: tuple[int, ...]  # 0: no scan, MAX: unpaced
    doors: tuple[int, ...]
    apply_doors: tuple[int, ...]
    apply_backends: tuple[str, ...]
    flood_seconds: float
    bound: float  # seconds a knock may take before it counts as failed


def make_plan(quick: bool, backend: str) -> Plan:
    other = "nft" if backend == "legacy" else "legacy"
    if quick:
        return Plan(10, 4, (0, 10000, 50000), (1, 1000), (1, 100, 1000), (backend,), 2.0, 2.0)
    return Plan(50, 10, (0, 1000, 5000, 10000, 20000, 50000, MAX), (1, 1000), (1, 100, 500, 1000),
                (backend, other), 3.0, 2.0)


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def rate_label(rate: int) -> str:
    return {0: "none", MAX: "max"}.get(rate, str(rate))


# --- measurements ---------------------------------------------------------------------------


class Bench:
    def __init__(self, lab: Lab, workdir: str, plan: Plan, backend: str):
        self.lab, self.workdir, self.plan, self.backend = lab, workdir, plan, backend
        self.server, self.client, self.scanner = lab.server, lab.clients[0], lab.clients[1]
        self.knocker = Knocker(self.client)
        self.loaded: list = []

    def knock_request(self, knocks: tuple[int, ...]) -> dict:
        return {"kind": "tcp", "dst": self.lab.server_ip4(self.client), "port": LEGIT_PORT,
                "knocks": list(knocks), "bound": self.plan.bound}

    def load(self, rules) -> tuple[bool, float, str]:
        self.loaded.append(rules)
        return rules.load()

    def unload(self, rules) -> None:
        self.loaded.remove(rules)
        rules.unload()

    def unload_all(self) -> None:
        for rules in reversed(self.loaded):
            try:
                rules.unload()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                progress(f"cleanup: unloading {rules.name} failed: {exc}")
        self.loaded.clear()

    def knock_trials(self, request: dict, count: int, diagnose: bool = False) -> list[dict]:
        results = []
        for i in range(count):
            forget(self.server, self.client.ip4)
            results.append(self.knocker.trial(request))
            if diagnose and not results[-1]["ok"]:
                progress(f"knock {i + 1}/{count} did not open ({results[-1]['polls']} polls); "
                         f"server lists holding the client: {self.lists_holding(self.client.ip4)}")
        return results

    def lists_holding(self, addr: str) -> list[str]:
        script = f"cd /proc/net/xt_recent && grep -l 'src={addr} ' * 2>/dev/null; true"
        return self.server.run(["sh", "-c", script]).stdout.split()

    def _sender(self, ports, rate: int, seconds: float) -> Sender:
        pps = 0 if rate == MAX else rate
        return Sender(self.scanner, {"mode": "syn", "src": self.scanner.ip4, "sport": SCANNER_SPORT,
                                     "dst": self.lab.server_ip4(self.scanner), "ports": ports,
                                     "rate": pps, "count": int(seconds * (pps or 2_000_000)),
                                     "seconds": seconds})

    def _traffic(self, run) -> dict:
        """Run `run()` (which returns the sender's summary or None) and measure the server."""
        rx0, cpu0 = link_rx(self.server, "awp-c2"), CpuSample.read()
        out, extra = run()
        time.sleep(0.1)  # let the server's backlog drain
        rx1, cpu = link_rx(self.server, "awp-c2"), CpuSample.read().since(cpu0)
        fig = {"cpu": cpu, **extra}
        if out:
            delivered = rx1[0] - rx0[0]
            fig.update(sent_pps=out["sent"] / out["elapsed"], delivered_pps=delivered / out["elapsed"],
                       loss_pct=max(0.0, 100.0 * (1 - delivered / max(1, out["sent"]))),
                       us_per_pkt=cpu["softirq_s"] * 1e6 / max(1, delivered))
        return fig

    def flood(self, port: int) -> dict:
        seconds = self.plan.flood_seconds
        found = self._traffic(lambda: (self._sender([port], MAX, seconds).wait(), {}))
        time.sleep(1.0)  # let the receive CPU settle before the next measurement
        return found

    def scan_step(self, request: dict, rate: int) -> dict:
        def run():
            limit = self.plan.knocks * (self.plan.bound + 0.5) + 3
            sender = self._sender("scan", rate, limit) if rate else None
            try:
                time.sleep(0.5 if sender else 0)
                knocks = summarize(self.knock_trials(request, self.plan.knocks, diagnose=not rate))
            finally:
                out = sender.stop() if sender else None
            return out, {"knocks": knocks}
        return self._traffic(run)


def run_config(bench: Bench, rules, doors: list, flood_port: int) -> dict:
    """Load one ruleset, run the flood and every scan rate, unload it."""
    progress(f"{rules.name} {len(doors)} door(s): loading")
    ok, took, error = bench.load(rules)
    found = {"ruleset": rules.name, "doors": len(doors), "load_s": took, "error": error}
    try:
        if not ok:
            progress(f"{rules.name} {len(doors)} door(s): load FAILED: {error}")
            return found
        found.update(count_rules(bench.server, bench.backend))
        if rules.name == "awp" and len(doors) == 1:
            progress(f"a: {bench.plan.trials} knock-to-open trials")
            trials = bench.knock_trials(bench.knock_request(doors[0][1]), bench.plan.trials, True)
            found["latency"] = summarize(trials)
        progress(f"{rules.name} {len(doors)} door(s): flood to port {flood_port}")
        found["flood"] = bench.flood(flood_port)
        found["scan"] = {}
        for rate in bench.plan.rates:
            progress(f"{rules.name} {len(doors)} door(s): scan {rate_label(rate)}")
            found["scan"][rate] = bench.scan_step(bench.knock_request(doors[0][1]), rate)
    finally:
        bench.unload(rules)
    return found


def run_baseline(bench: Bench, flood_port: int) -> dict:
    rules = BaselineRules(bench.server, bench.backend)
    bench.load(rules)
    try:
        return {"ruleset": "baseline", "doors": 0, "load_s": 0.0, "error": "",
                **count_rules(bench.server, bench.backend), "flood": bench.flood(flood_port)}
    finally:
        bench.unload(rules)


def apply_times(bench: Bench, backend: str, n: int, doors: list) -> dict:
    """Section c: awp -s -f from nothing, again (no change), remove; naive load for scale."""
    awp = AwpRules(bench.server, bench.workdir, backend, doors[:n])
    progress(f"c: awp apply {n} door(s) ({backend})")
    ok, took, error = bench.load(awp)
    row = {"backend": backend, "doors": n, "ok": ok, "apply_s": took, "error": error}
    try:
        if ok:
            row.update(count_rules(bench.server, backend))
            row["reapply_s"] = awp.load()[1]
    finally:
        start = time.monotonic()
        bench.unload(awp)
        row["remove_s"] = time.monotonic() - start
    naive_rules = NaiveRules(bench.server, backend, doors[:n])
    row["naive_load_s"] = bench.load(naive_rules)[1]
    row["naive_rules4"] = count_rules(bench.server, backend)["rules4"]
    bench.unload(naive_rules)
    return row


def measure(lab: Lab, workdir: str, plan: Plan, backend: str) -> dict:
    lab.server.serve_tcp(LEGIT_PORT)
    results = {"steering": steer_rx(lab), "configs": [], "apply": []}
    doors = make_doors(max(plan.doors + plan.apply_doors))
    flood_port = results["flood_port"] = free_port(doors)
    bench = Bench(lab, workdir, plan, backend)
    try:
        results["configs"].append(run_baseline(bench, flood_port))
        for n in plan.doors:
            for rules in (AwpRules(lab.server, workdir, backend, doors[:n]),
                          NaiveRules(lab.server, backend, doors[:n])):
                results["configs"].append(run_config(bench, rules, doors[:n], flood_port))
        for apply_backend in plan.apply_backends:
            for n in plan.apply_doors:
                results["apply"].append(apply_times(bench, apply_backend, n, doors))
    finally:
        bench.knocker.close()
        bench.unload_all()
    return results


# --- report ---------------------------------------------------------------------------------


def config_name(c: dict) -> str:
    return "baseline" if c["ruleset"] == "baseline" else f"{c['ruleset']} {c['doors']}"


def report_latency(results: dict, plan: Plan, backend: str) -> None:
    c = next((c for c in results["configs"] if c["ruleset"] == "awp" and c["doors"] == 1), None)
    lat = c and c.get("latency")
    print(f"\na. knock-to-open latency, simple mode, 1 door, no other traffic (awp, {backend})")
    if not lat:
        print("   not measured: awp did not load")
        return
    print(f"   {lat['ok']}/{lat['n']} opened; median {fmt(lat['median'])} ms, p95 {fmt(lat['p95'])} ms "
          f"(first knock SYN sent -> first completed connect; polls every 5 ms)")


def report_flood(results: dict) -> None:
    print(f"\nb1. cost of one packet: unpaced SYN flood from client 2 to port {results['flood_port']} "
          "(no door uses it)")
    rows = []
    base = next(c for c in results["configs"] if c["ruleset"] == "baseline")["flood"]
    for c in results["configs"]:
        f = c.get("flood")
        if not f:
            rows.append([config_name(c), "-", "-", "-", "-", "-", "-", "-", "did not load (see c)"])
            continue
        extra = f["us_per_pkt"] - base["us_per_pkt"]
        rows.append([config_name(c), c.get("rules4", "-"), fmt(f["sent_pps"], ".0f"), fmt(f["delivered_pps"], ".0f"),
                     fmt(f["loss_pct"], ".1f"), fmt(f["us_per_pkt"]), fmt(extra), fmt(f["cpu"]["busy_pct"], ".0f"), ""])
    print(table(["ruleset doors", "rules", "sent pps", "delivered pps", "lost %", "softirq us/pkt",
                 "over baseline", "cpu0 busy %", ""], rows))
    for n in sorted({c["doors"] for c in results["configs"] if c["doors"]}):
        a, v = _pair(results, n)
        if a.get("flood") and v.get("flood"):
            print(f"   {n} door(s): softirq us/pkt awp/naive = {ratio(a['flood']['us_per_pkt'], v['flood']['us_per_pkt'])}"
                  f", delivered pps awp/naive = {ratio(a['flood']['delivered_pps'], v['flood']['delivered_pps'])}")
    _growth(results)


def _growth(results: dict) -> None:
    counts = sorted({c["doors"] for c in results["configs"] if c["doors"]})
    if len(counts) < 2:
        return
    lo, hi = counts[0], counts[-1]
    for name in ("awp", "naive"):
        a = next(c for c in results["configs"] if c["ruleset"] == name and c["doors"] == lo).get("flood")
        b = next(c for c in results["configs"] if c["ruleset"] == name and c["doors"] == hi).get("flood")
        if a and b:
            print(f"   {name}: softirq us/pkt at {hi} doors / at {lo} door(s) = {ratio(b['us_per_pkt'], a['us_per_pkt'])}")


def _pair(results: dict, n: int) -> tuple[dict, dict]:
    pick = lambda name: next(c for c in results["configs"] if c["ruleset"] == name and c["doors"] == n)  # noqa: E731
    return pick("awp"), pick("naive")


def scan_row(c: dict, rate: int) -> list[str]:
    s = c.get("scan", {}).get(rate)
    if not s:
        return [str(c["doors"]), rate_label(rate), c["ruleset"], *["-"] * 7]
    k = s["knocks"]
    return [str(c["doors"]), rate_label(rate), c["ruleset"], fmt(s.get("sent_pps"), ".0f"),
            fmt(s.get("delivered_pps"), ".0f"), fmt(s.get("loss_pct"), ".1f"), fmt(s["cpu"]["softirq_pct"], ".0f"),
            f"{k['ok']}/{k['n']}", fmt(k["median"]), fmt(k["p95"])]


def report_scan(results: dict, plan: Plan) -> None:
    print(f"\nb2. {plan.knocks} legitimate knocks from client 1 while client 2 scans ports 1-65535 in order "
          f"(a knock fails after {plan.bound:.0f} s)")
    rows = []
    for n in plan.doors:
        for rate in plan.rates:
            rows += [scan_row(c, rate) for c in _pair(results, n)]
    print(table(["doors", "scan pps", "ruleset", "sent pps", "delivered pps", "lost %", "cpu0 softirq %",
                 "knocks ok", "median ms", "p95 ms"], rows))
    print("\n   awp vs naive, same doors and scan rate:")
    rows = []
    for n in plan.doors:
        a, v = _pair(results, n)
        for rate in plan.rates:
            sa, sv = a.get("scan", {}).get(rate), v.get("scan", {}).get(rate)
            if sa and sv:
                rows.append([str(n), rate_label(rate), ratio(sa.get("delivered_pps"), sv.get("delivered_pps")),
                             f"{sa['knocks']['ok']} vs {sv['knocks']['ok']}",
                             ratio(sa["knocks"]["median"], sv["knocks"]["median"])])
    print(table(["doors", "scan pps", "delivered awp/naive", "knocks ok awp vs naive", "median latency awp/naive"], rows))


def report_apply(results: dict) -> None:
    print("\nc. apply: `awp -s -f` wall time from nothing, rules it loaded, no-change re-apply, `awp remove`;"
          " naive chain load for scale")
    rows = []
    for r in results["apply"]:
        status = fmt(r["apply_s"]) if r["ok"] else f"FAILED after {r['apply_s']:.1f} s"
        rows.append([r["backend"], str(r["doors"]), status, str(r.get("rules4", "-")), str(r.get("rules6", "-")),
                     str(r.get("chains4", "-")), fmt(r.get("reapply_s")), fmt(r["remove_s"]),
                     str(r["naive_rules4"]), fmt(r["naive_load_s"])])
    print(table(["backend", "doors", "apply s", "rules v4", "rules v6", "chains v4", "re-apply s", "remove s",
                 "naive rules", "naive load s"], rows))
    for r in results["apply"]:
        if not r["ok"]:
            print(f"   {r['backend']} {r['doors']} doors: {r['error']}")


def header(backend: str, quick: bool) -> None:
    ipt = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout.strip()
    print(f"awp simple-mode benchmark ({'quick' if quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M')}, "
          f"awp {revision()}")
    print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, {ipt}; sections a and b on iptables-{backend}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer trials and rates (under 2 minutes)")
    p.add_argument("--backend", choices=("legacy", "nft"), default="legacy",
                   help="iptables flavour for sections a and b (default: legacy; see README)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("simple_bench: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    plan = make_plan(args.quick, args.backend)
    header(args.backend, args.quick)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="awp-bench-") as workdir, Lab(clients=2, tag="bench") as lab:
        results = measure(lab, workdir, plan, args.backend)
    print(results["steering"])
    report_latency(results, plan, args.backend)
    report_flood(results)
    report_scan(results, plan)
    report_apply(results)
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
