"""The ban observer's cost and memory (FW_PORTKNOCK_BAN), in process, no root needed.

Feeds rejected advanced-knock decisions from 1,000,000 distinct (spoofed) sources and from
one source through awp.knockd.ban.Banner, and prints the time per decision next to that of
an observer that does nothing, and the counter's memory (tracemalloc) against its bound.

    .venv/bin/python bench/ban_bench.py [--quick]
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awp.knockd.ban import MAX_SOURCES, Banner  # noqa: E402
from awp.knockd.events import Decision  # noqa: E402
from awp.model import Config, Settings  # noqa: E402


class Store:
    bans = 0

    def ban(self, src, seconds):
        Store.bans += 1


def decisions(count: int, spread: bool):
    base = int(ipaddress.ip_address("198.18.0.0"))
    for i in range(count):
        src = ipaddress.ip_address(base + (i % 131072 if spread else 7))
        yield Decision(0.0, src, 2000, 2222, "advanced", "reject", "bad-mac")


def run(observer, items) -> float:
    start = time.perf_counter()
    for d in items:
        observer(d)
    return time.perf_counter() - start


def main() -> None:
    logging.getLogger("awp.knockd.ban").setLevel(logging.ERROR)  # one line per ban: not what is measured
    count = 100_000 if "--quick" in sys.argv else 1_000_000
    config = Config(Settings(enabled=True, advanced=True, ban=True, ban_after=5, ban_window=60))
    print(f"# ban_bench: {count:,} rejected knocks, FW_PORTKNOCK_BAN_AFTER=5, bound {MAX_SOURCES} sources")
    for spread, label in ((True, "131,072 spoofed sources"), (False, "one source")):
        items = list(decisions(count, spread))
        base = run(lambda d: None, items)
        Store.bans = 0
        banner = Banner(lambda: config, lambda c: Store(), thread=False)
        took = run(banner, items)
        bans = Store.bans
        tracemalloc.start()
        again = Banner(lambda: config, lambda c: Store(), thread=False)
        run(again, items)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{label:>24}: {took / count * 1e6:5.2f} us per decision ({took / base:4.1f}x a no-op observer), "
              f"counter holds {len(banner.counter):,} sources, peak {peak / 2**20:4.1f} MiB, bans {bans:,}")


if __name__ == "__main__":
    main()
