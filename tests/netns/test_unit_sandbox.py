"""The awp-knockd unit's sandbox, end to end: the listener knocks doors open and shut with
only the capabilities the unit gives it (CapabilityBoundingSet=), NoNewPrivileges=, and a
read-only file system but for DIR/var (ProtectSystem=strict, ReadWritePaths=), on every
backend. systemd itself does not run here, so unit_sandbox.sh builds that sandbox from the
unit's own settings (mount namespace + setpriv); the rest of the unit is checked by
systemd-analyze (tests/unit/test_systemd_units.py)."""

from __future__ import annotations

import configparser
import os
import signal

import pytest
from advanced_helpers import CLOSE, OPEN, PORT, knock, refused, wait_connect
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from harness import REPO, awp_command, wait_for
from views import on_every_backend

pytestmark = pytest.mark.netns
UNIT = REPO / "etc" / "systemd" / "awp-knockd.service"
SANDBOX = REPO / "tests" / "netns" / "unit_sandbox.sh"
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_DAC_OVERRIDE": 1}


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def unit_caps() -> list[str]:
    return service()["CapabilityBoundingSet"].split()


def sandboxed_listener(lab, srv, caps: list[str]):
    """`awp knockd` as the unit runs it, in the server namespace; its output goes to the
    listener log as systemd's journal would get it."""
    assert service()["NoNewPrivileges"] == "yes" and service()["ProtectSystem"] == "strict"
    assert service()["ReadWritePaths"].split() == ["/var/awp/var"]
    cmd, extra = awp_command()
    setpriv_caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    log = open(srv.log.path, "ab")
    try:
        return lab.server.spawn(["unshare", "--mount", "--propagation", "private", "sh", SANDBOX, setpriv_caps,
                                 f"{srv.root}/var", *cmd, "--root", srv.root, "knockd"],
                                stdout=log, stderr=log, env={**os.environ, **extra})
    finally:
        log.close()


def stop_awp_listener(srv) -> None:
    """The supervised listener `awp -s -f` started goes; the unit's takes its place."""
    for pid in srv.supervisors() + srv.listeners():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not srv.listeners() and not srv.supervisors(), 5.0, "the supervised listener to end")


def effective_caps(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(next(l.split()[1] for l in status.splitlines() if l.startswith("CapEff:")), 16)


@on_every_backend
def test_listener_works_with_only_the_units_capabilities(lab, make_server):
    caps = unit_caps()
    assert caps == ["CAP_NET_ADMIN"], "awp(8) SUPERVISION names the listener's capabilities; keep both in step"
    srv = make_server()
    srv.start()
    lab.server.serve_tcp(PORT)
    stop_awp_listener(srv)
    mark = srv.log.mark()
    proc = sandboxed_listener(lab, srv, caps)
    pid = srv.wait_listener(timeout=10)
    srv.log.wait(r"listener started", mark, timeout=10)
    assert effective_caps(pid) == 1 << CAP_BITS["CAP_NET_ADMIN"], "the listener runs with CAP_NET_ADMIN alone"
    assert "NoNewPrivs:\t1" in open(f"/proc/{pid}/status").read()

    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    assert refused(c1, dst)
    knock(srv, c1, dst, OPEN, "open")
    assert wait_connect(c1, dst), "a grant written with CAP_NET_ADMIN alone opens the door"
    knock(srv, c1, dst, CLOSE, "close")
    assert refused(c1, dst)

    mark = srv.log.mark()
    srv.apply()  # a re-apply reloads the running listener (SIGHUP), in its sandbox
    srv.log.wait(r"listener reloaded", mark)
    assert srv.pid() == pid and proc.poll() is None
    knock(srv, c1, dst, OPEN, "open")
    assert wait_connect(c1, dst)


@pytest.mark.parametrize("backend", ["nftables"])
def test_sandbox_is_real_and_the_listener_needs_net_admin(lab, make_server, tmp_path):
    """The test's sandbox can fail: without CAP_NET_ADMIN the listener cannot bind NFLOG and
    exits; and outside DIR/var nothing is writable."""
    srv = make_server()
    srv.start()
    stop_awp_listener(srv)
    probe = lab.server.run(["unshare", "--mount", "--propagation", "private", "sh", SANDBOX, "+net_admin",
                            f"{srv.root}/var", "sh", "-c",
                            f"touch {srv.root}/var/ok && ! touch {srv.root}/etc/no 2>/dev/null && echo sandboxed"],
                           check=False)
    assert probe.stdout.strip() == "sandboxed", probe.stdout + probe.stderr
    assert (srv.base / "var" / "ok").exists() and not (srv.base / "etc" / "no").exists()

    mark = srv.log.mark()
    proc = sandboxed_listener(lab, srv, [])
    assert proc.wait(timeout=15) != 0
    text = srv.log.since(mark)
    assert "Traceback" not in text and "cannot bind NFLOG group" in text and "[Errno 1]" in text, text
