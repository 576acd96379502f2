"""The nftables backend end to end (issue 6): many sources, full sets, re-applies that keep
state, coexistence with other tables and with iptables-nft rules, refused loads, a switch of
backend, and the listener. Every test asserts what a user sees: connects, `awp status
--json`, awp's messages, the listener's log, and `nft list ruleset` where the test is about
what else is in the kernel.

Sources: the lab's clients, /32 addresses bound on client 1 (crowd.BOUND) and spoofed SYNs
(crowd.SPOOFED), all in 198.18.0.0/15.
"""

from __future__ import annotations

import os
import re

import pytest
from advanced_helpers import CLOSE, KNOCK_PORT, OPEN, refused, safe_now, send, wait_connect
from advanced_helpers import PORT as ADVANCED_PORT
from advanced_helpers import knock as advanced_knock
from advanced_helpers import ref_mac, servers  # noqa: F401  (servers: a pytest fixture)
from crowd import bind_sources, connect_all, datagrams, knock_all, spoofed_syns
from harness import awp_command, wait_for
from simple_helpers import addr as server_addr
from simple_helpers import (A, B, C, D, DOOR, E, OTHER_DOOR, OTHER_PORT, PORT, SEQ, apply, connects, knock,
                            netns_runner, plan_in, root_with, serve, setup)
from views import awp_table, holders, snapshot, sources, status, without_awp

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("backend", ["nftables"])]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)


# --- 1. hundreds of sources at once (xt_recent forgot all but 100) ---------------------------

CROWD = 300


def test_300_sources_complete_a_simple_knock_and_all_get_in(lab, tmp_path, backend):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    root = setup(lab, tmp_path, backend, families=(4,), FW_PORTKNOCK_OPEN_WINDOW="30")
    crowd = bind_sources(lab, c1, CROWD)
    assert connect_all(c1, dst, PORT, crowd[:3], timeout=1.0) == [], "closed before a knock"
    knock_all(c1, dst, crowd, SEQ)
    assert connect_all(c1, dst, PORT, crowd) == crowd
    assert len(sources(status(lab.server, root), "open")) == CROWD
    assert not connects(lab, lab.clients[1], expect=False), "a source that did not knock"


def test_300_sources_send_an_advanced_open_knock_and_all_get_in(lab, servers, backend):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    srv = servers(lab)
    srv.start()
    lab.server.serve_tcp(ADVANCED_PORT)
    crowd = bind_sources(lab, c1, CROWD)
    now = safe_now(margin=10)
    mark = srv.log.mark()
    datagrams(c1, dst, KNOCK_PORT, [(src, ref_mac(OPEN, src, now).encode() + b"\n") for src in crowd])
    opened = re.compile(r"knock accepted decision=open reason=ok src=(\S+) ")
    wait_for(lambda: len(opened.findall(srv.log.since(mark))) >= CROWD, 30, f"{CROWD} open decisions")
    assert sorted(opened.findall(srv.log.since(mark))) == sorted(crowd)
    assert connect_all(c1, dst, ADVANCED_PORT, crowd) == crowd
    assert len(sources(status(lab.server, srv.root), "granted")) == CROWD


# --- 4. a full set protects the sources already in it ----------------------------------------

SMALL = 1024  # the smallest FW_PORTKNOCK_SET_SIZE
FLOOD = 1100  # distinct spoofed sources, one SYN each to the door's first knock


def test_a_full_set_keeps_a_source_mid_sequence_and_counts_what_it_refused(lab3, tmp_path, backend):
    """c1 is mid-sequence when 1,100 spoofed sources start the same door (each one SYN to its
    first knock) and fill the 1,024 entries for sources that made a first knock. c1 completes
    and gets in; c3, new, is refused while the set is full (the choice: who is in keeps their
    place), which status counts; once the flood's entries time out (step timeout), a new
    source gets in (c2, the flooder's own address: c3's out-of-turn knocks put it in the scan
    guard for a step timeout)."""
    c1, c2, c3 = lab3.clients
    root = setup(lab3, tmp_path, backend, families=(4,), FW_PORTKNOCK_SET_SIZE=str(SMALL),
                 FW_PORTKNOCK_STEP_TIMEOUT="8", FW_PORTKNOCK_OPEN_WINDOW="30")
    knock(lab3, c1, (A, B))
    sent = spoofed_syns(c2, lab3.server_ip4(c2), A, FLOOD, rate=10_000)
    assert sent["sent"] == FLOOD, sent
    knock(lab3, c3, SEQ)
    knock(lab3, c1, (C, D, E))
    assert connects(lab3, c1), "mid-sequence before the flood, completed during it"
    assert not connects(lab3, c3, expect=False), "a new source while the set is full"
    doc = status(lab3.server, root)
    knocking = sources(doc, "knocking")
    assert doc["refused"]["progress"] > 0, doc["refused"]
    assert len(knocking) >= SMALL - 2 and (PORT, c3.ip4) not in knocking, len(knocking)
    wait_for(lambda: not sources(status(lab3.server, root), "knocking"), 15, "the flood's entries to time out")
    knock(lab3, c2, SEQ)
    assert connects(lab3, c2), "the set has room again"


# --- 2, 3. a re-apply keeps progress, open windows and grants, with their time left ----------

CHANGES = {  # what the re-apply changes: (simple list, extra settings)
    "another door": (DOOR + OTHER_DOOR, {}),
    "set size 2048 -> 4096": (DOOR, {"FW_PORTKNOCK_SET_SIZE": "4096"}),
}
TIMERS = {"FW_PORTKNOCK_STEP_TIMEOUT": "20", "FW_PORTKNOCK_OPEN_WINDOW": "40"}


def _state_of(doc: dict, wanted: dict[tuple[int, str], str]) -> dict:
    found = sources(doc)
    return {key: (found[key]["state"], found[key]["step"], found[key]["seconds_left"]) if key in found else None
            for key in wanted}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_reapply_keeps_progress_open_windows_and_grants(lab3, servers, backend, change):
    """c1 is mid-sequence (IPv6, 2 of 5 knocks), c2 opened door 22 (IPv4), c3 holds an
    advanced grant on 2222. After the re-apply status shows all three as before with no more
    time left than they had, and each goes on: c1 completes, c2 and c3 connect."""
    c1, c2, c3 = lab3.clients
    simple_list, settings = CHANGES[change]
    srv = servers(lab3, simple_list=DOOR, simple="yes", FW_PORTKNOCK_SET_SIZE="2048", **TIMERS)
    srv.start()
    serve(lab3)
    lab3.server.serve_tcp(ADVANCED_PORT)
    knock(lab3, c1, (A, B), family=6)
    knock(lab3, c2, SEQ)
    advanced_knock(srv, c3, lab3.server_ip4(c3), OPEN, "open")
    wanted = {(PORT, c1.ip6): "knocking", (PORT, c2.ip4): "open", (ADVANCED_PORT, c3.ip4): "granted"}
    before = _state_of(status(lab3.server, srv.root), wanted)
    assert {k: v and v[0] for k, v in before.items()} == wanted, before
    assert before[(PORT, c1.ip6)][1] == [2, len(SEQ)]

    (srv.base / "etc/firewall/simple-portknock-list").write_text(simple_list)
    srv.write_config(simple="yes", **{"FW_PORTKNOCK_SET_SIZE": "2048", **TIMERS, **settings})
    assert "applied" in srv.apply().stdout
    after = _state_of(status(lab3.server, srv.root), wanted)
    assert {k: v and v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}, after
    assert all(0 < after[k][2] <= before[k][2] for k in wanted), (before, after)
    if "set size" in change:
        from awp.compile.nftables import state_sets
        from awp.lists import MAX_KNOCKS
        wanted_sets = len(state_sets(4096, MAX_KNOCKS - 1))
        assert awp_table(lab3.server).count("\tsize 4096\n") == wanted_sets, "every state set was made anew"

    knock(lab3, c1, (C, D, E), family=6)
    assert connects(lab3, c1, 6), "mid-sequence across the re-apply"
    assert connects(lab3, c2), "open window kept"
    assert wait_connect(c3, lab3.server_ip4(c3), ADVANCED_PORT), "grant kept"


# --- 5. coexistence with other tables and with iptables-nft rules -------------------------------

ADMIN = """table inet admin {{
	chain input {{
		type filter hook input priority {priority}; policy drop;
		ct state established,related accept
		iif "lo" accept
		tcp dport {{ {accepted} }} accept
	}}
}}
"""
ADMIN_CASES = {  # name: (priority, ports the admin accepts, awp sees the knocks, port 22 opens)
    "accepts 22, after awp": ("filter", (PORT,), True, True),
    "accepts only 8080, after awp": ("filter", (8080,), True, False),
    "accepts 22, before awp": ("filter - 20", (PORT,), False, False),
    "accepts 22 and the knocks, before awp": ("filter - 20", (PORT, *SEQ), True, True),
}


@pytest.mark.parametrize("case", sorted(ADMIN_CASES))
def test_another_table_with_policy_drop(lab, tmp_path, backend, case):
    """A table `inet admin` with `policy drop` on input. A drop in any base chain is final and
    awp's accept does not override it: a knock opens port 22 only where the admin's table
    accepts port 22 (awp then does the gating), and the knocks reach awp only where the
    admin's chain comes after awp's (priority filter - 10) or accepts them too. Where the
    admin's table drops port 22, `awp status` still shows the knocker as open."""
    priority, accepted, seen, opens = ADMIN_CASES[case]
    c1, c2 = lab.clients
    lab.server.nft(["-f", "-"], input=ADMIN.format(priority=priority, accepted=", ".join(map(str, accepted))))
    root = setup(lab, tmp_path, backend, families=(4,))
    assert not connects(lab, c1, expect=False) and not connects(lab, c2, expect=False)
    knock(lab, c1, SEQ)
    assert connects(lab, c1, expect=opens) is opens, case
    assert not connects(lab, c2, expect=False), "a source that did not knock"
    awp_says_open = (PORT, c1.ip4) in sources(status(lab.server, root), "open")
    assert awp_says_open is seen, case


FOREIGN_IPTABLES = {  # policy drop, the protected port accepted: awp gates it
    4: [["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-A", "INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "ACCEPT"],
        ["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"], ["-N", "MYCHAIN"],
        ["-A", "MYCHAIN", "-s", "198.18.9.0/24", "-j", "RETURN"], ["-P", "INPUT", "DROP"]],
    6: [["-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "ACCEPT"], ["-A", "FORWARD", "-j", "DROP"]],
}


def _iptables_nft(host) -> tuple[str, str]:
    return host.iptables_save(4, "nft"), host.iptables_save(6, "nft")


def test_iptables_nft_rules_stay_byte_identical_and_knocking_works(lab, tmp_path, backend):
    c1, c2 = lab.clients
    for family, rules in FOREIGN_IPTABLES.items():
        for rule in rules:
            lab.server.iptables(rule, family)
    before = _iptables_nft(lab.server)
    root = setup(lab, tmp_path, backend, families=(4,))
    assert _iptables_nft(lab.server) == before and holders(lab.server) == {"nftables"}
    assert not connects(lab, c1, expect=False)
    knock(lab, c1, SEQ)
    assert connects(lab, c1) and not connects(lab, c2, expect=False)
    assert _iptables_nft(lab.server) == before
    assert lab.server.awp(["remove"], root).returncode == 0
    assert _iptables_nft(lab.server) == before and not holders(lab.server)


FOREIGN_NFT = """table ip awp {
	chain c {
		ip saddr 198.18.9.9 counter drop
	}
}
table inet filter {
	set blocked {
		type ipv4_addr
		elements = { 198.18.9.9 }
	}

	counter seen {
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @blocked counter name "seen" drop
	}
}
"""


def test_remove_and_turning_off_delete_inet_awp_and_nothing_else(lab, tmp_path, backend):
    """Foreign nft tables (one named `ip awp`: same name, other family, not awp's) and an
    iptables-nft rule: `nft list ruleset` after FW_PORTKNOCK="no" and after `awp remove` is
    the foreign part exactly, and with awp applied it is the foreign part plus inet awp."""
    lab.server.nft(["-f", "-"], input=FOREIGN_NFT)
    lab.server.iptables(["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"])
    foreign = lab.server.nft_ruleset()
    assert "table ip awp" in foreign and "table ip filter" in foreign
    on = root_with(tmp_path, backend)
    for off in ({"FW_PORTKNOCK": "no"}, {"FW_PORTKNOCK_SIMPLE": "no"}):
        apply(lab, on)
        applied = lab.server.nft_ruleset()
        assert "table inet awp" in applied and without_awp(snapshot(lab.server))["nft"] == foreign
        assert "removed awp's rules" in apply(lab, root_with(tmp_path, backend, **off)).stdout
        assert lab.server.nft_ruleset() == foreign, off
    apply(lab, on)
    removed = lab.server.awp(["remove"], on)
    assert removed.returncode == 0 and "nftables" in removed.stdout, removed.stdout
    assert lab.server.nft_ruleset() == foreign


# --- 6. loads the kernel refuses leave the previous inet awp table as it was -----------------


def _spoil_nft_load(argv, stdin, real):
    """intercept: the `nft -f -` load gets one more command, which the kernel refuses."""
    if argv[:3] == ["nft", "-f", "-"]:
        stdin += "add rule inet awp input jump no_such_chain\n"
    return real(argv, stdin)


def test_a_refused_nft_load_leaves_the_previous_table_and_its_state(lab, tmp_path, backend):
    """awp in-process, its nft commands run in the server namespace, the load spoiled."""
    from awp.errors import ApplyError

    c1, c2 = lab.clients
    root = setup(lab, tmp_path, backend, families=(4,), **TIMERS)
    serve(lab, (4,), OTHER_PORT)
    knock(lab, c1, (A, B))
    knock(lab, c2, SEQ)
    table, before = awp_table(lab.server), sources(status(lab.server, root))
    runner = netns_runner(lab.server.name, _spoil_nft_load)
    chosen, plan = plan_in(root_with(tmp_path, backend, DOOR + OTHER_DOOR, **TIMERS), runner)
    with pytest.raises(ApplyError, match="nft refused .* the running ruleset is unchanged"):
        chosen.apply(plan)
    assert awp_table(lab.server) == table
    after = sources(status(lab.server, root))
    assert {k: v["state"] for k, v in after.items()} == {k: v["state"] for k, v in before.items()}
    knock(lab, c1, (C, D, E))
    assert connects(lab, c1) and connects(lab, c2), "progress and open window survived"
    assert connects(lab, c2, port=OTHER_PORT), "the refused load's new door is not there"


def test_shrinking_the_sets_below_what_they_hold_is_refused_and_changes_nothing(lab3, tmp_path, backend):
    """1,100 spoofed first knocks fill progress4 and pos1_4 beyond 1,024; FW_PORTKNOCK_SET_SIZE=1024 would
    need them copied into smaller sets. awp refuses before the kernel does (which would say
    "Too many open files in system"), names the set, and the table stays as it was."""
    c1, c2, c3 = lab3.clients
    root = setup(lab3, tmp_path, backend, families=(4,), FW_PORTKNOCK_SET_SIZE="2048", **TIMERS)
    knock(lab3, c1, (A, B))
    assert spoofed_syns(c2, lab3.server_ip4(c2), A, FLOOD, rate=10_000)["sent"] == FLOOD
    table = awp_table(lab3.server)
    shrink = lab3.server.awp(["-s", "-f"], root_with(tmp_path, backend, FW_PORTKNOCK_SET_SIZE=str(SMALL),
                                                      **TIMERS))
    assert shrink.returncode == 4, shrink.stderr
    assert re.fullmatch(rf"awp: error: nftables: FW_PORTKNOCK_SET_SIZE={SMALL} is smaller than what awp's sets "
                        r"hold now \(((pos1_4|progress4): \d+ entries(, )?)+\); nothing was changed\. .*\n", shrink.stderr), shrink.stderr
    assert awp_table(lab3.server) == table
    knock(lab3, c1, (C, D, E))
    assert connects(lab3, c1)


# --- 7. a switch of backend ------------------------------------------------------------------


def test_switching_from_iptables_nft_to_nftables(lab, tmp_path, backend):
    """awp applied on iptables-nft, c1 knocked and holds a session; the setting is switched to
    nftables and applied: awp's iptables chains are gone, inet awp is there, the session
    lives on, knocking works. c1's open window does not move across (it lived in xt_recent):
    a new connection of c1 needs a new knock."""
    c1, c2 = lab.clients
    setup(lab, tmp_path, "iptables-nft", families=(4,), **TIMERS)
    knock(lab, c1, SEQ)
    session = c1.open_session(server_addr(lab, c1), PORT)
    assert holders(lab.server) == {"iptables-nft"}
    switched = apply(lab, root_with(tmp_path, backend, **TIMERS))
    assert "removed awp's rules from the iptables-nft backend (now on nftables)" in switched.stdout
    assert holders(lab.server) == {"nftables"}
    assert session.alive(), "an established session survives the switch"
    assert not connects(lab, c1, expect=False), "c1's window stayed behind in xt_recent"
    assert not connects(lab, c2, expect=False)
    knock(lab, c2, SEQ)
    knock(lab, c1, SEQ)
    assert connects(lab, c2) and connects(lab, c1)
    assert session.alive()
    session.close()


# --- 8. the advanced listener on nftables ----------------------------------------------------

DECISION = r"knock (accepted|rejected) .*src={} "


def _decisions(srv, mark: int, src: str) -> list[str]:
    regex = re.compile(DECISION.format(re.escape(src)))
    return [line for line in srv.log.since(mark).splitlines() if regex.search(line)]


def _one_datagram(srv, lab, payload: bytes, expect: str) -> str:
    """Send payload once from c1; return its decision line, once a later datagram from c2 was
    decided too (so that a second line about c1's, if the kernel logged it twice, would be
    in the log by then)."""
    c1, c2 = lab.clients
    mark = srv.log.mark()
    send(c1, lab.server_ip4(c1), [payload])
    srv.log.wait(DECISION.format(re.escape(c1.ip4)), mark)
    send(c2, lab.server_ip4(c2), [ref_mac("wrongsecret2", c2.ip4, safe_now()).encode() + b"\n"])
    srv.log.wait(DECISION.format(re.escape(c2.ip4)), mark)
    lines = _decisions(srv, mark, c1.ip4)
    assert len(lines) == 1 and re.search(expect, lines[0]), lines
    return lines[0]


def test_one_datagram_one_decision_line_and_a_close_with_nothing_open(lab, servers, backend):
    srv = servers(lab)
    srv.start()
    lab.server.serve_tcp(ADVANCED_PORT)
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    log_rules = [l.strip() for l in awp_table(lab.server).splitlines() if " group " in l]
    assert log_rules and all(r.endswith(("drop", "reject")) for r in log_rules), "every NFLOG rule ends the packet"

    line = _one_datagram(srv, lab, srv.macs.payload(CLOSE, c1.ip4), "knock accepted decision=nothing-to-close")
    assert f"src={c1.ip4} knock_port={KNOCK_PORT} port={ADVANCED_PORT} " in line
    _one_datagram(srv, lab, srv.macs.payload(OPEN, c1.ip4), "knock accepted decision=open")
    assert wait_connect(c1, dst, ADVANCED_PORT)
    _one_datagram(srv, lab, ref_mac("wrongsecret1", c1.ip4, safe_now()).encode() + b"\n", "reason=bad-mac")
    _one_datagram(srv, lab, b"0123456789", "reason=malformed")
    _one_datagram(srv, lab, srv.macs.payload(CLOSE, c1.ip4), "knock accepted decision=close")
    assert refused(c1, dst, ADVANCED_PORT)


# --- bad environment: no nft program ----------------------------------------------------------


def test_without_the_nft_program_the_error_names_the_setting(lab, tmp_path, backend):
    """FW_PORTKNOCK_BACKEND="nftables" on a host where `nft` is not found (PATH without it)."""
    root = root_with(tmp_path, backend)
    before = snapshot(lab.server)
    cmd, extra = awp_command()
    result = lab.server.run(["env", "PATH=/nonexistent", *cmd, "--root", root, "-s", "-f"], check=False,
                            env={**os.environ, **extra})
    assert result.returncode == 6, result.stderr
    assert result.stderr.startswith('awp: error: FW_PORTKNOCK_BACKEND="nftables" needs the nft program'), result.stderr
    assert "Traceback" not in result.stderr and snapshot(lab.server) == before
