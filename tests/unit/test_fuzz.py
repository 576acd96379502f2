"""Fuzz of the packet path: hostile netlink buffers through the NFLOG parser and the
listener (grants in memory). Bounded for CI; bench/fuzz_bench.py runs a million and more.
No crash, no grant, and the replay cache, rate limiter and heap stay flat."""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc

from fakes import FakeGrants
from fuzz_packets import Fuzzer

from awp.knockd.decisionlog import DecisionLog
from awp.knockd.listener import Listener
from awp.knockd.nflog import parse_messages
from awp.knockd.replay import ReplayCache
from awp.knockd.verify import ExpectedMacs
from awp.lists import parse_advanced
from awp.model import Config, Settings

OPEN, CLOSE = "fuzz-open-secret", "fuzz-close-secret"
CONFIG = Config(Settings(enabled=True, advanced=True, autoclose=600), (),
                parse_advanced(f"2222,2000,{OPEN},{CLOSE}\n", "list"))
COUNT = 20_000


def test_hostile_datagrams_never_crash_grant_or_grow_memory(tmp_path, caplog):
    caplog.set_level(logging.CRITICAL)  # the rejects' lines are not what is tested here
    now = time.time()
    grants = FakeGrants()
    replay = ReplayCache(tmp_path / "replay-cache")
    replay.load()
    decision_log = DecisionLog()
    listener = Listener(CONFIG, grants, replay, [decision_log])
    listener.expected = ExpectedMacs(slots=1024)  # full in the first half: flat in the second
    fuzzer = Fuzzer(OPEN, CLOSE, now)
    verdicts: dict[str, int] = {}
    tracemalloc.start()
    try:
        for half in (0, 1):
            for buf in fuzzer.messages(COUNT // 2):
                for packet in parse_messages(buf):
                    assert 0 <= packet.length <= 0xFFFF and len(packet.payload) <= packet.length
                    verdict = listener.handle(packet, now)
                    verdicts[verdict.reason] = verdicts.get(verdict.reason, 0) + 1
            gc.collect()
            if half == 0:
                first = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert grants.calls == [] and len(replay) == 0 and not replay.path.exists()
    assert set(verdicts) <= {"malformed", "bad-mac", "unknown-port"}, verdicts
    assert verdicts["bad-mac"] > COUNT // 4 and verdicts["malformed"] > COUNT // 20  # the MAC check ran
    assert 0 < decision_log.budget.logged <= decision_log.budget.burst
    assert 900 < len(listener.expected) <= 1024
    assert grown < 256 * 1024, f"heap grew {grown} bytes over the second {COUNT // 2} datagrams"


def test_the_fuzzer_s_flipped_macs_are_one_bit_from_a_knock_that_opens(tmp_path):
    """The flipped-MAC kind is worth something only if its unflipped knock would open."""
    now = time.time()
    fuzzer = Fuzzer(OPEN, CLOSE, now, seed=3)
    replay = ReplayCache(tmp_path / "replay-cache")
    replay.load()
    grants = FakeGrants()
    listener = Listener(CONFIG, grants, replay)
    src = "198.19.0.9"
    good = parse_messages(fuzzer.wrap(src, fuzzer.valid(src, secret=OPEN)))
    assert listener.handle(good[0], now).action == "open" and len(grants.calls) == 1
