"""One iptables table (IPv4 or IPv6) through iptables-restore: one atomic --noflush load.

awp/backend/iptables.py puts two of these together into the iptables backend."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from awp.backend.runner import Runner, run
from awp.compile import compile_family, compile_nat, render_restore
from awp.compile.ruleset import DIGEST_TAG, ENTRY, HOOKS, PREFIX, KernelState, Ruleset, hook_lines
from awp.model import Config
from awp.errors import ApplyError, EnvironmentProblem

log = logging.getLogger(__name__)

_HOOK_LINE = f"-A INPUT -j {ENTRY}"
_DIGEST_RE = re.compile(re.escape(DIGEST_TAG) + r"([0-9a-f]{16})")


@dataclass
class IptablesTable:
    family: int
    variant: str
    runner: Runner = run
    table: str = "filter"  # "nat" while a door forwards (portknock-doors)
    last_save: str = field(default="", repr=False, compare=False)  # the whole save snapshot() read

    @property
    def tool(self) -> str:
        return ("iptables" if self.family == 4 else "ip6tables") + f"-{self.variant}"

    def snapshot(self, save: str | None = None) -> str:
        """This table as iptables-save prints it (restore syntax); "" if there is none. `save`:
        the whole iptables-save output, if already read.

        Not `-t filter`: iptables-nft-save then prints an empty filter table even where none
        exists, and a rollback could not tell that awp's load created it."""
        if save is None:
            result = self.runner([f"{self.tool}-save"])
            if result.returncode != 0:
                raise ApplyError(f"{self.tool}-save failed: {_first(result.stderr)}")
            save = result.stdout
        self.last_save = save
        return filter_section(save, self.table)

    def state(self, snapshot: str | None = None) -> KernelState:
        return parse_state(self.snapshot() if snapshot is None else snapshot)

    def compile(self, config: Config) -> Ruleset:
        return compile_nat(config, self.family) if self.table == "nat" else compile_family(config, self.family)

    def render(self, desired: Ruleset, current: KernelState) -> str:
        return render_restore(desired, current)

    def rollback(self, snapshot: str) -> None:
        """Put awp's part of the table back as in `snapshot`. On nf_tables, a filter table that
        did not exist before (awp's load created it) is deleted again if nothing else is in it."""
        self.load(rollback_text(snapshot, self.state(), self.table))
        if f"*{self.table}" not in snapshot:
            self.drop_if_empty()

    def drop_if_empty(self) -> None:
        """On nf_tables, delete this table if it holds nothing at all (awp's load made it): the
        nat table after the last forwarding door went, or a filter table a rollback emptied."""
        if self.variant != "nft" or not _empty_table(self.snapshot(), self.table):
            return
        family = "ip" if self.family == 4 else "ip6"
        try:
            result = self.runner(["nft", "delete", "table", family, self.table])
        except EnvironmentProblem as exc:  # iptables-nft does not need the nft program
            log.warning("could not delete the empty %s %s table: %s", family, self.table, exc)
            return
        if result.returncode != 0:
            log.warning("could not delete the empty %s %s table: %s", family, self.table, _first(result.stderr))

    def test(self, text: str) -> None:
        self._restore(["--test", "--noflush", "--wait"], text, "validating")

    def load(self, text: str) -> None:
        self._restore(["--noflush", "--wait"], text, "loading")

    def _restore(self, flags: list[str], text: str, what: str) -> None:
        result = self.runner([f"{self.tool}-restore", *flags], text)
        if result.returncode != 0:
            raise ApplyError(f"IPv{self.family}: {self.tool}-restore refused the rules while {what}: "
                             f"{_first(result.stderr)}")


def parse_state(save: str) -> KernelState:
    """awp's chains, hook and digest as found in iptables-save output of the filter table."""
    chains = frozenset(_awp_chains(save))
    lines = {line.strip() for line in save.splitlines()}
    hook = _HOOK_LINE in lines
    hooks = frozenset(name for name, builtin in HOOKS.items() if name != ENTRY and f"-A {builtin} -j {name}" in lines)
    match = _DIGEST_RE.search(save)
    return KernelState(chains=chains, hook=hook, digest=match.group(1) if match else None, hooks=hooks)


def rollback_text(snapshot: str, now: KernelState, table: str = "filter") -> str:
    """Restore input that puts awp's part of the table back as it was in `snapshot`."""
    before = parse_state(snapshot)
    body = [line for line in snapshot.splitlines() if line.startswith(f"-A {PREFIX}")]
    declared = sorted(before.chains | now.chains)
    lines = [f"*{table}", *(f":{name} - [0:0]" for name in declared), *body]
    lines += hook_lines(before.hooked, now.hooked)
    lines += [f"-X {name}" for name in sorted(now.chains - before.chains)]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def filter_section(save: str, table: str = "filter") -> str:
    """The lines from "*filter" (or another table) to its COMMIT, or "" when the table is absent."""
    lines = save.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == f"*{table}"), None)
    if start is None:
        return ""
    end = next((i for i in range(start, len(lines)) if lines[i].strip() == "COMMIT"), len(lines) - 1)
    return "".join(lines[start:end + 1])


BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


def _empty_table(save: str, table: str = "filter") -> bool:
    """Only the built-in chains, policy ACCEPT, and no rule at all."""
    lines = [l for l in save.splitlines() if l and not l.startswith("#")]
    chains = {l.split()[0][1:]: l.split()[1] for l in lines if l.startswith(":")}
    rules = [l for l in lines if l.startswith("-")]
    return not rules and chains == {name: "ACCEPT" for name in BUILTIN[table]}


def _awp_chains(save: str):
    for line in save.splitlines():
        if line.startswith(f":{PREFIX}"):
            yield line[1:].split()[0]


def _first(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:3]) if lines else "no error message"
