"""Where the time of one `awp` command goes: run by load_bench.py inside the server namespace.

    python apply_profile.py ROOT [awp arguments, default: -s -f]

Runs awp's CLI in this process under cProfile, with every subprocess timed: wall time and
the child's user and system CPU time (user: the program itself, e.g. nft parsing and
evaluating the script; system: the kernel, e.g. netlink and the nf_tables commit, done
in the caller's context). Prints, after awp's own output, one line "apply-profile: JSON": the import time of awp.cli, the wall time
of the command, each subprocess (argv, stdin size, wall, user, sys) and the cumulative
time of awp's larger functions. cProfile slows Python down (by tens of percent), so read
the Python figures as shares, and the plain `awp -s -f` times of load_bench.py as the truth.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
MARK = "apply-profile: "  # awp prints its own lines before the JSON one
CALLS: list[dict] = []
WATCH = ("compile_nft", "render_transaction", "current", "plan", "apply", "_remove_others", "_backends",
         "load_and_check", "compile_family", "parse_table", "_migrations", "lockout_risk", "inspect")
_real_run = subprocess.run


def timed_run(argv, *args, **kwargs):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        return _real_run(argv, *args, **kwargs)
    finally:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdin = kwargs.get("input") or ""
        CALLS.append({"argv": " ".join(map(str, argv))[:80], "stdin_bytes": len(stdin),
                      "wall": time.perf_counter() - start, "user": after.ru_utime - before.ru_utime,
                      "sys": after.ru_stime - before.ru_stime})


def functions(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of the WATCHed functions defined in awp (largest caller wins)."""
    found: dict[str, float] = {}
    for (path, _, name), (_, _, _, cum, _) in stats.stats.items():
        if "/awp/" in path and name in WATCH:
            key = f"{Path(path).parent.name}/{Path(path).stem}.{name}"
            found[key] = max(found.get(key, 0.0), cum)
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def main() -> int:
    root, args = sys.argv[1], sys.argv[2:] or ["-s", "-f"]
    start = time.perf_counter()
    from awp import cli
    imported = time.perf_counter() - start
    subprocess.run = timed_run
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    try:
        code = cli.main(["--root", root, *args])
    finally:
        profile.disable()
        subprocess.run = _real_run
    wall = time.perf_counter() - start
    stats = pstats.Stats(profile)
    print(MARK + json.dumps({"code": code, "import_s": imported, "wall_s": wall, "calls": CALLS,
                      "functions": functions(stats)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
