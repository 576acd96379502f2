"""A recording runner that answers like nft 1.0.6 for one `inet awp` table, for the
backend-tier tests of NftablesBackend. Nothing is run.

The JSON it prints has the shape nft 1.0.6 prints (metainfo, handles, `"flags": ["timeout"]`,
a list type for concatenations, `"map"` for a map's value type, rule comments as a field, set
elements with timeout and expires); nft_samples/ holds real output, captured in a throwaway
network namespace from the golden case `advanced`, that test_nftables_recorded.py compares
this with.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from awp.backend.runner import Result
from awp.compile.nftables import NftRuleset
from awp.lists import parse_advanced, parse_simple
from awp.model import Config
from awp.settings import parse_settings

SAMPLES = Path(__file__).parent / "nft_samples"
GOLDEN = Path(__file__).parents[1] / "golden"
META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
T = ["inet", "awp"]
NO_SUCH = "Error: No such file or directory\nlist {what} inet awp{name}\n{marks}\n"
NO_NF_TABLES = Result(1, "", "Error: Could not process rule: Operation not supported\n")
JSON_WARNING = "warning: stmt ops map have no json callback\n"  # nft 1.0.6 on awp's map updates
OK = Result(0, "", "")
_COMMENT = re.compile(r' comment "([^"]*)"$')


def golden_config(case: str) -> Config:
    """tests/golden/<case> read the way tests/golden/conftest.py reads it."""
    base = GOLDEN / case
    settings = parse_settings((base / "config").read_text(), "config")
    simple = parse_simple((base / "simple-portknock-list").read_text(), "simple-portknock-list")
    adv = base / "advanced-portknock-list"
    return Config(settings, simple, parse_advanced(adv.read_text(), adv.name) if adv.exists() else ())


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def _set_body(s, handle: int) -> dict:
    body = {"family": "inet", "name": s.name, "table": "awp",
            "type": s.key if " . " not in s.key else s.key.split(" . "), "handle": handle}
    if s.data:
        body["map"] = s.data
    return body | {"size": s.size, "flags": ["timeout"]}


def table_doc(rs: NftRuleset) -> dict:
    """`nft -j -t list table inet awp` of a table holding `rs`."""
    handle = itertools.count(1)
    items: list[dict] = [META, {"table": {"family": "inet", "name": "awp", "handle": 1}}]
    sets = [{"map" if s.data else "set": _set_body(s, next(handle))} for s in rs.sets]
    items += [{"counter": {"family": "inet", "name": n, "table": "awp", "handle": next(handle), "packets": 0,
                           "bytes": 0}} for n in rs.counters] + sets
    for c in rs.chains:
        chain = {"family": "inet", "table": "awp", "name": c.name, "handle": next(handle)}
        if c.base:
            chain |= {"type": "filter", "hook": "input", "prio": -10, "policy": "accept"}
        items.append({"chain": chain})
    for c in rs.chains:
        for text in c.rules:
            rule = {"family": "inet", "table": "awp", "chain": c.name, "handle": next(handle)}
            match = _COMMENT.search(text)
            if match:
                rule["comment"] = match.group(1)
            items.append({"rule": rule | {"expr": [_COMMENT.sub("", text)]}})
    return {"nftables": items}


def listing_of(rs: NftRuleset) -> str:
    """`nft -t list table inet awp`, enough of it for a rollback test to recognise."""
    chains = "".join(f"\tchain {c.name} {{\n" + "".join(f"\t\t{r}\n" for r in c.rules) + "\t}\n" for c in rs.chains)
    return f"table inet awp {{\n{chains}}}\n"


def elements_doc(s, elements: list[tuple]) -> dict:
    """`nft -j list set|map inet awp NAME`; elements: (key, value, timeout, expires)."""
    body = _set_body(s, 1)
    found = []
    for key, value, timeout, expires in elements:
        elem = {"elem": {"val": {"concat": list(key)} if isinstance(key, tuple) else key,
                         "timeout": timeout, "expires": expires}}
        found.append([elem, value] if s.data else elem)
    if found:
        body["elem"] = found
    return {"nftables": [META, {"map" if s.data else "set": body}]}


class FakeNft:
    """The runner. table: what `inet awp` holds (None: no such table); elements: set name ->
    [(key, value, timeout, expires)]; load: what `nft -f -` returns (or a function of the
    script that returns it); usable=False: nf_tables does not answer at all."""

    def __init__(self, table: NftRuleset | None = None, *, elements=None, listing: str | None = None,
                 load=OK, usable: bool = True, packets=None):
        self.table = table
        self.elements = elements or {}
        self.listing = listing  # None: made from `table`
        self.load = load
        self.usable = usable
        self.packets = packets or {}
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv, stdin=None):
        self.calls.append((list(argv), stdin))
        if not self.usable:
            return NO_NF_TABLES
        if argv == ["nft", "-c", "add", "table", "inet", "awp"]:
            return Result(0, "table inet awp\n" if self.table else "", "")
        if argv == ["nft", "-f", "-"]:
            return self.load(stdin) if callable(self.load) else self.load
        if self.table is None:
            return Result(1, "", NO_SUCH.format(what=argv[-3], name="", marks=" " * 16 + "^^^"))
        return self._list(argv)

    def _list(self, argv):
        if argv == ["nft", "-j", "-t", "list", "table", *T]:
            return Result(0, json.dumps(table_doc(self.table)), JSON_WARNING * 2)
        if argv == ["nft", "-t", "list", "table", *T]:
            return Result(0, listing_of(self.table) if self.listing is None else self.listing, "")
        if argv == ["nft", "-j", "list", "counters", "table", *T]:
            counters = [{"counter": {"family": "inet", "name": n, "table": "awp", "handle": 1,
                                     "packets": self.packets.get(n, 0), "bytes": 0}} for n in self.table.counters]
            return Result(0, json.dumps({"nftables": [META, *counters]}), "")
        if argv[:3] == ["nft", "-j", "list"] and argv[4:6] == T:
            found = [s for s in self.table.sets if s.name == argv[6] and ("map" if s.data else "set") == argv[3]]
            if found:
                return Result(0, json.dumps(elements_doc(found[0], self.elements.get(argv[6], []))), "")
            return Result(1, "", NO_SUCH.format(what=argv[3], name=f" {argv[6]}", marks="^" * 9))
        raise AssertionError(f"unexpected command {argv}")

    @property
    def scripts(self) -> list[str]:
        """stdin of every `nft -f -`, in order."""
        return [stdin for argv, stdin in self.calls if argv == ["nft", "-f", "-"]]
