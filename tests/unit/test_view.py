"""`awp status --watch` frames: readable at 80 columns, bounded with 10,000 sources."""

from __future__ import annotations

import io
import ipaddress
import re

import pytest
from rich.console import Console

from awp import view
from awp.backend import Inspection, SourceState
from awp.cli import main
from awp.errors import ConfigError
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings
from awp.workflow import Status

SIMPLE = "22:7481,2203,9127,4410\n8443:3310,61022,4471,12009\n"
ADVANCED = "2222,2000,SeCrEtVaLuE1,SeCrEtVaLuE2\n"
DECISIONS = {"since": 1_700_000_000, "unknown-port": 41,
             "doors": {"2222": {"open": 12, "close": 3, "nothing-to-close": 1,
                                "rejected": {"bad-mac": 9_876, "replay": 17, "skew": 2, "too-long": 1}}}}


def config() -> Config:
    return Config(Settings(enabled=True, advanced=True), parse_simple(SIMPLE, "/var/awp/etc/firewall/simple"),
                  parse_advanced(ADVANCED, "/var/awp/etc/firewall/advanced"))


def crowd(n: int) -> tuple[SourceState, ...]:
    """n sources mid-sequence on port 22 (steps 1-3 of 4), a few open and granted."""
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    sources = [SourceState(22, str(ipaddress.IPv4Address(base + i)), f"knocking {1 + i % 3}/4", 15 - i % 15)
               for i in range(n)]
    sources += [SourceState(22, "198.19.255.1", "open", 29), SourceState(2222, "198.19.255.2", "granted", 3500)]
    return tuple(sources)


def status(sources, decisions=DECISIONS, pid=4242) -> Status:
    seen = Inspection("nftables", sources, {22: (1_234, 56_789), 2222: (7, 0)}, {"progress": 0})
    return Status(config(), seen, pid, None, {"decisions": decisions} if decisions else None)


def render(renderable, width: int = 80, height: int = 40) -> str:
    out = io.StringIO()
    Console(file=out, width=width, height=height, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


def test_ten_thousand_sources_make_a_short_frame_at_80_columns():
    st, limits = status(crowd(10_000)), view.Limits.for_height(40)
    text = render(view.frame(st, 1_700_000_000.0, 2.0, limits))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert len(lines) <= 40, f"{len(lines)} lines:\n{text}"
    assert "sources 10,002: 10,000 mid-sequence, 2 open or granted" in text
    for step in ("knocking 1/4", "knocking 2/4", "knocking 3/4"):
        count = sum(1 for s in st.inspection.sources if s.state == step)
        assert re.search(rf"22 +{step} +{count:,}", text), step
    assert "198.19.255.2" in text and "granted" in text and "3,500 s" in text, "grants first, with time left"
    assert f"{10_002 - limits.top:,} more" in text and len(re.findall(r"198\.18\.", text)) == limits.top - 2
    for port in ("22", "8443", "2222"):
        assert re.search(rf"^ *{port} +(simple|advanced)", text, re.M), port
    assert "56,789" in text and "SeCrEt" not in text


def test_decisions_and_reject_counters_show_when_the_listener_wrote_them():
    text = render(view.frame(status(crowd(3)), 1_700_000_000.0, 2.0))
    assert "listener decisions since" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("2222") and "bad-mac" in line)
    assert re.search(r"2222 +12 +3 +1 +9,896 +- +bad-mac 9,876 replay 17 skew 2", row), row
    assert "41 knock(s) on no door's knock port" in text
    assert "listener: running, pid 4242" in text
    assert "decisions" not in render(view.frame(status(crowd(3), decisions=None), 1.0, 2.0))


def test_new_decisions_are_counted_between_frames():
    later = {**DECISIONS, "doors": {"2222": {**DECISIONS["doors"]["2222"], "open": 20}}}
    text = render(view.frame(status((), decisions=later), 1.0, 2.0, previous=DECISIONS))
    assert re.search(r"2222 +20 .* 8 +bad-mac", text), text


@pytest.mark.parametrize("height", [24, 40, 60])
def test_frame_fits_the_terminal_height(height):
    text = render(view.frame(status(crowd(10_000)), 1.0, 2.0, view.Limits.for_height(height)), height=height)
    assert len(text.splitlines()) <= max(height, 30), text


def test_many_doors_are_summarised_too():
    simple = "".join(f"{10000 + i}:{20000 + i},{30000 + i},{40000 + i}\n" for i in range(300))
    cfg = Config(Settings(enabled=True), parse_simple(simple, "/l"))
    st = Status(cfg, Inspection("nftables", (SourceState(10005, "198.18.0.1", "knocking 1/3", 9),)), None)
    text = render(view.frame(st, 1.0, 2.0))
    assert "doors (300)" in text and "292 more door(s)" in text
    assert re.search(r"^ *10005 +simple", text, re.M), "the busy door is listed first"
    assert len(text.splitlines()) <= 40


def test_watch_redraws_with_a_new_time_and_survives_an_error():
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) == 2:
            raise ConfigError("list being edited", path="/var/awp/etc/firewall/simple", line=3)
        return status(crowd(10))

    out = io.StringIO()
    console = Console(file=out, width=80, height=30, color_system=None, force_terminal=True, legacy_windows=False)
    assert view.watch(fetch, console, 0.2, frames=3) == 0
    text = out.getvalue()
    assert len(calls) == 3 and "list being edited" in text and text.count("awp status") >= 3


def test_watch_into_a_pipe_prints_frame_after_frame():
    out = io.StringIO()
    console = Console(file=out, width=80, height=30, color_system=None, legacy_windows=False)
    assert not console.is_terminal
    assert view.watch(lambda: status(crowd(10)), console, 0.2, frames=2) == 0
    assert len(re.findall(r"^awp status \d\d:", out.getvalue(), re.M)) == 2 and "\x1b" not in out.getvalue()


def test_watch_options_are_checked(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert main(["status", "--interval", "5"]) == 2
    assert main(["status", "--watch", "--json"]) == 2
    assert main(["status", "--watch", "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err
