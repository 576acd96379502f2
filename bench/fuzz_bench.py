"""Fuzz of the listener's packet path at scale: a million (default) hostile datagrams, as
NFLOG netlink buffers, through the parser and the listener with grants in memory.

    .venv/bin/python bench/fuzz_bench.py [--count N] [--seed S]

No root, no namespace, nothing on the wire. Prints the verdicts, datagrams per second, and
the process's RSS before, halfway and after (flat memory), and fails (exit 1) on a crash or
a grant. The datagrams are tests/unit/fuzz_packets.py's (the CI test runs 20,000).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "unit")]

from fakes import FakeGrants  # noqa: E402
from fuzz_packets import Fuzzer  # noqa: E402

from awp.knockd.listener import Listener  # noqa: E402
from awp.knockd.nflog import parse_messages  # noqa: E402
from awp.knockd.replay import ReplayCache  # noqa: E402
from awp.lists import parse_advanced  # noqa: E402
from awp.model import Config, Settings  # noqa: E402

OPEN, CLOSE = "fuzz-open-secret", "fuzz-close-secret"
MAX_COUNT = 50_000_000


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    count = min(args.count, MAX_COUNT)
    logging.basicConfig(level=logging.CRITICAL)
    config = Config(Settings(enabled=True, advanced=True, autoclose=600), (),
                    parse_advanced(f"2222,2000,{OPEN},{CLOSE}\n", "list"))
    with tempfile.TemporaryDirectory(prefix="awp-fuzz-") as tmp:
        replay = ReplayCache(Path(tmp) / "replay-cache")
        replay.load()
        grants = FakeGrants()
        listener = Listener(config, grants, replay)
        now = time.time()
        fuzzer = Fuzzer(OPEN, CLOSE, now, args.seed)
        verdicts: Counter[str] = Counter()
        rss = [rss_kib()]
        handled = 0
        started = time.perf_counter()
        busy = 0.0
        for i, buf in enumerate(fuzzer.messages(count)):
            t = time.perf_counter()
            for packet in parse_messages(buf):
                verdicts[listener.handle(packet, now).reason] += 1
                handled += 1
            busy += time.perf_counter() - t
            if i == count // 2:
                rss.append(rss_kib())
        rss.append(rss_kib())
        wall = time.perf_counter() - started
    print(f"awp fuzz benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {count:,} netlink buffers, seed {args.seed}")
    print(f"datagrams parsed and judged: {handled:,}; verdicts: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(verdicts.items())))
    print(f"grants: {len(grants.calls)}; replay cache entries: {len(replay)}; "
          f"rate limiter: {listener.rejects.emitted} lines, {listener.rejects.suppressed:,} suppressed in the open window")
    print(f"listener path: {handled / busy:,.0f} datagrams/s ({busy / max(handled, 1) * 1e6:.1f} us each; "
          f"making the datagrams took the rest of {wall:.0f} s)")
    print(f"RSS: {rss[0] / 1024:.1f} MiB before, {rss[1] / 1024:.1f} MiB halfway, {rss[2] / 1024:.1f} MiB after")
    ok = not grants.calls and not len(replay)
    print("result: " + ("no crash, no grant" if ok else "FAILED: something was granted"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
