"""FW_PORTKNOCK_BAN without a kernel: its settings, the listener's failure counter (a fake
clock), its bounded memory, the observer (what counts, the allowlist, the worker), the ban
rules the compilers emit, and what status shows."""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from awp import cli, workflow
from awp.backend import Inspection
from awp.backend.recent import Entry, KernelClock
from awp.backend.xt_bans import RecentBans, counters_from_save
from awp.compile import compile_family, render_restore, KernelState
from awp.compile.nftables import compile_nft
from awp.errors import ConfigError
from awp.knockd.ban import COUNTED, MAX_SOURCES, Banner, FailureCounter
from awp.knockd.events import Decision
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings
from awp.settings import parse_settings
from awp.status_json import status_document

DOOR = parse_simple("22:7481,2203,9127\n", "simple")
V4, V6 = ipaddress.ip_address("198.18.5.2"), ipaddress.ip_address("2001:2:0:5::2")
ALLOWED = ipaddress.ip_address("198.18.200.7")
ON = Settings(enabled=True, advanced=True, ban=True, ban_after=3, ban_window=60, ban_time=600,
              allow=(ipaddress.ip_network("198.18.200.0/24"),))


# --- settings ------------------------------------------------------------------------------


def test_ban_is_off_by_default_with_documented_numbers():
    s = parse_settings("", "c")
    assert (s.ban, s.ban_after, s.ban_window, s.ban_time) == (False, 5, 60, 600)


def test_ban_settings_parsed():
    s = parse_settings('FW_PORTKNOCK_BAN="yes"\nFW_PORTKNOCK_BAN_AFTER="2"\nFW_PORTKNOCK_BAN_WINDOW="86400"\n'
                       'FW_PORTKNOCK_BAN_TIME="1"\n', "c")
    assert (s.ban, s.ban_after, s.ban_window, s.ban_time) == (True, 2, 86400, 1)


@pytest.mark.parametrize(("key", "value", "words"), [
    ("FW_PORTKNOCK_BAN", "maybe", ('"yes" or "no"',)),
    ("FW_PORTKNOCK_BAN_AFTER", "1", ("out of range 2-100",)),
    ("FW_PORTKNOCK_BAN_AFTER", "101", ("out of range 2-100",)),
    ("FW_PORTKNOCK_BAN_WINDOW", "0", ("out of range 1-86400",)),
    ("FW_PORTKNOCK_BAN_WINDOW", "86401", ("out of range 1-86400",)),
    ("FW_PORTKNOCK_BAN_TIME", "0", ("out of range 1-86400",)),
    ("FW_PORTKNOCK_BAN_TIME", "5m", ("whole number",)),
    ("FW_PORTKNOCK_BAN_TIME", "+5", ("whole number",)),
])
def test_bad_ban_value_names_file_line_and_key(key, value, words):
    text = f'# awp\nFW_PORTKNOCK="yes"\nFW_PORTKNOCK_BAN="yes"\n{key}="{value}"\n'
    if key == "FW_PORTKNOCK_BAN":
        text = f'# awp\nFW_PORTKNOCK="yes"\n\n{key}="{value}"\n'
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "etc/config")
    assert (info.value.path, info.value.line) == ("etc/config", 4)
    assert key in info.value.message and all(w in info.value.message for w in words), info.value.message


def test_a_ban_without_an_allowlist_draws_a_warning():
    from awp.checks import check_config

    warned = check_config(Config(Settings(enabled=True, ban=True), DOOR))
    assert any("FW_PORTKNOCK_ALLOW is empty" in str(f) for f in warned)
    assert not any("FW_PORTKNOCK_BAN" in str(f) for f in check_config(Config(ON, DOOR)))


# --- the failure counter -------------------------------------------------------------------


def test_the_nth_failure_within_the_window_bans_and_the_count_starts_again():
    counter = FailureCounter(after=3, window=60)
    assert [counter.fail("a", t) for t in (0, 10, 59.9)] == [False, False, True]
    assert len(counter) == 0
    assert [counter.fail("a", t) for t in (61, 62)] == [False, False]


def test_failures_older_than_the_window_do_not_count():
    counter = FailureCounter(after=3, window=60)
    assert [counter.fail("a", t) for t in (0, 30, 60, 89.9)] == [False, False, False, True]
    counter = FailureCounter(after=3, window=60)
    assert [counter.fail("a", t) for t in (0, 59, 120, 121)] == [False, False, False, False]


def test_sources_are_counted_apart():
    counter = FailureCounter(after=2, window=60)
    assert (counter.fail("a", 0), counter.fail("b", 1), counter.fail("a", 2)) == (False, False, True)
    assert counter.fail("b", 3) is True


def test_memory_is_bounded_by_sources_and_timestamps():
    counter = FailureCounter(after=5, window=60, max_sources=100)
    for i in range(10_000):
        assert counter.fail(f"198.18.{i // 256}.{i % 256}", i * 0.001) is False
    assert len(counter) == 100 and counter.evicted == 9_900
    assert all(len(times) == 1 for times in counter._times.values())
    for t in range(1000):
        counter.fail("x", 1000 + t * 1000)  # never within the window of each other
    assert len(counter._times["x"]) <= 4  # at most after - 1 timestamps per source


def test_the_least_recently_failing_source_is_the_one_forgotten():
    counter = FailureCounter(after=2, window=60, max_sources=2)
    counter.fail("old", 0)
    counter.fail("kept", 1)
    counter.fail("new", 2)
    assert counter.fail("kept", 3) is True and counter.fail("old", 3) is False


def test_default_bound():
    assert MAX_SOURCES <= 65536


# --- the observer --------------------------------------------------------------------------


class Store:
    def __init__(self):
        self.bans: list[tuple] = []
        self.done = threading.Event()

    def ban(self, src, seconds):
        self.bans.append((src, seconds))
        self.done.set()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def reject(src, reason="bad-mac", mode="advanced") -> Decision:
    return Decision(0.0, src, 2000, 2222, mode, "reject", reason)


def banner(settings=ON, thread=False):
    store, clock = Store(), Clock()
    config = Config(settings)
    return Banner(lambda: config, lambda c: store, clock, thread=thread), store, clock


def test_banner_bans_after_n_rejects_within_the_window_for_ban_time():
    observer, store, clock = banner()
    for _ in range(2):
        observer(reject(V4))
        clock.now += 20
    assert store.bans == []
    observer(reject(V4))
    assert store.bans == [(V4, 600)]


def test_banner_counts_ipv6_and_string_sources():
    observer, store, _ = banner()
    for _ in range(3):
        observer(reject(str(V6), reason="malformed"))
    assert store.bans == [(V6, 600)]


def test_banner_slow_failures_are_not_a_ban():
    observer, store, clock = banner()
    for _ in range(10):
        observer(reject(V4))
        clock.now += 31  # 2 in any 60 s
    assert store.bans == []


def test_the_allowlist_is_never_banned():
    observer, store, _ = banner()
    for _ in range(50):
        observer(reject(ALLOWED))
    assert store.bans == []


@pytest.mark.parametrize("reason", ["replay", "untrusted-cache", "unknown-port"])
def test_what_does_not_count(reason):
    assert reason not in COUNTED
    observer, store, _ = banner()
    for _ in range(10):
        observer(reject(V4, reason))
    assert store.bans == []


def test_accepted_knocks_simple_mode_decisions_and_the_ban_off_do_not_count():
    observer, store, _ = banner()
    for _ in range(5):
        observer(Decision(0.0, V4, 2000, 2222, "advanced", "open", "ok"))
        observer(reject(V4, mode="simple"))
    assert store.bans == []
    off, store_off, _ = banner(Settings(enabled=True, advanced=True))
    for _ in range(10):
        off(reject(V4))
    assert store_off.bans == []


def test_a_reload_that_changes_the_numbers_starts_counting_again():
    store, clock = Store(), Clock()
    configs = [Config(ON)]
    observer = Banner(lambda: configs[0], lambda c: store, clock, thread=False)
    observer(reject(V4))
    observer(reject(V4))
    configs[0] = Config(Settings(enabled=True, advanced=True, ban=True, ban_after=2, ban_time=5))
    observer(reject(V4))
    assert store.bans == []
    observer(reject(V4))
    assert store.bans == [(V4, 5)]


def test_the_worker_thread_writes_the_ban_and_a_failing_store_is_logged(caplog):
    observer, store, _ = banner(thread=True)
    for _ in range(3):
        observer(reject(V4))
    assert store.done.wait(5)
    assert store.bans == [(V4, 600)]

    class Broken:
        def ban(self, src, seconds):
            raise OSError("no such set")

    config = Config(ON)
    broken = Banner(lambda: config, lambda c: Broken(), Clock(), thread=False)
    for _ in range(3):
        broken(reject(V4))
    assert "ban not written src=198.18.5.2" in caplog.text


def test_a_full_queue_drops_bans_instead_of_blocking():
    config = Config(ON)
    gate = threading.Event()

    class Slow:
        def ban(self, src, seconds):
            gate.wait(5)

    observer = Banner(lambda: config, lambda c: Slow(), Clock())
    start = time.monotonic()
    for i in range(3 * 2000):
        observer(reject(ipaddress.ip_address(f"198.18.{(i // 3) // 250}.{(i // 3) % 250 + 1}")))
    assert time.monotonic() - start < 5
    assert observer.dropped >= 2000 - 1024 - 1
    gate.set()


# --- the compilers -------------------------------------------------------------------------

ADVANCED = parse_advanced("2222,2000,opensecret1,closesecret1\n", "advanced")


def test_ban_off_emits_no_ban_rule_at_all():
    config = Config(Settings(enabled=True, advanced=True), DOOR, ADVANCED)
    nft = compile_nft(config)
    text = " ".join(r for c in nft.chains for r in c.rules) + " ".join(s.name for s in nft.sets)
    assert "ban" not in text and "fail" not in text
    for family in (4, 6):
        assert "BAN" not in render_restore(compile_family(config, family), KernelState())


def test_nft_ban_is_checked_first_on_every_knock_port_and_counts_failures():
    nft = compile_nft(Config(ON, DOOR, ADVANCED))
    chains = {c.name: c.rules for c in nft.chains}
    assert chains["knock"][0].startswith("ip saddr @ban4 ip saddr != { 198.18.200.0/24 } counter name ban_dropped")
    assert chains["knock_udp"][0].startswith("ip saddr @ban4")
    assert chains["fail"][0] == "ip saddr { 198.18.200.0/24 } return"
    assert "timeout 60s limit rate over 1/week burst 2 packets } add @ban4 { ip saddr timeout 600s }" in chains["fail"][1]
    for name in ("mid", "at_1", "at_2", "last_3", "second"):
        assert "jump fail" in chains[name], name
    assert {"ban4", "ban6", "fail4", "fail6"} <= {s.name for s in nft.sets}


def test_iptables_ban_chains():
    text = render_restore(compile_family(Config(ON, DOOR, ADVANCED), 4), KernelState())
    assert "-A AWP-BAN -s 198.18.200.0/24 -j RETURN\n-A AWP-BAN -m recent --name awp-ban --rcheck --seconds 600 -j DROP" in text
    assert "-A AWP-FAIL -m recent --name awp-fail --rcheck --seconds 60 --hitcount 3 -j AWP-BAN-ADD" in text
    for leaf in ("AWP-I7481", "AWP-I2203", "AWP-I9127", "AWP-P7481", "AWP-U2000"):
        assert f":{leaf} " in text and text.index(f"-A {leaf} -j AWP-BAN\n") == text.index(f"-A {leaf} "), leaf


# --- status --------------------------------------------------------------------------------


def test_xt_ban_list_is_what_the_kernel_clock_says_is_left():
    class Lists:
        def entries(self, name):
            assert name == "awp-ban"
            return [Entry(V4, 1000 - 100 * 250), Entry(V6, 1000 - 700 * 250)]

    found = RecentBans(Config(ON), Lists()).list(KernelClock(1000, 250))
    assert found == [("198.18.5.2", 500)]  # the other is older than FW_PORTKNOCK_BAN_TIME


def test_xt_ban_counters_from_iptables_save():
    save = ("[0:0] -A AWP-BAN -s 198.18.200.0/24 -j RETURN\n"
            "[7:420] -A AWP-BAN -m recent --name awp-ban --rcheck --seconds 600 -j DROP\n"
            "[9:540] -A AWP-FAIL -m recent --name awp-fail --set\n"
            "[2:120] -A AWP-FAIL -m recent --name awp-fail --rcheck --seconds 60 --hitcount 3 -j AWP-BAN-ADD\n"
            "[5:0] -A AWP-I22 -j DROP\n")
    assert counters_from_save(save) == {"dropped": 7, "kernel_bans": 2}


def seen_with_bans() -> Inspection:
    return Inspection("nftables", banned=(("198.18.5.2", 421), ("2001:2:0:5::2", 9)),
                      ban_counters={"dropped": 17, "kernel_bans": 1})


def test_status_json_shows_banned_sources_with_time_left():
    doc = status_document(workflow.Status(Config(ON), seen_with_bans(), None))
    assert doc["ban"] == {"enabled": True, "after": 3, "window": 60, "time": 600,
                          "banned": [{"source": "198.18.5.2", "seconds_left": 421},
                                     {"source": "2001:2:0:5::2", "seconds_left": 9}],
                          "dropped": 17, "kernel_bans": 1}


def test_status_table_shows_banned_sources(monkeypatch, tmp_path, capsys):
    st = workflow.Status(Config(ON), seen_with_bans(), None)
    monkeypatch.setattr(cli, "_require_root", lambda: None)
    monkeypatch.setattr(workflow, "status", lambda root: st)
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["--root", str(tmp_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "banned sources" in out and "17 packets from banned sources dropped" in out
    assert any("198.18.5.2" in line and "421 s" in line for line in out.splitlines())
