"""awp simple mode end to end, the apply side: foreign rules, bad input, rollback, re-apply,
which backend holds the rules, status. Same setup as test_simple.py (simple_helpers); each
test runs on every backend of views.BACKENDS, the core ones on iptables-legacy too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simple_helpers import (A, B, C, D, DOOR, E, OTHER_DOOR, OTHER_PORT, PORT, SEQ, apply, connects,
                            is_ipv6_load, knock, netns_runner, plan_in, root_with, serve, setup)
from views import holders, on_every_backend, snapshot, status, without_awp

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    """awp refuses to close the SSH port of the session it runs in; the lab is not that
    session. Wide columns so that `awp status` tables are not wrapped."""
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


# --- 12, 13, 14: apply semantics -----------------------------------------------------------

FOREIGN = {
    4: [["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"], ["-N", "MYCHAIN"],
        ["-A", "MYCHAIN", "-s", "198.18.9.0/24", "-j", "RETURN"],
        ["-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "MYCHAIN"], ["-A", "FORWARD", "-j", "DROP"]],
    6: [["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"], ["-N", "MYCHAIN"],
        ["-A", "MYCHAIN", "-s", "2001:2:0:9::/64", "-j", "RETURN"],
        ["-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "MYCHAIN"], ["-A", "FORWARD", "-j", "DROP"]],
}


def _add_foreign_rules(lab) -> None:
    for family, rules in FOREIGN.items():
        for rule in rules:
            lab.server.iptables(rule, family)


def test_apply_leaves_foreign_rules_alone_and_removes_cleanly(lab, tmp_path, backend):
    """Foreign iptables-nft rules stay byte-identical in every view (iptables-nft-save and
    nft list ruleset) through apply, re-apply, turning awp off and on, and awp remove."""
    server = lab.server
    _add_foreign_rules(lab)
    original = snapshot(server)
    good = root_with(tmp_path, backend)
    assert "MYCHAIN" in original["nft v4"] and "MYCHAIN" in original["nft v6"] and not holders(server)
    first = apply(lab, good)
    installed = snapshot(server)
    assert holders(server) == {backend} and "applied" in first.stdout
    assert without_awp(installed) == original
    again = apply(lab, good)
    assert "nothing changed" in again.stdout and snapshot(server) == installed
    for off in ({"FW_PORTKNOCK": "no"}, {"FW_PORTKNOCK_SIMPLE": "no"}):
        apply(lab, root_with(tmp_path, backend, **off))
        assert snapshot(server) == original, f"{off} must remove every trace of awp"
        apply(lab, good)
        assert snapshot(server) == installed
    removed = server.awp(["remove"], good)
    assert removed.returncode == 0 and snapshot(server) == original
    again = server.awp(["remove"], good)
    assert again.returncode == 0 and "nothing" in again.stdout and snapshot(server) == original


SIMPLE_LIST = "etc/firewall/simple-portknock-list"
CONFIG = "etc/config"
BAD_INPUTS = {
    # name: (settings overrides, simple list or None, file named, line named)
    "two colons": ({}, f"# doors\n{DOOR}80:1,2:3\n", SIMPLE_LIST, 3),
    "bad door 2 of a line": ({}, f"{DOOR.strip()} 80:3301,8808,\n", SIMPLE_LIST, 1),
    "port 70000": ({}, f"{DOOR}\n70000:3301,8808,1207\n", SIMPLE_LIST, 3),
    "knock 70000": ({}, "22:7481,70000,9127\n", SIMPLE_LIST, 1),
    "knock port of another door": ({}, f"{DOOR}80:3301,{C},1207\n", SIMPLE_LIST, 2),
    "bad value": ({"FW_PORTKNOCK_STEP_TIMEOUT": "soon"}, DOOR, CONFIG, 3),
    "unknown key": ({"FW_PORTKNOCK_SPEED": "fast"}, DOOR, CONFIG, 5),
    "missing list": ({}, None, SIMPLE_LIST, None),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_leaves_the_running_firewall_byte_identical(lab, tmp_path, backend, case):
    overrides, simple, named, line = BAD_INPUTS[case]
    setup(lab, tmp_path, backend)
    before = snapshot(lab.server)
    root = root_with(tmp_path, backend, simple, **overrides)
    result = lab.server.awp(["-s", "-f"], root)
    errors = [l for l in result.stderr.splitlines() if l.startswith("awp: error: ")]
    assert result.returncode == 3, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    where = f"{root}/{named}" + (f":{line}: " if line else ": ")
    assert errors[0].startswith(f"awp: error: {where}"), (errors[0], where)
    assert snapshot(lab.server) == before


EMPTY_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def _fail_ipv6_load(lab, variant: str, seen: list):
    """intercept: at the real IPv6 load, record the IPv4 table, then refuse like a broken tool."""
    from awp.backend.runner import Result

    def intercept(argv, stdin, real):
        if not is_ipv6_load(argv):
            return real(argv, stdin)
        seen.append(lab.server.iptables_save(4, variant))
        return Result(1, "", "injected failure")

    return intercept


@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy"])
@pytest.mark.parametrize("before", ["nothing", "an older awp ruleset"])
def test_ipv6_failing_after_ipv4_leaves_everything_as_it_was(lab, tmp_path, backend, before):
    """iptables only (two tables, per-table rollback; the nftables counterpart is in
    test_nftables.py). awp runs in-process; its firewall tools run in the server namespace,
    except the real IPv6 load, which fails after IPv4 was loaded. IPv4 must be rolled back.

    With "nothing" before, the nft table `ip filter` that an iptables-nft IPv4 load created
    must go too.
    """
    from awp.errors import ApplyError

    serve(lab)
    if before != "nothing":
        apply(lab, root_with(tmp_path, backend))
    saved = snapshot(lab.server)
    seen: list[str] = []
    variant = backend.removeprefix("iptables-")
    runner = netns_runner(lab.server.name, _fail_ipv6_load(lab, variant, seen))
    chosen, plan = plan_in(root_with(tmp_path, backend, DOOR + OTHER_DOOR), runner)
    with pytest.raises(ApplyError, match="injected failure"):
        chosen.apply(plan)
    assert len(seen) == 1 and f"AWP-I{OTHER_PORT}" in seen[0], "IPv4 was loaded before IPv6 failed"
    if before == "nothing" and variant == "legacy":  # x_tables: the first use makes the empty
        saved |= {f"legacy v{f}": EMPTY_FILTER for f in (4, 6)}  # table, which stays for good
    assert snapshot(lab.server) == saved
    c1, c2 = lab.clients
    if before == "nothing":
        assert connects(lab, c2), "no awp rules: the port is reachable as before"
        return
    knock(lab, c1, SEQ)
    assert connects(lab, c1) and not connects(lab, c2, expect=False), "the older ruleset works"


# --- 15: re-apply keeps state --------------------------------------------------------------


@on_every_backend
def test_reapply_keeps_open_and_mid_sequence_sources(lab, tmp_path, backend):
    c1, c2 = lab.clients
    one_door = setup(lab, tmp_path, backend, FW_PORTKNOCK_OPEN_WINDOW="20", FW_PORTKNOCK_STEP_TIMEOUT="8")
    two_doors = root_with(tmp_path, backend, DOOR + OTHER_DOOR, FW_PORTKNOCK_OPEN_WINDOW="20",
                          FW_PORTKNOCK_STEP_TIMEOUT="8")
    knock(lab, c1, SEQ)
    knock(lab, c2, (A, B))
    assert "nothing changed" in apply(lab, one_door).stdout
    knock(lab, c2, (C,))
    assert "applied" in apply(lab, two_doors).stdout
    knock(lab, c2, (D, E))
    assert connects(lab, c1), "open before both re-applies, still open"
    assert connects(lab, c2), "A,B | identical re-apply | C | re-apply adding a door | D,E"


# --- 16: each backend, and only it, holds awp's rules -----------------------------------------


@on_every_backend
def test_the_chosen_backend_alone_holds_awps_rules(lab, tmp_path, backend):
    c1, c2 = lab.clients
    root = setup(lab, tmp_path, backend)
    assert holders(lab.server) == {backend}
    assert status(lab.server, root)["backend"] == backend
    assert not connects(lab, c1, expect=False)
    knock(lab, c1, SEQ)
    assert connects(lab, c1)
    assert not connects(lab, c2, expect=False)


SETTING_VALUES = {  # FW_PORTKNOCK_BACKEND: (the backend it means here, warning)
    "auto": ("nftables", None),
    "nft": ("iptables-nft", 'FW_PORTKNOCK_BACKEND="nft" is deprecated .* write FW_PORTKNOCK_BACKEND="iptables-nft"'),
    "legacy": ("iptables-legacy",
               'FW_PORTKNOCK_BACKEND="legacy" is deprecated .* write FW_PORTKNOCK_BACKEND="iptables-legacy"'),
}


@pytest.mark.parametrize("value", sorted(SETTING_VALUES))
def test_auto_and_the_old_backend_names(lab, tmp_path, value):
    """`auto` (the default) picks nftables where nft works; the old names keep working for a
    release, with a warning naming the new value."""
    meant, warning = SETTING_VALUES[value]
    result = apply(lab, root_with(tmp_path, value))
    assert holders(lab.server) == {meant} and f"applied ({meant})" in result.stdout
    warnings = [l for l in result.stderr.splitlines() if l.startswith("awp: warning: ")]
    assert [bool(re.search(warning, l)) for l in warnings] == ([True] if warning else []), result.stderr


# --- 17: awp status ---------------------------------------------------------------------------


def test_status_lists_open_and_knocking_sources(lab, tmp_path, backend):
    c1, c2 = lab.clients
    root = setup(lab, tmp_path, backend, FW_PORTKNOCK_OPEN_WINDOW="30", FW_PORTKNOCK_STEP_TIMEOUT="30")
    knock(lab, c1, SEQ)
    knock(lab, c2, (A, B))
    result = lab.server.awp(["status"], root)
    assert result.returncode == 0, result.stderr
    rows = {ip: [l for l in result.stdout.splitlines() if re.search(rf"\b{re.escape(ip)}\b", l)]
            for ip in (c1.ip4, c2.ip4)}
    assert len(rows[c1.ip4]) == 1 and "open" in rows[c1.ip4][0], result.stdout
    assert len(rows[c2.ip4]) == 1 and f"knocking 2/{len(SEQ)}" in rows[c2.ip4][0], result.stdout
    assert "kernel: awp's rules match the configuration" in result.stdout
    assert connects(lab, c1) and not connects(lab, c2, expect=False)
    door = status(lab.server, root)["doors"][0]
    assert door["port"] == PORT and door["let_in"] >= 1 and door["dropped"] >= 1, door
    Path(root, "etc/firewall/simple-portknock-list").write_text(DOOR + OTHER_DOOR)
    edited = lab.server.awp(["status"], root)
    assert "differ from the configuration; run awp -s -f" in edited.stdout, edited.stdout
