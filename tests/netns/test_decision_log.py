"""Failed knocks that lead somewhere (issue 7): the real listener's log lines, fed to the real
fail2ban-regex with etc/fail2ban/filter.d/awp-knockd.conf, and the per-door counts that
`awp status` shows after real knocks. Same setup as test_advanced.py (advanced_helpers)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from advanced_helpers import (CLOSE, KNOCK_PORT, OPEN, PORT, accepted, post, ref_mac, rejected, safe_now,
                              send)
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from harness import REPO, wait_for

from awp.knockd.verify import REPEAT_WINDOW

pytestmark = pytest.mark.netns
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "awp-knockd.conf"
LINE = re.compile(r"knock (accepted|rejected) decision=(\S+) reason=(\S+) src=(\S+) knock_port=(\d+) port=(\S+) ")
FAILED = ("bad-mac", "malformed")  # what awp(8) says fail2ban counts
PER_SOURCE = 30  # awp.knockd.ratelog.PER_SOURCE, the reject lines one source gets a minute


def decisions(text: str) -> list[tuple[str, ...]]:
    """(decision, reason, src, line) of every decision line, parsed here, not by awp."""
    found = []
    for line in text.splitlines():
        m = LINE.search(line)
        if m:
            found.append((m.group(2), m.group(3), m.group(4), line))
    return found


def fail2ban_regex(log_path, out: str) -> list[str]:
    proc = subprocess.run(["fail2ban-regex", "-o", out, str(log_path), str(FILTER)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_fail2ban_matches_exactly_the_failed_knocks_with_their_source(lab, make_server):
    srv = make_server()
    srv.start()
    c1, c2 = lab.clients
    d4, d6, d2 = lab.server_ip4(c1), lab.server_ip6(c1), lab.server_ip4(c2)
    # first, while the listener's minute has just begun: 40 bad knocks from one source
    mark = srv.log.mark()
    send(c2, d2, [ref_mac("wrongsecret2", c2.ip4, safe_now()).encode() + b"\n"] * 40)
    srv.log.wait(rejected("bad-mac", c2.ip4), mark)
    wait_for(lambda: sum(1 for d in decisions(srv.log.since(mark)) if d[2] == c2.ip4) >= PER_SOURCE, 10,
             f"{PER_SOURCE} reject lines from {c2.ip4}")
    wrong = ref_mac("wrongsecret1", c1.ip4, safe_now()).encode() + b"\n"
    valid = srv.macs.payload(OPEN, c1.ip4)
    post(srv, c1, d4, wrong)  # bad-mac
    post(srv, c1, d4, b"0123456789")  # malformed
    post(srv, c1, d4, valid)  # accepted
    time.sleep(REPEAT_WINDOW)  # sooner, the same MAC is a client's repeat (logged at debug only)
    post(srv, c1, d4, valid)  # the same MAC again: replay
    mark = post(srv, c1, d4, ref_mac(OPEN, c1.ip4, safe_now() - 120).encode() + b"\n")  # a clock 2 min late
    assert srv.log.wait(rejected("skew", c1.ip4), mark).rstrip().endswith(" offset=-120")
    post(srv, c1, d6, ref_mac("wrongsecret1", c1.ip6, safe_now()).encode() + b"\n")  # bad-mac over IPv6
    post(srv, c1, d6, b"x" * 65)  # malformed over IPv6
    mark = post(srv, c1, d6, srv.macs.payload(OPEN, c1.ip6))
    srv.log.wait(accepted("open", c1.ip6), mark)
    srv.awp("remove")  # stops the listener, which writes the summary of its last minute
    wait_for(lambda: "knock summary " in srv.log.text(), 10, "the listener's last summary")

    text = srv.log.text()
    seen = decisions(text)
    reasons = {(d[1], d[2]) for d in seen}
    for reason, src in [("bad-mac", c1.ip4), ("malformed", c1.ip4), ("ok", c1.ip4), ("replay", c1.ip4),
                        ("skew", c1.ip4), ("bad-mac", c1.ip6), ("malformed", c1.ip6), ("ok", c1.ip6),
                        ("bad-mac", c2.ip4)]:
        assert (reason, src) in reasons, (reason, src, text[-3000:])
    # the log stays bounded: one source gets PER_SOURCE lines a minute, the rest is summarised
    from_c2 = [d for d in seen if d[2] == c2.ip4]
    summaries = [line for line in text.splitlines() if "knock summary " in line]
    if len(summaries) == 1:  # the 40 knocks all fell in one minute of the listener's
        assert len(from_c2) == PER_SOURCE, len(from_c2)
        assert re.search(rf"suppressed=([1-9]\d*) .*top_src={re.escape(c2.ip4)}:(4\d|3[1-9]),", summaries[0]), \
            summaries[0]

    expected = [d[3] for d in seen if d[0] == "reject" and d[1] in FAILED]
    matched = fail2ban_regex(srv.log.path, "msg")
    assert [m.strip() for m in matched] == [e.strip() for e in expected]
    assert fail2ban_regex(srv.log.path, "ip") == [d[2] for d in seen if d[0] == "reject" and d[1] in FAILED]
    assert not any("knock accepted" in m or "knock summary" in m or "reason=replay" in m or "reason=skew" in m
                   for m in matched)


def counts_from_log(text: str, port: int) -> dict:
    """The schema of the state file's decisions.doors entry, counted from the log here."""
    door = {"open": 0, "close": 0, "nothing-to-close": 0, "rejected": {}}
    for decision, reason, _src, line in decisions(text):
        if f" port={port} " not in line:
            continue
        if decision == "reject":
            door["rejected"][reason] = door["rejected"].get(reason, 0) + 1
        else:
            door[decision] += 1
    return door


def test_status_shows_the_listeners_decisions_per_door(lab, make_server):
    srv = make_server()
    srv.start()
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    valid = srv.macs.payload(OPEN, c1.ip4)
    for i, payload in enumerate((valid, valid, srv.macs.payload(CLOSE, c1.ip4), srv.macs.payload(CLOSE, c1.ip4),
                                 ref_mac("wrongsecret1", c1.ip4, safe_now()).encode() + b"\n", b"tiny")):
        if i == 1:
            time.sleep(REPEAT_WINDOW)  # the same MAC sooner is a client's repeat, not a replay
        post(srv, c1, dst, payload)
    want = counts_from_log(srv.log.text(), PORT)
    assert want["open"] >= 1 and want["close"] >= 1 and want["nothing-to-close"] >= 1
    assert {"replay", "bad-mac", "malformed"} <= set(want["rejected"]), want

    def doc() -> dict:
        return json.loads(srv.awp("status", "--json").stdout)["listener"]["decisions"] or {}

    wait_for(lambda: (doc().get("doors") or {}).get(str(PORT)) == want, 5, f"status to show {want}")
    decided = doc()
    assert decided["unknown-port"] == 0 and isinstance(decided["since"], int)
    table = srv.awp("status").stdout
    assert "knocks the listener decided since" in table
    row = next(line for line in table.splitlines() if re.search(rf"\b{PORT}\b.*\b{KNOCK_PORT}\b", line)
               and "bad-mac=" in line)
    total = sum(want["rejected"].values())
    assert re.search(rf"\b{want['open']}\b.*\b{want['close']}\b.*\b{want['nothing-to-close']}\b.*\b{total}\b",
                     row), row


def test_a_junk_flood_from_many_sources_costs_a_bounded_log_and_status_counts_it_all(lab, make_server):
    """300 bound sources send 10 junk knocks each: the log holds at most the minute's 120
    reject lines and the summary counts the rest, while `awp status` counts every one."""
    import os

    from crowd import bind_sources, datagrams

    srv = make_server()
    srv.start()
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    sources = bind_sources(lab, c1, 300)
    mark = srv.log.mark()
    # right-sized junk (the kernel passes other sizes at 20/s): half bad MACs, half not hex past
    # the first 4 bytes (the kernel's hex prefilter passes junk with a non-hex start at 20/s too)
    sends = [(src, os.urandom(32).hex().encode() + b"\n" if i % 2 else b"abcd" + b"g" * 60 + b"\n")
             for i in range(10) for src in sources]
    datagrams(c1, dst, KNOCK_PORT, sends)

    def counted() -> int:
        doc = json.loads(srv.awp("status", "--json").stdout)["listener"]["decisions"] or {}
        return sum(((doc.get("doors") or {}).get(str(PORT)) or {}).get("rejected", {}).values())

    wait_for(lambda: counted() >= len(sends) * 0.98, 30, "status to count the flood")
    total = counted()
    srv.awp("remove")
    wait_for(lambda: "knock summary " in srv.log.since(mark), 10, "the listener's last summary")
    text = srv.log.since(mark)
    rejects = [line for line in text.splitlines() if "knock rejected " in line]
    summaries = [line for line in text.splitlines() if "knock summary " in line]
    assert len(rejects) <= 120 * len(summaries), (len(rejects), summaries)
    assert len(text.encode()) < 200 * 120 * len(summaries) + 2000, len(text.encode())
    fields = [dict(kv.split("=", 1) for kv in s.split("knock summary ", 1)[1].split()) for s in summaries]
    assert sum(int(f["rejected"]) for f in fields) == total  # the log's summaries and status agree
    assert sum(int(f["logged"]) for f in fields) == len(rejects)
    if len(summaries) == 1:  # the flood fell in one minute of the listener's
        f = fields[0]
        assert f["logged"] == "120" and int(f["suppressed"]) == total - 120 and f["sources"] == "300", f
        assert len(f["top_src"].split(",")) == 5, f
        reasons = dict(r.split(":") for r in f["reasons"].split(","))
        assert set(reasons) == {"bad-mac", "malformed"} and sum(map(int, reasons.values())) == total, f
