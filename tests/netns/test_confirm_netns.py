"""`awp -s -f --confirm SECONDS` end to end, on every backend: an apply that shuts the
admin's client out, made from a session that then dies (SIGHUP to its process group, then
SIGKILL), is rolled back on time by the detached timer (a connect that worked before works
again, the old files are back in DIR/etc, the listener reloaded them); with `awp confirm` in
time the new rules stay; a second apply while one is pending is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from advanced_helpers import PORT, config_text, refused, wait_connect
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from harness import awp_command, wait_for
from views import status as views_status

pytestmark = pytest.mark.netns
SECONDS = 5  # room for the checks made before the rollback, on a busy host


def connects_within(client, dst: str, timeout: float) -> bool:
    """Poll real TCP connects, 0.2 s apart, until one succeeds or `timeout` passes (a closed
    door may answer with a reset at once, so wait_connect's tries alone are no clock)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout * 5) + 1):
        if client.tcp_connect(dst, PORT, timeout=1.0):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return False


def timers(root: str) -> list[int]:
    """Live confirm timers of this root (their argv names the root)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0") if p.name.isdigit() else []
        except OSError:
            continue
        if b"awp.confirm" in argv and root.encode() in argv:
            found.append(int(p.name))
    return found


@pytest.fixture
def shut_out(lab, make_server, backend):
    """A server whose FW_PORTKNOCK_ALLOW lets client 1 in, applied; then the same config
    without it written (not applied): applying it shuts client 1 out."""
    c1 = lab.clients[0]
    srv = make_server(FW_PORTKNOCK_ALLOW=f"{c1.ip4}/32")
    srv.start()
    lab.server.serve_tcp(PORT)
    assert wait_connect(c1, lab.server_ip4(c1))
    before = srv.config_path.read_text()
    srv.write_config()
    yield srv, before
    for pid in timers(srv.root):
        os.kill(pid, signal.SIGKILL)


def test_unconfirmed_apply_is_rolled_back_after_its_session_dies(lab, shut_out):
    srv, before = shut_out
    after = srv.config_path.read_text()
    c1, c2 = lab.clients
    d1 = lab.server_ip4(c1)
    cmd, env = awp_command()
    line = " ".join([*cmd, "--root", srv.root, "-s", "-f", "--confirm", str(SECONDS)])
    session = lab.server.spawn(["bash", "-c", f"{line} && exec sleep 60"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
    said = ""
    for _ in range(10):  # until the apply's last line (bounded: it prints fewer)
        said += session.stdout.readline()
        if "awp confirm within" in said or session.poll() is not None:
            break
    applied = time.monotonic()
    assert f"awp confirm within {SECONDS} s" in said, said
    os.killpg(session.pid, signal.SIGHUP)  # the admin's SSH session dies
    os.killpg(session.pid, signal.SIGKILL)
    session.wait(timeout=5)
    assert timers(srv.root), "the timer died with the session"

    assert refused(c1, d1), "the new rules were not applied"
    assert srv.config_path.read_text() == after
    assert connects_within(c1, d1, SECONDS + 4), "not rolled back"
    assert time.monotonic() - applied >= SECONDS - 0.5, "rolled back too early"
    assert refused(c2, lab.server_ip4(c2))  # the old rules, not none
    assert srv.config_path.read_text() == before  # and the old files, which the next boot applies
    kept = list((srv.base / "var" / "lib" / "awp" / "rolled-back").glob("*/config"))
    assert [k.read_text() for k in kept] == [after]
    assert "rolled back" in (srv.base / "var" / "log" / "awp-confirm.log").read_text()
    srv.log.wait(r"listener reloaded", 0)
    wait_for(lambda: not timers(srv.root), 5, "the timer to end")
    assert srv.awp("confirm").returncode == 2  # nothing pending any more
    assert views_status(lab.server, srv.root)["confirm"] is None
    assert srv.awp("-s", "-f").returncode == 0  # and applies are allowed again


def test_confirmed_apply_stays_and_a_second_apply_waits(lab, shut_out):
    """A longer window than the other tests: four awp commands must fit in it on a busy host."""
    srv, _ = shut_out
    after = srv.config_path.read_text()
    c1 = lab.clients[0]
    d1 = lab.server_ip4(c1)
    window = 12
    done = srv.awp("-s", "-f", "--confirm", str(window))
    deadline = time.monotonic() + window
    assert done.returncode == 0, done.stderr
    assert refused(c1, d1)
    status = srv.awp("status")
    assert "rolls back in" in status.stderr, status.stderr
    waiting = views_status(lab.server, srv.root)["confirm"]
    assert waiting["timer_running"] and 0 < waiting["seconds_left"] <= window
    again = srv.awp("-s", "-f")
    assert again.returncode == 4 and "waits for awp confirm" in again.stderr, again.stderr
    ok = srv.awp("confirm")
    assert time.monotonic() < deadline, "the host is too slow for this window"
    assert ok.returncode == 0 and "confirmed" in ok.stdout, ok.stderr
    wait_for(lambda: not timers(srv.root), 5, "the timer to end")
    time.sleep(max(0.0, deadline - time.monotonic()) + 1.0)
    assert refused(c1, d1), "rolled back although confirmed"
    assert srv.config_path.read_text() == after
    nothing = srv.awp("confirm")
    assert nothing.returncode == 2 and "nothing to confirm" in nothing.stderr


def test_first_apply_with_confirm_rolls_back_to_nothing(lab, servers, backend, tmp_path):
    from advanced_helpers import AwpServer

    c1 = lab.clients[0]
    srv = servers(lab)
    lab.server.serve_tcp(PORT)
    assert lab.clients[0].tcp_connect(lab.server_ip4(c1), PORT)  # nothing installed yet
    try:
        assert srv.awp("-s", "-f", "--confirm", str(SECONDS)).returncode == 0
        assert refused(c1, lab.server_ip4(c1))
        assert connects_within(c1, lab.server_ip4(c1), SECONDS + 4)
        wait_for(lambda: srv.pid() is None, 5, "the listener to stop")  # as awp remove does
    finally:
        for pid in timers(srv.root):
            os.kill(pid, signal.SIGKILL)
