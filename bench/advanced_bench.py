"""awp advanced-mode benchmark: knock-to-open latency of a one-time-password knock, and how
much junk the listener (awp knockd) absorbs while a valid knock still gets through.

    sudo .venv/bin/python bench/advanced_bench.py [--quick] [--backend auto|nftables|iptables-nft|iptables-legacy]

It prints figures and asserts nothing. Progress goes to stderr, results to stdout.
bench/README.md explains every column.

A MAC is accepted once, and the same secret from the same address in the same minute
gives the same MAC; so every knock comes from its own address: 198.18.1.10, .11, ... are
added to client 1's link (the server's 198.18.1.1/24 reaches them without a route).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from addresses import route_pools
from benchlib import (CpuSample, Knocker, Lab, Sender, fmt, link_rx, make_root, revision, steer_rx, summarize,
                      table)

PORT, KNOCK_PORT = 2222, 2000
OPEN_SECRET, CLOSE_SECRET = "bench-open-secret-4747", "bench-close-secret-4747"
FIRST_EXTRA = 10  # 198.18.1.10 is the first knock source
DRAIN_LIMIT = 20.0  # seconds the listener may take to go idle after a junk step


@dataclass(frozen=True)
class Plan:
    trials: int
    junk_rates: tuple[int, ...]  # 0: as fast as the sender goes
    bound: float  # seconds a knock may take before it counts as failed
    warmup: float  # seconds of junk before the first valid knock
    knocks: int  # valid knocks during each junk step, one after the other
    repeats: tuple[int, ...]  # client repeats tried at each rate (1: a single datagram)


REPEAT_GAP = 0.4  # seconds between two copies of a knock (knock.sh --repeat: 5 within 2 s)
SPOOF_FIRST, SPOOF_SOURCES = "198.19.0.1", 65_535  # bench/addresses.py's flood pool


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan(10, (10000, 200000, 0), 3.0, 1.0, 5, (1, 5))
    return Plan(30, (10000, 50000, 200000, 0), 3.0, 1.0, 15, (1, 5))


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def awp_config(backend: str) -> str:
    return ('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_SIMPLE="no"\nFW_PORTKNOCK_ADVANCED="yes"\n'
            f'FW_PORTKNOCK_IPV6="yes"\nFW_PORTKNOCK_BACKEND="{backend}"\n')


class Listener:
    """The awp knockd that `awp -s -f` started in the server namespace (found by its pidfile)."""

    def __init__(self, root: str):
        self.root = Path(root)
        self.log = self.root / "var" / "log" / "awp-knockd.log"
        self.pid = int((self.root / "var" / "run" / "awp-knockd.pid").read_text().strip())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sys_seconds(self) -> float:
        """The part of cpu_seconds() spent in the kernel (recv, the netlink copies)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def judged(self) -> int:
        """Datagrams the listener has judged since it started (its state file's decision
        counters, written once a second)."""
        try:
            doc = json.loads((self.root / "var" / "run" / "awp-knockd.state").read_text())["decisions"]
        except (OSError, ValueError, KeyError):
            return 0
        total = doc.get("unknown-port", 0)
        for counts in doc["doors"].values():
            total += sum(v for k, v in counts.items() if k != "rejected") + sum(counts["rejected"].values())
        return total

    def netlink_drops(self, server) -> int:
        """Messages the kernel dropped for the listener's netlink sockets (/proc/net/netlink)."""
        rows = server.run(["cat", "/proc/net/netlink"]).stdout.splitlines()[1:]
        return sum(int(r.split()[8]) for r in rows if len(r.split()) > 8 and r.split()[2] == str(self.pid))

    def drain(self, limit: float = DRAIN_LIMIT) -> float:
        """Seconds until the listener used under 5% of a CPU over 0.2 s (at most `limit`)."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            before = self.cpu_seconds()
            time.sleep(0.2)
            if self.cpu_seconds() - before < 0.01:
                break
        return time.monotonic() - start

    def is_ours(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"knockd" in cmdline and str(self.root).encode() in cmdline


class Bench:
    def __init__(self, lab: Lab, plan: Plan):
        self.lab, self.plan = lab, plan
        self.server, self.client, self.junker = lab.server, lab.clients[0], lab.clients[1]
        self.knocker = Knocker(self.client)
        self.next_host = FIRST_EXTRA

    def add_sources(self, count: int) -> None:
        for host in range(FIRST_EXTRA, FIRST_EXTRA + count):
            self.client.run(["ip", "addr", "add", f"198.18.1.{host}/24", "dev", "eth0"])

    def knock(self, repeat: int = 1) -> dict:
        src = f"198.18.1.{self.next_host}"
        self.next_host += 1
        request = {"kind": "udp", "dst": self.lab.server_ip4(self.client), "port": PORT,
                   "knock_port": KNOCK_PORT, "secret": OPEN_SECRET, "src": src, "bound": self.plan.bound,
                   "poll": 0.0005, "repeat": repeat, "repeat_gap": REPEAT_GAP}
        return {"src": src, **self.knocker.trial(request)}

    def junk_step(self, listener: Listener, rate: int, repeat: int) -> dict:
        """Right-sized junk from 65,535 spoofed sources at `rate`; plan.knocks valid knocks in it."""
        offset, drops0, cpu0 = listener.log_size(), listener.netlink_drops(self.server), listener.cpu_seconds()
        copies0, judged0, sys_s0 = copies_in(self.server), listener.judged(), listener.sys_seconds()
        rx0, sys0, start = link_rx(self.server, "awp-c2"), CpuSample.read(), time.monotonic()
        seconds = self.plan.warmup + self.plan.knocks * (self.plan.bound + 0.5) + 2
        sender = Sender(self.junker, {"mode": "spoofjunk", "first": SPOOF_FIRST, "sources": SPOOF_SOURCES,
                                      "sport": 40000, "dst": self.lab.server_ip4(self.junker), "port": KNOCK_PORT,
                                      "rate": rate, "count": int(seconds * (rate or 2_000_000)),
                                      "seconds": seconds})
        try:
            time.sleep(self.plan.warmup)
            knocks = [self.knock(repeat) for _ in range(self.plan.knocks)]
        finally:
            out = sender.stop()
        window = time.monotonic() - start
        cpu = listener.cpu_seconds() - cpu0
        sys_s = listener.sys_seconds() - sys_s0
        rx1, sysc = link_rx(self.server, "awp-c2"), CpuSample.read().since(sys0)
        drain = listener.drain()
        time.sleep(1.2)  # the state file's next write counts what the drain judged
        text = listener.log_since(offset)
        return {"rate": rate, "repeat": repeat, "sent_pps": out["sent"] / out["elapsed"],
                "delivered": rx1[0] - rx0[0], "delivered_pps": (rx1[0] - rx0[0]) / out["elapsed"],
                "knocks": summarize(knocks), "log_bytes": listener.log_size() - offset,
                "listener_cpu_s": cpu, "listener_cpu_pct": 100.0 * cpu / window, "window_s": window, "drain_s": drain,
                "netlink_drops": listener.netlink_drops(self.server) - drops0,
                "overrun_lines": [line for line in text.splitlines() if "overrun" in line],
                "accepted": sum(f"src={k['src']} " in text for k in knocks),
                "copies_sent": sum(k.get("copies", 0) for k in knocks),
                "copies_in": copies_in(self.server) - copies0,
                "judged": listener.judged() - judged0, "sys_share_pct": 100.0 * sys_s / cpu if cpu else 0.0,
                "rss_kib": listener.rss_kib(), "softirq_pct": sysc["softirq_pct"]}


# The knocks' copies that reach the server's input hook, counted before awp's chains see them
# (a table of the bench's own, in the server namespace): told apart from the copies sent,
# they say whether a lost knock was lost on the receive path or after netfilter (NFLOG).
COPIES = ("table inet awpbench {\n counter knocks { }\n chain input {\n"
          "  type filter hook input priority -400; policy accept;\n"
          f"  ip saddr 198.18.1.0/24 udp dport {KNOCK_PORT} counter name knocks\n }}\n}}\n")


# --notrack, an experiment: the knock port's datagrams skip conntrack (what awp could emit
# before its knock rules; a spoofed flood makes a conntrack entry for every source)
NOTRACK = ("table inet awpbench {\n chain raw {\n  type filter hook prerouting priority raw; policy accept;\n"
           f"  udp dport {KNOCK_PORT} notrack\n }}\n}}\n")


def copies_in(server) -> int:
    out = server.run(["nft", "-j", "list", "counter", "inet", "awpbench", "knocks"]).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    return 0


def measure(lab: Lab, workdir: str, plan: Plan, backend: str, notrack: bool = False) -> dict:
    lab.server.serve_tcp(PORT)
    route_pools(lab)  # the spoofed pool is routed back via client 1, as in flood_bench.py
    steering = steer_rx(lab)
    root = make_root(workdir, awp_config(backend), None, f"{PORT},{KNOCK_PORT},{OPEN_SECRET},{CLOSE_SECRET}\n")
    bench = Bench(lab, plan)
    bench.add_sources(plan.trials + len(plan.junk_rates) * len(plan.repeats) * plan.knocks)
    listener = None
    try:
        progress("awp -s -f (starts the listener)")
        lab.server.awp(["-s", "-f"], root, check=True)
        lab.server.run(["nft", "-f", "-"], input=COPIES)
        if notrack:
            lab.server.run(["nft", "-f", "-"], input=NOTRACK)
        listener = Listener(root)
        progress(f"latency: {plan.trials} knocks, each from its own address")
        latency = summarize([bench.knock() for _ in range(plan.trials)])
        latency["cpu_s"] = listener.cpu_seconds()
        rss0 = listener.rss_kib()
        steps = []
        for rate in plan.junk_rates:
            for repeat in plan.repeats:
                progress(f"junk at {rate or 'max'} pps from {SPOOF_SOURCES} spoofed sources, "
                         f"{plan.knocks} valid knocks sent {repeat}x each")
                steps.append(bench.junk_step(listener, rate, repeat))
        return {"steering": steering, "latency": latency, "steps": steps, "listener_pid": listener.pid,
                "rss_start_kib": rss0}
    finally:
        bench.knocker.close()
        remove(lab, root, listener)


def remove(lab: Lab, root: str, listener: Listener | None) -> None:
    """awp remove (stops the listener, removes the rules); if the listener survives, end it."""
    proc = lab.server.awp(["remove"], root, timeout=120)
    if proc.returncode != 0:
        progress(f"awp remove failed: {proc.stderr.strip()}")
    if listener and listener.is_ours():
        progress(f"listener pid {listener.pid} still runs; sending SIGKILL")
        os.kill(listener.pid, signal.SIGKILL)


def report(results: dict, plan: Plan, backend: str) -> None:
    lat = results["latency"]
    print(results["steering"])
    print(f"\n1. knock-to-open latency, advanced mode, 1 door, no other traffic (backend {backend})")
    print(f"   {lat['ok']}/{lat['n']} opened; median {fmt(lat['median'])} ms, p95 {fmt(lat['p95'])} ms "
          "(valid UDP knock sent -> first completed connect; polls every 0.5 ms)")
    print(f"\n2. junk (64 random hex digits + newline, 65 bytes) from {SPOOF_SOURCES} spoofed sources to "
          f"udp/{KNOCK_PORT}; {plan.knocks} valid knocks from client 1 after {plan.warmup:.0f} s of it, one after "
          f"the other (each fails after {plan.bound:.0f} s), sent once or repeated every {REPEAT_GAP} s")
    rows = []
    for s in results["steps"]:
        k = s["knocks"]
        last = re.findall(r"overruns=(\d+)", "\n".join(s["overrun_lines"]))
        per_m = s["log_bytes"] * 1e6 / s["delivered"] if s["delivered"] else 0
        rows.append([str(s["rate"] or "max"), str(s["repeat"]), fmt(s["sent_pps"], ".0f"), fmt(s["delivered_pps"], ".0f"),
                     f"{k['ok']}/{k['n']}", fmt(k["median"]), fmt(k["p95"]), f"{s['accepted']}",
                     f"{s['copies_in']}/{s['copies_sent']}", fmt(100.0 * s["judged"] / s["delivered"] if s["delivered"] else 0, ".0f"),
                     fmt(s["listener_cpu_pct"], ".0f"), fmt(s.get("sys_share_pct"), ".0f"), fmt(s["softirq_pct"], ".0f"), str(s["netlink_drops"]),
                     last[-1] if last else "0", fmt(per_m, ".0f"), str(s["rss_kib"] // 1024), fmt(s["drain_s"], ".1f")])
    print(table(["junk pps", "sends", "sent pps", "delivered pps", "knocks ok", "median ms", "p95 ms", "log: accepted",
                 "copies in/sent", "judged %", "listener cpu %", "of it sys %", "cpu0 softirq %", "netlink drops", "overruns", "log B / M junk", "rss MiB",
                 "drain s"], rows))
    total = sum(s["delivered"] for s in results["steps"])
    print(f"\nlistener RSS {results['rss_start_kib'] / 1024:.1f} MiB before the junk, "
          f"{results['steps'][-1]['rss_kib'] / 1024:.1f} MiB after {total:,} junk datagrams delivered")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer trials and rates (under a minute)")
    p.add_argument("--rates", help="junk rates to run, comma-separated pps (0: max), instead of the plan's")
    p.add_argument("--knocks", type=int, help="valid knocks per junk step instead of the plan's")
    p.add_argument("--repeats", help="client repeats to try, comma-separated (default 1,3)")
    p.add_argument("--backend", choices=("auto", "nftables", "iptables-nft", "iptables-legacy"), default="auto",
                   help="FW_PORTKNOCK_BACKEND for the run (default: auto)")
    p.add_argument("--notrack", action="store_true",
                   help="experiment: the knock port's datagrams skip conntrack (a table of the bench's own)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("advanced_bench: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    plan = make_plan(args.quick)
    if args.rates:
        plan = dataclasses.replace(plan, junk_rates=tuple(int(r) for r in args.rates.split(",")))
    if args.knocks:
        plan = dataclasses.replace(plan, knocks=args.knocks)
    if args.repeats:
        plan = dataclasses.replace(plan, repeats=tuple(int(r) for r in args.repeats.split(",")))
    print(f"awp advanced-mode benchmark ({'quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, awp {revision()}"
          + (", knock port without conntrack (--notrack)" if args.notrack else ""))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="awp-bench-") as workdir, Lab(clients=2, tag="benchadv") as lab:
        results = measure(lab, workdir, plan, args.backend, args.notrack)
    report(results, plan, args.backend)
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
