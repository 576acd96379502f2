"""awp simple mode end to end: `awp -s -f` in the server namespace of a Lab, a real service on
the protected port, knocks from client namespaces with real clients, then a real connect.

Every test asserts on what a user sees: whether the connect succeeds, and awp's exit codes
and messages. Each runs on every backend of views.BACKENDS (the `backend` fixture), the core
ones on iptables-legacy too (views.on_every_backend). The door is 22:7481,2203,9127,4410,6602
(knocks A..E, in no ascending or descending order); most tests use short timers (step 10 s,
open window 15 s) to stay fast. Counters, where used, live in the raw table (iptables-nft),
outside awp's rules whatever the backend. The apply side (foreign rules, bad input, rollback,
re-apply, status) is in test_simple_apply.py.
"""

from __future__ import annotations

import re
import time

import pytest

from harness import port_state
from simple_helpers import (A, B, C, D, DOOR, E, OTHER_DOOR, OTHER_SEQ, PORT, SEQ, SHORT_DOOR, SHORT_SEQ,
                            WRONG, addr, apply, connects, count_rule, count_syns, in_parallel, knock, probe,
                            raw_counts, root_with, serve, setup, syns)
from views import on_every_backend

pytestmark = pytest.mark.netns

X1, X2, X3 = OTHER_SEQ[:3]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    """awp refuses to close the SSH port of the session it runs in; the lab is not that
    session. Wide columns so that `awp status` tables are not wrapped."""
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


# --- 1, 2: closed before a knock, open only for the knocking source ------------------------


@on_every_backend
def test_protected_port_drops_everything_before_a_knock(lab, tmp_path, backend):
    c1, c2 = lab.clients
    serve(lab)
    assert connects(lab, c1) and connects(lab, c2, 6), "control: the service is reachable before awp"
    apply(lab, root_with(tmp_path, backend, FW_PORTKNOCK_STEALTH="drop"))  # reject style: test_stealth.py
    for client in (c1, c2):
        for family in (4, 6):
            assert not connects(lab, client, family, expect=False)
    out = c1.nmap(["-Pn", "-sS", "-p", str(PORT), addr(lab, c1)])
    assert port_state(out, PORT) == "filtered"


@on_every_backend
def test_correct_sequence_opens_for_the_knocking_source_only(lab, tmp_path, backend):
    c1, c2 = lab.clients
    setup(lab, tmp_path, backend)
    knock(lab, c1, SEQ)
    assert connects(lab, c1)
    assert not connects(lab, c2, expect=False)


# --- 3: order matters, a wrong port resets, the reset does not lock out -------------------


@on_every_backend
def test_order_matters_and_a_wrong_port_resets(lab, tmp_path, backend):
    c1 = lab.clients[0]
    setup(lab, tmp_path, backend, DOOR + OTHER_DOOR)
    wrong_sequences = {
        "A,B,E,C,D (out of order)": (A, B, E, C, D),
        "A,B,<closed port>,C,D,E": (A, B, WRONG, C, D, E),
        "A,B,<other door's 1st knock>,C,D,E": (A, B, X1, C, D, E),
        "A,B,<other door's 2nd knock>,C,D,E": (A, B, X2, C, D, E),
        "A,B,<protected port>,C,D,E": (A, B, PORT, C, D, E),
    }
    opened = {}
    for name, ports in wrong_sequences.items():
        knock(lab, c1, ports)
        opened[name] = connects(lab, c1, expect=False)
    assert opened == dict.fromkeys(wrong_sequences, False)
    knock(lab, c1, SEQ)
    assert connects(lab, c1), "a full correct sequence right after the resets must open"


def test_detour_through_another_doors_knocks_resets(lab3, tmp_path, backend):
    """Knocks of another door in the middle are wrong knocks too (awp-portknock-list(5): "a
    TCP SYN from it to any other port of the host, awp's or not, resets its progress").
    Two in a row once resumed door 22 (X1 reset and started door 80, X2 set the shared
    position list again, and a per-door stage entry left by the reset made C advance door 22);
    the door identity is now rewritten whole at every start.
    """
    c1, c2, c3 = lab3.clients
    setup(lab3, tmp_path, backend, DOOR + OTHER_DOOR)
    knock(lab3, c1, (A, B, X1, X2, C, D, E))
    knock(lab3, c2, (A, B, C, WRONG, X1, X2, X3, D, E))
    knock(lab3, c3, (A, B, X1, C, D, E))  # control: one foreign knock resets
    assert not connects(lab3, c3, expect=False)
    assert {"A,B,X1,X2,C,D,E": connects(lab3, c1, expect=False),
            "A,B,C,<wrong>,X1,X2,X3,D,E": connects(lab3, c2, expect=False)} == {
        "A,B,X1,X2,C,D,E": False, "A,B,C,<wrong>,X1,X2,X3,D,E": False}


# --- 4: real clients, retransmitted SYNs, IPv4 and IPv6 ----------------------------------


def _classic_syn_timing(host) -> None:
    """RTO backoff 1 s, 2 s (SYNs at 0, 1, 3 s) instead of Linux >= 6.7's linear start."""
    if host.run(["sysctl", "net.ipv4.tcp_syn_linear_timeouts"], check=False).returncode == 0:
        host.sysctl("net.ipv4.tcp_syn_linear_timeouts", 0)


def test_telnet_at_default_timings_opens_despite_retransmits(lab3, tmp_path, backend):
    """telnet held 4.5 s per knock port: the kernel resends the same SYN while the knock port
    drops it. c1 (IPv4) and c2 (IPv6) use classic timings (SYNs at 0, 1, 3 s), c3 (IPv4)
    the kernel default of this namespace (linear: every ~1 s). A 3-knock door: every knock
    costs 4.5 s."""
    c1, c2, c3 = lab3.clients
    setup(lab3, tmp_path, backend, SHORT_DOOR, FW_PORTKNOCK_STEP_TIMEOUT="10", FW_PORTKNOCK_OPEN_WINDOW="10",
          FW_PORTKNOCK_STEALTH="drop")  # retransmits happen only when knocks get no answer
    for client in (c1, c2):
        _classic_syn_timing(client)
    runs = ((c1, 4), (c2, 6), (c3, 4))
    for client, family in runs:
        count_syns(lab3.server, family, client.ip6 if family == 6 else client.ip4, SHORT_SEQ)
    in_parallel(*(lambda c=c, f=f: c.knock_telnet(addr(lab3, c, f), list(SHORT_SEQ), hold=4.5)
                  for c, f in runs))
    opened = {(c.name, f): connects(lab3, c, f) for c, f in runs}
    counts = {(c.name, f): syns(lab3.server, f, c.ip6 if f == 6 else c.ip4) for c, f in runs}
    assert opened == dict.fromkeys(opened, True), counts
    assert all(n >= 3 for per_port in counts.values() for n in per_port.values()), counts
    assert set(counts[(c1.name, 4)].values()) == {3}, counts


@pytest.mark.parametrize("knocker", ["nc -w 1", "nc -w 3", "knock"])
def test_nc_and_knockd_clients_open_over_ipv4_and_ipv6(lab, tmp_path, backend, knocker):
    """A 3-knock door: `nc -w 3` waits 3 s per knock."""
    c1, c2 = lab.clients
    setup(lab, tmp_path, backend, SHORT_DOOR, FW_PORTKNOCK_STEP_TIMEOUT="10", FW_PORTKNOCK_OPEN_WINDOW="10")

    def run(client, family):
        target = addr(lab, client, family)
        if knocker == "knock":
            client.knock_knockd(target, list(SHORT_SEQ))
        else:
            client.knock_nc(target, list(SHORT_SEQ), wait=int(knocker.split()[-1]))

    in_parallel(lambda: run(c1, 4), lambda: run(c2, 6))
    assert (connects(lab, c1, 4), connects(lab, c2, 6)) == (True, True)
    assert (connects(lab, c1, 6, expect=False), connects(lab, c2, 4, expect=False)) == (False, False)


# --- 5, 6: step timeout, several sources at once ---------------------------------------


def test_knocks_slower_than_the_step_timeout_fail(lab, tmp_path, backend):
    slow, control = lab.clients
    setup(lab, tmp_path, backend, FW_PORTKNOCK_STEP_TIMEOUT="2", FW_PORTKNOCK_OPEN_WINDOW="10")

    def slow_knocks():
        knock(lab, slow, (A, B))
        time.sleep(3)
        knock(lab, slow, (C, D, E))

    in_parallel(slow_knocks, lambda: knock(lab, control, SEQ, delay=1.0))
    assert connects(lab, control), "control: 1 s pauses are within a 2 s step timeout"
    assert not connects(lab, slow, expect=False)


def test_sources_mid_sequence_do_not_disturb_each_other(lab3, tmp_path, backend):
    c1, c2, c3 = lab3.clients
    setup(lab3, tmp_path, backend)
    wrong = (A, C, B, E, D)
    for i in range(len(SEQ)):
        knock(lab3, c1, (SEQ[i],), delay=0.01)
        knock(lab3, c3, (wrong[i],), delay=0.01)
        knock(lab3, c2, (SEQ[i],), delay=0.01)
    assert (connects(lab3, c1), connects(lab3, c2)) == (True, True)
    assert not connects(lab3, c3, expect=False)


# --- 7, 8: knocks get no answer, the open window ---------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_knock_ports_give_no_answer(lab, tmp_path, backend, family):
    c1 = lab.clients[0]
    setup(lab, tmp_path, backend, FW_PORTKNOCK_STEALTH="drop")  # reject style: test_stealth.py
    assert probe(lab, c1, WRONG, family) == "refused", "control: a closed port answers with RST"
    server, client = lab.server, (c1.ip6 if family == 6 else c1.ip4)
    icmp = ["-p", "ipv6-icmp", "--icmpv6-type", "destination-unreachable"] if family == 6 else ["-p", "icmp"]
    count_rule(server, family, "OUTPUT", ["-d", client, *icmp])
    for port in (A, C, E):
        count_rule(server, family, "OUTPUT", ["-d", client, "-p", "tcp", "--sport", port])
    assert [probe(lab, c1, port, family) for port in (A, C, E)] == ["timeout"] * 3
    assert [n for n, _rule in raw_counts(server, family)] == [0, 0, 0, 0], "the server sent something back"


def test_open_window_ends_new_connections_but_not_established_ones(lab, tmp_path, backend):
    c1 = lab.clients[0]
    setup(lab, tmp_path, backend, FW_PORTKNOCK_OPEN_WINDOW="3")
    knock(lab, c1, SEQ)
    done = time.monotonic()
    session = c1.open_session(addr(lab, c1), PORT)
    assert connects(lab, c1), "a new connection within the window"
    time.sleep(max(0.0, done + 4.0 - time.monotonic()))
    assert not connects(lab, c1, expect=False), "a new connection after the window"
    assert session.alive(), "a session opened during the window outlives it"
    session.close()


# --- 9: sequential port scans -------------------------------------------------------------


def test_sequential_scan_does_not_open_a_non_monotonic_door(lab, tmp_path, backend):
    c1 = lab.clients[0]
    root = setup(lab, tmp_path, backend, "22:700,300,900\n", FW_PORTKNOCK_OPEN_WINDOW="30",
                 FW_PORTKNOCK_STEALTH="drop")  # the filtered ports' retries; test_stealth.py: rejects
    check = lab.server.awp(["check"], root)
    warnings = [line for line in check.stderr.splitlines() if "warning" in line]
    assert check.returncode == 0 and warnings == [line for line in warnings if "FW_PORTKNOCK_STEALTH" in line]
    for scan in ("-sS", "-sT"):
        out = c1.nmap(["-Pn", "-r", "-p1-1024", scan, addr(lab, c1)], timeout=120)
        assert port_state(out, PORT) == "filtered", out
        assert not connects(lab, c1, expect=False), f"nmap -r {scan} opened 22:700,300,900"


def test_ascending_door_warns_and_a_sequential_scan_opens_it(lab, tmp_path, backend):
    """Observed: nmap -r -sS -p1-1024 walks 1,2,3,4,5 in order and opens 22:1,2,3,4,5; nmap
    then even reports 22 as open, and a connect right after the scan succeeds. The warning
    that awp prints for such a sequence is therefore justified."""
    c1 = lab.clients[0]
    serve(lab)
    root = root_with(tmp_path, backend, "22:1,2,3,4,5\n", FW_PORTKNOCK_OPEN_WINDOW="30")
    check, applied = lab.server.awp(["check"], root), apply(lab, root)
    for result in (check, applied):
        assert result.returncode == 0
        assert re.search(r"^awp: warning: .*nmap -r", result.stderr, re.M), result.stderr
    out = c1.nmap(["-Pn", "-r", "-p1-1024", "-sS", addr(lab, c1)], timeout=120)
    assert port_state(out, PORT) == "open", out
    assert connects(lab, c1)


# --- 10, 11: management allowlist, IPv6 ---------------------------------------------------


def test_allowlisted_source_connects_without_knocking(lab, tmp_path, backend):
    c1, c2 = lab.clients
    setup(lab, tmp_path, backend, FW_PORTKNOCK_ALLOW=f"{c2.ip4} {c2.ip6}")
    assert (connects(lab, c2, 4), connects(lab, c2, 6)) == (True, True)
    assert (connects(lab, c1, 4, expect=False), connects(lab, c1, 6, expect=False)) == (False, False)


@on_every_backend
def test_ipv6_knock_opens_for_that_ipv6_source_only(lab, tmp_path, backend):
    c1, c2 = lab.clients
    setup(lab, tmp_path, backend, FW_PORTKNOCK_OPEN_WINDOW="10")
    assert not connects(lab, c1, 6, expect=False)
    knock(lab, c1, SEQ, family=6)
    assert connects(lab, c1, 6)
    assert not connects(lab, c2, 6, expect=False), "another IPv6 source"
    assert not connects(lab, c1, 4, expect=False), "the same client over IPv4"


def test_with_ipv6_off_awp_leaves_ipv6_alone(lab, tmp_path, backend):
    """FW_PORTKNOCK_IPV6="no": IPv4 is knocked as ever; IPv6 traffic passes awp untouched."""
    c1, c2 = lab.clients
    setup(lab, tmp_path, backend, FW_PORTKNOCK_IPV6="no")
    assert connects(lab, c2, 6), "not protected over IPv6"
    assert not connects(lab, c2, 4, expect=False)
    knock(lab, c1, SEQ)
    assert connects(lab, c1, 4)
