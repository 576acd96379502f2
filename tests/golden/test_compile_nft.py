"""Hand-written assertions on compile_nft, so a careless regeneration of expected.nft cannot
bless a regression: what a knock datagram can reach, dispatch whose cost does not grow with
the doors, IPv6 off, the allowlist per family, the digest, per-door counters, chain names.
Whether nft loads it is for the netns tier."""

from __future__ import annotations

import dataclasses
import re

import pytest

from awp.backend.nftables import TableState, render_transaction
from awp.compile.nftables import DIGEST_TAG, NftRuleset, compile_nft
from awp.lists import parse_advanced, parse_simple
from awp.model import Config
from awp.settings import parse_settings

CASES = ["advanced", "example-1-2-3-4-5", "ipv6-off", "many-doors", "one-door", "two-doors-allowlist"]
UDP_HEADER = 8
# Words nft's scanner (src/scanner.l) reads as keywords in any context: a chain with such a
# name could not be the target of a jump or goto.
NFT_KEYWORDS = frozenset("""
    accept add ah all arp bridge chain comment comp counter create ct day define delete describe
    destroy device devices drop dst dynamic element elements esp ether exists expires export fib flags
    flow flowtable flush frag fwd get goto gre hbh hook hour icmp icmpv6 igmp import include index inet
    insert interval ip ip6 jump last limit list log map mark masquerade meta meter mh missing monitor
    netdev notrack numgen offload osf policy position priority queue quota random redefine redirect
    reject rename replace reset return rt ruleset sctp secmark set size snat dnat socket synproxy
    table tcp th time timeout tproxy type typeof udp udplite undefine update vlan vmap vxlan xt
""".split())


def chains(rs: NftRuleset) -> dict[str, tuple[str, ...]]:
    return {c.name: c.rules for c in rs.chains}


def config_of(settings: str, simple: str = "22:7481,2203,9127\n", advanced: str = "") -> Config:
    return Config(parse_settings('FW_PORTKNOCK="yes"\n' + settings, "config"), parse_simple(simple, "simple"),
                  parse_advanced(advanced, "advanced") if advanced else ())


def vmap_targets(rule: str) -> dict[int, str]:
    return {int(port): chain for port, chain in re.findall(r"(\d+) : goto (\w+)", rule)}


def with_settings(config: Config, **changes) -> Config:
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, **changes))


# --- what a knock datagram can reach --------------------------------------------------------


def reachable_logs(rules: tuple[str, ...], length: int) -> list[str]:
    """The NFLOG rules of a chain a UDP datagram of `length` (header included) can reach: up
    to the first rule that surely matches it and ends the chain (a rate limit may not match)."""
    found = []
    for rule in rules:
        bounds = re.search(r"udp length (\d+)(?:-(\d+))?", rule)
        if bounds and not int(bounds[1]) <= length <= int(bounds[2] or bounds[1]):
            continue
        if "log group" in rule:
            found.append(rule)
        if "limit rate" not in rule and rule.split()[-1] in ("drop", "accept"):
            break
    return found


@pytest.mark.parametrize("payload", [64, 65], ids=["bare", "with-trailer"])
def test_a_knock_sized_datagram_hits_exactly_one_nflog_rule_and_it_drops(load_case, payload):
    rs = compile_nft(load_case("advanced"))
    entry = chains(rs)["input"]
    udp = [rule for rule in entry if rule.startswith("udp ")]
    assert len(udp) == 1 and all(" tcp " in f" {rule}" or "nfproto" in rule for rule in entry[:entry.index(udp[0])])
    knock = chains(rs)[vmap_targets(udp[0])[2000]]
    logs = reachable_logs(knock, UDP_HEADER + payload)
    assert len(logs) == 1 and logs[0].endswith(" drop") and "limit" not in logs[0]
    assert "log group 4748 " in logs[0]


def test_datagrams_of_another_size_reach_only_the_rate_limited_nflog_rule(load_case):
    knock = chains(compile_nft(load_case("advanced")))["knock_udp"]
    for length in (UDP_HEADER, UDP_HEADER + 63, UDP_HEADER + 66, 1500):
        logs = reachable_logs(knock, length)
        assert len(logs) == 1 and "limit rate" in logs[0], length


def test_no_other_chain_logs_to_nflog(load_case):
    rs = compile_nft(load_case("advanced"))
    assert {name for name, rules in chains(rs).items() if any("log group" in r for r in rules)} == {"knock_udp"}


# --- dispatch -------------------------------------------------------------------------------


def test_dispatch_is_by_verdict_map_and_the_chains_do_not_grow_with_the_doors(load_case):
    one, many = compile_nft(load_case("one-door")), compile_nft(load_case("many-doors"))
    config = load_case("many-doors")
    ports = {d.port for d in config.active_simple} | {k for d in config.active_simple for k in d.knocks}
    dispatch = [r for r in chains(many)["input"] if r.startswith("tcp dport vmap")]
    assert len(config.active_simple) == 40 and {p for r in dispatch for p in vmap_targets(r)} == ports
    assert {name: len(rules) for name, rules in chains(one).items()} == \
        {name: len(rules) for name, rules in chains(many).items()}
    plain_port_sets = [r for c in many.chains for r in c.rules if re.search(r"(?<!\. )tcp dport (!= )?\{", r)]
    assert not plain_port_sets  # nft loads a plain set of ports ~30x slower than a map


# --- IPv6 off, the allowlist ----------------------------------------------------------------


def test_ipv6_off_returns_ipv6_first_and_has_no_ipv6_rule(load_case):
    rs = compile_nft(load_case("ipv6-off"))
    assert chains(rs)["input"][0] == "meta nfproto ipv6 return"
    rules = [r for c in rs.chains for r in c.rules]
    assert not [r for r in rules if "ip6 " in r or re.search(r"@\w+6\b", r)]


def test_ipv6_on_has_no_nfproto_return(load_case):
    assert not [r for c in compile_nft(load_case("one-door")).chains for r in c.rules if "nfproto" in r]


def test_allowlist_is_one_rule_per_family_on_every_protected_port(load_case):
    rules = chains(compile_nft(load_case("two-doors-allowlist")))["protected"]
    assert rules[:3] == ("ct state established,related accept", "ip saddr { 192.0.2.0/24 } accept",
                         "ip6 saddr { 2001:db8:1::/48 } accept")


def test_allowlist_networks_of_a_family_share_one_set_and_ipv6_off_drops_the_ipv6_ones():
    allow = 'FW_PORTKNOCK_ALLOW="192.0.2.0/24 198.51.100.7 2001:db8::/32"\n'
    on = chains(compile_nft(config_of(allow)))["protected"]
    off = chains(compile_nft(config_of(allow + 'FW_PORTKNOCK_IPV6="no"\n')))["protected"]
    assert "ip saddr { 192.0.2.0/24, 198.51.100.7/32 } accept" in on and "ip6 saddr { 2001:db8::/32 } accept" in on
    assert "ip saddr { 192.0.2.0/24, 198.51.100.7/32 } accept" in off and not [r for r in off if "ip6" in r]


# --- the digest -----------------------------------------------------------------------------


def body(rs: NftRuleset) -> tuple:
    """Everything the table holds, without the digest comment."""
    rules = tuple((c.name, c.base, tuple(r.split(" comment ")[0] for r in c.rules)) for c in rs.chains)
    return rs.sets, rs.counters, rs.flush_sets, rules


def variants(base: Config) -> list[Config]:
    s = base.settings
    return [base, with_settings(base, autoclose=s.autoclose + 60), with_settings(base, step_timeout=s.step_timeout + 1),
            with_settings(base, open_window=s.open_window + 1), with_settings(base, set_size=4096),
            with_settings(base, nflog_group=9), with_settings(base, kernel_log=False), with_settings(base, ipv6=False),
            dataclasses.replace(base, simple=parse_simple("22:7481,2203,9127,4410\n", "elsewhere")),
            dataclasses.replace(base, simple=parse_simple("# moved\n\n22:2203,7481,9127,4410\n", "s"))]


def test_digest_changes_when_anything_in_the_table_changes_and_not_otherwise(load_case):
    compiled = [compile_nft(c) for c in variants(load_case("advanced"))]
    for a in compiled:
        for b in compiled:
            assert (a.digest == b.digest) == (body(a) == body(b))
    assert len({rs.digest for rs in compiled}) == len(compiled) - 2  # autoclose and the list's file/line


def test_digest_is_the_comment_of_the_entry_chains_last_rule_only(load_case):
    rs = compile_nft(load_case("advanced"))
    text = render_transaction(rs, TableState(), {})
    assert text.count(DIGEST_TAG) == 1
    assert chains(rs)["input"][-1].endswith(f' comment "{DIGEST_TAG}{rs.digest}"')
    assert re.fullmatch(r"[0-9a-f]{16}", rs.digest)


# --- counters -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["advanced", "two-doors-allowlist"])
def test_every_door_counts_what_it_lets_in_and_drops(load_case, case):
    config = load_case(case)
    rs = compile_nft(config)
    ports = {d.port for d in config.active_simple} | {d.port for d in config.active_advanced}
    per_door = {f"{kind}_{port}" for port in ports for kind in ("in", "drop")}
    assert set(rs.counters) == {"refused_progress", "refused_open"} | per_door
    rules = chains(rs)["protected"]
    assert rules[-1] == "counter name tcp dport map { " + ", ".join(
        f'{p} : "drop_{p}"' for p in sorted(ports)) + " } drop"
    granted = [r for r in rules if re.search(r"@(open|grant)[46]", r)]
    let_in = "counter name tcp dport map { " + ", ".join(f'{p} : "in_{p}"' for p in sorted(ports)) + " } accept"
    assert granted and all(r.endswith(let_in) for r in granted)


def test_a_full_set_is_counted_as_refused(load_case):
    found = chains(compile_nft(load_case("one-door")))
    for name in [n for n in found if n == "start" or n.startswith("advance_")]:
        assert found[name][-1] == "counter name refused_progress drop", name
    assert "meta mark != 0x1 counter name refused_open drop" in found["complete"]


# --- names and references -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_no_chain_is_named_with_an_nft_keyword(load_case, case):
    for name in chains(compile_nft(load_case(case))):
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name) and name not in NFT_KEYWORDS, name


@pytest.mark.parametrize("case", CASES)
def test_every_jump_and_goto_names_a_chain_of_the_table_and_every_chain_is_reached(load_case, case):
    rs = compile_nft(load_case(case))
    targets = {t for c in rs.chains for r in c.rules for t in re.findall(r"(?:jump|goto) (\w+)", r)}
    assert targets == {c.name for c in rs.chains if not c.base}
    sets = {s.name for s in rs.sets}
    assert {m for c in rs.chains for r in c.rules for m in re.findall(r"@(\w+)(?![\w,])", r)} <= sets


def test_knock_ports_answer_nothing(load_case):
    """Every knock chain ends in a drop, directly or through the chain it goes to."""
    table = chains(compile_nft(load_case("advanced")))
    for name, rules in table.items():
        if name.startswith("knock_"):
            last = rules[-1]
            end = table[last.split()[-1]][-1] if last.startswith("goto ") else last
            assert end.endswith("drop"), name


def test_no_secret_reaches_the_table(load_case):
    text = render_transaction(compile_nft(load_case("advanced")), TableState(), {})
    assert "Secret" not in text


# --- stealth --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["advanced", "one-door"])
def test_reject_style_answers_every_knock_and_closed_port_alike_and_never_drops_them(load_case, case):
    rs = compile_nft(with_settings(load_case(case), stealth="reject"))
    rules = [r for c in rs.chains for r in c.rules]
    assert not [r for r in rules if r.endswith(" drop") or r == "drop"]
    assert any(r.endswith("reject with tcp reset") for r in rules)
    if case == "advanced":
        assert chains(rs)["knock_udp"][-1] == "reject with icmpx port-unreachable"


def test_drop_style_and_unresolved_auto_never_reject(load_case):
    for stealth in ("drop", "auto"):
        rs = compile_nft(with_settings(load_case("advanced"), stealth=stealth))
        assert not [r for c in rs.chains for r in c.rules if "reject" in r]


def test_completion_puts_the_knock_port_back_before_answering(load_case):
    rules = chains(compile_nft(with_settings(load_case("one-door"), stealth="reject")))["complete"]
    sets = [i for i, r in enumerate(rules) if r.startswith("tcp dport set")]
    assert len(sets) == 2 and sets[1] < len(rules) - 2 and rules[-1] == "reject with tcp reset"


def test_only_knocks_starting_with_four_hex_digits_are_logged_in_full(load_case):
    """Hand-written, so a careless regeneration cannot drop the prefilter: random knock-sized
    junk must fall to the misfits' rate-limited rule, not reach the listener at line rate."""
    first = chains(compile_nft(load_case("advanced")))["knock_udp"][0]
    assert first.startswith("udp length 72-73 ")
    for offset in (64, 72, 80, 88):
        assert f"@th,{offset},8 {{ 0x30-0x39, 0x61-0x66 }}" in first
    assert "log group" in first
