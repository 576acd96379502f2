"""awp.doors (DIR/etc/firewall/portknock-doors) and the /udp knock suffix of the simple list:
every bad value is refused with file, line and field; the cross-file checks in awp.checks."""

from __future__ import annotations

import ipaddress

import pytest

from awp.backend.runner import Result
from awp.checks import check_config, check_forwards, route_kind
from awp.compile import KernelState, compile_family, compile_nat, render_restore
from awp.compile.nftables import compile_nft
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
    pytest.param("[22]\non_open = /usr/bin/logger 'a # b'\n", 2, ["[22] on_open", "cannot hold #"], id="hash-in-command"),
    pytest.param("[22]\non_open = /bin/true # why\n", 2, ["[22] on_open", "cannot hold #"], id="comment-after-command"),
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


# --- forward: the check step (I/O through an injected route lookup) ---------------------------



def forwarding(line: str = "forward = 198.18.2.2:22") -> Config:
    return config("22:7001,7003,7002\n", "", f"[22]\n{line}\n")


@pytest.mark.parametrize("kind, words", [("local", ["address of this host"]), ("none", ["no route to 198.18.2.2"])])
def test_forward_refused_by_the_route_check(kind, words):
    with pytest.raises(ConfigError) as info:
        check_forwards(forwarding(), route=lambda address: kind)
    assert (info.value.path, info.value.line) == (PATH, 2)
    for word in ["[22] forward", *words]:
        assert word in str(info.value)


def test_forward_with_a_route_passes_and_unknown_warns():
    assert check_forwards(forwarding(), route=lambda address: "route") == []
    (warning,) = check_forwards(forwarding(), route=lambda address: "unknown")
    assert "cannot tell" in warning.message and warning.origin.line == 2


def test_route_kind_reads_ip_route_get():
    seen = []

    def runner(answer, rc=0, err=""):
        def run(argv, stdin=None):
            seen.append(argv)
            return Result(rc, answer, err)
        return run

    assert route_kind("198.18.1.1", runner('[{"type":"local","dst":"198.18.1.1","dev":"lo"}]')) == "local"
    assert route_kind("198.18.2.2", runner('[{"dst":"198.18.2.2","dev":"eth1"}]')) == "route"
    assert route_kind("198.19.9.9", runner("", 2, "RTNETLINK answers: Network is unreachable")) == "none"
    assert seen[0] == ["ip", "-j", "route", "get", "198.18.1.1"]


# --- the compilers, by hand (the golden files pin the whole text) -----------------------------



def rules_nft(cfg: Config) -> dict[str, tuple[str, ...]]:
    return {c.name: c.rules for c in compile_nft(cfg).chains}


def test_no_options_file_changes_nothing():
    plain = Config(ON, parse_simple("22:7001,7003,7002\n", "simple"))
    empty = Config(ON, plain.simple, (), parse_door_options("# nothing\n", PATH))
    assert compile_nft(plain) == compile_nft(empty)
    assert compile_family(plain, 4) == compile_family(empty, 4)
    assert not compile_nat(plain, 4).chains


def test_extra_ports_reach_the_door_lists():
    cfg = config("22:7001,7003,7002\n", "", "[22]\nports = 443\n")
    chains = rules_nft(cfg)
    assert any("443 : goto protected" in r for r in chains["input"])
    assert "meta mark 0x1 tcp dport 22 update @open4 { ip saddr . 443 timeout 30s }" in chains["complete"]
    ipt = render_restore(compile_family(cfg, 4), KernelState())
    assert "-A AWP-I443 -p tcp --syn -m conntrack --ctstate NEW -m recent --name awp22-open" in ipt


def test_forward_rules_name_the_knocker_only():
    cfg = config("2222:7001,7003,7002\n", "", "[2222]\nforward = 198.18.2.2:22\n")
    (dnat,) = rules_nft(cfg)["door_dnat"]
    assert dnat.startswith("tcp dport 2222 ") and "ip saddr . tcp dport @open4" in dnat
    assert dnat.endswith("dnat ip to 198.18.2.2:22") and "masquerade" not in dnat
    nat = render_restore(compile_nat(cfg, 4), KernelState())
    assert "--dport 2222 -m recent --name awp2222-open --rcheck --seconds 30 -j DNAT --to-destination 198.18.2.2:22" in nat
    assert "-I PREROUTING 1 -j AWP-PREROUTING" in nat and "MASQUERADE" not in nat
    assert not compile_nat(cfg, 6).chains, "no forward6: nothing in the IPv6 nat table"
    assert "-I FORWARD 1 -j AWP-FORWARD" in render_restore(compile_family(cfg, 4), KernelState())


def test_udp_knock_is_not_a_tcp_knock():
    cfg = Config(ON, parse_simple("22:7001/udp,7003,7002/udp\n", "simple"))
    entry = rules_nft(cfg)["input"]
    assert "tcp dport vmap { 7003 : goto knock }" in entry
    assert "udp dport vmap { 7001 : goto knock, 7002 : goto knock }" in entry
    ipt = render_restore(compile_family(cfg, 4), KernelState())
    assert "-A AWP-UDP -p udp -m udp --dport 7001 -g AWP-U7001" in ipt
    assert "--dport 7001 -g AWP-I7001" not in ipt
