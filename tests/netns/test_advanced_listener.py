"""Advanced mode: the listener's life around `awp -s -f` (start, reload, stop, one instance
per root), and the races between a re-apply and knocks in flight. Same setup as
test_advanced.py (advanced_helpers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from advanced_helpers import (DOOR, KNOCK_PORT, OPEN, PORT, SETTLE, knock, post, ref_mac,
                              safe_now, send, wait_connect,
                              write_private)
from advanced_helpers import make_server, server, servers  # noqa: F401  (pytest fixtures)
from harness import wait_for
from views import snapshot

pytestmark = pytest.mark.netns


# --- 11. listener lifecycle -------------------------------------------------------------------


def test_listener_lifecycle(lab, server):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    pid = server.pid()
    assert server.pidfile.exists() and server.listeners() == [pid]

    try:
        second = server.awp("knockd", timeout=15)
    except Exception as exc:  # subprocess.TimeoutExpired: the second one kept running
        pytest.fail(f"a second `awp knockd` did not refuse to start: {exc}")
    assert second.returncode == 7, second
    assert "another listener already runs" in second.stderr and str(pid) in second.stderr
    assert "Traceback" not in second.stderr
    assert server.listeners() == [pid]

    write_private(server.advanced_path, "2222,2000,opensecret1\n")  # 3 fields
    mark = server.log.mark()
    lab.server.run(["kill", "-HUP", pid])
    server.log.wait("reload failed", mark)
    assert server.listeners() == [pid]
    knock(server, c1, dst, OPEN, "open")  # the old doors still work
    assert wait_connect(c1, dst)

    write_private(server.advanced_path, DOOR)
    server.write_config(advanced="no")
    out = server.apply()
    assert "port knocking is off" in out.stdout
    wait_for(lambda: not server.listeners(), SETTLE, "FW_PORTKNOCK_ADVANCED=no to stop the listener")
    assert "listener stopped" in server.log.text()




# --- 13. (beyond the brief) a knock queued across a re-apply --------------------------------------


def test_knock_queued_for_a_door_that_a_reapply_removes_does_not_end_the_listener(lab, make_server):
    """A valid knock still queued when `awp -s -f` removes its door (on iptables the kernel
    drops the door's xt_recent list with its last rule) must not end the listener. SIGSTOP holds our
    listener so that the knock is queued for sure; a busy listener (a flood: seconds of
    backlog, see test 8) opens the same window without it."""
    srv = make_server(advanced_list=DOOR + "2223,2001,opensecret2,closesecret2\n")
    pid = srv.start()
    lab.server.serve_tcp(PORT)
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    mark = srv.log.mark()
    os.kill(pid, signal.SIGSTOP)
    try:
        send(c1, dst, [ref_mac("opensecret2", c1.ip4, safe_now()).encode() + b"\n"], port=2001)
        time.sleep(0.3)  # NFLOG hands the packet over within 10 ms
        write_private(srv.advanced_path, DOOR)
        srv.apply()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: "listener reloaded" in srv.log.since(mark) or not srv.is_listener(pid),
             SETTLE, "the listener to reload or end")
    assert srv.is_listener(pid), f"the listener ended:\n{srv.log.since(mark)}"
    knock(srv, c1, dst, OPEN, "open")
    assert wait_connect(c1, dst)


# --- 14. (beyond the brief) is the listener ready when `awp -s -f` returns? -------------------

KNOCK_WHEN_LOCKED = r"""
import fcntl, os, socket, sys, time
pidfile, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4])
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        fd = os.open(pidfile, os.O_RDONLY)
    except FileNotFoundError:
        time.sleep(0.001)
        continue
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        ready = False
    except OSError:
        ready = os.pread(fd, 32, 0).strip().isdigit()  # locked and the pid written
    os.close(fd)
    if ready:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(payload, (dst, port))
        print("sent", flush=True)
        break
    time.sleep(0.001)
"""


def test_listener_captures_once_awp_calls_it_started(lab, make_server):
    """`awp -s -f` (control.start) reports the listener started once it holds the pidfile
    lock and has written its pid, which it does only when it can receive knocks. A knock
    sent at that moment must not be lost. The sender waits in the client namespace for that
    state, as control.start does, and sends at once."""
    srv = make_server()
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    payload = srv.macs.payload(OPEN, c1.ip4)
    sender = c1.spawn([sys.executable, "-c", KNOCK_WHEN_LOCKED, srv.pidfile, dst, KNOCK_PORT,
                       payload.hex()], stdout=subprocess.PIPE)
    time.sleep(0.3)  # the sender is polling
    mark = srv.log.mark()
    srv.apply()
    assert sender.wait(timeout=20) == 0 and sender.stdout.read() == b"sent\n"
    srv.log.wait("listener started", mark)
    time.sleep(0.5)
    assert "knock accepted" in srv.log.since(mark), (
        f"the knock sent when the listener was reported started was lost:\n{srv.log.since(mark)}")


def test_new_door_works_as_soon_as_awp_returns(lab, make_server):
    """After `awp -s -f` added an advanced door and returned, a knock on it must open it.
    Five doors, added one apply at a time, each knocked on right after its apply."""
    new = [(2222 + k, 2000 + k, f"opensecret-{k}") for k in range(1, 6)]
    srv = make_server()
    srv.start()
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    for port, _, _ in new:
        lab.server.serve_tcp(port)
    lines, missed = DOOR, []
    for port, knock_port, secret in new:
        lines += f"{port},{knock_port},{secret},closesecret-{port}\n"
        write_private(srv.advanced_path, lines)
        srv.apply()
        payload = ref_mac(secret, c1.ip4, safe_now()).encode() + b"\n"
        mark = post(srv, c1, dst, payload, knock_port)
        if not wait_connect(c1, dst, port, timeout=1.0):
            missed.append(f"door {port}: {srv.log.since(mark).strip()}")
    assert not missed, "new doors that did not open:\n" + "\n".join(missed)


# --- 15. (beyond the brief) a listener that cannot start puts the firewall back ---------------

HOLD_GROUP = r"""
import sys, time
from awp.knockd.nflog import NflogSocket
sock = NflogSocket(int(sys.argv[1]))
print("holding", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("before", ["nothing", "a simple door"])
def test_a_listener_that_cannot_start_puts_the_firewall_back(lab, make_server, before):
    """Another process holds the NFLOG group, so the listener cannot bind it: `awp -s -f`
    fails (exit 7) and the kernel is as it was before, whether awp had nothing loaded or an
    older ruleset (here: a simple door, no listener)."""
    holder = lab.server.spawn([sys.executable, "-c", HOLD_GROUP, "4747"], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"holding\n"
    srv = make_server(simple_list="2223:7481,2203,9127\n", simple="yes")
    if before != "nothing":
        srv.write_config(advanced="no", simple="yes")
        srv.apply()
        srv.write_config(simple="yes")
    saved = snapshot(lab.server)
    failed = srv.awp("-s", "-f")
    assert failed.returncode == 7, failed.stderr
    assert "listener exited" in failed.stderr and "Traceback" not in failed.stderr
    assert snapshot(lab.server) == saved
