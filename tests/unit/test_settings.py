"""awp.settings: AEO-style KEY="value" lines, validated; every error names key and line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from awp.checks import check_config
from awp.errors import ConfigError, StrictRefused
from awp.lists import parse_simple
from awp.model import Config, Settings
from awp.settings import load_settings, parse_settings

REPO_CONFIG = Path(__file__).resolve().parents[2] / "etc" / "config"
PREAMBLE = '# awp settings\n\nFW_PORTKNOCK="yes"\n'  # the line under test is line 4


def refused(text: str, line: int | None, *words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "etc/config")
    exc = info.value
    assert (exc.path, exc.line) == ("etc/config", line), str(exc)
    for word in words:
        assert word in exc.message, f"{word!r} not in {exc.message!r}"
    assert str(exc) == (f"etc/config:{line}: " if line else "etc/config: ") + exc.message
    return exc


# --- accepted ------------------------------------------------------------------------------


def test_empty_file_gives_the_defaults():
    assert parse_settings("", "c") == Settings()
    assert parse_settings("# nothing here\n\n", "c") == Settings()


def test_defaults():
    s = Settings()
    assert (s.enabled, s.simple, s.advanced, s.ipv6, s.strict) == (False, True, False, True, False)
    assert (s.step_timeout, s.open_window, s.autoclose) == (15, 30, 3600)
    assert (s.allow, s.backend, s.nflog_group, s.kernel_log) == ((), "auto", 4747, True)
    assert (s.set_size, s.backend_alias) == (131072, None)


@pytest.mark.parametrize("line", [
    'FW_PORTKNOCK="yes"',
    "FW_PORTKNOCK=yes",
    "FW_PORTKNOCK = yes",
    'FW_PORTKNOCK = "yes"',
    "  FW_PORTKNOCK=yes",
    "FW_PORTKNOCK='yes'",
    'FW_PORTKNOCK="yes"  # on',
])
def test_aeo_and_spaced_assignments(line):
    assert parse_settings(line + "\n", "c").enabled is True


def test_every_key_parsed():
    text = "\n".join([
        'FW_PORTKNOCK="yes"', 'FW_PORTKNOCK_SIMPLE="no"', 'FW_PORTKNOCK_ADVANCED="yes"',
        'FW_PORTKNOCK_IPV6="no"', 'FW_PORTKNOCK_STRICT="yes"', 'FW_PORTKNOCK_STEP_TIMEOUT="7"',
        'FW_PORTKNOCK_OPEN_WINDOW="45"', 'FW_PORTKNOCK_AUTOCLOSE="600"',
        'FW_PORTKNOCK_ALLOW="192.0.2.0/24"', 'FW_PORTKNOCK_BACKEND="iptables-legacy"',
        'FW_PORTKNOCK_SET_SIZE="4096"', 'FW_PORTKNOCK_NFLOG_GROUP="5"', 'FW_PORTKNOCK_KERNEL_LOG="no"',
    ])
    assert parse_settings(text, "c") == Settings(
        enabled=True, simple=False, advanced=True, ipv6=False, strict=True, step_timeout=7,
        open_window=45, autoclose=600, allow=(ipaddress.ip_network("192.0.2.0/24"),),
        backend="iptables-legacy", set_size=4096, nflog_group=5, kernel_log=False)


def test_shipped_config_loads():
    s = load_settings(REPO_CONFIG)
    assert s.enabled and s.simple and not s.advanced


def test_crlf_and_bom_file(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b'\xef\xbb\xbf# c\r\nFW_PORTKNOCK="yes"\r\nFW_PORTKNOCK_STEP_TIMEOUT="9"\r\n')
    s = load_settings(path)
    assert (s.enabled, s.step_timeout) == (True, 9)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "config")
    assert (info.value.path, info.value.line) == (str(tmp_path / "config"), None)
    assert "settings file does not exist" in info.value.message


@pytest.mark.parametrize(("value", "expected"), [
    ("1", 1), ("15", 15), ("3600", 3600),
])
def test_number_accepted(value, expected):
    assert parse_settings(f'FW_PORTKNOCK_STEP_TIMEOUT="{value}"\n', "c").step_timeout == expected


# --- FW_PORTKNOCK_BACKEND and FW_PORTKNOCK_SET_SIZE -------------------------------------------


@pytest.mark.parametrize("value", ["auto", "nftables", "iptables-nft", "iptables-legacy"])
def test_backend_values(value):
    s = parse_settings(f'FW_PORTKNOCK_BACKEND="{value}"\n', "c")
    assert (s.backend, s.backend_alias) == (value, None)


@pytest.mark.parametrize(("old", "new"), [("nft", "iptables-nft"), ("legacy", "iptables-legacy")])
def test_deprecated_backend_value_maps_to_the_new_one_with_a_warning(old, new):
    settings = parse_settings(f'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_BACKEND="{old}"\n', "c")
    assert (settings.backend, settings.backend_alias) == (new, old)
    findings = check_config(Config(settings, parse_simple("22:7481,2203,9127\n", "list")))
    assert [str(f) for f in findings] == [f'FW_PORTKNOCK_BACKEND="{old}" is deprecated and will be refused in '
                                          f'the next release; write FW_PORTKNOCK_BACKEND="{new}"']


def test_deprecated_backend_value_is_refused_when_strict():
    settings = parse_settings('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_STRICT="yes"\nFW_PORTKNOCK_BACKEND="nft"\n', "c")
    with pytest.raises(StrictRefused) as info:
        check_config(Config(settings, parse_simple("22:7481,2203,9127\n", "list")))
    assert info.value.exit_code == 3
    assert 'FW_PORTKNOCK_BACKEND="iptables-nft"' in str(info.value) and "FW_PORTKNOCK_STRICT" in str(info.value)


@pytest.mark.parametrize("value", ["1024", "131072", "16777216"])
def test_set_size_bounds_accepted(value):
    assert parse_settings(f'FW_PORTKNOCK_SET_SIZE="{value}"\n', "c").set_size == int(value)


@pytest.mark.parametrize(("value", "words"), [
    ("1023", ["1023 is out of range 1024-16777216"]), ("16777217", ["out of range 1024-16777216"]),
    ("0", ["out of range"]), ("128k", ["whole number"]), ("", ["whole number"]), ("1_024", ["whole number"]),
])
def test_set_size_out_of_bounds_or_malformed_is_refused(value, words):
    refused(f'{PREAMBLE}FW_PORTKNOCK_SET_SIZE="{value}"\n', 4, "FW_PORTKNOCK_SET_SIZE", *words)


# --- FW_PORTKNOCK_ALLOW ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "nets"), [
    ("", []),
    ("192.0.2.7", ["192.0.2.7/32"]),
    ("192.0.2.0/24", ["192.0.2.0/24"]),
    ("2001:db8::7", ["2001:db8::7/128"]),
    ("2001:db8:1::/48", ["2001:db8:1::/48"]),
    ("192.0.2.0/24 2001:db8:1::/48 198.51.100.9", ["192.0.2.0/24", "2001:db8:1::/48", "198.51.100.9/32"]),
])
def test_allow_v4_v6_networks(value, nets):
    s = parse_settings(f'FW_PORTKNOCK_ALLOW="{value}"\n', "c")
    assert s.allow == tuple(ipaddress.ip_network(n) for n in nets)


def test_allow_comma_separated_unquoted():
    s = parse_settings("FW_PORTKNOCK_ALLOW = 192.0.2.0/24, 2001:db8::/32\n", "c")
    assert [str(n) for n in s.allow] == ["192.0.2.0/24", "2001:db8::/32"]


@pytest.mark.parametrize("bad", ["192.0.2.300", "192.0.2.0/33", "2001:db8::/129", "example.com",
                                 "192.0.2.0/24;", "10.0.0.0/8 nonsense"])
def test_allow_bad_entry_named(bad):
    token = bad.split()[-1]
    refused(f'{PREAMBLE}FW_PORTKNOCK_ALLOW="{bad}"\n', 4, "FW_PORTKNOCK_ALLOW", f'"{token}"')


# --- bad values: every key ------------------------------------------------------------------

BAD_VALUES = [
    ("FW_PORTKNOCK", "maybe"), ("FW_PORTKNOCK", "1"), ("FW_PORTKNOCK", ""),
    ("FW_PORTKNOCK_SIMPLE", "true"), ("FW_PORTKNOCK_ADVANCED", "on"),
    ("FW_PORTKNOCK_IPV6", "ja"), ("FW_PORTKNOCK_STRICT", "y"), ("FW_PORTKNOCK_KERNEL_LOG", "off"),
    ("FW_PORTKNOCK_STEP_TIMEOUT", "soon"), ("FW_PORTKNOCK_STEP_TIMEOUT", "0"),
    ("FW_PORTKNOCK_STEP_TIMEOUT", "3601"), ("FW_PORTKNOCK_STEP_TIMEOUT", "1.5"),
    ("FW_PORTKNOCK_OPEN_WINDOW", "0"), ("FW_PORTKNOCK_OPEN_WINDOW", "86401"),
    ("FW_PORTKNOCK_AUTOCLOSE", "9"), ("FW_PORTKNOCK_AUTOCLOSE", "604801"),
    ("FW_PORTKNOCK_NFLOG_GROUP", "0"), ("FW_PORTKNOCK_NFLOG_GROUP", "65536"),
    ("FW_PORTKNOCK_BACKEND", "iptables"), ("FW_PORTKNOCK_BACKEND", ""), ("FW_PORTKNOCK_BACKEND", "nf_tables"),
    ("FW_PORTKNOCK_BACKEND", "NFTABLES"), ("FW_PORTKNOCK_BACKEND", "iptables-nftables"),
    ("FW_PORTKNOCK_ALLOW", "any"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_value_names_key_and_line(key, value):
    text = f'{PREAMBLE}{key}="{value}"\n# trailing comment\n'
    if key == "FW_PORTKNOCK":
        text = f'# awp settings\n\n\n{key}="{value}"\n'
    refused(text, 4, key)


@pytest.mark.parametrize("value", [
    pytest.param("+1", id="plus"),
    pytest.param("-1", id="minus"),
    pytest.param(" 1", id="leading-space"),
    pytest.param("1 ", id="trailing-space"),
    pytest.param("1_0", id="underscore"),
    pytest.param("0x10", id="hex"),
    pytest.param("1e1", id="exponent"),
    pytest.param("\u0661\u0660", id="arabic-indic"),
    pytest.param("\uff11\uff10", id="fullwidth"),
    pytest.param("\U0001d7cf\U0001d7ce", id="math-bold"),
    pytest.param("1234567890", id="too-long"),
])
def test_number_syntax_is_strict(value):
    refused(f'{PREAMBLE}FW_PORTKNOCK_STEP_TIMEOUT="{value}"\n', 4, "FW_PORTKNOCK_STEP_TIMEOUT")


def test_error_line_is_the_keys_own_not_a_longer_keys():
    """FW_PORTKNOCK is a prefix of every other key: the line must be FW_PORTKNOCK's own."""
    refused('FW_PORTKNOCK_SIMPLE="yes"\nFW_PORTKNOCK_IPV6="yes"\nFW_PORTKNOCK="maybe"\n', 3, "FW_PORTKNOCK")


# --- structure: unknown keys, sections, duplicates -----------------------------------------


def test_unknown_key_named_with_line():
    refused(f'{PREAMBLE}FW_PORTKNOCK_TIMEOUT="5"\n', 4, "unknown setting", "FW_PORTKNOCK_TIMEOUT")


def test_unknown_key_that_is_a_prefix_of_a_known_one():
    """A typo like FW_PORTKNOC is found on its own line, not on FW_PORTKNOCK's."""
    refused(f'{PREAMBLE}FW_PORTKNOC="yes"\n', 4, "unknown setting", "FW_PORTKNOC")


def test_lowercase_key_is_unknown():
    refused(f"{PREAMBLE}fw_portknock_strict=yes\n", 4, "unknown setting", "fw_portknock_strict")


def test_section_refused():
    refused(f'{PREAMBLE}[awp]\nFW_PORTKNOCK_IPV6="no"\n', 4, "unknown section", "[awp]")


def test_duplicate_key_named_with_line():
    refused(f'{PREAMBLE}FW_PORTKNOCK_IPV6="yes"\nFW_PORTKNOCK="no"\n', 5, "FW_PORTKNOCK")


def test_two_duplicates_still_name_a_line():
    text = f'{PREAMBLE}FW_PORTKNOCK_IPV6="yes"\nFW_PORTKNOCK_IPV6="no"\nFW_PORTKNOCK="no"\n'
    refused(text, 5, "FW_PORTKNOCK_IPV6")


@pytest.mark.parametrize(("line", "words"), [
    ('FW_PORTKNOCK_IPV6 "no"', ["cannot parse"]),
    ('FW_PORTKNOCK_IPV6="no', ["cannot parse"]),
])
def test_unparsable_line(line, words):
    refused(f"{PREAMBLE}{line}\n", 4, *words)
