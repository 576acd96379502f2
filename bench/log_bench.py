"""How much log a flood of junk knocks costs: the listener's decision-log observer
(awp.knockd.decisionlog.DecisionLog, its reject budget and summary) fed 1,000,000 rejected
knocks from 65,535 spoofed sources at a given rate, on a simulated clock.

    .venv/bin/python bench/log_bench.py [--packets N]

Only the log path is measured (the checks before it cost the same with or without a log):
the lines go through the listener's own formatter into a byte counter. Columns: `pps` the
simulated rate; `seconds` how long that many packets take at that rate; `lines` and
`bytes` written; `bytes/1M` per million junk packets; `summaries`; `us/decision` the
observer's CPU time per decision on this machine (building the Decision included);
`peak KiB` the largest traced allocation (tracemalloc, a separate run at 500k pps: the
65,535 addresses themselves and the budget's map of at most 4,096 sources); `naive MB/1M` what one line per reject
would have written. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awp.knockd.decisionlog import DecisionLog, line  # noqa: E402
from awp.knockd.events import Decision  # noqa: E402
from awp.knockd.ratelog import RejectBudget  # noqa: E402

SOURCES = 65_535
BASE = int(ipaddress.ip_address("198.18.0.0"))


class Counter:
    def __init__(self):
        self.bytes = self.lines = self.summaries = 0

    def write(self, text: str) -> None:
        self.bytes += len(text.encode())
        self.lines += text.count("\n")
        self.summaries += text.count("knock summary ")

    def flush(self) -> None:
        pass


def run(pps: int, packets: int, traced: bool = False) -> dict:
    clock = [0.0]
    sink = Counter()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"bench.log.{pps}")
    logger.propagate, logger.handlers = False, [handler]
    logger.setLevel(logging.INFO)
    out = DecisionLog(logger, RejectBudget(clock=lambda: clock[0]))
    sources = [ipaddress.ip_address(BASE + i) for i in range(SOURCES)]
    step = 1.0 / pps
    if traced:
        tracemalloc.start()
    started = time.process_time()
    for i in range(packets):
        clock[0] = i * step
        out(Decision(clock[0], sources[i % SOURCES], 2000, 2222, "advanced", "reject",
                     "malformed" if i % 3 else "bad-mac", "-"))
        if i % 1000 == 0:
            out.tick()
    out.close()
    cpu = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    tracemalloc.stop()
    sample = len(line(Decision(0, sources[-1], 2000, 2222, "advanced", "reject", "malformed", "-"))) + 50
    return {"pps": pps, "seconds": packets / pps, "lines": sink.lines, "bytes": sink.bytes,
            "per_1m": sink.bytes * 1_000_000 // packets, "summaries": sink.summaries,
            "us": cpu / packets * 1e6, "peak_kib": peak / 1024, "naive_mb": sample * 1_000_000 / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packets", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{args.packets:,} rejected knocks from {SOURCES:,} spoofed sources")
    print(f"{'pps':>8} {'seconds':>8} {'lines':>6} {'bytes':>8} {'bytes/1M':>9} {'summaries':>9} "
          f"{'us/decision':>11} {'peak KiB':>9} {'naive MB/1M':>11}")
    peak = run(500_000, args.packets, traced=True)["peak_kib"]  # tracemalloc slows it: not timed
    for pps in (10_000, 50_000, 200_000, 500_000):
        r = run(pps, args.packets)
        print(f"{r['pps']:>8} {r['seconds']:>8.1f} {r['lines']:>6} {r['bytes']:>8} {r['per_1m']:>9} "
              f"{r['summaries']:>9} {r['us']:>11.2f} {peak:>9.0f} {r['naive_mb']:>11.0f}")


if __name__ == "__main__":
    main()
