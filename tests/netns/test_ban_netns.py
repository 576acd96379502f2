"""FW_PORTKNOCK_BAN end to end, on every backend of views.BACKENDS: failed knocks from a real
client namespace ban that source in the kernel (its valid knock then does nothing, its
connect fails), another source and an allowlisted one are not touched, the ban ends after
FW_PORTKNOCK_BAN_TIME, and `awp status --json` shows it with the time left.

Advanced knocks are built with tests/unit/pknock_ref.py (advanced_helpers), simple knocks
are real SYNs (simple_helpers.knock).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from advanced_helpers import (OPEN, PORT, ListenerLog, deliver, knock, ref_mac, refused, rejected, safe_now,
                              send, wait_connect, write_private)
from advanced_helpers import servers  # noqa: F401  (pytest fixture)
from simple_helpers import SHORT_DOOR, SHORT_SEQ, apply, connects, settings, setup
from simple_helpers import knock as knock_simple
from views import BACKENDS, EVERY_BACKEND, status

pytestmark = pytest.mark.netns

AFTER, BAN_TIME = 3, 12
BAN = {"FW_PORTKNOCK_BAN": "yes", "FW_PORTKNOCK_BAN_AFTER": str(AFTER), "FW_PORTKNOCK_BAN_WINDOW": "60",
       "FW_PORTKNOCK_BAN_TIME": str(BAN_TIME)}


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def banned(doc: dict) -> dict[str, int]:
    return {b["source"]: b["seconds_left"] for b in doc["ban"]["banned"]}


def fail_advanced(srv, client, dst: str, src: str, times: int) -> None:
    """`times` knocks with a wrong secret, each seen (and rejected) by the listener."""
    for _ in range(times):
        mark = deliver(srv.log, src, lambda: send(client, dst, [ref_mac("wrong-secret", src, safe_now()).encode() + b"\n"]))
        srv.log.wait(rejected("bad-mac", src), mark)


def silent(log: ListenerLog, mark: int, src: str, wait: float = 1.0) -> bool:
    """No decision about `src` since `mark` after `wait` seconds: the kernel dropped its knock."""
    time.sleep(wait)
    return f"src={src} " not in log.since(mark)


def test_failed_advanced_knocks_ban_the_source_on_every_knock_port_until_ban_time(lab3, servers):
    attacker, other, admin = lab3.clients
    srv = servers(lab3, FW_PORTKNOCK_ALLOW="198.18.3.0/24", **BAN)
    srv.start()
    lab3.server.serve_tcp(PORT)
    lab3.server.serve_tcp(PORT, 6)
    dst = lab3.server_ip4(attacker)

    mark = srv.log.mark()
    fail_advanced(srv, attacker, dst, attacker.ip4, AFTER)
    srv.log.wait(rf"source banned src={attacker.ip4} .*failures={AFTER}", mark)
    banned_at = time.monotonic()
    doc = status(lab3.server, srv.root)
    assert doc["ban"]["enabled"] is True
    assert 0 < banned(doc)[attacker.ip4] <= BAN_TIME, doc["ban"]

    mark = srv.log.mark()
    send(attacker, dst, [srv.macs.payload(OPEN, attacker.ip4)])  # valid, but never reaches the listener
    assert silent(srv.log, mark, attacker.ip4)
    assert refused(attacker, dst)
    assert status(lab3.server, srv.root)["ban"]["dropped"] >= 1

    knock(srv, other, lab3.server_ip4(other), OPEN, "open")  # another source: untouched
    assert wait_connect(other, lab3.server_ip4(other))

    dst6 = lab3.server_ip6(other)  # the same source over IPv6 is another address: ban6
    fail_advanced(srv, other, dst6, other.ip6, AFTER)
    srv.log.wait(rf"source banned src={other.ip6} ", mark)
    assert other.ip6 in banned(status(lab3.server, srv.root))

    mark = srv.log.mark()
    fail_advanced(srv, admin, lab3.server_ip4(admin), admin.ip4, AFTER + 2)  # allowlisted: never banned
    knock(srv, admin, lab3.server_ip4(admin), OPEN, "open")
    assert "source banned" not in srv.log.since(mark)
    assert admin.ip4 not in banned(status(lab3.server, srv.root))

    time.sleep(max(0.0, banned_at + BAN_TIME + 0.5 - time.monotonic()))
    assert attacker.ip4 not in banned(status(lab3.server, srv.root))
    knock(srv, attacker, dst, OPEN, "open")
    assert wait_connect(attacker, dst)


SCAN = {"FW_PORTKNOCK_STEP_TIMEOUT": "2", "FW_PORTKNOCK_OPEN_WINDOW": "2",
        "FW_PORTKNOCK_BAN_WINDOW": "30", "FW_PORTKNOCK_BAN_TIME": "30",
        "FW_PORTKNOCK_BAN_AFTER": str(AFTER)}
A, B, C = SHORT_SEQ


@pytest.mark.parametrize(("backend", "ban"), [(b, "yes") for b in EVERY_BACKEND] + [(b, "no") for b in BACKENDS])
def test_a_simple_mode_scanner_is_banned_only_when_the_ban_is_on(lab, tmp_path, backend, ban):
    """Resets and the scan guard count; AFTER - 1 failures leave the source free (the count
    is exact), the AFTER-th bans it (ban on) for longer than the scan guard lasts."""
    scanner, other = lab.clients
    root = setup(lab, tmp_path, backend, SHORT_DOOR, FW_PORTKNOCK_BAN=ban, **SCAN)
    knock_simple(lab, scanner, [A, C, A, C])  # two resets: C is not the knock after A
    knock_simple(lab, scanner, SHORT_SEQ)
    assert connects(lab, scanner), "AFTER - 1 failures are not a ban"
    knock_simple(lab, scanner, [B])  # a second knock out of turn: the scan guard, failure 3
    time.sleep(2.5)  # the scan guard (a step timeout) and the open window are over; a ban (30 s) is not
    knock_simple(lab, scanner, SHORT_SEQ)
    doc = status(lab.server, root)
    if ban == "yes":
        assert not connects(lab, scanner, expect=False)
        assert scanner.ip4 in banned(doc) and 0 < banned(doc)[scanner.ip4] <= 30
        assert doc["ban"]["kernel_bans"] == 1 and doc["ban"]["dropped"] >= len(SHORT_SEQ)
        text = lab.server.awp(["status"], root).stdout
        assert "banned sources" in text and any(scanner.ip4 in line and " s" in line for line in text.splitlines())
        write_private(Path(root) / "etc" / "config", settings(backend, FW_PORTKNOCK_BAN="no", **SCAN))
        apply(lab, root)  # turning the ban off lifts every ban at once
        knock_simple(lab, scanner, SHORT_SEQ)
        assert connects(lab, scanner)
    else:
        assert connects(lab, scanner)
        assert doc["ban"] == {"enabled": False, "after": AFTER, "window": 30, "time": 30, "banned": [],
                              "dropped": None, "kernel_bans": None}
    knock_simple(lab, other, SHORT_SEQ)
    assert connects(lab, other)
