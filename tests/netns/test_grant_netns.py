"""`awp grant` and `awp revoke` end to end, on every backend: a hand grant lets a real TCP
connect in from that source only, a revoke refuses new connects, and the grant expires in
the kernel (nftables: `--for`; iptables, where every grant lives FW_PORTKNOCK_AUTOCLOSE,
a short autoclose)."""

from __future__ import annotations

import time

import pytest
from advanced_helpers import CLOSE, PORT, knock, refused, wait_connect
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from views import status

pytestmark = pytest.mark.netns
AUTOCLOSE = 10  # the shortest FW_PORTKNOCK_AUTOCLOSE awp accepts


def test_grant_lets_one_source_in_revoke_and_expiry_shut_it(lab, make_server, backend):
    srv = make_server(autoclose=AUTOCLOSE)
    srv.start()
    lab.server.serve_tcp(PORT)
    c1, c2 = lab.clients
    d1, d2 = lab.server_ip4(c1), lab.server_ip4(c2)
    assert refused(c1, d1) and refused(c2, d2)

    done = srv.awp("grant", c1.ip4, str(PORT))
    assert done.returncode == 0, done.stderr
    assert f"awp grant by=admin user=" in done.stderr and f"src={c1.ip4} port={PORT} expires_in={AUTOCLOSE}s" in done.stderr
    assert f"src={c1.ip4} port={PORT}" in srv.log.text()  # the audit line, beside the knocks'
    assert "warning" not in done.stderr  # the kernel holds this configuration
    assert wait_connect(c1, d1)
    assert refused(c2, d2)
    granted = {(s["port"], s["source"]): s for s in status(lab.server, srv.root)["sources"]}
    assert granted[(PORT, c1.ip4)]["state"] == "granted" and granted[(PORT, c1.ip4)]["by"] == "admin"
    assert 0 < granted[(PORT, c1.ip4)]["seconds_left"] <= AUTOCLOSE
    assert (PORT, c2.ip4) not in granted

    undone = srv.awp("revoke", c1.ip4, str(PORT))
    assert undone.returncode == 0 and "result=revoked" in undone.stderr, undone.stderr
    assert refused(c1, d1)
    assert "nothing to revoke" in srv.awp("revoke", c1.ip4, str(PORT)).stdout

    if backend == "nftables":  # a shorter life of its own
        assert srv.awp("grant", c1.ip4, str(PORT), "--for", "3").returncode == 0
        lifetime = 3
    else:  # xt_recent: one lifetime per door, so --for is refused and the grant lives AUTOCLOSE
        refusal = srv.awp("grant", c1.ip4, str(PORT), "--for", "3")
        assert refusal.returncode == 6 and "--for needs the nftables backend" in refusal.stderr
        assert srv.awp("grant", c1.ip4, str(PORT)).returncode == 0
        lifetime = AUTOCLOSE
    start = time.monotonic()
    assert wait_connect(c1, d1)
    assert refused(c2, d2)
    time.sleep(max(0.0, lifetime + 1.0 - (time.monotonic() - start)))
    assert refused(c1, d1), "the grant outlived its lifetime"


def test_grant_refuses_what_is_no_door_works_for_ipv6_and_a_close_knock_ends_it(lab, make_server, backend):
    srv = make_server()
    srv.start()
    lab.server.serve_tcp(PORT, family=6)
    c1, c2 = lab.clients
    for args in (("198.18.1.2", "2000"), ("198.18.1.2", "22"), ("198.18.1/24", str(PORT)), ("::", str(PORT))):
        proc = srv.awp("grant", *args)
        assert proc.returncode == 2, (args, proc.stderr)
    assert srv.awp("grant", c1.ip6, str(PORT)).returncode == 0
    assert wait_connect(c1, lab.server_ip6(c1))
    assert refused(c2, lab.server_ip6(c2))

    # a hand grant is the kernel's grant, as a knock's: the source's close knock ends it
    lab.server.serve_tcp(PORT)
    assert srv.awp("grant", c2.ip4, str(PORT)).returncode == 0
    assert wait_connect(c2, lab.server_ip4(c2))
    knock(srv, c2, lab.server_ip4(c2), CLOSE, "close")
    assert refused(c2, lab.server_ip4(c2))
