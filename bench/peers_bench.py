"""awp's advanced mode side by side with its peers fwknopd 2.6.10 and knockd 0.8 (the Debian
packages), in one run: knock-to-open latency idle, valid knocks under right-sized junk from
65,535 spoofed sources, each daemon's CPU and RSS, its log bytes per million junk packets.

    sudo .venv/bin/python bench/peers_bench.py [--quick] [--backend nftables|iptables-nft]
         [--subjects awp,fwknopd,knockd] [--rates 10000,0] [--knocks N]

It prints figures and asserts nothing. Progress goes to stderr, results to stdout;
bench/README.md ("Peers side by side (issue 7)") explains every row.

Each subject gets a fresh lab (harness.Lab: a server and one client namespace, deleted at
the end, also on failure); its daemon runs in the server namespace, started by
`ip netns exec`, and is stopped by its PID. Knocks and junk come from client 1 over the
one link the peers' pcap listens on (awp-c1). The root namespace's firewall (`nft list
ruleset`, and iptables-legacy-save where legacy tables exist) is read before and after
every subject; if it changed, the bench stops at once and says so.

Right-sized junk: awp: 64 random hex digits + newline to udp/2000 (a knock's size and
look); fwknopd: random base64 of a real SPA packet's length to udp/62201; knockd: TCP SYNs
to its first and last knock port (each spoofed source starts a sequence, never ends one).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import peers
from addresses import route_pools
from advanced_bench import OPEN_SECRET, Listener, awp_config, remove
from benchlib import (REPO, CpuSample, Knocker, Lab, Sender, fmt, link_rx, make_root, progress, revision,
                      steer_rx, stop, summarize, table, tool_version)

PORT, AWP_KNOCK_PORT = 2222, 2000
DEV = "awp-c1"  # the server's side of client 1's link: what the peers' pcap listens on
FIRST_HOST = 10  # knock sources 198.18.1.10 upwards, one a knock
SPOOF_FIRST, SPOOF_SOURCES = "198.19.0.1", 65_535
DRAIN_LIMIT = 20.0
READY_LIMIT = 15.0
KNOCK_SH = REPO / "client" / "knock.sh"
REPEAT_GAP = 0.4  # knock.sh -r: copies 0.4 s apart
SUBJECTS = ("awp", "awp-x5", "fwknopd", "knockd")
WARMUP = 2  # knocks before the idle ones, reported apart


@dataclass(frozen=True)
class Plan:
    trials: int  # idle knocks, packet built beforehand
    client_trials: int  # idle knocks by the tool's own client program
    junk_rates: tuple[int, ...]  # 0: as fast as the sender goes
    knocks: int  # valid knocks in each junk step
    junk_seconds: float  # each junk step lasts at least this long
    bound: float = 3.0  # seconds a knock may take before it counts as failed
    warmup: float = 1.0  # seconds of junk before the first valid knock


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan(10, 5, (10000, 0), 5, 10.0)
    return Plan(30, 15, (10000, 50000, 0), 15, 30.0)


# --- the root namespace's firewall -----------------------------------------------------------


def root_firewall() -> dict[str, str]:
    """What the root namespace's firewall holds, read only (nothing is listed that would
    load a module: legacy iptables only where its tables already exist)."""
    out = {"nft list ruleset": subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                                              timeout=30).stdout}
    for family, names, tool in ((4, "/proc/net/ip_tables_names", "iptables-legacy-save"),
                                (6, "/proc/net/ip6_tables_names", "ip6tables-legacy-save")):
        try:
            present = Path(names).read_text().strip()
        except OSError:
            present = ""
        if present:
            out[tool] = subprocess.run([tool], capture_output=True, text=True, timeout=30).stdout
    return out


class RootFirewallChanged(SystemExit):
    pass


def check_root(before: dict[str, str], when: str) -> None:
    changed = peers.firewall_changes(before, root_firewall())
    if changed:
        msg = (f"\n!!! THE ROOT NAMESPACE'S FIREWALL CHANGED ({when}): {', '.join(changed)} differ(s) from "
               "the listing taken before. The bench stops here; compare with the listing below.\n")
        for name in changed:
            msg += f"--- before: {name}\n{before.get(name, '')}\n"
        raise RootFirewallChanged(msg)


# --- daemons ---------------------------------------------------------------------------------


class Daemon:
    """A daemon process in the server namespace, probed through /proc by its PID."""

    def __init__(self, pid: int, logs: list[Path]):
        self.pid, self.logs = pid, logs

    def _stat(self) -> list[str]:
        return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        """utime + stime, and those of its reaped children (knockd's and fwknopd's iptables)."""
        f = self._stat()
        return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_size(self) -> int:
        return sum(p.stat().st_size for p in self.logs if p.exists())

    def log_since(self, offsets: list[int]) -> str:
        text = ""
        for path, offset in zip(self.logs, offsets):
            if path.exists():
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    text += fh.read().decode(errors="replace")
        return text

    def offsets(self) -> list[int]:
        return [p.stat().st_size if p.exists() else 0 for p in self.logs]

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def drain(self, limit: float = DRAIN_LIMIT) -> float:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            before = self.cpu_seconds()
            time.sleep(0.2)
            if self.cpu_seconds() - before < 0.01:
                break
        return time.monotonic() - start


def wait_for_log(daemon: Daemon, proc, needle: str, what: str) -> None:
    deadline = time.monotonic() + READY_LIMIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (rc {proc.returncode}): {daemon.log_since([0] * len(daemon.logs))}")
        if needle in daemon.log_since([0] * len(daemon.logs)):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {READY_LIMIT} s: {daemon.log_since([0] * len(daemon.logs))}")


def private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


# --- the subjects ----------------------------------------------------------------------------


class Subject:
    name = ""
    version = ""

    def __init__(self, lab: Lab, workdir: Path, plan: Plan):
        self.lab, self.workdir, self.plan = lab, workdir, plan
        self.server, self.client = lab.server, lab.clients[0]
        self.dst = lab.server_ip4(self.client)
        self.daemon: Daemon | None = None
        self.proc = None

    def start(self) -> None: ...

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)  # by the PID the lab started it with (its process group)

    def knock_request(self, src: str) -> dict: ...

    def client_request(self, src: str) -> dict: ...

    def junk(self) -> dict: ...

    def junk_text(self) -> str: ...


class Awp(Subject):
    name = "awp"

    def __init__(self, lab, workdir, plan, backend: str, repeat: int = 1):
        super().__init__(lab, workdir, plan)
        self.backend, self.repeat = backend, repeat
        self.name = "awp" if repeat == 1 else f"awp x{repeat}"
        self.version = f"awp {revision()} advanced, {backend}" + (f", each knock sent {repeat}x" if repeat > 1 else "")
        self.root = make_root(str(workdir), awp_config(backend), None,
                              f"{PORT},{AWP_KNOCK_PORT},{OPEN_SECRET},bench-close-secret-4747\n")
        self.listener: Listener | None = None

    def start(self) -> None:
        self.server.awp(["-s", "-f"], self.root, check=True)
        self.listener = Listener(self.root)
        self.daemon = Daemon(self.listener.pid, [self.listener.log])

    def stop(self) -> None:
        remove(self.lab, self.root, self.listener)

    def knock_request(self, src: str) -> dict:
        return {"kind": "udp", "knock_port": AWP_KNOCK_PORT, "secret": OPEN_SECRET, "repeat": self.repeat,
                "repeat_gap": REPEAT_GAP}

    def client_request(self, src: str) -> dict:
        return {"kind": "cmd", "argv": ["bash", str(KNOCK_SH), "-r", str(self.repeat), "-s", src, self.dst,
                                        str(AWP_KNOCK_PORT), "-"], "input": OPEN_SECRET + "\n"}

    def junk(self) -> dict:
        return {"mode": "spoofjunk", "port": AWP_KNOCK_PORT}

    def junk_text(self) -> str:
        return f"64 random hex digits + newline (65 B) to udp/{AWP_KNOCK_PORT}"


class Fwknopd(Subject):
    name = "fwknopd"

    def __init__(self, lab, workdir, plan, loop_sleep: int | None = None):
        super().__init__(lab, workdir, plan)
        self.version = tool_version(["fwknopd", "--version"]).split(",")[0].replace("fwknopd server ", "")
        if loop_sleep is not None:
            self.version += f", PCAP_LOOP_SLEEP {loop_sleep} us"
        self.dir = workdir / "fwknop"
        (self.dir / "run").mkdir(parents=True)
        self.home = self.dir / "home"  # the client's $HOME: its .fwknoprc holds the keys
        self.home.mkdir()
        key, hmac_key = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(64)).decode()
        files = peers.fwknopd_files(DEV, str(self.dir / "run"), PORT, key, hmac_key, loop_sleep)
        self.conf = private(self.dir / "fwknopd.conf", files.conf)
        self.access = private(self.dir / "access.conf", files.access)
        private(self.home / ".fwknoprc",
                f"[bench]\nSPA_SERVER {self.dst}\nACCESS tcp/{PORT}\nKEY_BASE64 {key}\n"
                f"HMAC_KEY_BASE64 {hmac_key}\nUSE_HMAC Y\nHMAC_DIGEST_TYPE sha256\n")
        self.log = self.dir / "fwknopd.log"
        self.packet_size = 0

    def start(self) -> None:
        self.server.run(["iptables-nft-restore"],
                        input=peers.base_rules(PORT, closed_udp=(peers.FWKNOP_PORT,)))
        log = open(self.log, "wb")
        self.proc = self.server.spawn(["fwknopd", "-f", "-c", self.conf, "-a", self.access,
                                       "-p", self.dir / "run" / "fwknopd.pid", "-d", self.dir / "run" / "digest.cache",
                                       "-i", DEV], stdout=log, stderr=log)
        log.close()
        self.daemon = Daemon(self.proc.pid, [self.log])
        wait_for_log(self.daemon, self.proc, "Starting fwknopd main event loop", "fwknopd")
        self.packet_size = len(self.spa_packet("198.18.1.2"))

    def fwknop(self, src: str) -> list[str]:
        return ["env", f"HOME={self.home}", "fwknop", "-n", "bench", "-a", src, "--no-save-args"]

    def spa_packet(self, src: str) -> bytes:
        """An SPA packet for src, built by the fwknop client (-T: not sent)."""
        out = self.dir / "spa.pkt"
        self.client.run([*self.fwknop(src), "-T", "-B", out])
        return out.read_bytes().strip()

    def knock_request(self, src: str) -> dict:
        return {"kind": "udp", "knock_port": peers.FWKNOP_PORT, "payload_hex": self.spa_packet(src).hex()}

    def client_request(self, src: str) -> dict:
        return {"kind": "cmd", "argv": self.fwknop(src)}

    def junk(self) -> dict:
        return {"mode": "spoofjunk", "port": peers.FWKNOP_PORT, "b64": self.packet_size}

    def junk_text(self) -> str:
        return f"random base64 of an SPA packet's length ({self.packet_size} B) to udp/{peers.FWKNOP_PORT}"


class Knockd(Subject):
    name = "knockd"

    def __init__(self, lab, workdir, plan):
        super().__init__(lab, workdir, plan)
        self.version = tool_version(["knockd", "-V"]).splitlines()[0]
        self.dir = workdir / "knockd"
        self.dir.mkdir()
        self.log, self.out = self.dir / "knockd.log", self.dir / "knockd.out"
        self.conf = private(self.dir / "knockd.conf",
                            peers.knockd_conf(DEV, str(self.log), str(self.dir / "knockd.pid"), PORT))

    def start(self) -> None:
        seq = peers.KNOCKD_SEQUENCE
        self.server.run(["iptables-nft-restore"], input=peers.base_rules(PORT, closed_tcp=seq))
        out = open(self.out, "wb")
        self.proc = self.server.spawn(["knockd", "-c", self.conf, "-i", DEV], stdout=out, stderr=out)
        out.close()
        self.daemon = Daemon(self.proc.pid, [self.log, self.out])
        wait_for_log(self.daemon, self.proc, "listening on", "knockd")

    def knock_request(self, src: str) -> dict:
        return {"kind": "tcp", "knocks": list(peers.KNOCKD_SEQUENCE)}

    def client_request(self, src: str) -> dict:
        return {"kind": "cmd", "argv": ["knock", "-4", self.dst, *map(str, peers.KNOCKD_SEQUENCE)]}

    def junk(self) -> dict:
        seq = peers.KNOCKD_SEQUENCE
        return {"mode": "spoof", "ports": [seq[0], seq[-1]]}

    def junk_text(self) -> str:
        seq = peers.KNOCKD_SEQUENCE
        return f"TCP SYNs to its first and last knock port (tcp/{seq[0]}, tcp/{seq[-1]})"


# --- the measurement -------------------------------------------------------------------------


class Run:
    def __init__(self, subject: Subject, plan: Plan):
        self.s, self.plan = subject, plan
        self.knocker = Knocker(subject.client)
        self.next_host = FIRST_HOST

    def source(self) -> str:
        src = f"198.18.1.{self.next_host}"
        self.next_host += 1
        return src

    def knock(self, src: str | None = None, by_client: bool = False) -> dict:
        src = src or self.source()
        req = self.s.client_request(src) if by_client else self.s.knock_request(src)
        req = {"dst": self.s.dst, "port": PORT, "src": src, "bound": self.plan.bound, "poll": 0.0005, **req}
        return {"src": src, **self.knocker.trial(req)}

    def client_knock(self) -> dict:
        """The tool's own client, which cannot bind a source: the route to the server names
        the trial's address as preferred source for the time of the trial."""
        src = self.source()
        c = self.s.client
        c.run(["ip", "route", "replace", f"{self.s.dst}/32", "dev", "eth0", "src", src])
        try:
            return self.knock(src, by_client=True)
        finally:
            c.run(["ip", "route", "del", f"{self.s.dst}/32"], check=False)

    def junk_step(self, rate: int) -> dict:
        d, s = self.s.daemon, self.s
        offsets, cpu0 = d.offsets(), d.cpu_seconds()
        rx0, sys0, start = link_rx(s.server, DEV), CpuSample.read(), time.monotonic()
        # the junk lasts junk_seconds whatever the knocks do (longer if they take longer), so
        # every subject gets about as many junk packets and its log bytes compare
        seconds = max(self.plan.warmup + self.plan.knocks * (self.plan.bound + 0.5) + 2, self.plan.junk_seconds + 1)
        sender = Sender(s.client, {**s.junk(), "first": SPOOF_FIRST, "sources": SPOOF_SOURCES, "sport": 40000,
                                   "dst": s.dst, "rate": rate, "count": int(seconds * (rate or 2_000_000)),
                                   "seconds": seconds})
        try:
            time.sleep(self.plan.warmup)
            knocks = [self.knock() for _ in range(self.plan.knocks)]
            time.sleep(max(0.0, start + self.plan.junk_seconds - time.monotonic()))
        finally:
            out = sender.stop()
        window = time.monotonic() - start
        cpu = d.cpu_seconds() - cpu0
        rx1, sysc = link_rx(s.server, DEV), CpuSample.read().since(sys0)
        drain = d.drain()
        log_bytes = d.log_size() - sum(offsets)
        delivered = max(0, rx1[0] - rx0[0])
        return {"rate": rate, "sent_pps": out["sent"] / out["elapsed"], "delivered": delivered,
                "delivered_pps": delivered / out["elapsed"], "knocks": summarize(knocks), "log_bytes": log_bytes,
                "cpu_pct": 100.0 * cpu / window, "softirq_pct": sysc["softirq_pct"], "drain_s": drain,
                "rss_kib": d.rss_kib(), "alive": d.alive()}


def measure_subject(subject: Subject, plan: Plan, keep: Path | None = None) -> dict:
    lab = subject.lab
    lab.server.serve_tcp(PORT)
    route_pools(lab)
    steering = steer_rx(lab)
    hosts = WARMUP + plan.trials + plan.client_trials + len(plan.junk_rates) * plan.knocks
    if FIRST_HOST + hosts > 254:
        raise ValueError(f"{hosts} knock sources do not fit in 198.18.1.{FIRST_HOST}-254")
    script = "".join(f"addr add 198.18.1.{h}/24 dev eth0\n" for h in range(FIRST_HOST, FIRST_HOST + hosts))
    subject.client.run(["ip", "-batch", "-"], input=script)
    run = None
    try:
        progress(f"{subject.name}: start")
        subject.start()
        run = Run(subject, plan)
        d = subject.daemon
        first = [run.knock() for _ in range(WARMUP)]  # not counted: a daemon's first knock may warm it up
        progress(f"{subject.name}: {plan.trials} idle knocks (packet built beforehand)")
        idle = summarize([run.knock() for _ in range(plan.trials)])
        progress(f"{subject.name}: {plan.client_trials} idle knocks by its own client program")
        by_client = summarize([run.client_knock() for _ in range(plan.client_trials)])
        rss0, cpu_idle = d.rss_kib(), d.cpu_seconds()
        steps = []
        for rate in plan.junk_rates:
            progress(f"{subject.name}: junk at {rate or 'max'} pps from {SPOOF_SOURCES} spoofed sources, "
                     f"{plan.knocks} valid knocks")
            steps.append(run.junk_step(rate))
            if not steps[-1]["alive"]:
                progress(f"{subject.name}: the daemon died during the junk")
                break
        return {"name": subject.name, "version": subject.version, "steering": steering, "idle": idle,
                "first": summarize(first),
                "client": by_client, "rss_start_kib": rss0, "cpu_idle_s": cpu_idle, "steps": steps,
                "junk": subject.junk_text()}
    finally:
        if run:
            run.knocker.close()
        subject.stop()
        if keep and subject.daemon:
            keep.mkdir(parents=True, exist_ok=True)
            for path in subject.daemon.logs:
                if path.exists():
                    shutil.copyfile(path, keep / f"{subject.name.replace(' ', '-')}-{path.name}")


def run_all(names: list[str], plan: Plan, backend: str, keep: Path | None = None,
            loop_sleep: int | None = None) -> list[dict]:
    before = root_firewall()
    results = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="awp-peers-") as tmp, Lab(clients=1, tag=f"peers{name}") as lab:
            workdir = Path(tmp)
            subject = {"awp": lambda: Awp(lab, workdir, plan, backend),
                       "awp-x5": lambda: Awp(lab, workdir, plan, backend, repeat=5),
                       "fwknopd": lambda: Fwknopd(lab, workdir, plan, loop_sleep),
                       "knockd": lambda: Knockd(lab, workdir, plan)}[name]()
            try:
                results.append(measure_subject(subject, plan, keep))
            finally:
                check_root(before, f"during or after {name}")
        check_root(before, f"after {name}'s lab was deleted")
    return results


# --- the report ------------------------------------------------------------------------------


def pair(summary: dict) -> str:
    return f"{fmt(summary['median'])} / {fmt(summary['p95'])}"


def report(results: list[dict], plan: Plan) -> None:
    for r in results:
        print(f"\n{r['name']} ({r['version']}); junk: {r['junk']}")
        print(f"   first {r['first']['n']} knocks after the start (not counted below): {r['first']['ok']} opened, "
              f"median {fmt(r['first']['median'])} ms")
        print(f"   idle, packet built beforehand: {r['idle']['ok']}/{r['idle']['n']} opened, median / p95 "
              f"{pair(r['idle'])} ms")
        print(f"   idle, its own client program:  {r['client']['ok']}/{r['client']['n']} opened, median / p95 "
              f"{pair(r['client'])} ms")
        rows = []
        for s in r["steps"]:
            k = s["knocks"]
            rows.append([str(s["rate"] or "max"), fmt(s["sent_pps"], ".0f"), fmt(s["delivered_pps"], ".0f"),
                         f"{k['ok']}/{k['n']}", fmt(k["median"]), fmt(k["p95"]), fmt(s["cpu_pct"], ".0f"),
                         fmt(s["softirq_pct"], ".0f"),
                         fmt(peers.log_per_million(s["log_bytes"], s["delivered"]), ".0f"),
                         f"{s['rss_kib'] / 1024:.1f}", fmt(s["drain_s"], ".1f"), "yes" if s["alive"] else "DIED"])
        print(table(["junk pps", "sent pps", "delivered pps", "knocks ok", "median ms", "p95 ms", "daemon cpu %",
                     "cpu0 softirq %", "log B / M junk", "rss MiB", "drain s", "alive"], rows))
        print(f"   RSS {r['rss_start_kib'] / 1024:.1f} MiB before the junk")
    side_by_side(results, plan)


def side_by_side(results: list[dict], plan: Plan) -> None:
    base = next((r for r in results if r["name"] == "awp"), None)
    names = [f"{r['name']} ({r['version']})" for r in results]
    rows = []

    def row(label: str, cell) -> None:
        rows.append([label, *(cell(r) for r in results)])

    def vs(r: dict, value, base_value) -> str:
        return "" if r is base or base is None else f" ({peers.times(value, base_value)})"

    row("idle, packet sent -> open, median / p95 ms (x awp)",
        lambda r: pair(r["idle"]) + vs(r, r["idle"]["median"], base and base["idle"]["median"]))
    row("idle, client program started -> open, median / p95 ms (x awp)",
        lambda r: pair(r["client"]) + vs(r, r["client"]["median"], base and base["client"]["median"]))
    for i, rate in enumerate(plan.junk_rates):
        label = f"{rate or 'max'} pps"

        def step(r, i=i):
            return r["steps"][i] if i < len(r["steps"]) else None

        row(f"valid knocks under junk at {label}: ok / N, median ms",
            lambda r: (f"{step(r)['knocks']['ok']}/{step(r)['knocks']['n']}, {fmt(step(r)['knocks']['median'])}"
                       if step(r) else "-"))
        row("  junk delivered pps; daemon CPU % of a core",
            lambda r: f"{fmt(step(r)['delivered_pps'], ',.0f')}; {fmt(step(r)['cpu_pct'], '.0f')}" if step(r) else "-")
        row("  log bytes per million junk packets",
            lambda r: (fmt(peers.log_per_million(step(r)["log_bytes"], step(r)["delivered"]), ",.0f")
                       if step(r) else "-"))
    row("daemon RSS MiB before / after the junk (x awp)",
        lambda r: f"{r['rss_start_kib'] / 1024:.1f} / {r['steps'][-1]['rss_kib'] / 1024:.1f}"
        + vs(r, r["steps"][-1]["rss_kib"], base and base["steps"][-1]["rss_kib"]) if r["steps"] else "-")
    print("\nside by side (one run; ratios are the peer over awp)")
    print(table(["", *names], rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer knocks and rates (about 4 minutes)")
    p.add_argument("--backend", choices=("nftables", "iptables-nft"), default="nftables",
                   help="awp's FW_PORTKNOCK_BACKEND (default: nftables)")
    p.add_argument("--subjects", default=",".join(SUBJECTS),
                   help=f"comma-separated, run in this order (default {','.join(SUBJECTS)}; awp-x5: each awp knock "
                        "sent 5 times, 0.4 s apart, as knock.sh -r 5)")
    p.add_argument("--rates", help="junk rates, comma-separated pps (0: max), instead of the plan's")
    p.add_argument("--knocks", type=int, help="valid knocks per junk step instead of the plan's")
    p.add_argument("--fwknopd-loop-sleep", type=int, metavar="US",
                   help="fwknopd's PCAP_LOOP_SLEEP in microseconds (default: as Debian ships it, 100000)")
    p.add_argument("--keep-logs", type=Path, help="copy each daemon's log files into this directory")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("peers_bench: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    names = [n for n in args.subjects.split(",") if n]
    unknown = set(names) - set(SUBJECTS)
    if unknown:
        p.error(f"unknown subjects: {sorted(unknown)}")
    plan = make_plan(args.quick)
    if args.rates:
        plan = dataclasses.replace(plan, junk_rates=tuple(int(r) for r in args.rates.split(",")))
    if args.knocks:
        plan = dataclasses.replace(plan, knocks=args.knocks)
    print(f"awp and its peers side by side ({'quick' if args.quick else 'full'}), "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}, awp {revision()}")
    print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, {tool_version(['iptables-nft', '-V'])}; "
          f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"command: bench/peers_bench.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    start = time.monotonic()
    results = run_all(names, plan, args.backend, args.keep_logs, args.fwknopd_loop_sleep)
    if results:
        print(results[0]["steering"])
    report(results, plan)
    print("\nroot namespace firewall unchanged (checked before and after each subject)")
    print(f"total {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
