"""`awp -s -f` load time for 10, 100 and 1,000 doors of 4 knocks, on nftables and
iptables-nft, and where the time goes.

    sudo .venv/bin/python bench/load_bench.py [--quick]

For each backend and door count, R times: a first apply (nothing of awp's loaded), a
re-apply with nothing changed, a changed re-apply (the last door's first two knocks
swapped), and `awp remove`; the wall time of the whole `awp` command as a user runs it
(the venv's console script: Python start-up and imports included). Then one first apply
and one changed re-apply again under bench/apply_profile.py: each subprocess with its
wall, user and system time, and awp's larger Python functions (under cProfile). For scale,
the bare nftables recipe's `nft -f` for the same doors.

It prints figures and asserts nothing. bench/README.md explains every column.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass

from benchlib import run_bench, HERE, PYTHON, Lab, fmt, progress, table
from rulesets import make_doors
from subjects import Awp, BareNft

PROFILE = HERE / "apply_profile.py"
GOAL_DOORS, GOAL_S = 1000, 0.15


@dataclass(frozen=True)
class Plan:
    doors: dict[str, tuple[int, ...]]  # backend -> door counts
    reps: int  # runs per backend and door count below BIG
    profile_doors: tuple[int, ...]


BIG = 1000  # runs take tens of seconds from here on: one run each


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan({"nftables": (10, 100, 1000), "iptables-nft": (10, 100)}, 1, ())
    return Plan({"nftables": (10, 100, 1000), "iptables-nft": (10, 100, 1000)}, 3, (1000,))


def changed(doors: list) -> list:
    port, knocks = doors[-1]
    return [*doors[:-1], (port, (knocks[1], knocks[0], *knocks[2:]))]


class Load:
    def __init__(self, lab: Lab, workdir: str, plan: Plan):
        self.server, self.workdir, self.plan = lab.server, workdir, plan
        self.doors = make_doors(max(n for counts in plan.doors.values() for n in counts))

    def cycle(self, awp: Awp, n: int) -> dict:
        awp.configure(self.doors[:n])
        try:
            first = awp.apply()
            if not first.ok:
                return {"error": first.error, "first": first.seconds}
            same = awp.apply()
            awp.rewrite(changed(self.doors[:n]))
            change = awp.apply()
        finally:
            start = time.monotonic()
            awp.unload()
            removed = time.monotonic() - start
        return {"first": first.seconds, "same": same.seconds, "changed": change.seconds, "remove": removed,
                "ok": same.ok and change.ok}

    def bare(self, n: int) -> float:
        recipe = BareNft(self.server)
        try:
            return recipe.load(self.doors[:n]).seconds
        finally:
            recipe.unload()

    def profile(self, awp: Awp, n: int) -> dict:
        awp.configure(self.doors[:n])
        try:
            first = self._profiled(awp.root)
            awp.rewrite(changed(self.doors[:n]))
            change = self._profiled(awp.root)
        finally:
            awp.unload()
        return {"first": first, "changed": change}

    def _profiled(self, root: str) -> dict:
        proc = self.server.run([PYTHON, PROFILE, root, "-s", "-f"], timeout=900)
        line = next(l for l in reversed(proc.stdout.splitlines()) if l.startswith("apply-profile: "))
        return json.loads(line.split(": ", 1)[1])


def measure(lab: Lab, workdir: str, plan: Plan) -> dict:
    bench = Load(lab, workdir, plan)
    rows, profiles = [], {}
    for backend, counts in plan.doors.items():
        awp = Awp(lab.server, workdir, backend)
        for n in counts:
            reps = 1 if n >= BIG else plan.reps
            progress(f"{backend}: {n} doors x {reps}")
            rows.append({"backend": backend, "doors": n, "runs": [bench.cycle(awp, n) for _ in range(reps)]})
        for n in plan.profile_doors:
            progress(f"{backend}: {n} doors, profiled")
            profiles[(backend, n)] = bench.profile(awp, n)
    bare = {n: bench.bare(n) for n in plan.doors["nftables"]}
    return {"rows": rows, "profiles": profiles, "bare": bare}


def med(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r and "error" not in r]
    return statistics.median(values) if values else None


def report(results: dict, plan: Plan) -> None:
    print(f"\n5. load time: `awp -s -f` wall time (median of {plan.reps}; 1 run from {BIG} doors), doors of 4 knocks")
    rows = []
    for r in results["rows"]:
        err = next((x["error"] for x in r["runs"] if "error" in x), "")
        spread = [x["first"] for x in r["runs"] if "error" not in x]
        rows.append([r["backend"], str(r["doors"]), fmt(med(r["runs"], "first"), ".3f"),
                     f"{min(spread):.3f}-{max(spread):.3f}" if spread else "-", fmt(med(r["runs"], "same"), ".3f"),
                     fmt(med(r["runs"], "changed"), ".3f"), fmt(med(r["runs"], "remove"), ".3f"), err])
    print(table(["backend", "doors", "first apply s", "range", "no-change re-apply s", "changed re-apply s",
                 "remove s", ""], rows))
    print("   for scale, the bare nftables recipe (one chain, 13 rules a door) by `nft -f` alone: "
          + ", ".join(f"{n} doors {sec:.3f} s" for n, sec in results["bare"].items()))
    goal = next((r for r in results["rows"] if r["backend"] == "nftables" and r["doors"] == GOAL_DOORS), None)
    if goal and med(goal["runs"], "first") is not None:
        first, change = med(goal["runs"], "first"), med(goal["runs"], "changed")
        print(f"   goal: {GOAL_DOORS} doors on nftables under {GOAL_S} s: first apply {first:.3f} s "
              f"({first / GOAL_S:.1f}x the goal), changed re-apply {change:.3f} s ({change / GOAL_S:.1f}x)")
    for (backend, n), prof in results["profiles"].items():
        for kind, p in prof.items():
            report_profile(backend, n, kind, p)


def report_profile(backend: str, n: int, kind: str, p: dict) -> None:
    sub = sum(c["wall"] for c in p["calls"])
    print(f"\n   profile, {backend}, {n} doors, {kind} apply: import awp.cli {p['import_s']:.3f} s, then "
          f"{p['wall_s']:.3f} s under cProfile: subprocesses {sub:.3f} s, Python {p['wall_s'] - sub:.3f} s")
    rows = [[c["argv"], str(c["stdin_bytes"] or "-"), fmt(c["wall"], ".3f"), fmt(c["user"], ".3f"),
             fmt(c["sys"], ".3f")] for c in p["calls"]]
    print(table(["   subprocess", "stdin bytes", "wall s", "user s", "sys s"], rows))
    funcs = ", ".join(f"{name} {sec:.3f}" for name, sec in list(p["functions"].items())[:8])
    print(f"   awp functions, cumulative s (they nest): {funcs}")


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, name="load_bench", title="awp load-time benchmark", doc=__doc__, quick_help="one run each, iptables-nft up to 100 doors, no profile (about 2 minutes)",
                     make_plan=make_plan, measure=measure, report=report, clients=1)


if __name__ == "__main__":
    sys.exit(main())
