"""What other nftables tables do to awp's protected ports (`awp check`, `awp -s -f` warnings).

In nftables every base chain on a hook sees the packet: a drop anywhere is final, and an
accept in awp's chain does not override another table's drop. So a foreign input chain
with `policy drop` must itself accept the protected port (and let awp do the gating), and a
prerouting dnat or redirect of the port sends its traffic past awp's input chain.

Pure: works on the document `nft -j list ruleset` prints. Heuristic by design: it reads
literal ports, anonymous sets and ranges in `tcp dport` (or `th dport`) matches.
"""

from __future__ import annotations


def foreign_findings(doc: dict, ports: list[int], own: set[tuple[str, str]],
                     knocks: tuple[tuple[str, int], ...] = (), priority: int = 0) -> list[str]:
    """ports: protected TCP ports; knocks: (proto, port) of the knock ports, which a chain
    that runs before awp's (a lower priority than `priority`) must not drop either."""
    chains, rules = _foreign(doc, own)
    found = []
    for key, chain in sorted(chains.items()):
        where = f"table {key[0]} {key[1]} chain {key[2]}"
        body = rules.get(key, [])
        if chain.get("hook") == "input":
            found += [_blocked(port, where) for port in ports if _drops(chain, body, port)]
            if int(chain.get("prio", 0)) < priority:
                found += [_knock_blocked(proto, port, where) for proto, port in knocks
                          if _drops(chain, body, port, proto)]
        if chain.get("hook") == "prerouting":
            found += [_diverted(port, where) for port in ports if _diverts(body, port)]
    return found


def _foreign(doc: dict, own: set[tuple[str, str]]):
    chains, rules = {}, {}
    for item in doc.get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            if (c["family"], c["table"]) not in own and "hook" in c:
                chains[(c["family"], c["table"], c["name"])] = c
        if "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r.get("expr", []))
    return chains, rules


def _drops(chain: dict, rules: list[list[dict]], port: int, proto: str = "tcp") -> bool:
    """A drop verdict for `port` (explicit, or the policy with no accept for it first)."""
    for expr in rules:
        verdict = _verdict(expr)
        if verdict in ("accept", "drop", "reject") and _dport_matches(expr, port, proto):
            return verdict != "accept"
        if verdict == "accept" and _matches_everything(expr):
            return False  # accepts everything
    return chain.get("policy") == "drop"


def _diverts(rules: list[list[dict]], port: int) -> bool:
    return any(_dport_matches(expr, port) and any(k in s for s in expr for k in ("dnat", "redirect"))
               for expr in rules)


def _verdict(expr: list[dict]) -> str | None:
    for stmt in expr:
        for key in ("accept", "drop", "reject"):
            if key in stmt:
                return key
    return None


def _matches(expr: list[dict]) -> list[dict]:
    return [s["match"] for s in expr if "match" in s]


def _matches_everything(expr: list[dict]) -> bool:
    """No statement of the rule lets only some packets on: no match, no rate limit or quota,
    and no xt match (iptables-nft shows `-m conntrack`, for one, as {"xt": {"type": "match"}})."""
    return not any(key in stmt for stmt in expr for key in ("match", "limit", "quota")) and \
        not any(stmt.get("xt", {}).get("type") == "match" for stmt in expr)


def _dport_matches(expr: list[dict], port: int, proto: str = "tcp") -> bool:
    """The rule has a destination-port match (`proto` or th) and `port` is in it."""
    for m in _matches(expr):
        left = m.get("left", {}).get("payload", {})
        if left.get("field") == "dport" and left.get("protocol") in (proto, "th", None):
            return m.get("op") in ("==", "in") and _contains(m.get("right"), port)
    return False


def _contains(right, port: int) -> bool:
    if isinstance(right, int):
        return right == port
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return low <= port <= high
    if isinstance(right, dict) and "set" in right:
        return any(_contains(item, port) for item in right["set"])
    return False


def _blocked(port: int, where: str) -> str:
    return (f"protected port {port}: {where} drops it, so a knock opens nothing; accept tcp dport "
            f"{port} in that chain and let awp do the gating (awp(8), COEXISTENCE)")


def _knock_blocked(proto: str, port: int, where: str) -> str:
    return (f"knock port {port}/{proto}: {where} runs before awp's chain and drops it, so no knock "
            f"reaches awp; accept {proto} dport {port} there too (awp(8), COEXISTENCE)")


def _diverted(port: int, where: str) -> str:
    return (f"protected port {port}: {where} redirects or dnats it before awp's input chain sees it, "
            "so awp cannot protect it")


# --- what an unused port of this host answers (FW_PORTKNOCK_STEALTH="auto") -------------------


def unused_port_answer(doc: dict, own: set[tuple[str, str]], legacy_save: str = "") -> str:
    """"drop" if some input chain of another table drops what nothing else accepted (its
    policy or a last rule that matches everything), "reject" if one rejects it or none does:
    then the kernel itself answers (a reset, a port unreachable)."""
    chains, rules = _foreign(doc, own)
    answers = {_chain_answer(c.get("policy"), rules.get(k, [])) for k, c in chains.items() if c.get("hook") == "input"}
    answers.add(_save_answer(legacy_save))
    return "drop" if "drop" in answers else "reject"


def _chain_answer(policy: str | None, rules: list[list[dict]]) -> str:
    for expr in rules:
        if _matches_everything(expr):
            verdict = _verdict(expr) or _xt_target(expr)
            if verdict in ("drop", "reject", "accept"):
                return "reject" if verdict in ("reject", "accept") else "drop"
    return "drop" if policy == "drop" else "reject"


def _xt_target(expr: list[dict]) -> str | None:
    """iptables-nft's REJECT shows in nft's JSON as an xt target."""
    for stmt in expr:
        name = str(stmt.get("xt", {}).get("name", "")).lower()
        if name in ("reject", "drop"):
            return name
    return None


def _save_answer(save: str) -> str:
    """The same from iptables-save text of filter tables: INPUT's first rule that matches
    everything with a final verdict decides, else INPUT's policy. Other tables that follow a
    filter table in the text (their own INPUT chains) are cut off at its COMMIT."""
    answers = set()
    for table in save.split("*filter")[1:]:
        lines = table.split("\nCOMMIT")[0].splitlines()
        final = [line.split()[3] for line in lines if line.startswith("-A INPUT -j ")
                 and len(line.split()) >= 4 and line.split()[3] in ("ACCEPT", "DROP", "REJECT")]
        policy_drop = any(line.startswith(":INPUT DROP") for line in lines)
        answers.add(("drop" if final[0] == "DROP" else "reject") if final else ("drop" if policy_drop else "reject"))
    return "drop" if "drop" in answers else "reject"
