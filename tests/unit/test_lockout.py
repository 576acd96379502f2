"""Lockout protection: refuse only when the SSH session really arrives on a protected port."""

from __future__ import annotations

import ipaddress

from awp.lists import parse_simple
from awp.lockout import lockout_risk, parse_established
from awp.model import Config, Settings

DOOR = parse_simple("22:7481,2203,9127\n", "list")
CLIENT = ipaddress.ip_address("198.18.1.2")
SESSION = {(CLIENT, 50000, 22)}
SSH = "198.18.1.2 50000 198.18.1.1 22"


def config(**settings) -> Config:
    return Config(Settings(enabled=True, **settings), DOOR)


def test_refuses_when_the_session_is_on_a_protected_port():
    message = lockout_risk(config(), SSH, SESSION)
    assert message and "198.18.1.2" in message and "--force" in message


def test_allowlisted_client_is_not_refused():
    assert lockout_risk(config(allow=(ipaddress.ip_network("198.18.1.0/24"),)), SSH, SESSION) is None


def test_session_on_another_port_is_not_refused():
    assert lockout_risk(config(), "198.18.1.2 50000 198.18.1.1 2222", {(CLIENT, 50000, 2222)}) is None


def test_session_of_another_network_namespace_is_not_refused():
    """awp run inside a namespace (tests, demo) inherits the host's SSH_CONNECTION."""
    assert lockout_risk(config(), SSH, set()) is None


def test_no_ssh_or_garbage_is_not_refused():
    for value in (None, "", "garbage", "198.18.1.2 x 198.18.1.1 22", "nope 1 2 22"):
        assert lockout_risk(config(), value, SESSION) is None


def test_ipv6_session_ignored_when_ipv6_is_off():
    v6 = ipaddress.ip_address("2001:2::2")
    ssh = "2001:2::2 40000 2001:2::1 22"
    assert lockout_risk(config(), ssh, {(v6, 40000, 22)})
    assert lockout_risk(config(ipv6=False), ssh, {(v6, 40000, 22)}) is None


def test_parse_established_ipv4_and_ipv6_and_mapped():
    v4 = "  sl local rem st\n   0: 010112C6:0016 020112C6:C350 01 0 0 0\n   1: 010112C6:0016 020112C6:C351 0A 0\n"
    assert parse_established(v4) == {(ipaddress.ip_address("198.18.1.2"), 50000, 22)}
    v6 = ("  sl local rem st\n   0: 00000000000000000000000001000000:0016 "
          "0000000000000000FFFF0000020112C6:C350 01 0\n")
    assert parse_established(v6) == {(ipaddress.ip_address("198.18.1.2"), 50000, 22)}
