"""Native nftables backend: awp's one `inet awp` table, loaded by one `nft -f` transaction.

A re-apply flushes and redefines the chains and keeps the sets, so every source's progress,
open window and grant survives it. A set whose definition changes (its size) is recreated
and its elements are copied into it with the time they had left. Status reads the sets'
remaining timeouts and the named counters as the kernel reports them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from awp.backend import Address, Inspection, Plan, SourceState
from awp.backend.runner import Runner, run
from awp.compile.nftables import DIGEST_TAG, FAMILY, PRIORITY, REFUSED, TABLE, NftRuleset, NftSet, compile_nft
from awp.errors import ApplyError, EnvironmentProblem
from awp.model import Config

log = logging.getLogger(__name__)
T = f"{FAMILY} {TABLE}"


def nft_usable(runner: Runner = run) -> bool:
    """`nft` exists and the kernel answers nf_tables requests (or would, to root: a check run
    by another user is told "Operation not permitted")."""
    try:  # check mode: the kernel validates the batch and nothing is listed or changed
        result = runner(["nft", "-c", "add", "table", FAMILY, TABLE])
    except EnvironmentProblem:
        return False
    return result.returncode == 0 or "Operation not permitted" in result.stderr


@dataclass(frozen=True)
class TableState:
    """What `inet awp` holds now (from `nft -j -t list table`), elements left out."""

    exists: bool = False
    chains: frozenset[str] = frozenset()
    sets: dict[str, tuple] = field(default_factory=dict)  # name -> (key, data, size)
    counters: frozenset[str] = frozenset()
    digest: str | None = None
    listing: str = ""  # `nft -t list table` text: what a rollback loads back


def parse_table(doc: dict) -> TableState:
    chains, sets, counters, digest = set(), {}, set(), None
    for item in doc.get("nftables", []):
        if "chain" in item:
            chains.add(item["chain"]["name"])
        for kind in ("set", "map"):
            if kind in item:
                s = item[kind]
                key = s["type"] if isinstance(s["type"], str) else " . ".join(s["type"])
                sets[s["name"]] = (key, s.get("map"), s.get("size"))
        if "counter" in item:
            counters.add(item["counter"]["name"])
        comment = item.get("rule", {}).get("comment", "")
        if comment.startswith(DIGEST_TAG):
            digest = comment[len(DIGEST_TAG):]
    return TableState(True, frozenset(chains), sets, frozenset(counters), digest)


def render_transaction(desired: NftRuleset, current: TableState, migrate: dict[str, list[str]]) -> str:
    """The `nft -f` script turning `current` into `desired`, in one transaction."""
    if desired.empty:
        return f"delete table {T}\n" if current.exists else ""
    lines = [f"add table {T}", f"flush table {T}"]
    wanted = {c.name for c in desired.chains}
    lines += [f"delete chain {T} {name}" for name in sorted(current.chains - wanted)]
    by_name = {s.name: s for s in desired.sets}
    for name, definition in sorted(current.sets.items()):
        if name not in by_name or _definition(by_name[name]) != definition:
            lines.append(f"delete {'map' if definition[1] else 'set'} {T} {name}")
    lines += [s.declaration() for s in desired.sets]
    lines += [f"add counter {T} {name}" for name in desired.counters]
    lines += [f"delete counter {T} {name}" for name in sorted(current.counters - set(desired.counters))]
    lines += [f"flush {'map' if by_name[name].data else 'set'} {T} {name}"
              for name in desired.flush_sets if name in current.sets]
    for chain in desired.chains:
        hook = f" {{ type filter hook input priority {PRIORITY}; policy accept; }}" if chain.base else (
            f" {{ {chain.hook} }}" if chain.hook else "")
        lines.append(f"add chain {T} {chain.name}{hook}")
    lines += [f"add rule {T} {c.name} {rule}" for c in desired.chains for rule in c.rules]
    for name, elements in sorted(migrate.items()):
        lines += [f"add element {T} {name} {{ {e} }}" for e in elements]
    return "\n".join(lines) + "\n"


def _overflowing(desired: NftRuleset, migrate: dict[str, list[str]]) -> str:
    """"pos1_4: 1101 entries, ..." for the sets whose entries would not fit their new size."""
    sizes = {s.name: s.size for s in desired.sets}
    return ", ".join(f"{name}: {len(elems)} entries" for name, elems in sorted(migrate.items())
                     if len(elems) > sizes[name])


def _definition(s: NftSet) -> tuple:
    return (s.key, s.data, s.size)


class NftablesBackend:
    name = "nftables"
    max_doors = None  # any number the port space allows: 10,000 doors of 4 knocks load in 2 s

    def __init__(self, runner: Runner = run):
        self.runner = runner

    # --- plan, apply, rollback --------------------------------------------------------

    def current(self) -> TableState:
        result = self._nft("-j", "-t", "list", "table", FAMILY, TABLE, check=False)
        if result.returncode != 0:
            if "No such file or directory" in result.stderr:
                return TableState()
            raise ApplyError(f"nft cannot list table {T}: {_first(result.stderr)}")
        state = parse_table(json.loads(result.stdout or "{}"))
        listing = self._nft("-t", "list", "table", FAMILY, TABLE).stdout
        return TableState(state.exists, state.chains, state.sets, state.counters, state.digest, listing)

    def plan(self, config: Config) -> Plan:
        self._require()
        desired = compile_nft(config)
        current = self.current()
        changed = (current.digest != desired.digest) if not desired.empty else current.exists
        migrate = self._migrations(desired, current) if changed else {}
        text = render_transaction(desired, current, migrate) if changed else ""
        return Plan(self.name, changed, text, (current, desired, _overflowing(desired, migrate)))

    def apply(self, plan: Plan) -> None:
        if not plan.changed:
            return
        _, desired, overflowing = plan.steps
        if overflowing:  # the kernel would refuse it with "Too many open files in system"
            raise ApplyError(f"nftables: FW_PORTKNOCK_SET_SIZE={desired.sets[0].size} is smaller than what awp's "
                             f"sets hold now ({overflowing}); nothing was changed. Choose a larger size, or "
                             "apply again once those entries have timed out")
        self._load(plan.text, "loading")
        log.info("loaded backend=nftables table=%s chains=%d digest=%s", T, len(desired.chains),
                 desired.digest or "none")

    def rollback(self, plan: Plan) -> None:
        """Put `inet awp` back as it was before `plan` was applied (set elements stay)."""
        if not plan.changed:
            return
        before = plan.steps[0]
        now = self.current()
        if not before.exists:
            script = f"delete table {T}\n" if now.exists else ""
        else:
            script = "".join([f"add table {T}\nflush table {T}\n",
                              *(f"delete chain {T} {c}\n" for c in sorted(now.chains - before.chains)),
                              *(f"delete counter {T} {c}\n" for c in sorted(now.counters - before.counters)),
                              *(f"delete {'map' if now.sets[n][1] else 'set'} {T} {n}\n"
                                for n in sorted(set(now.sets) - set(before.sets))),
                              before.listing])
        if script:
            self._load(script, "rolling back")
        log.warning("rolled back backend=nftables table=%s", T)

    def _migrations(self, desired: NftRuleset, current: TableState) -> dict[str, list[str]]:
        """Elements of sets whose definition changes, with the time they have left."""
        found = {}
        for s in desired.sets:
            old = current.sets.get(s.name)
            if old is not None and old != _definition(s):
                found[s.name] = [_element_text(e) for e in self.elements(s.name)]
        return {name: elems for name, elems in found.items() if elems}

    def _load(self, script: str, what: str) -> None:
        result = self.runner(["nft", "-f", "-"], script)
        if result.returncode != 0:
            raise ApplyError(f"nftables: nft refused the {TABLE} table while {what}; the running ruleset "
                             f"is unchanged: {_first(result.stderr)}")

    def _require(self) -> None:
        if not nft_usable(self.runner):
            raise EnvironmentProblem('FW_PORTKNOCK_BACKEND="nftables" needs the nft program (Debian package '
                                     "nftables) and a kernel with nf_tables; neither answered")

    def _nft(self, *args: str, check: bool = True):
        result = self.runner(["nft", *args])
        if check and result.returncode != 0:
            raise ApplyError(f"nft {' '.join(args)} failed: {_first(result.stderr)}")
        return result

    # --- kernel state: elements, grants, status ---------------------------------------

    def elements(self, name: str) -> list[dict]:
        """Elements of one set or map: {"key": (addr, port) or addr, "value", "expires"}."""
        kind = "map" if name.startswith("progress") else "set"
        result = self._nft("-j", "list", kind, FAMILY, TABLE, name, check=False)
        if result.returncode != 0:
            return []
        return parse_elements(json.loads(result.stdout or "{}"))

    def grants(self, config: Config):
        from awp.backend.nft_grants import NftGrants
        return NftGrants(self, config)

    def bans(self, config: Config):
        from awp.backend.nft_bans import NftBans
        return NftBans(self)

    def inspect(self, config: Config) -> Inspection:
        from awp.backend.nft_status import inspect
        return inspect(self, config)

    def advice(self, config: Config) -> list[str]:
        return ruleset_advice(self.runner, config, {(FAMILY, TABLE)})

    def unused_port_answer(self) -> str:
        return ruleset_answer(self.runner, {(FAMILY, TABLE)})

    def counters(self) -> dict[str, int]:
        result = self._nft("-j", "list", "counters", "table", FAMILY, TABLE, check=False)
        if result.returncode != 0:
            return {}
        found = {}
        for item in json.loads(result.stdout or "{}").get("nftables", []):
            if "counter" in item:
                found[item["counter"]["name"]] = int(item["counter"].get("packets", 0))
        return found


def ruleset_advice(runner: Runner, config: Config, own: set[tuple[str, str]], priority: int = -10) -> list[str]:
    """Warnings about other nftables tables that block or divert a protected port, or drop
    a knock port before awp's chain (at `priority`) sees it."""
    from awp.backend.coexist import foreign_findings

    ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
    if not ports:
        return []
    try:
        result = runner(["nft", "-j", "-t", "list", "ruleset"])
    except EnvironmentProblem:
        return []
    if result.returncode != 0:
        return []
    knocks = tuple(("tcp", k) for d in config.active_simple for k in d.knocks)
    knocks += tuple(("udp", d.knock_port) for d in config.active_advanced)
    return foreign_findings(json.loads(result.stdout or "{}"), ports, own, knocks, priority)


def ruleset_answer(runner: Runner, own: set[tuple[str, str]], legacy_save: str = "") -> str:
    """What an unused port of this host answers, from the other tables (see coexist.py), and
    from iptables-legacy's, which `nft list ruleset` does not show but the kernel runs too."""
    from awp.backend.coexist import unused_port_answer

    try:
        result = runner(["nft", "-j", "-t", "list", "ruleset"])
    except EnvironmentProblem:
        result = None
    doc = json.loads(result.stdout or "{}") if result is not None and result.returncode == 0 else {}
    return unused_port_answer(doc, own, legacy_save + legacy_saves(runner))


def legacy_saves(runner: Runner) -> str:
    """iptables-legacy-save of both families, awp's own lines left out. Without -t it lists
    the tables that exist, so it loads no module and creates no table."""
    text = ""
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
        try:
            result = runner([tool])
        except EnvironmentProblem:
            continue
        if result.returncode == 0:
            text += "".join(line + "\n" for line in result.stdout.splitlines() if "AWP-" not in line)
    return text


def parse_elements(doc: dict) -> list[dict]:
    found = []
    for item in doc.get("nftables", []):
        body = item.get("set") or item.get("map")
        for raw in (body or {}).get("elem", []):
            value = None
            if isinstance(raw, list):  # a map element: [key part, value]
                raw, value = raw
            elem = raw["elem"] if isinstance(raw, dict) and "elem" in raw else {"val": raw}  # bare: no timeout
            key = elem["val"]
            key = tuple(key["concat"]) if isinstance(key, dict) and "concat" in key else key
            found.append({"key": key, "value": value, "expires": int(elem.get("expires", 0))})
    return found


def _element_text(e: dict) -> str:
    key = " . ".join(str(k) for k in e["key"]) if isinstance(e["key"], tuple) else str(e["key"])
    value = f" : {e['value']:#010x}" if isinstance(e["value"], int) else ""
    return f"{key} timeout {max(1, e['expires'])}s{value}"


def _first(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:3]) if lines else "no error message"


__all__ = ["NftablesBackend", "Address", "SourceState", "REFUSED", "nft_usable"]
