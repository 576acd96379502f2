"""Door commands: what the listener pays per open, and what a flood of opens costs.

No namespaces: the command runner (awp.knockd.actions) alone, with /bin/true as the
command. Prints figures, asserts nothing:

1. submit() per second when every open coalesces (one source) and when every open is a new
   source (the queue fills, the rest is dropped), against a bare dict insert under a lock
   (the floor: what any bounded queue costs);
2. 1,000 opens a second for 3 s from 50 sources: runs, coalesced, dropped, and the
   listener's time in submit() per open.

    sudo .venv/bin/python bench/commands_bench.py
"""

from __future__ import annotations

import os
import pwd
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from awp.knockd.actions import Command, CommandRunner, Job  # noqa: E402

ME = pwd.getpwuid(os.geteuid()).pw_name
TRUE = Command(("/bin/true",), ME, 5.0)


def job(src: str) -> Job:
    return Job(TRUE, "22", "open", src, 22, "simple")


def per_second(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def floor(n: int) -> float:
    lock, d = threading.Lock(), {}

    def put(i):
        with lock:
            if len(d) < 64:
                d[i] = i
    return per_second(put, n)


def submits(n: int) -> None:
    jobs_one = [job("198.18.0.2") for _ in range(n)]
    jobs_many = [job(f"198.18.{i >> 8 & 255}.{i & 255}") for i in range(n)]
    base = floor(n)
    for name, jobs in (("one source (coalesced)", jobs_one), ("new sources (dropped past 64)", jobs_many)):
        runner = CommandRunner(start=False)
        rate = per_second(lambda i: runner.submit(jobs[i]), n)
        print(f"  submit(), {name:31s} {rate:12,.0f}/s  ({rate / base:.2f} x a bare locked dict insert, "
              f"{base:,.0f}/s)")


def flood(rate: int = 1000, seconds: float = 3.0, sources: int = 50) -> None:
    runner = CommandRunner()
    spent = 0.0
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        ahead = t0 + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        s = time.perf_counter()
        runner.submit(job(f"198.18.0.{n % sources + 1}"))
        spent += time.perf_counter() - s
        n += 1
    runner.stop(wait=10)
    c = runner.counts
    runs = runner.runs
    print(f"  {n} opens in {seconds:.0f} s from {sources} sources: queued {c['queued']}, coalesced {c['coalesced']}, "
          f"dropped {c['dropped']}; {runs} runs ({c['queued'] - runs} left when it stopped); submit() {spent / n * 1e6:.1f} us per open")


if __name__ == "__main__":
    print("door commands (awp.knockd.actions), /bin/true")
    submits(200_000)
    flood()
