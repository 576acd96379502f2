"""Fuzz of the listener's packet path at scale: a million (default) hostile datagrams, as
NFLOG netlink buffers, through the parser and the listener with grants in memory.

    .venv/bin/python bench/fuzz_bench.py [--count N] [--seed S] [--junk] [--batch K] [--profile]

No root, no namespace, nothing on the wire. Prints the verdicts, datagrams per second, and
the process's RSS before, halfway and after (flat memory), and fails (exit 1) on a crash or
a grant. The datagrams are tests/unit/fuzz_packets.py's (the CI test runs 20,000).

The listener has the observers run_listener gives it (the decision log, written to nowhere,
the per-door counters): the figure is its whole cost per datagram. `--junk` sends only
what a flood of the bench sends (knock-sized hex from 65,535 sources, the case the kernel's
filters cannot drop), `--batch K` puts K datagrams in one netlink buffer as the adaptive
batching does under load, and `--profile` prints cProfile's top functions.
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

from awp.knockd.decisionlog import DecisionCounters, DecisionLog  # noqa: E402
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
    p.add_argument("--junk", action="store_true", help="only knock-sized hex junk from 65,535 sources")
    p.add_argument("--batch", type=int, default=1, help="datagrams per netlink buffer (1-64)")
    p.add_argument("--profile", action="store_true", help="print cProfile's top 25 functions")
    args = p.parse_args(argv)
    batch = max(1, min(args.batch, 64))
    count = min(args.count, MAX_COUNT)
    logging.basicConfig(level=logging.CRITICAL)
    config = Config(Settings(enabled=True, advanced=True, autoclose=600), (),
                    parse_advanced(f"2222,2000,{OPEN},{CLOSE}\n", "list"))
    with tempfile.TemporaryDirectory(prefix="awp-fuzz-") as tmp:
        replay = ReplayCache(Path(tmp) / "replay-cache")
        replay.load()
        grants = FakeGrants()
        nowhere = logging.getLogger("awp.bench.nowhere")
        nowhere.propagate, nowhere.disabled = False, True
        decision_log = DecisionLog(nowhere)
        listener = Listener(config, grants, replay, [decision_log, DecisionCounters(time.time())])
        now = time.time()
        fuzzer = Fuzzer(OPEN, CLOSE, now, args.seed)
        buffers = _junk_buffers(fuzzer, count, batch) if args.junk else _buffers(fuzzer, count, batch)
        profile = None
        if args.profile:
            import cProfile
            profile = cProfile.Profile()
            profile.enable()
        verdicts: Counter[str] = Counter()
        rss = [rss_kib()]
        handled = 0
        started = time.perf_counter()
        busy = 0.0
        for i, buf in enumerate(buffers):
            t = time.perf_counter()
            for packet in parse_messages(buf):
                verdicts[listener.handle(packet, now).reason] += 1
                handled += 1
            busy += time.perf_counter() - t
            if i == count // batch // 2:
                rss.append(rss_kib())
        rss.append(rss_kib())
        if profile is not None:
            import pstats
            profile.disable()
        wall = time.perf_counter() - started
    print(f"awp fuzz benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {count:,} "
          f"{'knock-sized hex junk datagrams' if args.junk else 'hostile datagrams'}, {batch} a netlink buffer, seed {args.seed}")
    print(f"datagrams parsed and judged: {handled:,}; verdicts: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(verdicts.items())))
    print(f"grants: {len(grants.calls)}; replay cache entries: {len(replay)}; "
          f"decision log: {decision_log.budget.logged} lines, {decision_log.budget.rejected - decision_log.budget.logged:,} "
          f"suppressed in the open period")
    print(f"listener path: {handled / busy:,.0f} datagrams/s ({busy / max(handled, 1) * 1e6:.1f} us each; "
          f"making the datagrams took the rest of {wall:.0f} s)")
    print(f"RSS: {rss[0] / 1024:.1f} MiB before, {rss[1] / 1024:.1f} MiB halfway, {rss[2] / 1024:.1f} MiB after")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    ok = not grants.calls and not len(replay)
    print("result: " + ("no crash, no grant" if ok else "FAILED: something was granted"))
    return 0 if ok else 1


def _buffers(fuzzer: Fuzzer, count: int, batch: int):
    """count hostile datagrams, `batch` netlink messages a buffer."""
    for start in range(0, count, batch):  # (a mutated message may be cut to nothing)
        yield b"".join(fuzzer.message() for _ in range(min(batch, count - start)))


def _junk_buffers(fuzzer: Fuzzer, count: int, batch: int):
    """What a flood of bench/sender.py sends: 64 hex digits and a newline from 198.19.0.1 up
    (65,535 sources), made beforehand in a pool of 65,536 so that making them is not timed."""
    r = fuzzer.rnd
    pool = [fuzzer.wrap(f"198.19.{i >> 8 & 255}.{i & 255 or 1}", r.randbytes(32).hex().encode() + b"\n")
            for i in range(65_536)]
    for start in range(0, count, batch):
        yield b"".join(pool[(start + k) & 0xFFFF] for k in range(min(batch, count - start)))


if __name__ == "__main__":
    sys.exit(main())
