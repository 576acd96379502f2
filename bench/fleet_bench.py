"""Fleet mode figures: grant propagation A -> B, knock-to-open with the fleet on and off,
accepted knocks per second per node, and a node's behaviour while its Redis is stalled.

    sudo .venv/bin/python bench/fleet_bench.py [--quick]

The lab is tests/netns/fleet_helpers.FleetLab: nodes A and B in one fleet (a Redis of our
own in the hub namespace), node C alone (FW_PORTKNOCK_FLEET empty), one client that reaches
all three from many source addresses (198.18.101.0/24 upwards, one per trial, so each trial
starts closed). A trial (bench/fleet_trials.py, in the client namespace): send a knock to
one node, then try a TCP connect (20 ms each) to the same or another node until one
completes. It prints figures and asserts nothing.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests" / "netns")]

from benchlib import PYTHON, fmt, header, median, p95, progress, table  # noqa: E402
from advanced_helpers import KNOCK_PORT, OPEN, PORT  # noqa: E402
from fleet_helpers import FleetLab, fleet_node, fleet_state, wait_fleet  # noqa: E402
from harness import sh, wait_for  # noqa: E402

TRIALS = HERE / "fleet_trials.py"
BOUND = 3.0  # seconds a trial waits for its connect
STALL_GAP = 0.25  # seconds between two knocks while Redis is stalled (so the stall lasts seconds)


class Sources:
    """Fresh client addresses, 198.18.101.1 upwards, added to the client's eth0 on demand."""

    def __init__(self, client):
        self.client, self.next = client, 0

    def take(self, n: int) -> list[str]:
        found = []
        for _ in range(n):
            i = self.next
            self.next += 1
            found.append(f"198.18.{101 + i // 250}.{1 + i % 250}")
        batch = "".join(f"addr add {a}/16 dev eth0\n" for a in found)
        sh(["ip", "-n", self.client.name, "-batch", "-"], input=batch)
        return found


def run_trials(client, knock_ip: str, connect_ip: str, sources: list[str], gap: float = 0.0) -> list[dict]:
    spec = {"knock": knock_ip, "connect": connect_ip, "sources": sources, "secret": OPEN,
            "knock_port": KNOCK_PORT, "port": PORT, "bound": BOUND, "gap": gap}
    out = client.run([PYTHON, TRIALS, json.dumps(spec)], timeout=len(sources) * (BOUND + 1 + gap) + 30)
    return json.loads(out.stdout)


def burst(client, knock_ip: str, sources: list[str]) -> dict:
    spec = {"knock": knock_ip, "sources": sources, "secret": OPEN, "knock_port": KNOCK_PORT, "burst": True}
    return json.loads(client.run([PYTHON, TRIALS, json.dumps(spec)], timeout=120).stdout)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def stamps(text: str, pattern: str) -> list[float]:
    found = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m and re.search(pattern, line):
            found.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


def rate(srv, mark: int, expected: int, limit: float = 60.0) -> tuple[int, float | None]:
    """Accepted knocks after `mark` once they stop coming; (count, per second first to last)."""
    seen = [-1]

    def settled() -> bool:
        n = srv.log.since(mark).count("knock accepted")
        done = n >= expected or (n == seen[0] and n > 0)
        seen[0] = n
        return done

    wait_for(settled, limit, "the burst to be handled", interval=1.0)
    times = stamps(srv.log.since(mark), r"knock accepted")
    if len(times) < 2 or times[-1] <= times[0]:
        return len(times), None
    return len(times), (len(times) - 1) / (times[-1] - times[0])


def ms(results: list[dict]) -> list[float]:
    return [r["ms"] for r in results if r["ok"]]


def row(name: str, values: list[float], n: int) -> list[str]:
    return [name, f"{len(values)}/{n}", fmt(median(values), ".1f"), fmt(p95(values), ".1f"),
            fmt(max(values) if values else None, ".1f")]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    n, k = (20, 60) if quick else (100, 200)
    header("fleet bench", quick, ["bench/fleet_bench.py", *argv])
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="awp-bench-") as work, FleetLab(nodes=3, clients=1, tag="fbench") as lab:
        a, b = (fleet_node(lab.nodes[i], work, "nftables", f"node{i + 1}") for i in (0, 1))
        c = fleet_node(lab.nodes[2], work, "nftables", "alone", FW_PORTKNOCK_FLEET="")
        servers = (a, b, c)
        try:
            for srv, host in zip(servers, lab.nodes):
                srv.start()
                host.serve_tcp(PORT)
            wait_fleet(a, True), wait_fleet(b, True)
            measure(lab, a, b, c, n, k)
        finally:
            for srv in servers:
                srv.cleanup()
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    return 0


def measure(lab, a, b, c, n: int, k: int) -> None:
    client = lab.clients[0]
    ip_a, ip_b, ip_c = (h.ip4 for h in lab.nodes)
    src = Sources(client)
    run_trials(client, ip_a, ip_b, src.take(2))  # warm-up: connections, caches
    progress(f"{n} trials: knock A, connect B")
    mark_b = b.log.mark()
    prop = run_trials(client, ip_a, ip_b, src.take(n))
    applied = [int(x) for x in re.findall(r"fleet grant applied action=open .*from=node1 .*latency_ms=(\d+)",
                                          b.log.since(mark_b))]
    for failed in (r["src"] for r in prop if not r["ok"]):
        src_re = re.escape(failed) + " "
        progress(f"no connect to B from {failed}: A accepted it: "
                 f"{bool(re.search('knock accepted .*src=' + src_re, a.log.text()))}, B applied it: "
                 f"{bool(re.search('fleet grant applied .*src=' + src_re, b.log.since(mark_b)))}")
    progress(f"{n} trials each: knock A connect A (fleet on), knock C connect C (fleet off)")
    on = run_trials(client, ip_a, ip_a, src.take(n))
    off = run_trials(client, ip_c, ip_c, src.take(n))
    print("\nknock-to-open, ms (client clock: knock sent -> first completed connect)")
    print(table(["what", "ok", "median", "p95", "max"], [
        row("knock A, connect B (fleet)", ms(prop), n),
        row("A accepts -> B's kernel (B's log)", [float(x) for x in applied], n),
        row("knock A, connect A (fleet on)", ms(on), n),
        row("knock C, connect C (fleet off)", ms(off), n)]))

    progress(f"bursts of {3 * k} valid knocks to A (fleet) and C (alone)")
    rows = []
    for name, srv, ip in (("A (fleet on)", a, ip_a), ("C (fleet off)", c, ip_c)):
        sources = src.take(k)
        if time.time() % 60 > 40:  # the burst uses the MACs of 3 minutes: all must stay valid
            time.sleep(60.5 - time.time() % 60)
        mark = srv.log.mark()
        sent = burst(client, ip, sources)
        count, per_s = rate(srv, mark, sent["sent"])
        rows.append([name, str(sent["sent"]), str(count), fmt(per_s, ".0f")])
    print("\naccepted knocks per second per node (listener log, first to last accepted)")
    print(table(["node", "sent", "accepted", "per s"], rows))

    stalled(lab, a, client, ip_a, src, n)


def stalled(lab, a, client, ip_a: str, src: Sources, n: int) -> None:
    progress("Redis stalled (SIGSTOP): knock A, connect A")
    m = max(10, n // 4)
    lab.redis.stall()
    t0 = time.monotonic()
    try:
        during = run_trials(client, ip_a, ip_a, src.take(m), gap=STALL_GAP)
    finally:
        lab.redis.resume()
    stalled_for = time.monotonic() - t0
    back = time.monotonic()
    try:
        wait_fleet(a, True, timeout=30)
    except RuntimeError:
        Path("/tmp/fleet-bench-a.log").write_text(a.log.text())
        progress(f"A did not reconnect: {fleet_state(a)}")
        raise
    reconnect = time.monotonic() - back
    values = ms(during)
    print(f"\nRedis stalled for {stalled_for:.1f} s (SIGSTOP, then SIGCONT): {m} knocks to A, {STALL_GAP} s apart")
    print(table(["what", "ok", "median", "p95", "max"], [row("knock A, connect A (stalled)", values, m)]))
    first = during[0]["ms"] if during and during[0]["ok"] else None
    print(f"the first knock (the one whose replay claim times out): {fmt(first, '.1f')} ms; the packet path's "
          f"bound is 200 ms (socket timeout), later knocks do not ask Redis until it is back")
    print(f"fleet connected again {reconnect:.1f} s after SIGCONT (awp status --json polled every 0.3 s)")


if __name__ == "__main__":
    import os

    if os.geteuid() != 0:
        print("fleet_bench: needs root (network namespaces, nft)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
