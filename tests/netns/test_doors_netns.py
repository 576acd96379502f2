"""Door options (DIR/etc/firewall/portknock-doors) end to end on every backend: several ports
per door (simple and advanced), forward to an inner host (router topology: client 1 --
server as gateway -- client 2 as the inner host; client 3 knocks nothing), and refusals
of bad options that leave the running firewall byte-identical."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from advanced_helpers import DOOR as ADV_DOOR, OPEN, PORT as ADV_PORT, knock as adv_knock, wait_connect, refused
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from simple_helpers import PORT, SEQ, apply, connects, knock, root_with, serve
from views import on_every_backend, snapshot

pytestmark = pytest.mark.netns

DOORS = "etc/firewall/portknock-doors"
GW_PORT = 2222  # the door's port on the gateway
INNER_PORT = 22  # the inner host's service
SIMPLE_FWD = f"{GW_PORT}:{','.join(map(str, SEQ[:3]))}\n"


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def write_doors(root: str, text: str) -> None:
    (Path(root) / DOORS).write_text(text, encoding="utf-8")


# --- several ports per door ------------------------------------------------------------------


@on_every_backend
def test_simple_door_opens_all_its_ports(lab, tmp_path, backend):
    c1, c2 = lab.clients
    serve(lab)
    for port in (8001, 8002):
        lab.server.serve_tcp(port)
    root = root_with(tmp_path, backend, f"{PORT}:{','.join(map(str, SEQ))}\n", FW_PORTKNOCK_STEALTH="drop")
    write_doors(root, f"[{PORT}]\nports = {PORT}, 8000-8002\n")
    apply(lab, root)
    for port in (PORT, 8002):
        assert not connects(lab, c1, port=port, expect=False)
    knock(lab, c1, SEQ)
    for port in (PORT, 8001, 8002):
        assert connects(lab, c1, port=port), port
        assert not connects(lab, c2, port=port, expect=False), port
    status = lab.server.awp(["status"], root)
    assert f"door {PORT}: ports {PORT},8000-8002" in status.stdout, status.stdout
    doc = json.loads(lab.server.awp(["status", "--json"], root, check=True).stdout)
    assert [(s["port"], s["state"]) for s in doc["sources"]] == [(PORT, "open")], "one row per door"


def test_advanced_door_grants_all_its_ports(lab, make_server):
    srv = make_server(ADV_DOOR)
    write_doors(srv.root, f"[{ADV_PORT}]\nports = 2223\n")
    srv.start()
    for port in (ADV_PORT, 2223):
        lab.server.serve_tcp(port)
    c1, c2 = lab.clients
    d1, d2 = lab.server_ip4(c1), lab.server_ip4(c2)
    assert refused(c1, d1, 2223)
    adv_knock(srv, c1, d1, OPEN, "open")
    assert wait_connect(c1, d1, ADV_PORT) and wait_connect(c1, d1, 2223)
    assert refused(c2, d2, 2223) and refused(c2, d2, ADV_PORT)


# --- forward to an inner host ----------------------------------------------------------------


@pytest.fixture
def router(lab3):
    """client 1 (knocker) -- server (gateway, forwarding) -- client 2 (inner host), client 3."""
    lab3.route_through_server()
    inner = lab3.clients[1]
    inner.serve_peer(INNER_PORT)
    inner.serve_peer(INNER_PORT, 6)
    return lab3


def inner_target(lab, family: int = 4) -> str:
    inner = lab.clients[1]
    return f"{inner.ip4}:{INNER_PORT}" if family == 4 else f"[{inner.ip6}]:{INNER_PORT}"


def gateway(lab, client, family: int = 4) -> str:
    return lab.server_ip6(client) if family == 6 else lab.server_ip4(client)


def seen_through(lab, client, family: int = 4, tries: int = 3) -> str | None:
    for _ in range(tries):
        found = client.peer_seen(gateway(lab, client, family), GW_PORT)
        if found:
            return found
    return None


@on_every_backend
def test_forward_after_a_simple_knock(router, tmp_path, backend):
    lab = router
    knocker, inner, stranger = lab.clients
    root = root_with(tmp_path, backend, SIMPLE_FWD, FW_PORTKNOCK_STEALTH="drop")
    write_doors(root, f"[{GW_PORT}]\nforward = {inner_target(lab)}\nforward6 = {inner_target(lab, 6)}\n")
    apply(lab, root)
    assert knocker.peer_seen(gateway(lab, knocker), GW_PORT, timeout=1.0) is None, "closed before the knock"
    knock(lab, knocker, SEQ[:3])
    assert seen_through(lab, knocker) == knocker.ip4, "the inner host sees the knocker's own address"
    assert stranger.peer_seen(gateway(lab, stranger), GW_PORT, timeout=1.0) is None, "no knock, no forward"
    knock(lab, knocker, SEQ[:3], family=6)
    assert seen_through(lab, knocker, 6) == knocker.ip6
    assert stranger.peer_seen(gateway(lab, stranger, 6), GW_PORT, timeout=1.0) is None
    dry = lab.server.awp(["-s", "-f", "--dry-run"], root)
    assert f"# door {GW_PORT}: forward {inner_target(lab)}" in dry.stdout, dry.stdout
    assert "no change" in dry.stdout, "the kernel holds what the configuration compiles to"
    doc = json.loads(lab.server.awp(["status", "--json"], root, check=True).stdout)
    assert doc["kernel_matches_config"], doc["differs"]
    (door,) = doc["doors"]
    assert door["options"]["forward"] == inner_target(lab)
    assert door["let_in"] >= 2, "each family's forwarded connection counts as let in"


def test_forward_after_an_advanced_grant(router, servers):
    lab = router
    knocker, inner, stranger = lab.clients
    srv = servers(lab, ADV_DOOR)
    write_doors(srv.root, f"[{ADV_PORT}]\nforward = {inner_target(lab)}\n")
    srv.start()
    d = gateway(lab, knocker)
    assert knocker.peer_seen(d, ADV_PORT, timeout=1.0) is None
    adv_knock(srv, knocker, d, OPEN, "open")
    found = None
    for _ in range(6):
        found = knocker.peer_seen(d, ADV_PORT)
        if found:
            break
    assert found == knocker.ip4
    assert stranger.peer_seen(gateway(lab, stranger), ADV_PORT, timeout=1.0) is None


# --- refusals leave the running firewall as it was ------------------------------------------

BAD_DOORS = {
    # name: (simple list, doors file, file named, line named)
    "unknown option": (None, f"[{PORT}]\nportz = 443\n", DOORS, 2),
    "bad protocol": (f"{PORT}:7481,2002/icmp,9127\n", None, "etc/firewall/simple-portknock-list", 1),
    "section for no door": (None, f"[{PORT}]\nports = 443\n\n[81]\ntimeout = 3\n", DOORS, 4),
    "ports overlapping another door": (f"{PORT}:7481,2203,9127\n80:3301,8808,1207\n",
                                       f"[{PORT}]\nports = 79-81\n", DOORS, 2),
    "forward to this host": (None, "[22]\nforward = 198.18.1.1:2200\n", DOORS, 2),
    "forward with no route": (None, "[22]\nforward = 198.19.200.2:22\n", DOORS, 2),
}


@pytest.mark.parametrize("case", sorted(BAD_DOORS))
def test_refused_options_leave_the_firewall_byte_identical(lab, tmp_path, backend, case):
    simple, doors, named, line = BAD_DOORS[case]
    serve(lab)
    good = root_with(tmp_path, backend, f"{PORT}:7481,2203,9127\n")
    write_doors(good, f"[{PORT}]\nports = 443\n")
    apply(lab, good)
    before = snapshot(lab.server)
    root = root_with(tmp_path, backend, simple or f"{PORT}:7481,2203,9127\n")
    if doors is not None:
        write_doors(root, doors)
    result = lab.server.awp(["-s", "-f"], root)
    errors = [l for l in result.stderr.splitlines() if l.startswith("awp: error: ")]
    assert result.returncode == 3, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert errors[0].startswith(f"awp: error: {root}/{named}:{line}: "), errors[0]
    assert snapshot(lab.server) == before


def test_forward_comes_and_goes_without_a_trace(router, tmp_path, backend):
    """The nat part exists only while a door forwards: dropping the forward, then `awp remove`,
    give back the namespace's firewall exactly as a door without forward leaves it."""
    lab = router
    knocker = lab.clients[0]
    root = root_with(tmp_path, backend, SIMPLE_FWD, FW_PORTKNOCK_STEALTH="drop")
    apply(lab, root)  # what awp leaves after a door without forward, the baseline
    assert lab.server.awp(["remove"], root).returncode == 0  # (iptables-nft: empty filter tables)
    original = snapshot(lab.server)
    write_doors(root, f"[{GW_PORT}]\nforward = {inner_target(lab)}\n")
    apply(lab, root)
    with_forward = snapshot(lab.server)
    assert with_forward != original
    (Path(root) / DOORS).unlink()
    apply(lab, root)
    plain = snapshot(lab.server)
    assert "nat" not in plain["nft"] and "AWP-PREROUTING" not in "".join(plain.values()), plain
    knock(lab, knocker, SEQ[:3])
    assert knocker.peer_seen(gateway(lab, knocker), GW_PORT, timeout=1.0) is None, "no forward any more"
    assert lab.server.awp(["remove"], root).returncode == 0
    after = snapshot(lab.server)
    if backend == "iptables-nft":  # iptables-nft made an empty FORWARD chain for AWP-FORWARD's jump,
        after["nft"] = EMPTY_FORWARD.sub("", after["nft"])  # and keeps it, as for any rule in FORWARD
    assert after == original


EMPTY_FORWARD = re.compile(r"\n\tchain FORWARD \{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\}\n")


@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy"])
def test_nat_load_failing_after_filter_rolls_back_both_families(lab, tmp_path, backend):
    """iptables only: a forward adds the nat tables to the transaction, loaded after both filter
    tables. awp runs in-process, its tools in the server namespace, except the real IPv4 nat
    load, which fails: the filter tables already loaded must be put back as they were."""
    from awp.backend.runner import Result
    from awp.errors import ApplyError
    from simple_helpers import netns_runner, plan_in

    serve(lab)
    apply(lab, root_with(tmp_path, backend, f"{PORT}:7481,2203,9127\n"))
    saved = snapshot(lab.server)
    seen = []

    def intercept(argv, stdin, real):
        if argv[0].endswith("-restore") and "--test" not in argv and (stdin or "").startswith("*nat"):
            seen.append(lab.server.iptables_save(4, backend.removeprefix("iptables-")))
            return Result(1, "", "injected failure")
        return real(argv, stdin)

    root = root_with(tmp_path, backend, f"{PORT}:7481,2203,9127\n{GW_PORT}:3301,8808,1207\n")
    write_doors(root, f"[{GW_PORT}]\nforward = 198.18.2.2:22\n")
    chosen, plan = plan_in(root, netns_runner(lab.server.name, intercept))
    with pytest.raises(ApplyError, match="injected failure"):
        chosen.apply(plan)
    assert len(seen) == 1 and "AWP-FORWARD" in seen[0], "the filter table was loaded before nat failed"
    after = snapshot(lab.server)
    if backend == "iptables-nft":  # the FORWARD jump made iptables-nft's empty FORWARD chain
        after["nft"] = EMPTY_FORWARD.sub("", after["nft"])
    else:  # x_tables: the first use (awp's --test) makes the empty nat table, which stays for good
        after = {view: text.replace(EMPTY_NAT, "") for view, text in after.items()}
    assert after == saved


EMPTY_NAT = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n")
