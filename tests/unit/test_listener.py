"""The listener's decisions, without a kernel: packets in, verdicts, grants and log lines out.
Packets are built with the independent reference implementation, not with awp.otp."""

from __future__ import annotations

import ipaddress
import logging
import socket

import pytest
from pknock_ref import ref_payload

from awp.knockd.listener import Listener
from awp.knockd.nflog import Packet
from awp.knockd.ratelog import RateLimitedLog
from awp.lists import parse_advanced
from awp.model import Config, Settings
from awp.paths import Root

OPEN, CLOSE = "opensecret1", "closesecret1"
SRC = ipaddress.ip_address("198.18.1.2")
OTHER = ipaddress.ip_address("198.18.2.2")
NOW = 29_000_000 * 60 + 30.0  # the middle of a minute
MINUTE = int(NOW // 60)


class FakeLists:
    def __init__(self):
        self.calls = []

    def add(self, name, address):
        self.calls.append(("+", name, str(address)))

    def remove(self, name, address):
        self.calls.append(("-", name, str(address)))


@pytest.fixture
def listener(tmp_path):
    doors = parse_advanced(f"2222,2000,{OPEN},{CLOSE}\n", "list")
    config = Config(Settings(enabled=True, advanced=True, autoclose=600), (), doors)
    return Listener(Root(tmp_path), config, FakeLists())


def packet(payload: bytes, src=SRC, dport=2000, length=None) -> Packet:
    return Packet(socket.AF_INET, src, ipaddress.ip_address("198.18.1.1"), 40000, dport,
                  payload[:256], len(payload) if length is None else length)


def knock(secret: str, minute: int = MINUTE, addr=SRC, trailer=b"\n") -> bytes:
    return ref_payload(secret, str(addr), minute * 60)[:64] + trailer


def test_open_then_close_grant_and_revoke_in_the_kernel_list(listener):
    assert listener.handle(packet(knock(OPEN)), NOW).action == "open"
    assert listener.handle(packet(knock(CLOSE)), NOW).action == "close"
    assert listener.lists.calls == [("+", "awpa2222", "198.18.1.2"), ("-", "awpa2222", "198.18.1.2")]


@pytest.mark.parametrize("minute_offset", [-1, 0, 1])
def test_one_minute_either_side_is_accepted(listener, minute_offset):
    assert listener.handle(packet(knock(OPEN, MINUTE + minute_offset)), NOW).action == "open"


@pytest.mark.parametrize("payload, reason", [
    (b"", "malformed"), (b"a", "malformed"), (b"a" * 63, "malformed"), (b"a" * 66, "malformed"),
    (knock(OPEN).upper(), "malformed"), (b"g" * 64 + b"\n", "malformed"), (b"0" * 64 + b"\n", "bad-mac"),
    (knock(OPEN, addr=OTHER), "bad-mac"), (knock(OPEN, MINUTE - 2), "bad-mac"), (knock("wrongsecret"), "bad-mac"),
])
def test_bad_packets_are_rejected_without_a_grant(listener, payload, reason):
    verdict = listener.handle(packet(payload), NOW)
    assert (verdict.action, verdict.reason) == ("reject", reason)
    assert listener.lists.calls == []


def test_truncated_copy_of_a_big_datagram_is_malformed(listener):
    assert listener.handle(packet(knock(OPEN), length=65000), NOW).reason == "malformed"


def test_bare_64_bytes_are_accepted(listener):
    assert listener.handle(packet(knock(OPEN, trailer=b"")), NOW).action == "open"


@pytest.mark.parametrize("trailer", [b"x", b"\xff", b" "])
def test_any_65th_byte_is_accepted_as_xt_pknock_does(listener, trailer):
    assert listener.handle(packet(knock(OPEN, trailer=trailer)), NOW).action == "open"


def test_unknown_knock_port(listener):
    assert listener.handle(packet(knock(OPEN), dport=2001), NOW).reason == "unknown-port"


def test_replay_rejected_also_after_a_restart(listener, tmp_path):
    assert listener.handle(packet(knock(OPEN)), NOW).action == "open"
    assert listener.handle(packet(knock(OPEN)), NOW).reason == "replay"
    restarted = Listener(Root(tmp_path), listener.config, FakeLists())
    assert restarted.handle(packet(knock(OPEN)), NOW).reason == "replay"
    assert restarted.lists.calls == []


def test_a_replayed_close_is_rejected(listener):
    listener.handle(packet(knock(CLOSE)), NOW)
    assert listener.handle(packet(knock(CLOSE)), NOW).reason == "replay"


def test_log_lines_name_the_decision_and_never_the_secret(listener, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    listener.handle(packet(knock(OPEN)), NOW)
    listener.handle(packet(knock(OPEN, MINUTE - 2)), NOW)
    listener.handle(packet(knock("wrongsecret")), NOW)
    text = caplog.text
    assert "knock accepted action=open port=2222 knock_port=2000 src=198.18.1.2" in text
    assert "reason=skew" in text and "reason=bad-mac" in text
    assert OPEN not in text and knock(OPEN)[:64].decode() not in text


def test_rejected_lines_are_rate_limited():
    clock = [0.0]
    limiter = RateLimitedLog(logging.getLogger("t"), burst=3, period=10.0, clock=lambda: clock[0])
    assert [limiter.allow() for _ in range(5)] == [True, True, True, False, False]
    clock[0] = 11.0
    assert limiter.allow() and limiter.suppressed == 0
