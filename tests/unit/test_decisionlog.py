"""The listener's log observer, its reject budget and summary (fake clock), the per-door
counters for the state file, and where lines go (journal prefix, syslog to a fake /dev/log)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import tracemalloc

import pytest

from awp.knockd.decisionlog import DecisionCounters, DecisionLog, line
from awp.knockd.events import Decision, state, tick
from awp.knockd.logdest import JournalFormatter, journal_stderr, use_settings
from awp.knockd.ratelog import RejectBudget
from awp.model import Settings

A, B = ipaddress.ip_address("198.18.1.2"), ipaddress.ip_address("198.18.3.4")
V6 = ipaddress.ip_address("2001:2::7")


def reject(src=A, reason="bad-mac", port=2222, knock_port=2000, **kw) -> Decision:
    return Decision(0.0, src, knock_port, port, "advanced", "reject", reason, "ab12cd34", **kw)


def accept(action="open", src=A, port=2222) -> Decision:
    return Decision(0.0, src, 2000, port, "advanced", action, "ok", "ab12cd34",
                    3600 if action == "open" else None)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def written(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "awp.knockd.decisionlog"]


# --- the line -------------------------------------------------------------------------------


def test_line_keys_in_a_fixed_order():
    assert line(accept()) == ("knock accepted decision=open reason=ok src=198.18.1.2 knock_port=2000 port=2222 "
                              "mode=advanced mac=ab12cd34 expires_in=3600")
    assert line(accept("close")) == ("knock accepted decision=close reason=ok src=198.18.1.2 knock_port=2000 "
                                     "port=2222 mode=advanced mac=ab12cd34")
    assert line(reject(V6, "unknown-port", None)) == (
        "knock rejected decision=reject reason=unknown-port src=2001:2::7 knock_port=2000 port=- "
        "mode=advanced mac=ab12cd34")


def test_the_costly_reason_is_asked_for_only_on_lines_written(clock, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    asked = []

    def why():
        asked.append(1)
        return "skew", "offset=-120"

    out = DecisionLog(budget=RejectBudget(burst=2, per_source=5, clock=clock))
    for _ in range(5):
        out(reject(explain=why))
    assert len(asked) == 2
    assert written(caplog) == ["knock rejected decision=reject reason=skew src=198.18.1.2 knock_port=2000 "
                               "port=2222 mode=advanced mac=ab12cd34 offset=-120"] * 2


# --- the budget and the summary --------------------------------------------------------------


def test_one_source_gets_per_source_lines_a_period_then_a_summary(clock, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    out = DecisionLog(budget=RejectBudget(period=60, burst=100, per_source=10, clock=clock))
    for _ in range(40):
        out(reject(A))
    for _ in range(12):
        out(reject(B, "malformed"))
    out(accept())  # accepted knocks are never held back
    out.tick()
    assert len(written(caplog)) == 10 + 10 + 1  # nothing to summarise yet: the period runs
    clock.now += 60
    out.tick()
    assert written(caplog)[-1] == ("knock summary period=60 rejected=52 logged=20 suppressed=32 sources=2 "
                                   "untracked=0 top_src=198.18.1.2:40,198.18.3.4:12 reasons=bad-mac:40,malformed:12")
    for _ in range(3):
        out(reject(A))
    assert len(written(caplog)) == 22 + 3  # a new period: A's budget is back


def test_a_flood_from_many_sources_costs_burst_lines_and_one_summary(clock, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    out = DecisionLog(budget=RejectBudget(period=60, burst=100, per_source=10, max_sources=4096, clock=clock))
    for i in range(20000):
        out(reject(ipaddress.ip_address(0xC6120000 + i), "malformed"))
    clock.now += 61
    out.tick()
    lines = written(caplog)
    assert len(lines) == 101
    assert lines[-1].startswith("knock summary period=61 rejected=20000 logged=100 suppressed=19900 sources=4096 "
                                "untracked=15904 top_src=")
    assert lines[-1].endswith(" reasons=malformed:20000")


def test_an_ipv6_source_is_bracketed_in_the_summary(clock):
    budget = RejectBudget(clock=clock)
    for _ in range(3):
        budget.allow(str(V6), "bad-mac")
    budget.allow(str(A), "replay")
    text = budget.roll(force=True)
    assert "top_src=[2001:2::7]:3,198.18.1.2:1 reasons=bad-mac:3,replay:1" in text


def test_no_rejects_no_summary_and_close_writes_the_last_period(clock, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    out = DecisionLog(budget=RejectBudget(clock=clock))
    clock.now += 120
    out.tick()
    assert written(caplog) == []
    out(reject())
    clock.now += 5
    out.close()
    assert written(caplog)[-1].startswith("knock summary period=5 rejected=1 logged=1 suppressed=0 ")


def test_the_budget_memory_is_bounded_whatever_the_sources(clock):
    budget = RejectBudget(max_sources=4096, clock=clock)
    for i in range(5000):
        budget.allow(str(ipaddress.ip_address(0xC6120000 + i)), "bad-mac")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000, 60000):
        budget.allow(str(ipaddress.ip_address(0xC6120000 + i)), "bad-mac")
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(budget.sources) == 4096 and budget.untracked == 60000 - 4096
    assert grown < 64 * 1024, grown  # 55,000 more sources, no more entries


# --- the counters ---------------------------------------------------------------------------


def test_counters_per_door_in_the_state_file_schema():
    counters = DecisionCounters(since=1764655200.7)
    for d in (accept(), accept(), accept("close"), accept("nothing-to-close"), reject(), reject(reason="replay"),
              reject(reason="bad-mac"), reject(port=None, reason="unknown-port", knock_port=2001),
              accept(port=8443)):
        counters(d)
    assert state([counters]) == {"decisions": {
        "since": 1764655200,
        "doors": {"2222": {"open": 2, "close": 1, "nothing-to-close": 1, "rejected": {"bad-mac": 2, "replay": 1}},
                  "8443": {"open": 1, "close": 0, "nothing-to-close": 0, "rejected": {}}},
        "unknown-port": 1}}


def test_state_is_a_copy_and_tick_and_state_skip_observers_without_them():
    counters = DecisionCounters(since=0)
    counters(reject())
    snap = state([counters, print])
    counters(reject())
    assert snap["decisions"]["doors"]["2222"]["rejected"] == {"bad-mac": 1}
    tick([counters, print], 0.0)  # neither has tick(): nothing happens, nothing raises


# --- destinations ---------------------------------------------------------------------------


def test_journal_lines_carry_the_priority_prefix():
    fmt = JournalFormatter("%(name)s: %(message)s")
    rec = logging.LogRecord("awp.knockd.decisionlog", logging.WARNING, __file__, 1, "knock rejected x", None, None)
    assert fmt.format(rec) == "<4>awp.knockd.decisionlog: knock rejected x"


def test_journal_stream_must_be_our_stderr(monkeypatch, tmp_path):
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert journal_stderr()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # stderr redirected to a file
    assert not journal_stderr()
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not journal_stderr()


def test_syslog_yes_sends_authpriv_lines_with_the_ident_and_no_drops_the_handler(tmp_path):
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    logger = logging.getLogger("awp.test_syslog")
    logger.setLevel(logging.INFO)
    try:
        use_settings(Settings(syslog=True), address=path, logger=logger)
        use_settings(Settings(syslog=True), address=path, logger=logger)  # a reload keeps one handler
        assert len(logger.handlers) == 1
        logger.getChild("decisionlog").warning("knock rejected decision=reject reason=bad-mac src=198.18.1.2")
        got = server.recv(4096).decode()
        assert got == (f"<84>awp-knockd[{os.getpid()}]: awp.test_syslog.decisionlog: knock rejected "
                       "decision=reject reason=bad-mac src=198.18.1.2\x00")  # 84 = authpriv(10) * 8 + warning(4)
        use_settings(Settings(syslog=False), address=path, logger=logger)
        assert logger.handlers == []
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        server.close()


def test_syslog_yes_without_a_syslog_socket_is_one_error_not_a_crash(tmp_path, caplog):
    logger = logging.getLogger("awp.test_nosyslog")
    use_settings(Settings(syslog=True), address=str(tmp_path / "missing"), logger=logger)
    assert logger.handlers == []
    assert "syslog is not reachable" in caplog.text


JOURNAL_CHILD = r"""
import argparse, ipaddress, sys
from awp.cli import _setup_logging
from awp.knockd.decisionlog import DecisionLog
from awp.knockd.events import Decision
_setup_logging(argparse.Namespace(quiet=False, verbose=0, command=sys.argv[1]))
out = DecisionLog()
src = ipaddress.ip_address("198.18.1.2")
out(Decision(0.0, src, 2000, 2222, "advanced", "open", "ok", "ab12cd34", 3600))
out(Decision(0.0, src, 2000, 2222, "advanced", "reject", "bad-mac", "ab12cd34"))
"""


@pytest.mark.parametrize("journal", [True, False], ids=["journal stream", "log file"])
def test_the_listener_process_writes_journal_lines_only_to_the_journal_stream(tmp_path, journal):
    """`awp knockd`'s logging as cli sets it up: with stderr the journal stream systemd names
    in JOURNAL_STREAM, priority prefixes and no time stamp; with stderr a file (the
    supervisor's log) and JOURNAL_STREAM inherited from elsewhere, time stamps."""
    import subprocess
    import sys

    err = tmp_path / "stderr"
    with open(err, "wb") as fh:
        st = os.fstat(fh.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino if journal else st.st_ino + 1}"}
        subprocess.run([sys.executable, "-c", JOURNAL_CHILD, "knockd"], stderr=fh, env=env, check=True, timeout=30)
    lines = err.read_text().splitlines()
    body = ["awp.knockd.decisionlog: knock accepted decision=open reason=ok src=198.18.1.2 knock_port=2000 port=2222 "
            "mode=advanced mac=ab12cd34 expires_in=3600",
            "awp.knockd.decisionlog: knock rejected decision=reject reason=bad-mac src=198.18.1.2 knock_port=2000 "
            "port=2222 mode=advanced mac=ab12cd34"]
    if journal:
        assert lines == ["<6>" + body[0], "<4>" + body[1]]
    else:
        assert [line.split(" ", 2)[2] for line in lines] == body
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in lines), lines


def test_a_replay_is_info_and_a_bad_mac_a_warning(clock, caplog):
    caplog.set_level(logging.INFO, logger="awp.knockd")
    out = DecisionLog(budget=RejectBudget(clock=clock))
    for reason in ("replay", "untrusted-cache", "bad-mac", "malformed", "unknown-port"):
        out(reject(reason=reason))
    out(accept())
    levels = [(r.levelname, r.getMessage().split(" reason=")[1].split()[0]) for r in caplog.records]
    assert levels == [("INFO", "replay"), ("INFO", "untrusted-cache"), ("WARNING", "bad-mac"),
                      ("WARNING", "malformed"), ("WARNING", "unknown-port"), ("INFO", "ok")]
