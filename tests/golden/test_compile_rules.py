"""Hand-written assertions on the compiled rules, so a careless golden regeneration cannot bless
a regression: the hook, the protected-port leaf, the timers, no secrets, logarithmic dispatch,
and what a re-apply over an existing kernel state declares, deletes and unhooks."""

from __future__ import annotations

import functools
import math
import shlex

import pytest

from awp.compile import KernelState, Ruleset, compile_family, render_restore
from awp.compile.tree import FANOUT
from awp.lists import parse_simple
from awp.model import Config
from awp.settings import parse_settings

SETTINGS = 'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_STEP_TIMEOUT="7"\nFW_PORTKNOCK_OPEN_WINDOW="45"\n'
HOOK = "-I INPUT 1 -j AWP-INPUT"


def compiled(simple: str, settings: str = SETTINGS, family: int = 4, state=KernelState()) -> str:
    config = Config(parse_settings(settings, "config"), parse_simple(simple, "simple"))
    return render_restore(compile_family(config, family), state)


def chains_of(text: str) -> dict[str, list[list[str]]]:
    """Chain name -> its rules as argument lists, from iptables-restore text."""
    chains: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, name, *args = shlex.split(line) if '"' in line else line.split()
            chains[name].append(args)
    return chains


def recent_checks(text: str) -> list[tuple[str, str]]:
    """(list name, --seconds value or '') of every `-m recent --rcheck` in the text."""
    found = []
    for rules in chains_of(text).values():
        for args in rules:
            for i, arg in enumerate(args):
                if arg == "--name" and args[i + 2] == "--rcheck":
                    seconds = args[i + 4] if args[i + 3:i + 4] == ["--seconds"] else ""
                    found.append((args[i + 1], seconds))
    return found


def doors(count: int) -> str:
    """`count` doors on ports 10000+7i, knocks on the next four ports, out of order; the two
    ports after them are not awp's, so the tree has gaps a packet can fall into."""
    return "".join(f"{b}:{b + 3},{b + 1},{b + 4},{b + 2}\n" for b in (10000 + 7 * i for i in range(count)))


@functools.cache
def compiled_doors(count: int) -> str:
    return compiled(doors(count))


# --- the hook and the protected port -------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_hook_inserted_once_on_a_fresh_kernel(family):
    lines = compiled("22:7481,2203,9127,4410\n", family=family).splitlines()
    assert lines.count(HOOK) == 1
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert lines.index(HOOK) > max(i for i, line in enumerate(lines) if line.startswith("-A "))


def test_protected_port_leaf_accepts_established_and_ends_with_drop():
    leaf = chains_of(compiled("22:7481,2203,9127,4410\n"))["AWP-I22"]
    assert leaf[0] == ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
    assert leaf[-1] == ["-j", "DROP"]
    accepts = [r for r in leaf if r[-2:] == ["-j", "ACCEPT"]]
    assert all("ESTABLISHED,RELATED" in r or "awp22-open" in r for r in accepts), accepts


def test_allowlist_accepts_only_its_own_family():
    settings = SETTINGS + 'FW_PORTKNOCK_ALLOW="192.0.2.0/24 2001:db8::/32"\n'
    v4 = chains_of(compiled("22:7481,2203,9127,4410\n", settings, 4))["AWP-I22"]
    v6 = chains_of(compiled("22:7481,2203,9127,4410\n", settings, 6))["AWP-I22"]
    assert ["-s", "192.0.2.0/24", "-j", "ACCEPT"] in v4 and not any("2001:db8::/32" in r for r in v4)
    assert ["-s", "2001:db8::/32", "-j", "ACCEPT"] in v6 and not any("192.0.2.0/24" in r for r in v6)


def test_open_list_is_checked_with_the_open_window():
    checks = recent_checks(compiled("22:7481,2203,9127,4410\n443:5821,3307,6113\n"))
    opens = [(name, s) for name, s in checks if name.endswith("-open")]
    assert sorted(opens) == [("awp22-open", "45"), ("awp443-open", "45")]


def test_every_knock_check_uses_the_step_timeout():
    checks = recent_checks(compiled("22:7481,2203,9127,4410\n443:5821,3307,6113\n"))
    knocks = [(name, s) for name, s in checks if not name.endswith("-open")]
    assert len(knocks) > 10
    assert {s for _, s in knocks} == {"7"}, knocks
    assert ("awp-prog", "7") in knocks


# --- the advanced case: no secret in any rule --------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_no_rule_mentions_a_secret(load_case, family):
    config = load_case("advanced")
    assert config.active_advanced
    text = render_restore(compile_family(config, family), KernelState())
    assert "AWP-UDP" in text
    for door in config.active_advanced:
        for secret in (door.open_secret.value.decode(), door.close_secret.value.decode()):
            assert secret not in text
    assert "Secret" not in text


# --- the advanced knock port: every datagram logged once ------------------------------------


def knock_leaf(load_case, family: int) -> list[list[str]]:
    """The rules of the knock port's leaf chain in the golden advanced case."""
    return chains_of(render_restore(compile_family(load_case("advanced"), family), KernelState()))["AWP-U2000"]


def udp_leaf_verdict(leaf: list[list[str]], ip_length: int) -> tuple[int, str]:
    """(NFLOG rules a UDP datagram of this IP length hits, the verdict that ends it), taking
    every rate limit as not yet reached."""
    logged = 0
    for args in leaf:
        if "--length" in args:
            lo, hi = map(int, args[args.index("--length") + 1].split(":"))
            if not lo <= ip_length <= hi:
                continue
        target = args[args.index("-j") + 1]
        if target == "NFLOG":
            logged += 1
        elif target in ("DROP", "ACCEPT"):
            return logged, target
    return logged, "falls through"


@pytest.mark.parametrize(("family", "header"), [(4, 20), (6, 40)])
@pytest.mark.parametrize("payload", [0, 1, 63, 64, 65, 66, 1000])
def test_each_knock_port_datagram_is_logged_once_and_dropped(load_case, family, header, payload):
    """NFLOG does not end rule processing: the knock-sized rule must be followed by a drop of
    the same sizes, or the misfits' rule logs every knock a second time."""
    assert udp_leaf_verdict(knock_leaf(load_case, family), header + 8 + payload) == (1, "DROP")


@pytest.mark.parametrize(("family", "lengths"), [(4, "92:93"), (6, "112:113")])
def test_knock_sized_means_64_or_65_bytes_of_udp_payload(load_case, family, lengths):
    """IPv4 -m length is the total length (20-byte header, no options); IPv6 it is the payload
    length plus the 40-byte header (no extension headers). UDP adds 8."""
    leaf = knock_leaf(load_case, family)
    sized = [args for args in leaf if "--length" in args]
    assert [args[args.index("--length") + 1] for args in sized] == [lengths, lengths]
    assert [args[-1] for args in sized] == ["256", "DROP"]  # NFLOG (--nflog-size 256), then DROP
    assert leaf.index(sized[1]) == leaf.index(sized[0]) + 1


# --- dispatch through the port tree ------------------------------------------------------------


def walk(chains: dict[str, list[list[str]]], port: int) -> tuple[str | None, int, int]:
    """Follow a TCP packet to `port` from a fresh source (no SYN state, in no recent list)
    from AWP-INPUT through the tree. Returns (leaf chain or None, rules evaluated, tree depth)."""
    chain, rules, depth = "AWP-INPUT", 0, 0
    while True:
        for args in chains[chain]:
            rules += 1
            if _matches(args, port):
                chain = args[args.index("-g") + 1]
                if not chain.startswith("AWP-IDLE"):
                    return chain, rules, depth
                depth += 1
                break
        else:
            return None, rules, depth


def _matches(args: list[str], port: int) -> bool:
    if "-g" not in args or "--syn" in args or "recent" in args or args[args.index("-p") + 1] != "tcp":
        return False
    if "--dport" not in args:
        return True
    lo, _, hi = args[args.index("--dport") + 1].partition(":")
    return int(lo) <= port <= int(hi or lo)


def test_entry_chain_sends_tcp_through_the_tree_to_each_ports_leaf():
    text = compiled("22:7481,2203,9127,4410\n443:5821,3307,6113\n")
    chains = chains_of(text)
    assert ["-p", "tcp", "-g", "AWP-IDLE"] in chains["AWP-INPUT"]
    assert all("--dport" in r for r in chains["AWP-IDLE"])
    for port in (22, 443, 7481, 2203, 9127, 4410, 5821, 3307, 6113):
        assert walk(chains, port)[0] == f"AWP-I{port}"
    for port in (1, 21, 23, 80, 444, 9128, 65535):
        assert walk(chains, port)[0] is None


def worst_case(count: int) -> tuple[int, int]:
    """(rules evaluated, tree depth), the worst over non-awp ports next to every awp port."""
    chains = chains_of(compiled_doors(count))
    ports = {int(name[5:]) for name in chains if name.startswith("AWP-I") and name[5:].isdigit()}
    probes = {p + d for p in ports for d in (-1, 1)} - ports | {1, 65535}
    results = [walk(chains, p) for p in sorted(probes)]
    assert all(leaf is None for leaf, _, _ in results)
    return max(r for _, r, _ in results), max(d for _, _, d in results)


def test_cost_of_a_packet_to_another_port_grows_logarithmically():
    cost = {n: worst_case(n) for n in (1, 10, 100, 1000)}
    rules = {n: c[0] for n, c in cost.items()}
    depth = {n: c[1] for n, c in cost.items()}
    levels = math.ceil(math.log(5 * 1000 / FANOUT, FANOUT)) + 1
    assert depth[1000] <= depth[1] + levels, depth
    # at most FANOUT range rules per level: nowhere near a walk over 5000 ports
    assert rules[1000] <= rules[1] + FANOUT * (levels + 1), rules
    assert rules[10] <= rules[100] <= rules[1000], rules


def nesting(chains: dict, name: str, seen=()) -> int:
    """Deepest chain reference (-j or -g) path below `name`, counting `name` itself."""
    targets = {args[args.index(flag) + 1] for args in chains.get(name, ())
               for flag in ("-j", "-g") if flag in args and args[args.index(flag) + 1] in chains}
    return 1 + max((nesting(chains, t, (*seen, name)) for t in targets if t not in seen), default=0)


def test_chains_nest_well_below_the_nf_tables_limit_of_16():
    """nf_tables refuses a ruleset whose chains nest deeper than 16 (INPUT counts as one)."""
    for count in (1, 1000, 4000):
        assert 1 + nesting(chains_of(compiled_doors(count)), "AWP-INPUT") <= 12, count


def test_chain_names_fit_the_kernel_limit():
    for name in chains_of(compiled_doors(1000)):
        assert len(name) <= 28, name  # XT_EXTENSION_MAXNAMELEN - 1


# --- re-apply over an existing kernel state ------------------------------------------------------


def test_existing_chains_are_declared_and_unwanted_ones_deleted():
    state = KernelState(chains=frozenset({"AWP-INPUT", "AWP-IDLE", "AWP-I80", "AWP-OLD"}), hook=True,
                        digest="0123456789abcdef")
    lines = compiled("22:7481,2203,9127,4410\n", state=state).splitlines()
    for name in ("AWP-INPUT", "AWP-IDLE", "AWP-I80", "AWP-OLD", "AWP-I22"):
        assert lines.count(f":{name} - [0:0]") == 1  # declaring flushes it under --noflush
    assert [line for line in lines if line.startswith("-X ")] == ["-X AWP-I80", "-X AWP-OLD"]
    assert HOOK not in lines and not any(line.startswith("-D ") for line in lines)
    last_append = max(i for i, line in enumerate(lines) if line.startswith("-A "))
    assert lines.index("-X AWP-I80") > last_append
    assert not any("AWP-I80" in line or "AWP-OLD" in line for line in lines if line.startswith("-A "))


def test_empty_ruleset_over_hooked_kernel_unhooks_then_deletes_everything():
    state = KernelState(chains=frozenset({"AWP-INPUT", "AWP-IDLE", "AWP-I22"}), hook=True, digest="0" * 16)
    lines = render_restore(Ruleset(4, ()), state).splitlines()
    assert "-D INPUT -j AWP-INPUT" in lines
    deleted = [line for line in lines if line.startswith("-X ")]
    assert sorted(deleted) == ["-X AWP-I22", "-X AWP-IDLE", "-X AWP-INPUT"]
    assert lines.index("-D INPUT -j AWP-INPUT") < lines.index("-X AWP-INPUT")
    assert not any(line.startswith(("-A ", "-I ")) for line in lines)


def test_disabled_config_over_a_hooked_kernel_removes_awp():
    state = KernelState(chains=frozenset({"AWP-INPUT"}), hook=True, digest="0" * 16)
    text = compiled("22:7481,2203,9127,4410\n", 'FW_PORTKNOCK="no"\n', state=state)
    assert text == "*filter\n:AWP-INPUT - [0:0]\n-D INPUT -j AWP-INPUT\n-X AWP-INPUT\nCOMMIT\n"


def test_empty_ruleset_over_empty_kernel_is_an_empty_commit():
    assert render_restore(Ruleset(6, ()), KernelState()) == "*filter\nCOMMIT\n"


# --- determinism ---------------------------------------------------------------------------------


def test_render_is_deterministic_and_independent_of_list_order():
    lines = ["22:7481,2203,9127,4410", "443:5821,3307,6113", "8443:1201,1999,1100"]
    first = compiled("\n".join(lines) + "\n")
    assert compiled("\n".join(lines) + "\n") == first
    assert compiled("\n".join(reversed(lines)) + "\n") == first


def test_digest_changes_with_the_rules():
    a = compile_family(Config(parse_settings(SETTINGS, "c"), parse_simple("22:7481,2203,9127\n", "s")), 4)
    b = compile_family(Config(parse_settings(SETTINGS, "c"), parse_simple("22:7481,9127,2203\n", "s")), 4)
    assert a.tag and b.tag and a.tag != b.tag
    assert f"awp:digest={a.tag}" in render_restore(a, KernelState())


def test_reject_style_iptables_rejects_with_tcp_reset_in_tcp_rules_only():
    import dataclasses as dc

    from awp.compile.iptables import compile_family
    from awp.lists import parse_advanced, parse_simple
    from awp.model import Config, Settings

    settings = Settings(enabled=True, simple=True, advanced=True, stealth="reject")
    config = Config(settings, parse_simple("22:7481,2203,9127\n", "s"),
                    parse_advanced("2222,2000,opensecret1,closesecret1\n", "a"))
    for family in (4, 6):
        rules = [r.args for c in compile_family(config, family).chains for r in c.rules]
        resets = [a for a in rules if "tcp-reset" in a]
        assert resets and all(a[a.index("-p") + 1] == "tcp" for a in resets)  # iptables needs -p tcp
        unreach = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
        assert any(unreach in a for a in rules) and not [a for a in rules if "DROP" in a]
    drop_style = dc.replace(config, settings=dc.replace(settings, stealth="drop"))
    assert not [r for c in compile_family(drop_style, 4).chains for r in c.rules if "REJECT" in r.args]
