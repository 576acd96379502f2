"""awp.checks: port conflicts across doors and lists are errors; weak sequences are warnings."""

from __future__ import annotations

import dataclasses

import pytest

from awp.checks import check_config, is_scan_completable, listening_sockets, parse_proc_net
from awp.errors import ConfigError, StrictRefused
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings

ON = Settings(enabled=True, advanced=True)
GOOD = "22:7481,2203,9127,4410\n"  # not monotonic, 4 knocks: no warning


def config(simple: str = "", advanced: str = "", settings: Settings = ON) -> Config:
    return Config(settings, parse_simple(simple, "simple"), parse_advanced(advanced, "advanced"))


def conflict(cfg: Config, path: str, line: int, *words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    exc = info.value
    assert (exc.path, exc.line) == (path, line), str(exc)
    assert str(exc).startswith(f"{path}:{line}: ")
    for word in words:
        assert word in exc.message, f"{word!r} not in {exc.message!r}"
    return exc


# --- conflicts -------------------------------------------------------------------------------


def test_knock_port_shared_by_two_doors():
    cfg = config(f"{GOOD}# x\n443:5821,9127,6113\n")
    conflict(cfg, "simple", 3, "knock port 9127", "knock port at simple:1")


def test_knock_port_is_another_doors_protected_port():
    cfg = config(f"{GOOD}443:5821,22,6113\n")
    conflict(cfg, "simple", 2, "knock port 22", "protected port at simple:1")


def test_protected_port_is_another_doors_knock_port():
    cfg = config(f"443:5821,3307,6113\n{GOOD.replace('2203', '443')}")
    conflict(cfg, "simple", 2, "knock port 443", "protected port at simple:1")


def test_advanced_knock_port_equals_a_simple_knock_port():
    cfg = config(GOOD, "# secrets\n2222,2203,open-secret-1,close-secret-1\n")
    exc = conflict(cfg, "advanced", 2, "knock port (field 2)", "simple:1")
    assert "secret-1" not in str(exc)


def test_advanced_knock_port_equals_a_simple_protected_port():
    conflict(config(GOOD, "2222,22,open-secret-1,close-secret-1\n"), "advanced", 1, "simple:1")


def test_same_protected_port_in_both_lists():
    cfg = config(GOOD, "\n22,2000,open-secret-1,close-secret-1\n")
    conflict(cfg, "advanced", 2, "protected port 22", "simple:1")


def test_two_advanced_doors_share_a_knock_port():
    cfg = config(GOOD, "2222,2000,open-secret-1,close-secret-1\n2223,2000,open-secret-2,close-secret-2\n")
    conflict(cfg, "advanced", 2, "advanced:1")


def test_inactive_list_is_not_checked():
    cfg = config(GOOD, "22,2203,open-secret-1,close-secret-1\n", Settings(enabled=True, advanced=False))
    assert check_config(cfg) == []


def test_disabled_checks_nothing():
    cfg = config(f"{GOOD}443:5821,9127,6113\n", settings=Settings(enabled=False))
    assert check_config(cfg) == []


def test_good_config_has_no_findings():
    cfg = config(f"{GOOD}443:5821,3307,6113,1999\n", "2222,2000,open-secret-1,close-secret-1\n")
    assert check_config(cfg) == []


# --- warnings ----------------------------------------------------------------------------------


def warnings_of(simple: str, **kw) -> list[str]:
    return [str(f) for f in check_config(config(simple, settings=Settings(enabled=True)), **kw)]


@pytest.mark.parametrize(("line", "count"), [("22:7481", 1), ("22:7481,2203", 2)])
def test_fewer_than_three_knocks_warns(line, count):
    found = warnings_of(f"# x\n{line}\n")
    assert any(w.startswith("simple:2: ") and f"only {count} knock(s)" in w for w in found), found


@pytest.mark.parametrize("knocks", ["1,2,3,4,5", "9000,8000,7000", "1000,1001,5000,60000"])
def test_monotonic_sequence_warns(knocks):
    found = warnings_of(f"22:{knocks}\n")
    assert len(found) == 1 and found[0].startswith("simple:1: ") and "nmap -r" in found[0], found
    assert knocks in found[0]


@pytest.mark.parametrize("knocks", ["7481,2203,9127,4410", "1,3,2", "3,1,2", "9000,7000,8000"])
def test_non_monotonic_sequence_does_not_warn(knocks):
    assert warnings_of(f"22:{knocks}\n") == []
    (door,) = parse_simple(f"22:{knocks}\n", "s")
    assert not is_scan_completable(door)


def test_listening_tcp_knock_port_warns():
    found = warnings_of("22:9000,7000,8000\n", listening=frozenset({("tcp", 7000), ("tcp", 22)}))
    assert len(found) == 1 and found[0].startswith("simple:1: ") and "knock port 7000" in found[0], found


def test_listening_udp_on_a_tcp_knock_port_is_fine():
    assert warnings_of("22:9000,7000,8000\n", listening=frozenset({("udp", 7000)})) == []


def test_bound_udp_advanced_knock_port_warns():
    cfg = config("", "2222,2000,open-secret-1,close-secret-1\n", Settings(enabled=True, simple=False,
                                                                          advanced=True))
    found = [str(f) for f in check_config(cfg, frozenset({("udp", 2000)}))]
    assert len(found) == 1 and found[0].startswith("advanced:1: ") and "2000" in found[0], found


ADV = Settings(enabled=True, simple=False, advanced=True)
AEO = "22,2000,hipjazz,superawesome\n23,2001,elite,october\n"  # the AEO documentation's example


def advanced_warnings(advanced: str, settings: Settings = ADV) -> list[str]:
    return [str(f) for f in check_config(config("", advanced, settings))]


def test_short_secrets_warn_with_the_reason_and_the_advice_but_never_the_secret():
    found = advanced_warnings(AEO)
    assert [w.split(": ", 2)[:2] for w in found] == [["advanced:1", "door 22"], ["advanced:2", "door 23"],
                                                      ["advanced:2", "door 23"]]
    assert "open secret (field 3) is only 7 bytes" in found[0]
    assert "open secret (field 3) is only 5 bytes" in found[1] and "close secret (field 4) is only 7" in found[2]
    for w in found:
        assert "offline" in w and "HMAC-SHA256" in w and "openssl rand -hex 16" in w
        assert not any(s in w for s in ("hipjazz", "superawesome", "elite", "october"))


@pytest.mark.parametrize(("secret", "warns"), [("x", True), ("1234567", True), ("12345678", False),
                                               ("\u00e9\u00e9\u00e9a", True), ("\u00e9\u00e9\u00e9\u00e9", False)])
def test_short_means_fewer_than_8_bytes_of_utf8(secret, warns):
    found = advanced_warnings(f"2222,2000,{secret},close-secret-1\n")
    assert bool(found) == warns, found
    assert all("1 byte:" in w for w in found if secret == "x")


def test_strict_refuses_a_short_secret_naming_the_line_only():
    with pytest.raises(StrictRefused) as info:
        check_config(config("", "# x\n" + AEO, Settings(enabled=True, simple=False, advanced=True, strict=True)))
    exc = info.value
    assert (exc.path, exc.line, exc.exit_code) == ("advanced", 2, 3)
    assert "FW_PORTKNOCK_STRICT" in exc.message and "hipjazz" not in str(exc)


LONG = "L" * 32  # one byte more than iptables keeps of an xt_pknock secret


@pytest.mark.parametrize(("compat", "secret", "warns"), [(False, LONG, False), (True, LONG, True),
                                                         (True, "L" * 31, False), (True, "\u00e9" * 16, True)])
def test_secrets_longer_than_31_bytes_warn_only_for_xt_pknock_clients(compat, secret, warns):
    settings = Settings(enabled=True, simple=False, advanced=True, pknock_compat=compat)
    found = advanced_warnings(f"2222,2000,{secret},close-secret-1\n", settings)
    assert bool(found) == warns, found
    for w in found:
        assert "open secret (field 3) is 32 bytes" in w and "31" in w and "FW_PORTKNOCK_PKNOCK_COMPAT" in w
        assert secret not in w


def test_strict_turns_the_first_warning_into_a_refusal():
    strict = Settings(enabled=True, strict=True)
    cfg = config("# x\n22:7481,2203,9127,4410\n443:1,2,3,4,5\n80:7,6\n", settings=strict)
    with pytest.raises(StrictRefused) as info:
        check_config(cfg)
    exc = info.value
    assert (exc.path, exc.line, exc.exit_code) == ("simple", 3, 3)
    assert "FW_PORTKNOCK_STRICT" in exc.message and "443" in exc.message
    assert isinstance(exc, ConfigError)


def test_strict_refuses_an_empty_list_without_a_line():
    with pytest.raises(StrictRefused) as info:
        check_config(config("", settings=Settings(enabled=True, strict=True)))
    assert info.value.path is None and "no doors" in str(info.value)


def test_strict_with_no_warnings_passes():
    assert check_config(config(GOOD, settings=Settings(enabled=True, strict=True))) == []


# --- /proc/net parsing -------------------------------------------------------------------------

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20325 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:0016 0202000A:C5D4 01 00000000:00000000 02:00098D5E 00000000     0        0 20400 4 0000000000000000 20 4 29 10 -1
   3: 0F02000A:8AE1 5DB8D822:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 40961 1 0000000000000000 20 4 30 10 -1
   4: 0F02000A:9C40 5DB8D822:0050 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
"""

PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21112 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0016 00000000000000000000000001000000:D431 01 00000000:00000000 02:0000F7A1 00000000     0        0 21555 2 0000000000000000 20 4 30 10 -1
"""

PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  103: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   108        0 18000 2 0000000000000000 0
  555: 0F02000A:A3C2 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 18001 2 0000000000000000 0
"""


def test_parse_proc_net_tcp_listening_only():
    assert parse_proc_net(PROC_TCP, "0A") == {22, 7000}
    assert parse_proc_net(PROC_TCP6, "0A") == {8080}


def test_parse_proc_net_udp_unconnected_only():
    assert parse_proc_net(PROC_UDP, "07") == {5353}


def test_parse_proc_net_header_only_and_empty():
    assert parse_proc_net(PROC_TCP.splitlines()[0] + "\n", "0A") == set()
    assert parse_proc_net("", "0A") == set()


def test_listening_sockets_reads_all_four_files_and_skips_missing_ones():
    files = {"/proc/net/tcp": PROC_TCP, "/proc/net/tcp6": PROC_TCP6, "/proc/net/udp": PROC_UDP}

    def read(path):
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    assert listening_sockets(read) == frozenset({("tcp", 22), ("tcp", 7000), ("tcp", 8080), ("udp", 5353)})


@pytest.mark.parametrize("allow, family", [("0.0.0.0/0", 4), ("::/0", 6), ("0.0.0.0/1 128.0.0.0/1", 4),
                                           ("0.0.0.0/0 ::/0", 4)])
def test_an_allowlist_of_every_address_warns_and_strict_refuses(allow, family):
    from awp.settings import parse_settings
    from awp.errors import StrictRefused

    settings = parse_settings(f'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_ALLOW="{allow}"\n', "config")
    found = [str(f) for f in check_config(Config(settings, parse_simple("22:7481,2203,9127\n", "s")))]
    assert any(f"covers every IPv{family} address" in f for f in found)
    strict = dataclasses.replace(settings, strict=True)
    with pytest.raises(StrictRefused):
        check_config(Config(strict, parse_simple("22:7481,2203,9127\n", "s")))


def test_an_allowlist_of_some_networks_does_not_warn():
    from awp.settings import parse_settings

    settings = parse_settings('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_ALLOW="198.18.0.0/15 ::1/128"\n', "config")
    assert not [f for f in check_config(Config(settings, parse_simple("22:7481,2203,9127\n", "s")))
                if "covers every" in str(f)]
