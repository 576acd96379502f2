"""Fleet mode end to end: two or three nodes, each in its own namespace with its own awp root
and listener, one client that reaches every node, and a real Redis (fleet_helpers) that the
tests kill, stall, restore and write forged messages into.

Knocks are built with the reference implementation (pknock_ref); forged fleet messages are
signed here with hmac directly, never with awp.fleet.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import pytest
from advanced_helpers import CLOSE, OPEN, PORT, SETTLE, accepted, client_addr, knock, knock_sh, post, refused, \
    rejected, wait_connect
from fleet_helpers import KEY_HEX, FleetLab, fleet_node, fleet_state, wait_fleet
from harness import wait_for

pytestmark = pytest.mark.netns
PROPAGATE = 3.0  # a grant reaches the other nodes well within this (the bench measures it)


@pytest.fixture
def fleet(request):
    with FleetLab(nodes=3 if "three" in request.node.name else 2, clients=1,
                  tag=request.node.name.removeprefix("test_")[:8]) as lab:
        yield lab


@pytest.fixture
def nodes(fleet, tmp_path, backend):
    """A factory: nodes(i, **fleet_node options) -> a started AwpServer; all cleaned up."""
    made = []

    def make(i: int, start: bool = True, **kw):
        srv = fleet_node(fleet.nodes[i], tmp_path, backend, f"node{i + 1}", **kw)
        made.append(srv)
        if start:
            srv.start()
            fleet.nodes[i].serve_tcp(PORT)
        return srv

    yield make
    errors = []
    for srv in made:
        try:
            srv.cleanup()
        except Exception as exc:
            errors.append(exc)
    assert not errors, errors


def sign(key_hex: str, body: str) -> str:
    return f"{body} {hmac.new(bytes.fromhex(key_hex), body.encode(), hashlib.sha256).hexdigest()}"


def test_three_nodes_share_grants_and_one_replay_cache(fleet, nodes):
    a, b, c = nodes(0), nodes(1), nodes(2)
    cl = fleet.clients[0]
    ip_a, ip_b, ip_c = (h.ip4 for h in fleet.nodes)
    for srv in (a, b, c):
        assert wait_fleet(srv, True)["node"].startswith("node")
    assert refused(cl, ip_b)

    payload = a.macs.payload(OPEN, cl.ip4)
    mark = post(a, cl, ip_a, payload)
    a.log.wait(accepted("open", cl.ip4), mark)
    assert wait_connect(cl, ip_b, timeout=PROPAGATE), "a grant on A did not let the client in on B"
    assert wait_connect(cl, ip_c, timeout=PROPAGATE)
    line = b.log.wait(r"fleet grant applied action=open port=2222 src=198\.18\.100\.101 from=node1", 0)
    left = int(re.search(r"expires_in=(\d+)s", line).group(1))
    assert 3590 <= left <= 3600, line  # the grant's remaining lifetime, not a fresh autoclose

    mark_b = post(b, cl, ip_b, payload)  # the very packet A accepted, replayed to B
    b.log.wait(rejected("fleet-replay", cl.ip4), mark_b)
    assert "knock accepted" not in b.log.since(mark_b)

    remote = []  # the listener writes the state awp status reads once a second
    wait_for(lambda: remote.extend(fleet_state(b)["remote_grants"]) or remote, 3.0, "B's status to show the grant")
    assert [(g["port"], g["source"], g["node"]) for g in remote] == [(PORT, cl.ip4, "node1")]

    knock(b, cl, ip_b, CLOSE, "close")  # a close on B revokes on A and C
    wait_for(lambda: refused(cl, ip_a) and refused(cl, ip_c), PROPAGATE + 2, "the close on B to reach A and C")
    assert refused(cl, ip_b)


def test_a_client_repeat_reaches_the_fleet_once(fleet, nodes):
    """knock.sh -r 3: the listener grants once and treats the copies as repeats, so Redis
    gets one claim and one grant message, and the other node applies the grant once."""
    a, b = nodes(0), nodes(1)
    cl = fleet.clients[0]
    ip_a, ip_b = (h.ip4 for h in fleet.nodes)
    wait_fleet(a, True)
    wait_fleet(b, True)
    mark_a, mark_b = a.log.mark(), b.log.mark()
    r = knock_sh(cl, ip_a, OPEN, "-r", "3")
    assert r.returncode == 0, r.stderr
    a.log.wait(accepted("open", cl.ip4), mark_a)
    assert wait_connect(cl, ip_b, timeout=PROPAGATE), "the grant did not reach B"
    time.sleep(0.5)  # knock.sh returned after its last copy (0.4 s apart): all decided by now
    seen_a = a.log.since(mark_a)
    assert seen_a.count("knock accepted") == 1 and "knock rejected" not in seen_a, seen_a
    assert b.log.since(mark_b).count("fleet grant applied action=open") == 1
    assert fleet.redis.cli("XLEN", "awp:grants:log").strip() == "1"
    assert len(fleet.redis.cli("KEYS", "awp:replay:*").split()) == 1


def test_a_restarted_node_catches_up_before_it_is_ready(fleet, nodes):
    a, b = nodes(0), nodes(1)
    cl = fleet.clients[0]
    ip_a, ip_b = (h.ip4 for h in fleet.nodes)
    wait_fleet(b, True)
    assert b.awp("remove").returncode == 0  # listener stopped and the kernel's grants gone
    knock(a, cl, ip_a, OPEN, "open")  # made while B is away: only the live grants can tell B
    mark = b.log.mark()
    b.start()  # `awp -s -f`: returns once the listener is ready
    assert wait_connect(cl, ip_b, timeout=1.5), "B did not catch up on A's grant at its start"
    b.log.wait(r"fleet connected .* live_grants=1", mark)


def test_redis_down_knocks_stay_local_required_refuses_and_back_reconciles(fleet, nodes):
    a = nodes(0)
    b = nodes(1, required=True)
    cl = fleet.clients[0]
    ip_a, ip_b = (h.ip4 for h in fleet.nodes)
    wait_fleet(a, True)
    fleet.redis.kill()

    payload = a.macs.payload(OPEN, cl.ip4)
    mark = post(a, cl, ip_a, payload)  # this knock may be the one that finds Redis gone
    a.log.wait(accepted("open", cl.ip4), mark)
    assert wait_connect(cl, ip_a), "a local knock did not work with Redis down"
    state = wait_fleet(a, False)
    assert state["degraded"] and state["unsent"] == 1
    assert "fleet degraded" in a.log.text()
    status = a.awp("status")
    assert "fleet degraded" in status.stderr, status.stderr

    wait_fleet(b, False)
    mark = post(b, cl, ip_b, b.macs.payload(OPEN, cl.ip4))
    b.log.wait(rejected("fleet-unreachable", cl.ip4), mark)
    assert refused(cl, ip_b)

    fleet.redis.start()  # an empty Redis: A's open made while it was down is published again
    wait_fleet(a, True, timeout=10)
    wait_fleet(b, True, timeout=10)
    assert wait_connect(cl, ip_b, timeout=PROPAGATE), "A's grant made while Redis was down never reached B"
    assert fleet_state(a)["unsent"] == 0
    mark = post(b, cl, ip_b, payload)  # A claimed the MAC it accepted while Redis was down
    b.log.wait(rejected("fleet-replay", cl.ip4), mark)


@pytest.mark.parametrize("backend", ["nftables"])  # no kernel difference: nothing is applied
def test_forged_or_altered_fleet_messages_grant_nothing(fleet, nodes):
    a, b = nodes(0), nodes(1)
    cl = fleet.clients[0]
    ip_a, ip_b = (h.ip4 for h in fleet.nodes)
    wait_fleet(b, True)
    exp = int(time.time()) + 600
    body = f"awp1 00000000000000aa node1 open {PORT} {cl.ip4} {exp} {int(time.time() * 1000)}"
    forged = sign("00" * 32, body)  # signed with a key that is not the fleet's
    genuine = sign(KEY_HEX, body)
    altered = genuine.replace(f" {exp} ", f" {exp + 9999} ")
    mark = b.log.mark()
    for line in (forged, altered, "awp1 junk", genuine.replace("node1", "node9")):
        fleet.redis.cli("XADD", "awp:grants:log", "*", "m", line)
    fleet.redis.cli("HSET", "awp:grants", f"{PORT}|{cl.ip4}", forged)
    wait_for(lambda: b.log.since(mark).count("fleet message ignored") >= 4, SETTLE, "B to ignore 4 messages")
    assert refused(cl, ip_b) and refused(cl, ip_a)
    assert "fleet grant applied" not in b.log.since(mark)

    mark = b.log.mark()
    assert b.awp("remove").returncode == 0
    b.start()  # catch-up reads the forged live grant: ignored too
    b.log.wait("fleet message ignored", mark)
    assert refused(cl, ip_b)
    assert fleet_state(b)["ignored_messages"] >= 1


@pytest.mark.parametrize("backend", ["nftables"])
def test_check_names_a_missing_or_bad_fleet_key(fleet, nodes):
    srv = nodes(0, start=False, key_hex=None)
    key = srv.base / "etc" / "fleet.key"
    proc = srv.awp("check")
    assert proc.returncode == 3 and f"{key}: fleet key does not exist" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert srv.awp("fleet-key").returncode == 0
    assert srv.awp("check").returncode == 0
    assert srv.awp("fleet-key").returncode == 3  # refuses to replace it without --force
    key.chmod(0o644)
    proc = srv.awp("check")
    assert proc.returncode == 3 and f"{key}: fleet key has mode 0644" in proc.stderr, proc.stderr
    key.chmod(0o600)
    key.write_text("abc\n")
    proc = srv.awp("check")
    assert proc.returncode == 3 and "64 lowercase hex digits" in proc.stderr and "abc" not in proc.stderr
    apply = srv.awp("-s", "-f")
    assert apply.returncode == 3, apply.stderr  # refused before the kernel is touched


@pytest.mark.parametrize("backend", ["nftables"])
def test_check_tells_a_key_that_is_not_the_fleets(fleet, nodes):
    """A well-formed key of another fleet: `awp check` finds that it verifies none of the
    fleet's newest grant messages (exit 3, naming the file); the fleet's key agrees."""
    a = nodes(0)
    b = nodes(1, start=False)
    cl = fleet.clients[0]
    wait_fleet(a, True)
    assert "the fleet's store holds no grant message yet" in b.awp("check").stdout
    mark = post(a, cl, fleet.nodes[0].ip4, a.macs.payload(OPEN, cl.ip4))
    a.log.wait(accepted("open", cl.ip4), mark)
    ok = b.awp("check")
    assert ok.returncode == 0 and "fleet key agrees with the fleet's" in ok.stdout, ok.stdout
    key = b.base / "etc" / "fleet.key"
    key.write_text("6b" * 32 + "\n")
    proc = b.awp("check")
    assert proc.returncode == 3 and f"{key}: fleet key differs from the fleet's" in proc.stderr, proc.stderr
    assert "6b6b" not in proc.stderr + proc.stdout
    fleet.redis.kill()
    assert "did not answer within 1 s" in b.awp("check").stdout


@pytest.mark.parametrize("backend", ["nftables"])
def test_a_stalled_redis_delays_a_knock_by_at_most_the_bound(fleet, nodes):
    """SIGSTOP: Redis accepts connections but never answers. The knock that finds it so waits
    at most the packet path's socket timeout (0.2 s; bench/fleet_bench.py measures it), and the
    next ones do not ask Redis until it answers again."""
    a, b = nodes(0), nodes(1)
    cl = fleet.clients[0]
    ip_a, ip_b = (h.ip4 for h in fleet.nodes)
    wait_fleet(a, True)
    fleet.redis.stall()
    try:
        knock(a, cl, ip_a, OPEN, "open")
        assert wait_connect(cl, ip_a)
        knock(a, cl, ip_a, CLOSE, "close")
        assert refused(cl, ip_a)
        state = wait_fleet(a, False, timeout=3)  # the state file is rewritten once a second
        assert "Timeout" in state["degraded"], state
    finally:
        fleet.redis.resume()
    wait_fleet(a, True, timeout=10)
    wait_fleet(b, True, timeout=10)
    knock(a, cl, ip_a, OPEN, "open")
    assert wait_connect(cl, ip_b, timeout=PROPAGATE)


@pytest.mark.parametrize("backend", ["nftables"])
def test_joining_the_fleet_by_a_reapply_restarts_the_listener_and_keeps_grants(fleet, nodes):
    from advanced_helpers import config_text, write_private
    from fleet_helpers import FLEET_URL

    a = nodes(0, FW_PORTKNOCK_FLEET="")
    b = nodes(1)
    cl = fleet.clients[0]
    ip_a, ip_b = (h.ip4 for h in fleet.nodes)
    before = a.pid()
    knock(a, cl, ip_a, OPEN, "open")  # made alone: stays local
    assert fleet_state(a) == {}
    write_private(a.config_path, config_text(a.backend, FW_PORTKNOCK_FLEET=FLEET_URL, FW_PORTKNOCK_NODE="node1"))
    a.apply()
    wait_fleet(a, True, timeout=15)
    assert a.pid() != before
    assert wait_connect(cl, ip_a), "the grant made before the restart was lost"
    mark = b.log.mark()
    knock(a, cl, ip_a, CLOSE, "close")
    knock(a, cl, ip_a, OPEN, "open")
    assert wait_connect(cl, ip_b, timeout=PROPAGATE)
    b.log.wait("fleet grant applied action=open .*from=node1", mark)


@pytest.mark.parametrize("backend", ["nftables"])
def test_three_nodes_on_redis_over_tls_with_an_acl_user_the_password_only_in_fleet_auth(fleet, tmp_path, backend):
    import shutil

    from advanced_helpers import write_private
    from fleet_helpers import REDIS_IP, REDIS_PORT

    password = "pw-" + "7" * 20
    fleet.redis.kill()
    ca = fleet.redis.with_tls_and_acl("awp", password)
    fleet.redis.start()
    url = f"rediss://{REDIS_IP}:{REDIS_PORT}/0"
    made = []
    try:
        for i, secret in ((0, password), (1, password), (2, "wrong-password")):
            srv = fleet_node(fleet.nodes[i], tmp_path, backend, f"node{i + 1}", FW_PORTKNOCK_FLEET=url)
            write_private(srv.base / "etc" / "fleet.auth", f"user = awp\npassword = {secret}\n")
            shutil.copy(ca, srv.base / "etc" / "fleet-ca.pem")
            made.append(srv)
            srv.start()
            fleet.nodes[i].serve_tcp(PORT)
        a, b, c = made
        cl = fleet.clients[0]
        wait_fleet(a, True), wait_fleet(b, True)
        state = wait_fleet(c, False)
        assert re.search(r"Authentication|WRONGPASS|invalid username-password", state["degraded"]), state
        knock(a, cl, fleet.nodes[0].ip4, OPEN, "open")
        assert wait_connect(cl, fleet.nodes[1].ip4, timeout=PROPAGATE), "no grant over TLS"
        assert refused(cl, fleet.nodes[2].ip4)  # C is not in the fleet: it cannot authenticate
        for srv in made:
            shown = srv.log.text() + json.dumps(fleet_state(srv)) + srv.awp("status").stdout
            cmdline = open(f"/proc/{srv.pid()}/cmdline", "rb").read().decode(errors="replace")
            assert password not in shown + cmdline and "wrong-password" not in shown + cmdline
    finally:
        for srv in made:
            srv.cleanup()
