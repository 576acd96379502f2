"""Door commands and clients that confirm, end to end in namespaces, on every backend.

A simple door and an advanced door run on_open / on_close (portknock-doors) that write a
marker file as the unprivileged user `nobody`; a command that hangs is killed at its
timeout and logged, a failing one is logged with its exit status, and the listener keeps
taking knocks meanwhile. `awp knock --sequence ... --wait` and `knock.sh --wait` exit 0 once
the door answers, and non-zero within their bound when it does not.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from advanced_helpers import CLOSE, KNOCK_PORT, KNOCK_SH, OPEN, PORT, knock_sh, servers  # noqa: F401  (servers: a fixture)
from commands_helpers import (NOBODY, SEQ, SIMPLE_DOOR, SIMPLE_PORT, _plain_environment, awp_knock,  # noqa: F401
                              scripts, wait_marker, with_doors)
from harness import wait_for
from views import on_every_backend

pytestmark = pytest.mark.netns

# --- clients that confirm --------------------------------------------------------------


def test_sequence_opens_a_simple_door_and_wait_confirms(lab, servers, backend):
    c1, c2 = lab.clients
    dst = lab.server_ip4(c1)
    srv = servers(lab, advanced_list=None, simple_list=SIMPLE_DOOR, advanced="no", simple="yes",
                  FW_PORTKNOCK_STEP_TIMEOUT="10", FW_PORTKNOCK_OPEN_WINDOW="15")
    srv.apply()
    lab.server.serve_tcp(SIMPLE_PORT)
    assert not c1.tcp_connect(dst, SIMPLE_PORT, timeout=1.0), "control: closed before the knock"
    wrong = ",".join(map(str, (SEQ[1], SEQ[0], SEQ[2])))  # out of order, from c2
    t0 = time.monotonic()
    bad = awp_knock(c2, "--sequence", wrong, lab.server_ip4(c2), "--wait", str(SIMPLE_PORT), "--wait-timeout", "3")
    took = time.monotonic() - t0
    assert bad.returncode == 8 and "did not answer within 3 s" in bad.stderr, bad.stderr
    assert took < 15, f"--wait-timeout 3 took {took:.1f} s"
    assert not c2.tcp_connect(lab.server_ip4(c2), SIMPLE_PORT, timeout=1.0)
    good = awp_knock(c1, "--sequence", ",".join(map(str, SEQ)), "--delay", "50", dst, "--wait", str(SIMPLE_PORT))
    assert good.returncode == 0, good.stderr
    assert "answers" in good.stdout
    lab.server.serve_tcp(SIMPLE_PORT, 6)
    six = awp_knock(c2, "--sequence", ",".join(map(str, SEQ)), lab.server_ip6(c2), "--wait", str(SIMPLE_PORT))
    assert six.returncode == 0, six.stderr  # over IPv6 (c2's out-of-order knocks were IPv4)


# --- commands ------------------------------------------------------------------------------


@on_every_backend
def test_simple_door_commands_run_as_nobody_on_open_and_expiry(lab, servers, backend, scripts):
    """The door's last knock is a UDP datagram (2002/udp syntax): the NFLOG hand-over reads
    the protected port whatever the protocol of the knock."""
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    udp_door = f"{SIMPLE_PORT}:{SEQ[0]},{SEQ[1]},{SEQ[2]}/udp\n"
    srv = servers(lab, advanced_list=None, simple_list=udp_door, advanced="no", simple="yes",
                  FW_PORTKNOCK_STEP_TIMEOUT="10", FW_PORTKNOCK_OPEN_WINDOW="4")
    with_doors(srv, f"[{SIMPLE_PORT}]\non_open = {scripts['marker']}\non_close = {scripts['marker']}\n")
    check = srv.awp("check")
    assert check.returncode == 0 and "simple door 22 has commands" in check.stdout, check.stdout + check.stderr
    srv.start()  # no advanced door: the listener runs for the command
    lab.server.serve_tcp(SIMPLE_PORT)
    mark = srv.log.mark()
    knocked = awp_knock(c1, "--sequence", f"{SEQ[0]},{SEQ[1]},{SEQ[2]}/udp", dst, "--wait", str(SIMPLE_PORT))
    assert knocked.returncode == 0, knocked.stderr
    line = wait_marker(scripts["out"], r"^open ", log=srv.log)
    assert line == f"open {c1.ip4} 22 22 simple {NOBODY.pw_uid}"
    assert (scripts["out"] / "marker").stat().st_uid == NOBODY.pw_uid
    srv.log.wait(rf"command door=22 action=open src={re.escape(c1.ip4)} .*user=nobody .*exit=0 duration_ms=\d+",
                 mark)
    assert wait_marker(scripts["out"], r"^expire ", timeout=12) == f"expire {c1.ip4} 22 22 simple {NOBODY.pw_uid}"


def test_advanced_door_commands_on_open_and_close(lab, servers, backend, scripts):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    srv = servers(lab)
    with_doors(srv, f"[{PORT}]\non_open = {scripts['marker']} ignored-arg\non_close = {scripts['marker']}\n")
    srv.start()
    lab.server.serve_tcp(PORT)
    t0 = time.monotonic()
    wrong = c1.run(["bash", KNOCK_SH, "-W", "3", dst, KNOCK_PORT, "not-the-secret", "--wait", PORT], check=False)
    assert wrong.returncode == 1 and "did not answer within 3 s after 3 knock(s)" in wrong.stderr, wrong.stderr
    assert time.monotonic() - t0 < 10
    r = knock_sh(c1, dst, OPEN, "--wait", str(PORT))
    assert r.returncode == 0, r.stderr
    assert wait_marker(scripts["out"], r"^open ", log=srv.log) == f"open {c1.ip4} {PORT} {PORT} advanced {NOBODY.pw_uid}"
    assert (scripts["out"] / "marker").stat().st_uid == NOBODY.pw_uid
    knock_sh(c1, dst, CLOSE)
    assert wait_marker(scripts["out"], r"^close ") == f"close {c1.ip4} {PORT} {PORT} advanced {NOBODY.pw_uid}"


def test_hanging_and_failing_commands_are_logged_while_knocks_go_on(lab, servers, backend, scripts):
    c1, c2 = lab.clients
    srv = servers(lab)
    with_doors(srv, f"[{PORT}]\non_open = {scripts['hang']}\non_close = {scripts['fail']}\ntimeout = 3\n")
    srv.start()
    lab.server.serve_tcp(PORT)
    mark = srv.log.mark()
    assert knock_sh(c1, lab.server_ip4(c1), OPEN, "--wait", str(PORT)).returncode == 0
    wait_for(lambda: (scripts["out"] / "hang").exists(), 5.0, "the hanging command to start")
    # while on_open hangs, the listener takes the next knocks at once
    t0 = time.monotonic()
    assert knock_sh(c2, lab.server_ip4(c2), OPEN, "--wait", str(PORT), "--wait-timeout", "5").returncode == 0
    srv.log.wait(rf"knock accepted decision=open .*src={re.escape(c2.ip4)} .*port={PORT} ", mark)
    assert time.monotonic() - t0 < 3.0, "a knock waited for a hanging command"
    killed = srv.log.wait(rf"command door={PORT} action=open src={re.escape(c1.ip4)} .* killed=timeout "
                          r"duration_ms=(\d+)", mark, timeout=10)
    assert 2900 <= int(re.search(r"duration_ms=(\d+)", killed).group(1)) < 6000
    knock_sh(c1, lab.server_ip4(c1), CLOSE)
    srv.log.wait(rf"command door={PORT} action=close src={re.escape(c1.ip4)} .* exit=3 duration_ms=", mark)
    assert not _sleepers(c1.ip4), "the killed command's process group lives on"


def _sleepers(src: str) -> list[int]:
    """Live processes of the hanging command (`sleep 60` exec'd by hang.sh) for src."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if argv[:2] == [b"sleep", b"60"] and state not in ("Z", "X") and (p / "environ").exists():
            if f"AWP_SRC={src}\0".encode() in (p / "environ").read_bytes():
                found.append(int(p.name))
    return found


