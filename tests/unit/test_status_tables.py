"""`awp status` at 80 columns: no number and no address is ever split across lines."""

from __future__ import annotations

import io
import re

from rich.console import Console

from awp.status_tables import doors_table as _doors_table, sources_table as _sources_table
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings
from awp.backend import SourceState

SIMPLE = ("22:7481,2203,9127,4410\n"
          "4410:40001,40015,40002,40014,40003,40013,40004,40012,40005,40011,40006,40010,40007,40009,40008,40016\n"
          "8443:3310,61022,4471,12009 9443:3311,61023,4472,12010\n")
ADVANCED = "65535,62201,SeCrEtVaLuE1,SeCrEtVaLuE2\n2222,2000,SeCrEtVaLuE3,SeCrEtVaLuE4\n"
COUNTERS = {22: (123456789012, 987654321098), 4410: (1, 22), 65535: (4410, 7481)}


def render(table, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(table)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    return text


def config() -> Config:
    simple = parse_simple(SIMPLE, "/var/awp/etc/firewall/simple-portknock-list")
    advanced = parse_advanced(ADVANCED, "/var/awp/etc/firewall/advanced-portknock-list")
    return Config(Settings(enabled=True, advanced=True), simple, advanced)


def test_doors_table_at_80_columns_shows_every_number_whole():
    cfg = config()
    text = render(_doors_table(cfg, COUNTERS))
    numbers = {str(n) for d in cfg.simple for n in (d.port, *d.knocks, d.origin.line)}
    numbers |= {str(n) for d in cfg.advanced for n in (d.port, d.knock_port, d.origin.line)}
    numbers |= {str(n) for pair in COUNTERS.values() for n in pair}
    found = set(re.findall(r"[0-9]+", text))
    assert numbers <= found, sorted(numbers - found)
    assert found <= numbers, f"split numbers: {sorted(found - numbers)}\n{text}"
    assert "SeCrEt" not in text


def test_sources_table_at_80_columns_shows_every_address_and_number_whole():
    sources = [SourceState(4410, "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff", "knocking 15/16", 14),
               SourceState(22, "198.51.100.255", "open", 29),
               SourceState(65535, "::ffff:198.51.100.7", "granted", 604799)]
    lines = render(_sources_table(sources)).splitlines()
    for s in sources:
        row = next(line for line in lines if s.source in line)
        assert re.search(rf"\b{s.port}\b", row) and f" {s.seconds_left} s " in row, row
        assert s.state in row


def test_empty_sources_table_fits():
    assert "no source is mid-sequence or open" in render(_sources_table([]))


def test_decisions_table_at_80_columns_shows_every_count_and_reason():
    from awp.status_tables import decisions_table as _decisions_table

    decisions = {"since": 1764655200, "unknown-port": 7,
                 "doors": {"2222": {"open": 123456, "close": 2, "nothing-to-close": 3,
                                    "rejected": {"bad-mac": 4000000, "replay": 5, "malformed": 66}},
                           "65535": {"open": 0, "close": 0, "nothing-to-close": 0, "rejected": {}}}}
    text = render(_decisions_table(config(), decisions))
    row = next(line for line in text.splitlines() if " 2222 " in line)
    for number in ("2000", "123456", "2", "3", str(4000000 + 5 + 66)):
        assert re.search(rf"\b{number}\b", row), row
    assert "bad-mac=4000000" in text and "malformed=66" in text and "replay=5" in text
    assert "since 2025-12-02 06:00:00 UTC" in text and "7 knock(s) on no door's knock port" in text
    assert re.search(r"\b65535\b.*\b62201\b", text)
