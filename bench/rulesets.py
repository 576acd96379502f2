"""The two rulesets the simple-mode benchmark compares, loaded into the lab's server:
awp itself (`awp -s -f` on a generated awp root) and the NAIVE chain of naive.py
(iptables-restore). Both on the same iptables flavour, one at a time.
"""

from __future__ import annotations

import random
import time

import naive
from benchlib import make_root

LEGIT_PORT = 2222
KNOCKS = 4
STEP_TIMEOUT = 30
OPEN_WINDOW = 30
Door = tuple[int, tuple[int, ...]]


def monotonic(seq: tuple[int, ...]) -> bool:
    pairs = list(zip(seq, seq[1:]))
    return all(a < b for a, b in pairs) or all(a > b for a, b in pairs)


def make_doors(n: int, seed: int = 4747) -> list[Door]:
    """n doors with distinct ports in 10000-59999 (knocks in no monotonic order); the
    first one, the door the benchmark knocks on, protects LEGIT_PORT. The same seed gives
    the same first doors for every n."""
    rng = random.Random(seed)
    pool = rng.sample(range(10000, 60000), (KNOCKS + 1) * n)
    doors = []
    for i in range(n):
        chunk = pool[(KNOCKS + 1) * i:(KNOCKS + 1) * (i + 1)]
        knocks = tuple(chunk[1:])
        while monotonic(knocks):
            knocks = tuple(rng.sample(knocks, KNOCKS))
        doors.append((LEGIT_PORT if i == 0 else chunk[0], knocks))
    return doors


def free_port(doors: list[Door], start: int = 35000) -> int:
    """A port no door uses, in the middle of the doors' range (a deep walk down awp's tree)."""
    used = {p for port, knocks in doors for p in (port, *knocks)}
    return next(p for p in range(start, 65536) if p not in used)


def awp_config(backend: str) -> str:
    return (f'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_SIMPLE="yes"\nFW_PORTKNOCK_ADVANCED="no"\n'
            f'FW_PORTKNOCK_STEP_TIMEOUT="{STEP_TIMEOUT}"\nFW_PORTKNOCK_OPEN_WINDOW="{OPEN_WINDOW}"\n'
            f'FW_PORTKNOCK_IPV6="yes"\nFW_PORTKNOCK_BACKEND="iptables-{backend}"\n')


def simple_list(doors: list[Door]) -> str:
    return "".join(f"{port}:{','.join(map(str, knocks))}\n" for port, knocks in doors)


def count_rules(server, backend: str) -> dict:
    """'-A' lines and chains in the server's filter tables, IPv4 and IPv6."""
    found = {}
    for family, tool in ((4, "iptables"), (6, "ip6tables")):
        lines = server.run([f"{tool}-{backend}-save", "-t", "filter"], timeout=120).stdout.splitlines()
        found[f"rules{family}"] = sum(line.startswith("-A ") for line in lines)
        found[f"chains{family}"] = sum(line.startswith(":") for line in lines) - 3
    return found


def forget(server, addr: str) -> None:
    """Remove addr from every xt_recent list of the server that holds it (open, stage,
    in-progress lists alike), so the next knock starts from closed. Needs no knowledge of
    either ruleset's list names."""
    script = (f"cd /proc/net/xt_recent && for f in $(grep -l 'src={addr} ' * 2>/dev/null); "
              f"do echo -{addr} > \"$f\"; done; true")
    server.run(["sh", "-c", script])


class AwpRules:
    name = "awp"

    def __init__(self, server, workdir: str, backend: str, doors: list[Door]):
        self.server, self.backend, self.doors = server, backend, doors
        self.root = make_root(workdir, awp_config(backend), simple_list(doors), None)

    def load(self) -> tuple[bool, float, str]:
        start = time.monotonic()
        proc = self.server.awp(["-s", "-f"], self.root, timeout=900)
        took = time.monotonic() - start
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return proc.returncode == 0, took, (lines[-1] if lines and proc.returncode else "")

    def unload(self) -> float:
        start = time.monotonic()
        self.server.awp(["remove"], self.root, check=True, timeout=900)
        return time.monotonic() - start


class NaiveRules:
    name = "naive"

    def __init__(self, server, backend: str, doors: list[Door]):
        self.server, self.backend = server, backend
        middle = len(doors) // 2  # the knocked door sits half way down the chain
        self.ordered = [*doors[1:middle + 1], doors[0], *doors[middle + 1:]]
        self.loaded = False

    def _restore(self, text: str) -> float:
        start = time.monotonic()
        self.server.run([f"iptables-{self.backend}-restore", "--noflush", "--wait"], input=text, timeout=900)
        return time.monotonic() - start

    def load(self) -> tuple[bool, float, str]:
        took = self._restore(naive.ruleset(self.ordered, STEP_TIMEOUT, OPEN_WINDOW))
        self.loaded = True
        return True, took, ""

    def unload(self) -> float:
        if not self.loaded:
            return 0.0
        self.loaded = False
        return self._restore(naive.removal())


class BaselineRules:
    """Only the conntrack rule both rulesets start with: what a packet costs anyway."""

    name = "baseline"

    def __init__(self, server, backend: str):
        self.server, self.backend = server, backend
        self.rule = ["INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]

    def load(self) -> tuple[bool, float, str]:
        self.server.iptables(["-I", *self.rule], variant=self.backend)
        return True, 0.0, ""

    def unload(self) -> float:
        self.server.iptables(["-D", *self.rule], variant=self.backend)
        return 0.0
