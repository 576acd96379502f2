"""What FW_PORTKNOCK_STEALTH="auto" and the coexistence warnings read from the other tables:
pure functions on `nft -j list ruleset` documents and iptables-save text, and the legacy
tables read through an injected runner."""

from __future__ import annotations

from awp.backend.coexist import foreign_findings, unused_port_answer
from awp.backend.nftables import legacy_saves, ruleset_answer
from awp.backend.runner import Result
from awp.errors import EnvironmentProblem

# iptables-nft's INPUT as nft shows it: `-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`
# is an xt match, not a native one; policy DROP
CONNTRACK_ACCEPT = [{"xt": {"type": "match", "name": "conntrack"}}, {"counter": {"packets": 0, "bytes": 0}},
                    {"accept": None}]


def doc(policy: str, *rules: list[dict]) -> dict:
    chain = {"family": "ip", "table": "filter", "name": "INPUT", "type": "filter", "hook": "input", "prio": 0,
             "policy": policy}
    return {"nftables": [{"chain": chain}, *({"rule": {"family": "ip", "table": "filter", "chain": "INPUT",
                                                        "expr": expr}} for expr in rules)]}


def test_an_xt_match_is_not_a_rule_that_matches_everything():
    assert unused_port_answer(doc("drop", CONNTRACK_ACCEPT), set()) == "drop"
    assert foreign_findings(doc("drop", CONNTRACK_ACCEPT), [22], set()) != []


def test_a_rate_limited_accept_is_not_one_either():
    limited = [{"limit": {"rate": 10, "per": "second"}}, {"accept": None}]
    assert unused_port_answer(doc("drop", limited), set()) == "drop"


def test_an_accept_of_everything_still_decides():
    assert unused_port_answer(doc("drop", [{"accept": None}]), set()) == "reject"
    assert foreign_findings(doc("drop", [{"accept": None}]), [22], set()) == []


SAVE_FILTER_ACCEPT_THEN_MANGLE = """*filter
:INPUT ACCEPT [0:0]
COMMIT
*mangle
:INPUT ACCEPT [0:0]
-A INPUT -j DROP
COMMIT
"""


def test_a_save_reads_the_filter_table_only():
    assert unused_port_answer({}, set(), SAVE_FILTER_ACCEPT_THEN_MANGLE) == "reject"
    assert unused_port_answer({}, set(), "*filter\n:INPUT DROP [0:0]\nCOMMIT\n") == "drop"


def runner_for(outputs: dict[str, str | None]):
    """argv[0] -> stdout; None: the program is missing."""
    seen = []

    def runner(argv, stdin=None):
        seen.append(argv)
        out = outputs.get(argv[0])
        if out is None:
            raise EnvironmentProblem(f"{argv[0]} not found")
        return Result(0, out, "")

    runner.seen = seen
    return runner


def test_iptables_legacy_tables_count_for_the_nft_backends():
    runner = runner_for({"nft": '{"nftables": []}', "iptables-legacy-save": "*filter\n:INPUT DROP [0:0]\nCOMMIT\n",
                         "ip6tables-legacy-save": ""})
    assert ruleset_answer(runner, {("inet", "awp")}) == "drop"
    assert ["iptables-legacy-save"] in runner.seen, "without -t: a -t would create the table"


def test_awps_own_legacy_lines_and_missing_tools_are_left_out():
    awp_only = "*filter\n:INPUT ACCEPT [0:0]\n:AWP-INPUT - [0:0]\n-A INPUT -j AWP-INPUT\n-A AWP-INPUT -j DROP\nCOMMIT\n"
    assert "AWP-" not in legacy_saves(runner_for({"iptables-legacy-save": awp_only}))
    assert legacy_saves(runner_for({})) == ""
    assert ruleset_answer(runner_for({"nft": '{"nftables": []}'}), set()) == "reject"
