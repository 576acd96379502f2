"""Structured rules and the one serialization step to iptables-restore text.

Rules stay tuples of arguments until render_restore(); nothing renders a string and splits
it back. awp owns every chain whose name starts with PREFIX and the hook rule in INPUT.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "AWP-"
ENTRY = "AWP-INPUT"
HOOK = ("-j", ENTRY)
DIGEST_TAG = "awp:digest="
# awp's chains that a built-in chain jumps to: AWP-INPUT always; AWP-FORWARD (filter) and
# AWP-PREROUTING (nat) only while a door forwards (portknock-doors)
HOOKS = {ENTRY: "INPUT", "AWP-FORWARD": "FORWARD", "AWP-PREROUTING": "PREROUTING"}
NAT_ENTRY = "AWP-PREROUTING"


@dataclass(frozen=True)
class Rule:
    args: tuple[str, ...]


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Ruleset:
    """awp's chains for one family (4 or 6). The entry chain comes first; empty = remove all."""

    family: int
    chains: tuple[Chain, ...]
    tag: str | None = None  # digest carried by the entry chain's comment rule
    table: str = "filter"  # or "nat"

    @property
    def hooks(self) -> frozenset[str]:
        """awp's chains of this ruleset that a built-in chain must jump to."""
        return frozenset(name for name in HOOKS if name in self.names)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.chains)

    def digest(self) -> str:
        text = "\n".join(f"{c.name} {_join(r.args)}" for c in self.chains for r in c.rules)
        table = "" if self.table == "filter" else f"{self.table}\n"
        return hashlib.sha256(f"{self.family}\n{table}{text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KernelState:
    """What awp finds of its own in the kernel before an apply (from iptables-save)."""

    chains: frozenset[str] = frozenset()
    hook: bool = False  # INPUT jumps to AWP-INPUT
    digest: str | None = None
    hooks: frozenset[str] = frozenset()  # the other awp chains a built-in chain jumps to

    @property
    def hooked(self) -> frozenset[str]:
        return self.hooks | ({ENTRY} if self.hook else frozenset())


def render_restore(ruleset: Ruleset, current: KernelState) -> str:
    """iptables-restore --noflush input turning `current` into `ruleset`, in one commit."""
    declared = sorted(ruleset.names | current.chains, key=_chain_order)
    lines = [f"*{ruleset.table}", *(f":{name} - [0:0]" for name in declared)]
    lines += [f"-A {c.name} {_join(r.args)}" for c in ruleset.chains for r in c.rules]
    lines += hook_lines(ruleset.hooks, current.hooked)
    lines += [f"-X {name}" for name in sorted(current.chains - ruleset.names, key=_chain_order)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def hook_lines(wanted: frozenset[str], present: frozenset[str]) -> list[str]:
    """Insert the jumps to awp's chains that are wanted and missing, delete the others."""
    lines = [f"-I {HOOKS[name]} 1 -j {name}" for name in HOOKS if name in wanted and name not in present]
    return lines + [f"-D {HOOKS[name]} -j {name}" for name in HOOKS if name in present and name not in wanted]


def with_digest(ruleset: Ruleset) -> Ruleset:
    """Prepend a no-op comment rule carrying the ruleset's digest to the entry chain."""
    if not ruleset.chains:
        return ruleset
    entry, *rest = ruleset.chains
    digest = ruleset.digest()
    tag = Rule(("-m", "comment", "--comment", f"{DIGEST_TAG}{digest}"))
    return Ruleset(ruleset.family, (Chain(entry.name, (tag, *entry.rules)), *rest), digest, ruleset.table)


def _chain_order(name: str) -> tuple[int, str]:
    return (0 if name in (ENTRY, NAT_ENTRY) else 1, name)


def _join(args: tuple[str, ...]) -> str:
    return " ".join(_quote(a) for a in args)


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or arg == "") else arg
