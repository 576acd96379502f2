"""Shared pieces of awp's benchmarks: the netns harness, probes of /proc, child processes.

The benchmarks print figures; nothing here asserts on timing. Every child process is
started through the harness Lab (killed by PID when the Lab closes) and bounded in time
and in packet count on its own.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, REPO / "tests" / "netns"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from harness import Lab, make_root, stop  # noqa: E402,F401  (re-exported)

PYTHON = sys.executable
SENDER = HERE / "sender.py"
KNOCKER = HERE / "knocker.py"
PKNOCK_REF_DIR = REPO / "tests" / "unit"
TICK = os.sysconf("SC_CLK_TCK")
SOFTIRQ_CPU = 0  # every packet the server receives is processed here (RPS), see steer_rx
CLIENT_CPU = 1  # client programs run here, so they do not compete with that softirq
READY_LIMIT = 60.0  # seconds sender.py may take to build its packets


# --- figures -------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def fmt(value, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def ratio(a, b) -> str:
    if not a or not b:
        return "-"
    value = a / b
    return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"


def revision() -> str:
    """The awp revision measured: commit, and whether the working tree differs from it."""
    git = lambda *args: subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,  # noqa: E731
                                       text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--", "awp") else "")


def progress(text: str) -> None:
    """A progress line on stderr (results go to stdout)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def tool_version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def header(title: str, quick: bool, argv: list[str]) -> None:
    """Date, machine, tools, awp revision, the command, and how busy the machine was."""
    print(f"{title} ({'quick' if quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M %Z')}, awp {revision()}")
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {tool_version(['nft', '--version'])}, "
          f"{tool_version(['iptables', '-V'])}")
    print(f"command: {' '.join(argv)}; load average at start: {load_average()}")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


# --- the machine ---------------------------------------------------------------------------


def two_cpus() -> bool:
    return len(os.sched_getaffinity(0)) >= 2 and {SOFTIRQ_CPU, CLIENT_CPU} <= os.sched_getaffinity(0)


def steer_rx(lab: Lab) -> str:
    """Process every packet the server's links receive on SOFTIRQ_CPU (RPS), like one NIC
    queue would; the clients, pinned to CLIENT_CPU, then only pay for sending. Without it a
    veth receive runs in the sender's own context, so a flood slows its sender down
    instead of competing with other sources for the server's receive CPU."""
    if not two_cpus():
        return "receive steering off (fewer than 2 CPUs): senders pay for the server's receive path"
    mask = format(1 << SOFTIRQ_CPU, "x")
    for i in range(1, len(lab.clients) + 1):
        lab.server.run(["sh", "-c", f"echo {mask} > /sys/class/net/awp-c{i}/queues/rx-0/rps_cpus"])
    return f"server receive path steered to CPU {SOFTIRQ_CPU} (RPS); clients pinned to CPU {CLIENT_CPU}"


def client_cpu() -> int | None:
    return CLIENT_CPU if two_cpus() else None


@dataclass(frozen=True)
class CpuSample:
    """One CPU's line of /proc/stat (global, not per namespace), in clock ticks."""

    softirq: int
    busy: int
    total: int

    @classmethod
    def read(cls, cpu: int = SOFTIRQ_CPU) -> CpuSample:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{cpu} "):
                f = [int(x) for x in line.split()[1:]]
                idle = f[3] + f[4]
                return cls(softirq=f[6], busy=sum(f[:8]) - idle, total=sum(f[:8]))
        raise RuntimeError(f"cpu{cpu} not in /proc/stat")

    def since(self, before: CpuSample) -> dict:
        total = max(1, self.total - before.total)
        return {"softirq_s": (self.softirq - before.softirq) / TICK,
                "softirq_pct": 100.0 * (self.softirq - before.softirq) / total,
                "busy_pct": 100.0 * (self.busy - before.busy) / total}


def link_rx(host, dev: str) -> tuple[int, int]:
    """(packets, dropped) received by dev in host's namespace (the veth peer's view)."""
    info = json.loads(host.run(["ip", "-s", "-j", "link", "show", "dev", dev]).stdout)[0]
    rx = info["stats64"]["rx"]
    return rx["packets"], rx["dropped"]


# --- child processes inside the lab ---------------------------------------------------------


def read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        buf += chunk
    return buf.decode()


class Sender:
    """sender.py in a client namespace; stop() ends it early and returns its summary."""

    def __init__(self, host, args: dict):
        cpu = client_cpu()
        if cpu is not None:
            args = {**args, "cpu": cpu}
        self.limit = float(args["seconds"]) + 15
        self.proc = host.spawn([PYTHON, SENDER, json.dumps(args)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
        if read_line(self.proc, READY_LIMIT) != "ready\n":  # packets built, sending starts
            stop(self.proc)
            raise RuntimeError("sender.py did not start")

    def stop(self) -> dict:
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self.wait()

    def wait(self) -> dict:
        line = read_line(self.proc, self.limit)
        stop(self.proc)
        if not line:
            raise RuntimeError("sender.py gave no summary")
        return json.loads(line)


class Knocker:
    """knocker.py in a client namespace, one trial per request."""

    def __init__(self, host):
        cpu = client_cpu()
        env = {**os.environ, "PYTHONPATH": str(PKNOCK_REF_DIR)}
        argv = [PYTHON, KNOCKER] + ([str(cpu)] if cpu is not None else [])
        self.proc = host.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def trial(self, request: dict) -> dict:
        self.start(request)
        return self.result()

    def start(self, request: dict) -> None:
        """Send one request; result() waits for its answer (several knockers run at once)."""
        self.limit = float(request["bound"]) + float(request.get("gap", 0)) * len(request.get("knocks", ())) + 10
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def result(self) -> dict:
        line = read_line(self.proc, self.limit)
        if not line:
            raise RuntimeError("knocker.py did not answer")
        return json.loads(line)

    def close(self) -> None:
        stop(self.proc)


def summarize(results: list[dict]) -> dict:
    ok = [r["ms"] for r in results if r["ok"]]
    return {"n": len(results), "ok": len(ok), "median": median(ok), "p95": p95(ok)}



def run_bench(argv: list[str] | None, *, name: str, title: str, doc: str, quick_help: str, make_plan,
              measure, report, clients: int = 2) -> int:
    """The main() of every issue-6 benchmark: --quick, root check, header, one Lab, report."""
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print(f"{name}: needs root (network namespaces, nft, iptables)", file=sys.stderr)
        return 2
    plan = make_plan(args.quick)
    header(title, args.quick, [f"bench/{name}.py", *(argv or sys.argv[1:])])
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="awp-bench-") as workdir, \
            Lab(clients=clients, tag=name.replace("_bench", "").replace("_", "")[:8]) as lab:
        results = measure(lab, workdir, plan)
    report(results, plan)
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    return 0
