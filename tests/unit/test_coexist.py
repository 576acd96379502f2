"""What other tables do to awp's ports, from `nft -j list ruleset` documents (pure)."""

from __future__ import annotations

import pytest

from awp.backend.coexist import _save_answer, foreign_findings, unused_port_answer

OWN = {("inet", "awp")}


def chain(name, hook="input", policy="accept", family="inet", table="admin"):
    return {"chain": {"family": family, "table": table, "name": name, "hook": hook, "policy": policy,
                      "type": "filter", "prio": 0}}


def rule(chain_name, *expr, family="inet", table="admin"):
    return {"rule": {"family": family, "table": table, "chain": chain_name, "expr": list(expr)}}


def dport(right):
    return {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": right}}


ACCEPT, DROP, REJECT = {"accept": None}, {"drop": None}, {"reject": None}
ESTABLISHED = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}


def doc(*items):
    return {"nftables": [{"metainfo": {}}, *items]}


def test_a_drop_policy_without_an_accept_for_the_port_blocks_it():
    ruleset = doc(chain("input", policy="drop"), rule("input", ESTABLISHED, ACCEPT), rule("input", dport(22), ACCEPT))
    found = foreign_findings(ruleset, [22, 2222], OWN)
    assert len(found) == 1 and "protected port 2222" in found[0] and "inet admin chain input" in found[0]


@pytest.mark.parametrize("right", [22, {"set": [80, 22]}, {"range": [20, 30]}, {"set": [{"range": [1, 100]}]}])
def test_an_accept_by_literal_set_or_range_lets_awp_do_the_gating(right):
    ruleset = doc(chain("input", policy="drop"), rule("input", dport(right), ACCEPT))
    assert foreign_findings(ruleset, [22], OWN) == []


def test_an_explicit_drop_of_the_port_blocks_it_even_under_an_accept_policy():
    ruleset = doc(chain("input"), rule("input", dport(22), DROP))
    assert "protected port 22" in foreign_findings(ruleset, [22], OWN)[0]


def test_an_accept_of_everything_before_the_policy_is_no_block():
    assert foreign_findings(doc(chain("input", policy="drop"), rule("input", ACCEPT)), [22], OWN) == []


def test_a_prerouting_dnat_of_the_port_diverts_it():
    ruleset = doc(chain("pre", hook="prerouting", table="nat", family="ip"),
                  rule("pre", dport(22), {"dnat": {"addr": "198.18.5.5", "port": 22}}, family="ip", table="nat"))
    assert "redirects or dnats it" in foreign_findings(ruleset, [22], OWN)[0]


def test_awps_own_table_is_left_out():
    ruleset = doc(chain("input", policy="drop", table="awp"), rule("input", DROP, table="awp"))
    assert foreign_findings(ruleset, [22], OWN) == []


# --- what an unused port answers (FW_PORTKNOCK_STEALTH="auto") ------------------------------


@pytest.mark.parametrize("items, answer", [
    ((), "reject"),  # no firewall: the kernel answers
    ((chain("input"), rule("input", ESTABLISHED, ACCEPT)), "reject"),
    ((chain("input", policy="drop"), rule("input", dport(22), ACCEPT)), "drop"),
    ((chain("input"), rule("input", dport(22), ACCEPT), rule("input", DROP)), "drop"),
    ((chain("input"), rule("input", REJECT)), "reject"),
    ((chain("input", policy="drop"), rule("input", REJECT)), "reject"),  # the first catch-all decides
    ((chain("input", policy="drop"), rule("input", {"xt": {"type": "target", "name": "REJECT"}})), "reject"),
    ((chain("output", hook="output", policy="drop"),), "reject"),  # not an input chain
])
def test_unused_port_answer_from_other_tables(items, answer):
    assert unused_port_answer(doc(*items), OWN) == answer


@pytest.mark.parametrize("save, answer", [
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n", "reject"),
    ("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n", "drop"),
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n", "reject"),
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n", "drop"),
    ("*filter\n:INPUT DROP [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n", "reject"),
    ("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT DROP [0:0]\nCOMMIT\n", "drop"),  # IPv6 drops
])
def test_unused_port_answer_from_iptables_save(save, answer):
    assert _save_answer(save) == answer


def test_a_chain_before_awps_that_drops_the_knock_ports_is_named():
    early = {"chain": {**chain("early", policy="drop")["chain"], "prio": -20}}
    ruleset = doc(early, rule("early", dport(22), ACCEPT, table="admin"))
    found = foreign_findings(ruleset, [22], OWN, (("tcp", 7481), ("udp", 2000)), priority=-10)
    assert [f.split(":")[0] for f in found] == ["knock port 7481/tcp", "knock port 2000/udp"]
    late = doc(chain("late", policy="drop"), rule("late", dport(22), ACCEPT))  # priority 0: after awp
    assert foreign_findings(late, [22], OWN, (("tcp", 7481),), priority=-10) == []
