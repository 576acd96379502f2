"""Advanced mode, what the firewall hands the listener: each datagram on a knock port reaches
it once and gets exactly one decision line (IPv4 and IPv6), and any 65th byte is accepted, as
xt_pknock does. Same setup as test_advanced.py (advanced_helpers)."""

from __future__ import annotations

import re
import time

import pytest
from advanced_helpers import (CLOSE, KNOCK_PORT, OPEN, accepted, ref_mac, refused, rejected, safe_now,
                              send, wait_connect)
from advanced_helpers import make_server, server, servers  # noqa: F401  (pytest fixtures)
from simple_helpers import count_rule, raw_counts

pytestmark = pytest.mark.netns

DECISION_WAIT = 10.0  # a busy 2-CPU box can be slow to hand a datagram to the listener
SECOND_COPY_WAIT = 1.5  # a second copy of the same datagram would be logged within this


def received(host, family: int, src: str) -> int:
    """Datagrams from src to the knock port that reached the server (raw table counter)."""
    return sum(packets for packets, rule in raw_counts(host, family)
               if f"-s {src}/" in rule and f"--dport {KNOCK_PORT}" in rule)


def decisions(srv, mark: int, src: str) -> list[str]:
    regex = re.compile(rf"knock (accepted|rejected) .*src={re.escape(src)} ")
    return [line for line in srv.log.since(mark).splitlines() if regex.search(line)]


def one_datagram(srv, client, dst: str, src: str, family: int, payload: bytes, expect: str) -> list[str]:
    """Send payload once (once more if it never reached the server); wait for the decision
    `expect`, then a little longer. Returns (decision lines, datagrams the server received)."""
    mark, before = srv.log.mark(), received(srv.host, family, src)
    for _ in range(2):
        send(client, dst, [payload])
        try:
            srv.log.wait(expect, mark, DECISION_WAIT)
            break
        except AssertionError:
            if received(srv.host, family, src) > before:
                raise  # it arrived and the listener said nothing (or something else)
    time.sleep(SECOND_COPY_WAIT)
    return decisions(srv, mark, src), received(srv.host, family, src) - before


@pytest.mark.parametrize("family", [4, 6])
def test_one_datagram_gets_exactly_one_decision_line(lab, server, family):
    c1 = lab.clients[0]
    dst, src = (lab.server_ip6(c1), c1.ip6) if family == 6 else (lab.server_ip4(c1), c1.ip4)
    count_rule(lab.server, family, "PREROUTING", ["-s", src, "-p", "udp", "--dport", KNOCK_PORT])
    wrong = ref_mac("wrongsecret1", src, safe_now()).encode() + b"\n"
    cases = [("valid open", server.macs.payload(OPEN, src), accepted("open", src)),
             ("wrong secret", wrong, rejected("bad-mac", src)),
             ("10-byte misfit", b"0123456789", rejected("malformed", src)),
             ("valid close", server.macs.payload(CLOSE, src), accepted("close", src))]
    problems = []
    for name, payload, expect in cases:
        lines, arrived = one_datagram(server, c1, dst, src, family, payload, expect)
        if len(lines) != arrived or not re.search(expect, lines[0]):
            problems.append(f"{name}: {arrived} datagram(s) arrived, decision lines: {lines}")
    assert not problems, "\n".join(problems)


def test_any_65th_byte_is_accepted_as_xt_pknock_does(lab, server):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    count_rule(lab.server, 4, "PREROUTING", ["-s", c1.ip4, "-p", "udp", "--dport", KNOCK_PORT])
    for secret, action, trailer in ((OPEN, "open", b"x"), (CLOSE, "close", b"\xff")):
        payload = server.macs.mac(secret, c1.ip4).encode() + trailer
        lines, _ = one_datagram(server, c1, dst, c1.ip4, 4, payload, accepted(action, c1.ip4))
        assert len(lines) == 1, lines
        assert wait_connect(c1, dst) if action == "open" else refused(c1, dst)
