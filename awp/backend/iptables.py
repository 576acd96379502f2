"""The iptables backends (iptables-nft, iptables-legacy): two tables, IPv4 and IPv6.

iptables-restore is atomic per table only, so the backend validates both tables first,
loads them in order, and puts back the ones already loaded if a later one fails. The
transaction is the pair; the workflow never sees a family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from awp.backend import Inspection, Plan
from awp.backend.restore import IptablesTable
from awp.backend.runner import Runner, run
from awp.compile import KernelState, Ruleset
from awp.errors import ApplyError, EnvironmentProblem
from awp.model import Config

log = logging.getLogger(__name__)
FAMILIES = (4, 6)


def detect_variant(runner: Runner = run) -> str:
    """'nft' or 'legacy', as `iptables -V` says of this host."""
    result = runner(["iptables", "-V"])
    if result.returncode != 0:
        raise EnvironmentProblem(f"iptables -V failed: {result.stderr.strip()}")
    if "nf_tables" in result.stdout:
        return "nft"
    if "legacy" in result.stdout:
        return "legacy"
    raise EnvironmentProblem(f"cannot tell the iptables variant from: {result.stdout.strip()}")


@dataclass(frozen=True)
class TablePlan:
    table: IptablesTable
    snapshot: str
    current: KernelState
    desired: Ruleset
    text: str

    @property
    def changed(self) -> bool:
        c = self.current
        return not (c.digest == self.desired.tag and c.chains == self.desired.names
                    and c.hooked == self.desired.hooks)


class IptablesBackend:
    # iptables-restore's time grows faster than the rules: on a 2-core machine 500 doors of 4
    # knocks load in 9 s, 1,000 in about 25 s, 2,000 in 97 s (bench/README.md)
    max_doors = 1000

    def __init__(self, variant: str, runner: Runner = run):
        if variant not in ("nft", "legacy"):
            raise EnvironmentProblem(f"unknown iptables variant {variant!r}")
        self.variant = variant
        self.runner = runner
        self.name = f"iptables-{variant}"
        self.tables = [IptablesTable(family, variant, runner) for family in FAMILIES]
        self.nat_tables = [IptablesTable(family, variant, runner, "nat") for family in FAMILIES]

    def plan(self, config: Config) -> Plan:
        steps = []
        for table in self.tables:
            try:
                snapshot = table.snapshot()
            except ApplyError:
                if table.family == 6 and not config.settings.ipv6:
                    log.info("skipped family=ipv6: FW_PORTKNOCK_IPV6 is off and ip6tables is unusable")
                    continue
                raise
            current = table.state(snapshot)
            desired = table.compile(config)
            steps.append(TablePlan(table, snapshot, current, desired, table.render(desired, current)))
        steps += self._nat_steps(config, steps)
        text = "".join(f"# {p.table.tool}-restore --noflush{'' if p.changed else ' (no change)'}\n{p.text}"
                       for p in steps)
        return Plan(self.name, any(p.changed for p in steps), text, tuple(steps))

    def _nat_steps(self, config: Config, filters: list[TablePlan]) -> list[TablePlan]:
        """The nat tables, only where a door forwards or awp's chains are still there to remove:
        without forwarding, awp never touches (nor creates) a nat table."""
        steps = []
        for filter_plan in filters:
            table = self.nat_tables[FAMILIES.index(filter_plan.table.family)]
            snapshot = table.snapshot(filter_plan.table.last_save)
            current = table.state(snapshot)
            desired = table.compile(config)
            if desired.chains or current.chains or current.hooked:
                steps.append(TablePlan(table, snapshot, current, desired, table.render(desired, current)))
        return steps

    def apply(self, plan: Plan) -> None:
        """Validate every changed table, then load them in order; roll back on failure."""
        todo = [p for p in plan.steps if p.changed]
        for p in todo:
            p.table.test(p.text)
        done: list[TablePlan] = []
        for p in todo:
            try:
                p.table.load(p.text)
            except ApplyError:
                _roll_back(done)
                raise
            log.info("loaded backend=%s family=ipv%d table=%s chains=%d digest=%s", self.name, p.table.family,
                     p.table.table, len(p.desired.chains), p.desired.tag or "none")
            done.append(p)
        for p in todo:  # the nat table awp made for a forward goes with the last forward
            if p.table.table == "nat" and not p.desired.chains:
                p.table.drop_if_empty()

    def rollback(self, plan: Plan) -> None:
        _roll_back([p for p in plan.steps if p.changed])

    def grants(self, config: Config):
        from awp.backend.recent import RecentGrants
        return RecentGrants(config)

    def bans(self, config: Config):
        from awp.backend.xt_bans import RecentBans
        return RecentBans(config)

    def advice(self, config: Config) -> list[str]:
        """Other nftables tables apply beside iptables too (iptables-nft's own filter tables,
        where awp's ACCEPT is final for the table, are left out)."""
        from awp.backend.nftables import nft_usable, ruleset_advice

        if not nft_usable(self.runner):
            return []
        own = {("ip", "filter"), ("ip6", "filter")} if self.variant == "nft" else set()
        return ruleset_advice(self.runner, config, own, priority=0)  # the filter table's INPUT

    def unused_port_answer(self) -> str:
        """From the filter tables' INPUT chains (awp's own lines left out) and, beside them,
        every other nftables table (on iptables-nft, the filter tables are those same ones)."""
        from awp.backend.nftables import ruleset_answer

        saves = ""
        for table in self.tables:
            try:
                saves += _without_awp(table.snapshot())
            except ApplyError:
                continue  # no ip6tables on this host
        own = {("ip", "filter"), ("ip6", "filter")} if self.variant == "nft" else set()
        return ruleset_answer(self.runner, own, saves)

    def inspect(self, config: Config) -> Inspection:
        from awp.backend.xt_status import inspect
        return inspect(self, config)


def _without_awp(save: str) -> str:
    """The filter table's lines that are not awp's (its jump and AWP- chains)."""
    return "".join(line + "\n" for line in save.splitlines()
                   if "AWP-" not in line)


def _roll_back(done: list[TablePlan]) -> None:
    """Put the tables in `done` back as their snapshots had them."""
    for p in reversed(done):
        try:
            p.table.rollback(p.snapshot)
            log.warning("rolled back family=ipv%d", p.table.family)
        except ApplyError as exc:
            log.error("rollback failed family=ipv%d: %s", p.table.family, exc)
