"""Clients that confirm: `awp knock --sequence`, `--wait` and knock.sh -w, on loopback only.

The pure loop (knock_and_wait) runs with a fake clock; the sends and connects are real,
to sockets of this test on 127.0.0.1 / ::1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from awp.errors import DoorNotOpen, UsageError
from awp.knockd import client
from awp.knockd.client import Step, knock_and_wait, parse_sequence, send_sequence

REPO = Path(__file__).resolve().parents[2]
KNOCK_SH = REPO / "client" / "knock.sh"


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_parse_sequence_tcp_default_and_udp_steps():
    assert parse_sequence("7001,7003/udp,7002/tcp") == (Step(7001, "tcp"), Step(7003, "udp"), Step(7002, "tcp"))


@pytest.mark.parametrize("bad", ["", "7001,", "0", "65536", "07001", "7001/icmp", "+7001", "７００１", "7001 ",
                                 ",".join(["1"] * 65)])
def test_parse_sequence_refuses(bad):
    with pytest.raises(UsageError):
        parse_sequence(bad)


def test_wait_returns_after_the_knock_that_opened():
    t = FakeTime()
    knocks = []
    answers = lambda dst, port, timeout: (t.sleep(timeout), len(knocks) >= 2)[1]  # a filtered port: waits
    n = knock_and_wait(lambda: knocks.append(t.now), "h", 22, 9.0, 3, t.clock, t.sleep, answers)
    assert n == 2 and knocks == [0.0, 3.0]


def test_wait_gives_up_at_its_bound_after_every_try():
    t = FakeTime()
    knocks = []
    refused = lambda dst, port, timeout: (t.sleep(0.001), False)[1]  # refused at once: no spinning
    with pytest.raises(DoorNotOpen, match=r"TCP port 22 of h did not answer within 6 s after 3 knock"):
        knock_and_wait(lambda: knocks.append(t.now), "h", 22, 6.0, 3, t.clock, t.sleep, refused)
    assert len(knocks) == 3 and t.now <= 6.3


@pytest.mark.parametrize("total,tries", [(0, 3), (601, 3), (5, 0), (5, 21)])
def test_wait_bounds_are_checked(total, tries):
    with pytest.raises(UsageError):
        knock_and_wait(lambda: None, "h", 22, total, tries)


@pytest.mark.parametrize("host,family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_sequence_sends_syns_and_datagrams_in_order(host, family):
    """Two TCP listeners and one UDP socket on loopback see the knocks in order."""
    seen, sockets = [], []
    for proto in ("tcp", "udp", "tcp"):
        s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.bind((host, 0))
        if proto == "tcp":
            s.listen()
        s.settimeout(3)
        sockets.append((proto, s))
    steps = tuple(Step(s.getsockname()[1], proto) for proto, s in sockets)
    try:
        send_sequence(host, steps, delay_ms=50)
        for proto, s in sockets:
            if proto == "tcp":
                s.accept()[0].close()
            else:
                s.recvfrom(10)
            seen.append((proto, time.monotonic()))
    finally:
        for _, s in sockets:
            s.close()
    assert [p for p, _ in seen] == ["tcp", "udp", "tcp"]


def test_sequence_delay_is_bounded():
    with pytest.raises(UsageError):
        send_sequence("127.0.0.1", (Step(9, "tcp"),), delay_ms=60_001)


def listener(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    s.listen()
    return s


def closed_port(host="127.0.0.1") -> int:
    s = listener(host)
    port = s.getsockname()[1]
    s.close()
    return port


def awp(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "awp", "knock", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_awp_knock_sequence_wait_succeeds_when_the_port_answers():
    srv = listener()
    try:
        r = awp("--sequence", f"{closed_port()},{closed_port()}/udp", "--delay", "10", "127.0.0.1",
                "--wait", str(srv.getsockname()[1]))
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr
    assert "answers (after 1 knock(s))" in r.stdout


def test_awp_knock_wait_fails_within_its_bound():
    t0 = time.monotonic()
    r = awp("--sequence", str(closed_port()), "127.0.0.1", "--wait", str(closed_port()), "--wait-timeout", "1.5")
    took = time.monotonic() - t0
    assert r.returncode == 8
    assert "did not answer within 1.5 s after 3 knock(s)" in r.stderr and "Traceback" not in r.stderr
    assert took < 10


@pytest.mark.parametrize("args", [["127.0.0.1"], ["--sequence", "1", "127.0.0.1", "7000"],
                                  ["--sequence", "x", "127.0.0.1"], ["--sequence", "1", "-s", "1.2.3.4", "127.0.0.1"],
                                  ["127.0.0.1", "7000", "s", "--wait", "0"], ["--sequence", "1", "--delay", "-1",
                                                                              "127.0.0.1"]])
def test_awp_knock_usage_errors(args):
    r = awp(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr


def knock_sh(*args, timeout=30):
    return subprocess.run([str(KNOCK_SH), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_knock_sh_wait_succeeds_when_the_port_answers(host):
    srv = listener(host)
    try:
        r = knock_sh("-s", host, host, "7000", "secret", "--wait", str(srv.getsockname()[1]))
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr
    assert "answers (after 1 knock(s))" in r.stderr


def test_knock_sh_wait_fails_within_its_bound_and_knocks_each_try():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    t0 = time.monotonic()
    try:
        r = knock_sh("-W", "2", "-T", "2", "127.0.0.1", str(udp.getsockname()[1]), "secret",
                     "--wait", str(closed_port()))
        took = time.monotonic() - t0
        got = []
        try:
            while len(got) < 5:
                got.append(udp.recv(100))
        except TimeoutError:
            pass
    finally:
        udp.close()
    assert r.returncode == 1 and "did not answer within 2 s after 2 knock(s)" in r.stderr
    assert 1.5 < took < 6
    assert len(got) == 2 and all(len(g) == 65 for g in got)


@pytest.mark.parametrize("args", [["-n", "-w", "22", "h", "7000", "s"], ["-w", "0", "h", "7000", "s"],
                                  ["-W", "0", "-w", "22", "h", "7000", "s"], ["-T", "21", "-w", "1", "h", "7000", "s"], ["-r", "6", "-w", "1", "h", "7000", "s"],
                                  ["--wait"], ["--bogus", "h", "7000", "s"]])
def test_knock_sh_wait_usage_errors(args):
    assert knock_sh(*args).returncode == 2


def test_knock_sh_a_secret_that_looks_like_an_option_stays_the_secret():
    r = knock_sh("-n", "-s", "198.18.0.2", "-t", "1700000000", "198.18.0.1", "7000", "-w")
    assert r.returncode == 0, r.stderr
