"""UDP knocks in simple mode (a knock port written 2002/udp), end to end on every backend:
real UDP clients (OpenBSD nc -u, knockd's knock -u, bash's /dev/udp), then a real TCP connect
to the protected port. Wrong order fails; a knock port sends nothing back (no ICMP port
unreachable) under FW_PORTKNOCK_STEALTH="drop", and answers as an unused UDP port does under
"reject"."""

from __future__ import annotations

import sys
import time

import pytest

from simple_helpers import PORT, addr, apply, connects, root_with, serve
from views import on_every_backend

pytestmark = pytest.mark.netns

U1, U2, U3 = 7481, 2203, 9127  # all UDP
UDP_DOOR = f"{PORT}:{U1}/udp,{U2}/udp,{U3}/udp\n"
T2 = 4410
MIXED_DOOR = f"{PORT}:{U1}/udp,{T2}/tcp,{U3}/udp\n"  # UDP, then a TCP SYN, then UDP
UNUSED_UDP = 5555  # no socket, no awp rule: the kernel answers port unreachable

UDP_ANSWER = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
s.send(b"x")
try:
    s.recv(100)
    print("answer")
except ConnectionRefusedError:
    print("unreachable")
except TimeoutError:
    print("nothing")
"""


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def nc_udp(client, target: str, ports) -> None:
    for port in ports:
        client.run(["sh", "-c", f"printf knock | nc -n -u -q 0 -w 1 {target} {port}"], timeout=10, check=False)
        time.sleep(0.05)


def knockd_udp(client, target: str, ports) -> None:
    family = "-6" if ":" in target else "-4"
    client.run(["knock", family, "-u", "-d", "50", target, *ports], timeout=10)


def bash_udp(client, target: str, ports) -> None:
    for port in ports:
        client.run(["bash", "-c", f"printf knock > /dev/udp/{target}/{port}"], timeout=10)
        time.sleep(0.05)


CLIENTS = {"nc": nc_udp, "knock": knockd_udp, "bash": bash_udp}


def udp_answer(client, target: str, port: int) -> str:
    return client.run([sys.executable, "-c", UDP_ANSWER, target, port], timeout=10).stdout.strip()


@pytest.mark.parametrize("tool", sorted(CLIENTS))
def test_udp_knocks_open_the_door(lab, tmp_path, backend, tool):
    c1, c2 = lab.clients
    serve(lab)
    apply(lab, root_with(tmp_path, backend, UDP_DOOR, FW_PORTKNOCK_STEALTH="drop"))
    assert not connects(lab, c1, expect=False)
    CLIENTS[tool](c1, addr(lab, c1), [U1, U2, U3])
    assert connects(lab, c1), f"{tool}: UDP knocks did not open the door"
    assert not connects(lab, c2, expect=False), "open for the knocking source only"


def test_udp_knocks_over_ipv6(lab, tmp_path, backend):
    c1 = lab.clients[0]
    serve(lab)
    apply(lab, root_with(tmp_path, backend, UDP_DOOR, FW_PORTKNOCK_STEALTH="drop"))
    knockd_udp(c1, addr(lab, c1, 6), [U1, U2, U3])
    assert connects(lab, c1, 6)
    assert not connects(lab, c1, 4, expect=False)


@on_every_backend
def test_mixed_udp_and_tcp_knocks_with_retransmits(lab, tmp_path, backend):
    c1 = lab.clients[0]
    serve(lab)
    apply(lab, root_with(tmp_path, backend, MIXED_DOOR, FW_PORTKNOCK_STEALTH="drop"))
    target = addr(lab, c1)
    bash_udp(c1, target, [U1, U1, U1])  # a datagram sent three times is one step
    c1.knock_raw(target, [T2, T2], delay=0.05)
    bash_udp(c1, target, [U3])
    assert connects(lab, c1)


@pytest.mark.parametrize("order", [(U2, U1, U3), (U1, U3, U2), (U1, U3), (U1, 5556, U2, U3)],
                         ids=["swapped", "last-early", "one-missing", "udp-to-another-knock-port"])
def test_wrong_udp_order_fails(lab, tmp_path, backend, order):
    c1, c2 = lab.clients
    serve(lab)
    other = "80:5556/udp,5557/udp,5558/udp\n"  # 5556 is a knock port of another door
    apply(lab, root_with(tmp_path, backend, UDP_DOOR + other, FW_PORTKNOCK_STEALTH="drop"))
    bash_udp(c1, addr(lab, c1), list(order))
    assert not connects(lab, c1, expect=False)
    bash_udp(c2, addr(lab, c2), [U1, U2, U3])  # control: the right order works
    assert connects(lab, c2)


def test_a_tcp_syn_mid_sequence_resets_udp_progress(lab, tmp_path, backend):
    c1 = lab.clients[0]
    serve(lab)
    apply(lab, root_with(tmp_path, backend, UDP_DOOR, FW_PORTKNOCK_STEALTH="drop"))
    target = addr(lab, c1)
    bash_udp(c1, target, [U1, U2])
    c1.knock_raw(target, [5559], delay=0.05)  # any SYN resets, as in a TCP sequence
    bash_udp(c1, target, [U3])
    assert not connects(lab, c1, expect=False)


@pytest.mark.parametrize("stealth, expected", [("drop", "nothing"), ("reject", "unreachable")])
def test_udp_knock_ports_answer_as_unused_ports_do(lab, tmp_path, backend, stealth, expected):
    c1 = lab.clients[0]
    serve(lab)
    target = addr(lab, c1)
    assert udp_answer(c1, target, U1) == "unreachable", "control: the kernel answers an unused UDP port"
    apply(lab, root_with(tmp_path, backend, UDP_DOOR, FW_PORTKNOCK_STEALTH=stealth))
    for port in (U1, U2, U3):  # every step of the sequence, in order: idle, mid, complete
        assert udp_answer(c1, target, port) == expected, port
    assert connects(lab, c1), "the answered (or silent) datagrams were knocks all the same"
    if stealth == "drop":
        assert udp_answer(c1, target, UNUSED_UDP) == "unreachable", "awp leaves other UDP ports alone"
