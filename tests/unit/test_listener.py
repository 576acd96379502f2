"""The listener's decisions, without a kernel: packets in; verdicts, grants and log lines out.
The grant store is in memory (fakes.FakeGrants) and the replay cache a file in tmp_path.
Packets are built with the independent reference implementation, not with awp.otp."""

from __future__ import annotations

import ipaddress
import logging
import socket

import pytest
from fakes import FakeGrants
from pknock_ref import ref_payload

from awp import otp
from awp.knockd.decisionlog import DecisionLog
from awp.knockd.replay import ReplayCache
from awp.knockd.listener import Listener
from awp.knockd.nflog import Packet
from awp.lists import parse_advanced
from awp.model import Config, Settings

OPEN, CLOSE = "opensecret1", "closesecret1"
SRC = ipaddress.ip_address("198.18.1.2")
OTHER = ipaddress.ip_address("198.18.2.2")
SRC6 = ipaddress.ip_address("2001:2::7")
NOW = 29_000_000 * 60 + 30.0  # the middle of a minute
MINUTE = int(NOW // 60)
LATER = NOW + 10  # same minute, past the repeat window: a seen MAC is a replay
CONFIG = Config(Settings(enabled=True, advanced=True, autoclose=600), (),
                parse_advanced(f"2222,2000,{OPEN},{CLOSE}\n", "list"))


def replay_cache(tmp_path) -> ReplayCache:
    cache = ReplayCache(tmp_path / "var" / "lib" / "replay-cache")
    cache.load()
    return cache


@pytest.fixture
def grants() -> FakeGrants:
    return FakeGrants()


@pytest.fixture
def listener(tmp_path, grants) -> Listener:
    return Listener(CONFIG, grants, replay_cache(tmp_path), [DecisionLog()])


def packet(payload: bytes, src=SRC, dport=2000, length=None) -> Packet:
    family, dst = (socket.AF_INET, "198.18.1.1") if src.version == 4 else (socket.AF_INET6, "2001:2::1")
    return Packet(family, src, ipaddress.ip_address(dst), 40000, dport, payload[:256],
                  len(payload) if length is None else length)


def knock(secret: str, minute: int = MINUTE, addr=SRC, trailer=b"\n") -> bytes:
    return ref_payload(secret, str(addr), minute * 60)[:64] + trailer


def decisions(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("awp.knockd")]


# --- grants ---------------------------------------------------------------------------------


def test_open_knock_grants_the_door_for_the_autoclose_time(listener, grants):
    assert listener.handle(packet(knock(OPEN)), NOW).action == "open"
    assert grants.calls == [("open", 2222, SRC, 600)]
    assert grants.list() == [(2222, "198.18.1.2", 600)]


def test_open_knock_over_ipv6(listener, grants):
    assert listener.handle(packet(knock(OPEN, addr=SRC6), src=SRC6), NOW).action == "open"
    assert grants.calls == [("open", 2222, SRC6, 600)]


def test_close_knock_revokes_the_grant(listener, grants, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    listener.handle(packet(knock(OPEN)), NOW)
    assert listener.handle(packet(knock(CLOSE)), NOW).action == "close"
    assert grants.calls[-1] == ("close", 2222, SRC) and grants.list() == []
    assert ("knock accepted decision=close reason=ok src=198.18.1.2 knock_port=2000 port=2222 mode=advanced "
            "mac=") in caplog.text


def test_close_with_nothing_open_says_so(listener, grants, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    assert listener.handle(packet(knock(CLOSE)), NOW).action == "close"
    assert grants.calls == [("close", 2222, SRC)]
    assert "knock accepted decision=nothing-to-close reason=ok src=198.18.1.2 knock_port=2000 port=2222" in caplog.text
    assert "decision=close" not in caplog.text


@pytest.mark.parametrize("minute_offset", [-1, 0, 1])
def test_one_minute_either_side_is_accepted(listener, minute_offset):
    assert listener.handle(packet(knock(OPEN, MINUTE + minute_offset)), NOW).action == "open"


@pytest.mark.parametrize("payload, reason", [
    (b"", "malformed"), (b"a", "malformed"), (b"a" * 63, "malformed"), (b"a" * 66, "malformed"),
    (knock(OPEN).upper(), "malformed"), (b"g" * 64 + b"\n", "malformed"), (b"0" * 64 + b"\n", "bad-mac"),
    (knock(OPEN, addr=OTHER), "bad-mac"), (knock(OPEN, MINUTE - 2), "bad-mac"), (knock("wrongsecret"), "bad-mac"),
])
def test_bad_packets_are_rejected_without_a_grant(listener, grants, payload, reason):
    verdict = listener.handle(packet(payload), NOW)
    assert (verdict.action, verdict.reason) == ("reject", reason)
    assert grants.calls == []


def test_truncated_copy_of_a_big_datagram_is_malformed(listener):
    assert listener.handle(packet(knock(OPEN), length=65000), NOW).reason == "malformed"


def test_bare_64_bytes_are_accepted(listener):
    assert listener.handle(packet(knock(OPEN, trailer=b"")), NOW).action == "open"


@pytest.mark.parametrize("trailer", [b"x", b"\xff", b" "])
def test_any_65th_byte_is_accepted_as_xt_pknock_does(listener, trailer):
    assert listener.handle(packet(knock(OPEN, trailer=trailer)), NOW).action == "open"


def test_unknown_knock_port(listener, grants):
    assert listener.handle(packet(knock(OPEN), dport=2001), NOW).reason == "unknown-port"
    assert grants.calls == []


def test_reconfigure_drops_a_door(listener, grants):
    listener.configure(Config(Settings(enabled=True, advanced=True)))
    assert listener.handle(packet(knock(OPEN)), NOW).reason == "unknown-port"
    assert grants.calls == []


# --- replay ---------------------------------------------------------------------------------


def test_replay_rejected_also_after_a_restart(listener, grants, tmp_path):
    assert listener.handle(packet(knock(OPEN)), NOW).action == "open"
    assert listener.handle(packet(knock(OPEN)), LATER).reason == "replay"
    restarted_grants = FakeGrants()
    restarted = Listener(CONFIG, restarted_grants, replay_cache(tmp_path))
    assert restarted.handle(packet(knock(OPEN)), NOW).reason == "replay"
    assert len(grants.calls) == 1 and restarted_grants.calls == []


def test_a_replayed_close_is_rejected(listener, grants):
    listener.handle(packet(knock(CLOSE)), NOW)
    assert listener.handle(packet(knock(CLOSE)), LATER).reason == "replay"
    assert len(grants.calls) == 1


def test_a_client_repeat_is_neither_a_second_grant_nor_a_reject(listener, grants, caplog):
    from awp.knockd.events import Decision

    from awp.knockd.decisionlog import DecisionLog

    seen: list[Decision] = []
    decision_log = DecisionLog()
    listener.observers = [seen.append, decision_log]
    caplog.set_level(logging.INFO, logger="awp.knockd")
    for delay in (0.0, 0.4, 0.8, 1.2, 1.6):  # knock.sh --repeat 5: five copies within 2 s
        listener.handle(packet(knock(OPEN)), NOW + delay)
    assert grants.calls == [("open", 2222, SRC, 600)]
    assert [(d.action, d.reason) for d in seen] == [("open", "ok")] + [("repeat", "repeat")] * 4
    # one info line, the open; the repeats are debug lines and spend no reject budget
    assert [r.getMessage().split(" reason=")[0] for r in caplog.records] == ["knock accepted decision=open"]
    assert decision_log.budget.rejected == 0


def test_a_repeat_of_a_close_closes_once(listener, grants):
    listener.handle(packet(knock(OPEN, MINUTE - 1)), NOW - 30)
    assert listener.handle(packet(knock(CLOSE)), NOW).action == "close"
    assert listener.handle(packet(knock(CLOSE)), NOW + 1).action == "repeat"
    assert grants.calls == [("open", 2222, SRC, 600), ("close", 2222, SRC)]


def test_the_same_mac_after_the_repeat_window_or_after_a_restart_is_a_replay(listener, tmp_path):
    listener.handle(packet(knock(OPEN)), NOW)
    assert listener.handle(packet(knock(OPEN)), NOW + 5.0).reason == "repeat"
    assert listener.handle(packet(knock(OPEN)), NOW + 5.5).reason == "replay"
    restarted = Listener(CONFIG, FakeGrants(), replay_cache(tmp_path))
    assert restarted.handle(packet(knock(OPEN)), NOW + 1).reason == "replay"


def test_a_repeat_from_another_source_is_a_bad_mac_not_a_repeat(listener):
    listener.handle(packet(knock(OPEN)), NOW)
    assert listener.handle(packet(knock(OPEN), src=OTHER), NOW + 1).reason == "bad-mac"


# --- the table of expected MACs ------------------------------------------------------------


def test_expected_macs_rule_out_wrong_macs_and_let_every_window_minute_through(listener, grants):
    table = listener.expected
    for minute in (MINUTE - 1, MINUTE, MINUTE + 1):
        src = ipaddress.ip_address(f"198.18.1.{10 + minute - MINUTE}")
        assert listener.handle(packet(knock(OPEN, minute, src), src=src), NOW).action == "open"
    assert listener.handle(packet(knock("wrongsecret")), NOW).reason == "bad-mac"
    assert listener.handle(packet(knock(CLOSE, MINUTE + 1)), NOW).action == "close"
    assert grants.calls[-1] == ("close", 2222, SRC)
    assert len(table) == 4 and table.minute == MINUTE
    assert listener.handle(packet(knock(OPEN, MINUTE + 1)), NOW + 60).action == "open"  # next minute
    assert len(table) == 1 and table.minute == MINUTE + 1


def test_expected_macs_are_bounded_and_forgotten_on_a_reload(listener, grants):
    from awp.knockd.verify import ExpectedMacs

    listener.expected = ExpectedMacs(slots=4)
    for i in range(40):
        src = ipaddress.ip_address(f"198.19.0.{i + 1}")
        assert listener.handle(packet(knock("wrongsecret", addr=src), src=src), NOW).reason == "bad-mac"
    assert 1 <= len(listener.expected) <= 4 and len(listener.expected.table) == 4 * ExpectedMacs.SLOT
    src = ipaddress.ip_address("198.19.0.7")  # its slot may have been taken over: still opens
    assert listener.handle(packet(knock(OPEN, addr=src), src=src), NOW).action == "open"
    listener.configure(CONFIG)
    assert len(listener.expected) == 0


# --- log lines ------------------------------------------------------------------------------


def test_exactly_one_log_line_per_decision(listener, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    sent = [knock(OPEN), knock(OPEN), knock("wrongsecret"), knock(CLOSE), knock(CLOSE, MINUTE - 1)]
    for i, payload in enumerate(sent):
        listener.handle(packet(payload), LATER if i == 1 else NOW)
    lines = decisions(caplog)
    assert [line.split(" src=")[0] for line in lines] == [
        "knock accepted decision=open reason=ok", "knock rejected decision=reject reason=replay",
        "knock rejected decision=reject reason=bad-mac", "knock accepted decision=close reason=ok",
        "knock accepted decision=nothing-to-close reason=ok"]


def test_log_lines_name_the_decision_and_never_the_secret(listener, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    listener.handle(packet(knock(OPEN)), NOW)
    listener.handle(packet(knock(OPEN, MINUTE - 2)), NOW)
    listener.handle(packet(knock("wrongsecret")), NOW)
    text = caplog.text
    mac = knock(OPEN)[:8].decode()
    assert (f"knock accepted decision=open reason=ok src=198.18.1.2 knock_port=2000 port=2222 mode=advanced "
            f"mac={mac} expires_in=600") in text
    assert "reason=skew" in text and "reason=bad-mac" in text
    assert OPEN not in text and knock(OPEN)[:64].decode() not in text


@pytest.mark.parametrize("minutes", [-3, -2, 2, 3])
def test_skew_is_told_from_a_bad_mac_with_the_offset_in_seconds(listener, caplog, minutes):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    assert listener.handle(packet(knock(OPEN, MINUTE + minutes)), NOW).reason == "bad-mac"  # the verdict
    (line,) = decisions(caplog)
    assert f"reason=skew src=198.18.1.2 knock_port=2000 port=2222" in line
    assert line.endswith(f" offset={minutes * 60:+d}"), line


def test_four_minutes_off_is_a_bad_mac(listener, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    listener.handle(packet(knock(OPEN, MINUTE - 4)), NOW)
    (line,) = decisions(caplog)
    assert "reason=bad-mac" in line and "offset=" not in line


def test_reject_lines_have_every_key_even_without_a_door_or_mac(listener, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    listener.handle(packet(b"x" * 65, dport=2001, src=SRC6), NOW)
    listener.handle(packet(b"x" * 65, src=SRC6), NOW)
    assert decisions(caplog) == [
        "knock rejected decision=reject reason=unknown-port src=2001:2::7 knock_port=2001 port=- mode=advanced mac=-",
        "knock rejected decision=reject reason=malformed src=2001:2::7 knock_port=2000 port=2222 mode=advanced mac=-"]


def test_observers_get_one_decision_per_packet_and_a_failing_one_is_contained(listener):
    from awp.knockd.events import Decision

    seen: list[Decision] = []

    def broken(decision):
        raise RuntimeError("observer bug")

    listener.observers = [broken, seen.append]
    listener.handle(packet(knock(OPEN)), NOW)
    listener.handle(packet(knock(OPEN)), LATER)  # the same MAC again, later: a replay
    listener.handle(packet(b"x" * 65, dport=2001), NOW)
    assert [(d.action, d.reason, d.port, d.knock_port) for d in seen] == [
        ("open", "ok", 2222, 2000), ("reject", "replay", 2222, 2000), ("reject", "unknown-port", None, 2001)]
    assert seen[0].expires_in == 600 and seen[0].src == SRC and seen[0].mode == "advanced"
