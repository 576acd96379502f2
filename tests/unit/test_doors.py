"""awp.doors (DIR/etc/firewall/portknock-doors) and the /udp knock suffix of the simple list:
every bad value is refused with file, line and field; the cross-file checks in awp.checks."""

from __future__ import annotations

import ipaddress

import pytest

from awp.checks import check_config
from awp.doors import load_door_options, parse_door_options
from awp.errors import ConfigError
from awp.lists import parse_advanced, parse_simple
from awp.load import load_config
from awp.model import Config, Settings
from awp.paths import Root

PATH = "etc/firewall/portknock-doors"
ON = Settings(enabled=True, simple=True, advanced=True)


def refused(text: str, line: int, *words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_door_options(text, PATH)
    exc = info.value
    assert (exc.path, exc.line) == (PATH, line), str(exc)
    for word in words:
        assert word in str(exc), str(exc)
    return exc


def test_full_section_parses():
    text = ("# doors\n[22]\nports = 22, 443, 8000-8010\n"
            "on_open = /usr/bin/logger -t awp 'door opened'\non_close = /usr/bin/logger closed\n"
            "run_as = awp-door\ntimeout = 5\n"
            "[2222]\nforward = 198.18.2.2:22\nforward6 = \"[2001:2::2]:22\"\n")
    first, second = parse_door_options(text, PATH)
    assert first.port == 22
    assert first.ports == ((22, 22), (443, 443), (8000, 8010))
    assert first.all_ports == (22, 443, *range(8000, 8011))
    assert first.extra_ranges == ((443, 443), (8000, 8010))
    assert first.on_open == ("/usr/bin/logger", "-t", "awp", "door opened")
    assert first.on_close == ("/usr/bin/logger", "closed")
    assert (first.run_as, first.timeout) == ("awp-door", 5)
    assert first.origin_of("timeout").line == 7
    assert second.forward.address == ipaddress.ip_address("198.18.2.2") and second.forward.port == 22
    assert str(second.forward6) == "[2001:2::2]:22"
    assert (second.run_as, second.timeout, second.on_open) == ("nobody", 10, ())
    assert second.origin.line == 8


def test_own_port_inside_a_range_is_fine():
    (door,) = parse_door_options("[8005]\nports = 8000-8010\n", PATH)
    assert door.ports == ((8000, 8010),)
    assert door.extra_ranges == ((8000, 8004), (8006, 8010))


BAD = [
    pytest.param("[22]\nport = 443\n", 2, ['[22] port', 'unknown option "port"'], id="unknown-key"),
    pytest.param("x = 1\n[22]\n", 1, ["outside a section"], id="key-outside"),
    pytest.param("[ssh]\nports = 443\n", 1, ["[ssh]", "protected port"], id="section-name"),
    pytest.param("[22]\n[[a]]\nx=1\n", 1, ["sub-section"], id="sub-section"),
    pytest.param("[70000]\n", 1, ["out of range"], id="section-port-range"),
    pytest.param("[22]\nports = 443,,444\n", 2, ["[22] ports", "port 2 is empty"], id="ports-empty"),
    pytest.param("[22]\nports = 443, 500-400\n", 2, ["[22] ports", "not a range"], id="range-backwards"),
    pytest.param("[22]\nports = 443, 440-450\n", 2, ["[22] ports", "443 is listed twice"], id="overlap"),
    pytest.param("[22]\nports = 1-1000\n", 2, ["[22] ports", "at most 256"], id="too-many"),
    pytest.param("[22]\nports = 4a3\n", 2, ["[22] ports", "not a port number"], id="ports-junk"),
    pytest.param("[22]\nforward = 198.18.2.2\n", 2, ["[22] forward", "HOST:PORT"], id="forward-no-port"),
    pytest.param("[22]\nforward = 198.18.2.300:22\n", 2, ["[22] forward", "not an IPv4"], id="forward-bad-ip"),
    pytest.param("[22]\nforward = 127.0.0.1:22\n", 2, ["[22] forward", "loopback"], id="forward-loopback"),
    pytest.param("[22]\nforward = 198.18.2.2:0\n", 2, ["[22] forward", "out of range"], id="forward-port-0"),
    pytest.param("[22]\nforward = [2001:2::2]:22\n", 2, ["[22] forward", "IPv4"], id="forward-v6-in-v4"),
    pytest.param("[22]\nforward6 = [2001:2::2]:22\n", 2, ["[22] forward6", "needs forward"], id="forward6-alone"),
    pytest.param("[22]\nforward = 198.18.2.2:22\nports = 443\n", 3, ["[22] ports", "one port"], id="forward-ports"),
    pytest.param("[22]\non_open = logger hi\n", 2, ["[22] on_open", "absolute path"], id="relative-program"),
    pytest.param("[22]\non_open = /usr/bin/logger 'hi\n", 2, ["[22] on_open", "cannot split"], id="bad-quote"),
    pytest.param("[22]\non_close = ''\n", 2, ["[22] on_close", "empty"], id="empty-command"),
    pytest.param("[22]\nrun_as = root\n", 2, ["[22] run_as", "never run as root"], id="root"),
    pytest.param("[22]\nrun_as = Bad User\n", 2, ["[22] run_as", "not a user name"], id="bad-user"),
    pytest.param("[22]\ntimeout = 0\n", 2, ["[22] timeout", "1-300"], id="timeout-0"),
    pytest.param("[22]\ntimeout = 1e3\n", 2, ["[22] timeout"], id="timeout-junk"),
    pytest.param("[22]\n[22]\n", 2, ["duplicate"], id="duplicate-section"),
    pytest.param("[22]\ntimeout = 3\ntimeout = 4\n", 3, ["duplicate"], id="duplicate-key"),
]


@pytest.mark.parametrize("text, line, words", BAD)
def test_bad_values_are_refused_with_line_and_field(text, line, words):
    refused(text, line, *words)


def config(simple: str, advanced: str, doors: str) -> Config:
    return Config(ON, parse_simple(simple, "simple"), parse_advanced(advanced, "advanced"),
                  parse_door_options(doors, PATH))


def cross(cfg: Config, line: int, *words: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert (info.value.path, info.value.line) == (PATH, line), str(info.value)
    for word in words:
        assert word in str(info.value), str(info.value)


ADV = "23,2000,aaaaaaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbbbbbbbb\n"


def test_section_for_a_port_that_is_no_door():
    cross(config("22:7001,7003,7002\n", "", "[22]\nports = 443\n[80]\ntimeout = 3\n"), 3, "[80]", "no door")


def test_section_for_an_advanced_door_is_fine():
    cfg = config("", ADV, "[23]\nports = 2300-2310\n")
    check_config(cfg)
    assert cfg.door_ports(23) == (23, *range(2300, 2311))


@pytest.mark.parametrize("ports, words", [
    ("23", ["protected port 23", "already used"]),          # another door's port
    ("7001", ["already used as knock port"]),               # this door's own knock port
    ("2000", []),                                           # an advanced knock port is UDP: no clash
])
def test_extra_ports_overlapping_another_door(ports, words):
    cfg = config("22:7001,7003,7002\n", ADV, f"[22]\nports = {ports}\n")
    if not words:
        check_config(cfg)
        return
    cross(cfg, 2, "[22] ports", *words)


def test_extra_ports_of_two_doors_overlap():
    cfg = config("22:7001,7003,7002\n", ADV, "[22]\nports = 8000-8010\n[23]\nports = 8010\n")
    cross(cfg, 4, "[23] ports", "8010", "already used")


# --- the simple list's /udp suffix ---------------------------------------------------------


def test_udp_suffix():
    (door,) = parse_simple("22:7001/udp,7003/tcp,7002\n", "simple")
    assert door.knocks == (7001, 7003, 7002)
    assert door.udp == frozenset({7001})
    assert [door.proto(k) for k in door.knocks] == ["udp", "tcp", "tcp"]


@pytest.mark.parametrize("token, words", [
    ("2002/icmp", ['knock 2 has protocol "icmp"']),
    ("2002/", ['protocol ""']),
    ("2002/UDP", ['protocol "UDP"']),
    ("/udp", ["knock 2", "missing"]),
    ("2002/udp/tcp", ['protocol "udp/tcp"']),
])
def test_bad_protocol(token, words):
    with pytest.raises(ConfigError) as info:
        parse_simple(f"22:7001,{token},7005\n", "simple")
    assert info.value.line == 1
    for word in words:
        assert word in str(info.value), str(info.value)


def test_same_port_as_udp_and_tcp_knock_refused():
    with pytest.raises(ConfigError, match="once"):
        parse_simple("22:7001/udp,7001,7005\n", "simple")
    cfg = Config(ON, parse_simple("22:7001/udp,7003,7005\n23:7001,7006,7007\n", "simple"))
    with pytest.raises(ConfigError, match="knock port"):
        check_config(cfg)


def test_udp_knock_port_against_advanced_knock_port():
    cfg = Config(ON, parse_simple("22:2000/udp,7003,7005\n", "simple"), parse_advanced(ADV, "advanced"))
    with pytest.raises(ConfigError, match="already used as knock port"):
        check_config(cfg)


# --- the file is optional -----------------------------------------------------------------


def test_missing_file_is_no_options(tmp_path):
    assert load_door_options(tmp_path / "portknock-doors") == ()


def test_load_config_reads_it(tmp_path):
    (tmp_path / "etc" / "firewall").mkdir(parents=True)
    (tmp_path / "etc" / "config").write_text('FW_PORTKNOCK="yes"\n')
    (tmp_path / "etc" / "firewall" / "simple-portknock-list").write_text("22:7001,7003,7002\n")
    root = Root(tmp_path)
    assert load_config(root).options == ()
    root.door_options.write_text("[22]\nports = 443\n")
    cfg = load_config(root)
    assert cfg.door_ports(22) == (22, 443)
    assert cfg.options_for(22).describe() == "ports 22,443"
