"""What an admin can see of a namespace's firewall, for the tests that are about the kernel
rather than about packets: every ruleset view (to compare byte for byte), which backend holds
awp's state, and `awp status --json`.

awp's own names appear here only to tell awp's part of a ruleset from the foreign part:
`table inet awp` (nftables) and chains named AWP-* (iptables-nft, iptables-legacy).
"""

from __future__ import annotations

import json
import re

import pytest

# Every behavioural test runs on these two (the `backend` fixture in conftest.py).
BACKENDS = ("nftables", "iptables-nft")
# iptables-legacy (x_tables) works on this kernel too. It compiles to the same
# iptables-restore text as iptables-nft, so only the core tests of both modes run on it
# as well (on_every_backend), which keeps the tier's time down.
EVERY_BACKEND = (*BACKENDS, "iptables-legacy")
on_every_backend = pytest.mark.parametrize("backend", EVERY_BACKEND)
AWP_TABLE = ("inet", "awp")


def snapshot(host) -> dict[str, str]:
    """Every firewall view of the namespace: both iptables variants, both families (every
    table iptables-save prints), and `nft list ruleset`. Built-in chains' policy counters
    (`:OUTPUT ACCEPT [12:960]`, which x_tables keeps and local traffic moves) read [0:0];
    rule counters, which iptables-save leaves out without -c, and nft's are kept."""
    views = {f"{variant} v{family}": _POLICY_COUNTERS.sub(r"\1[0:0]", host.iptables_save(family, variant))
             for variant in ("nft", "legacy") for family in (4, 6)}
    views["nft"] = host.nft_ruleset()
    return views


_POLICY_COUNTERS = re.compile(r"(?m)^(:\S+ (?:ACCEPT|DROP) )\[\d+:\d+\]")


def without_awp(views: dict[str, str]) -> dict[str, str]:
    """The foreign part of a snapshot: awp's iptables lines and chains, and its inet table,
    taken out; everything else exactly as the kernel printed it."""
    out = {name: "".join(l for l in text.splitlines(keepends=True) if "AWP" not in l)
           for name, text in views.items() if name != "nft"}
    out["nft"] = _nft_without_awp(views["nft"])
    return out


def _nft_without_awp(text: str) -> str:
    """`table inet awp` and iptables-nft's AWP-* chains (and jumps to them) taken out of an
    nft listing: chains are blocks from a "\tchain NAME {" line to a "\t}" line, one blank
    line between two of them."""
    out: list[str] = []
    skip = None  # the line that ends the block being skipped
    for line in text.splitlines(keepends=True):
        if skip is not None:
            skip = None if line == skip else skip
            continue
        if line == "table inet awp {\n":
            skip = "}\n"
        elif line.startswith("\tchain AWP-"):
            skip = "\t}\n"
        elif "AWP-" not in line:
            out.append(line)
    text = "".join(out)
    while "\n\n\n" in text or "{\n\n" in text or "\n\n}" in text:
        text = text.replace("\n\n\n", "\n\n").replace("{\n\n", "{\n").replace("\n\n}", "\n}")
    text = text.strip("\n")
    return text + "\n" if text else ""


def holders(host) -> set[str]:
    """The backends that hold some awp state in this namespace."""
    found = set()
    if host.nft(["list", "table", *AWP_TABLE], check=False).returncode == 0:
        found.add("nftables")
    for variant in ("nft", "legacy"):
        if any("AWP" in host.iptables_save(family, variant) for family in (4, 6)):
            found.add(f"iptables-{variant}")
    return found


def awp_table(host) -> str | None:
    """`nft -t list table inet awp` (set elements left out), None if there is none."""
    result = host.nft(["-t", "list", "table", *AWP_TABLE], check=False)
    return result.stdout if result.returncode == 0 else None


def status(host, root: str) -> dict:
    """`awp status --json`, parsed."""
    result = host.awp(["status", "--json"], root)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def sources(doc: dict, state: str | None = None) -> dict[tuple[int, str], dict]:
    """(port, source) -> entry of `awp status --json`, optionally only those in `state`."""
    return {(s["port"], s["source"]): s for s in doc["sources"] if state in (None, s["state"])}
