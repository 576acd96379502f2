"""The listener is watched over and its replay cache fails closed (issue 12), end to end.

A listener killed or stopped comes back by itself (awp's supervisor); a replay cache that
was deleted, emptied, truncated, edited, prefixed with junk or replaced by a special file
never lets a replay through; a fresh knock works again once the rule of awp(8) allows it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from advanced_helpers import OPEN, PORT, accepted, post, rejected, wait_connect
from advanced_helpers import make_server, server, servers  # noqa: F401  (pytest fixtures)
from harness import awp_command, wait_for
from pknock_ref import ref_mac

from awp.paths import Root

pytestmark = pytest.mark.netns
BACK_AFTER_KILL = 30.0  # awp(8): back-off 1 s + start, about 3 s; roomy for a busy CI box
BACK_AFTER_STALL = 45.0  # awp(8): no heartbeat for 10 s, then a restart, about 15 s


def new_listener(server, old: int, timeout: float) -> int:
    wait_for(lambda: server.pid() not in (None, old), timeout, "the supervisor to restart the listener")
    pid = server.pid()
    server.log.wait(rf"listener started pid={pid}", 0, timeout=timeout)
    return pid


def fresh_knock_works(server, client, dst) -> None:
    mark = post(server, client, dst, server.macs.payload(OPEN, client.ip4))
    server.log.wait(accepted("open", client.ip4), mark)
    assert wait_connect(client, dst)


@pytest.mark.parametrize("sig, bound", [(signal.SIGKILL, BACK_AFTER_KILL), (signal.SIGSTOP, BACK_AFTER_STALL)],
                         ids=["killed", "stopped"])
def test_a_dead_or_stalled_listener_comes_back_by_itself(lab, server, sig, bound):
    c1 = lab.clients[0]
    d1 = lab.server_ip4(c1)
    old = server.pid()
    os.kill(old, sig)
    new_listener(server, old, bound)
    status = json.loads(server.awp("status", "--json").stdout)
    assert status["listener"]["running"] and status["listener"]["supervisor_pid"]
    fresh_knock_works(server, c1, d1)
    assert not server.is_listener(old)


def tamper(path, how: str, text: bytes) -> None:
    """Replace the cache by `text` (what the listener wrote) tampered with as `how` says."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if how == "deleted":
        return
    if how == "fifo":
        os.mkfifo(path, 0o600)
        return
    if how == "directory":
        path.mkdir(mode=0o700)
        return
    if how == "symlink":
        elsewhere = path.with_name("elsewhere")
        elsewhere.write_bytes(text)
        elsewhere.chmod(0o600)
        path.symlink_to(elsewhere)
        return
    data = {"emptied": b"", "truncated": text[:-20], "junk": b"junk\n" + text,
            "edited": text.replace(b"\n1", b"\n2", 1) if b"\n1" in text else text + b"x\n",
            "loose mode": text}[how]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o644 if how == "loose mode" else 0o600)
    os.write(fd, data)
    os.close(fd)


def test_a_tampered_replay_cache_never_lets_a_replay_through(lab, server):
    c1 = lab.clients[0]
    d1 = lab.server_ip4(c1)
    cache = Root(server.base).replay_cache
    opener = server.macs.payload(OPEN, c1.ip4)
    mark = post(server, c1, d1, opener)
    server.log.wait(accepted("open", c1.ip4), mark)  # a live grant from now on
    original = cache.read_bytes()
    for how in ("deleted", "emptied", "truncated", "junk", "edited", "loose mode", "symlink", "directory", "fifo"):
        tamper(cache, how, original)
        old = server.pid()
        os.kill(old, signal.SIGKILL)
        new_listener(server, old, BACK_AFTER_KILL)
        server.log.wait("replay cache not trusted", mark, timeout=BACK_AFTER_KILL)
        mark = post(server, c1, d1, opener)
        text = server.log.since(mark)
        assert "knock accepted" not in text, how
        assert re.search(rejected("(untrusted-cache|replay)", c1.ip4), text), text
    checked = server.awp("check")
    assert checked.returncode == 3 and str(cache) in checked.stderr and "Traceback" not in checked.stderr
    tamper(cache, "deleted", original)
    floor = json.loads(server.awp("status", "--json").stdout)["listener"]["replay_cache"]["floor_minute"]
    assert floor is not None
    wait_for(lambda: time.time() // 60 >= floor, 75.0, "the minute the rule allows knocks again")
    mark = post(server, c1, d1, ref_mac(OPEN, c1.ip4, (floor + 1) * 60).encode() + b"\n")
    server.log.wait(accepted("open", c1.ip4), mark)
    assert wait_connect(c1, d1)


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_check_names_a_full_or_read_only_state_file_system(lab, make_server, how):
    """In a private mount namespace inside the server's network namespace, DIR/var/lib on a
    tiny tmpfs, filled or remounted read-only: awp check fails with the path named (the host's
    mounts are never touched)."""
    srv = make_server()
    lib = Root(srv.base).replay_cache.parent
    lib.mkdir(parents=True, exist_ok=True)
    spoil = (f"dd if=/dev/zero of={lib}/fill bs=4k count=100 2>/dev/null; true" if how == "full"
             else f"mount -o remount,ro {lib}")
    awp, env = awp_command()
    script = (f"mount -t tmpfs -o size=64k,mode=0700 tmpfs {lib} && {spoil} && "
              f"{' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(awp)} --root {srv.base} check")
    proc = lab.server.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], check=False)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert str(lib) in proc.stderr and ("full" if how == "full" else "not writable") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_a_listener_within_a_second(lab, server):
    pid = server.pid()
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not server.is_listener(pid), 3.0, "the listener to stop")
    assert time.monotonic() - started < 1.5


def test_a_read_only_replay_cache_never_lets_a_replay_through(lab, make_server):
    """The listener (and its supervisor) run in a private mount namespace whose DIR/var/lib
    is a tmpfs; once a knock is recorded, the test remounts it read-only from inside that
    namespace (nsenter). A knock accepted then cannot be recorded; after a restart the
    listener sees a grant newer than its file and refuses every replay."""
    srv = make_server()
    lib = Root(srv.base).replay_cache.parent
    lib.mkdir(parents=True, exist_ok=True)
    awp, env = awp_command()
    prefix = " ".join(f"{k}={v}" for k, v in env.items())
    script = f"mount -t tmpfs -o size=1m,mode=0700 tmpfs {lib} && {prefix} {' '.join(awp)} --root {srv.base} -s -f"
    lab.server.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], timeout=60)
    lab.server.serve_tcp(PORT)
    c1 = lab.clients[0]
    d1 = lab.server_ip4(c1)
    pid = new_listener(srv, None, BACK_AFTER_KILL)
    first = srv.macs.payload(OPEN, c1.ip4)
    mark = post(srv, c1, d1, first)
    srv.log.wait(accepted("open", c1.ip4), mark)
    lab.server.run(["nsenter", "--mount", "--target", str(pid), "mount", "-o", "remount,ro", str(lib)])
    time.sleep(2.5)  # the next grant is newer than the file by more than the grace
    second = srv.macs.payload(OPEN, c1.ip4)  # another minute: a fresh grant, newer than the file
    mark = post(srv, c1, d1, second)
    srv.log.wait(r"replay cache not saved .*Read-only file system", mark, timeout=BACK_AFTER_KILL)
    os.kill(pid, signal.SIGKILL)
    new_listener(srv, pid, BACK_AFTER_KILL)
    for payload in (first, second):
        mark = post(srv, c1, d1, payload)
        text = srv.log.since(mark)
        assert "knock accepted" not in text and re.search(rejected("(untrusted-cache|replay)", c1.ip4), text), text
    log = srv.log.text()
    assert "replay cache not trusted" in log and "older than a live grant" in log, log[-3000:]
