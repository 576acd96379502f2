"""What the issue-6 benchmarks put side by side, loaded in turn into the lab's server:

    awp nftables       awp -s -f, FW_PORTKNOCK_BACKEND="nftables"
    awp iptables-nft   awp -s -f, FW_PORTKNOCK_BACKEND="iptables-nft"
    bare nftables      the wiki-style recipe of nft_recipe.py (nft -f)
    naive xt_recent    the linear xt_recent chain of naive.py (iptables-nft-restore)
    none               no ruleset at all (the per-packet cost's reference)

Each has load(doors, udp_doors) -> Loaded, unload(), and state(): what the kernel holds for
the first door (the one the benchmarks knock), read the way each ruleset keeps it: sources
that have done m knocks (`knocked[m]`, mid-sequence) and sources let in (`open`). For awp
that is `awp status --json`, so awp's own view is measured, not a guess at its set names.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import naive
import nft_recipe
from benchlib import make_root
from rulesets import simple_list

OPEN_SECRET, CLOSE_SECRET = "bench-open-secret-4747", "bench-close-secret-4747"
SET_SIZE = 131072  # awp's default FW_PORTKNOCK_SET_SIZE; the bare recipe gets the same


@dataclass(frozen=True)
class Loaded:
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class State:
    knocked: dict[int, int] = field(default_factory=dict)  # knocks done -> sources
    open: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # awp nftables: a full set said no


@dataclass(frozen=True)
class Timing:
    step: int = 30  # FW_PORTKNOCK_STEP_TIMEOUT and the recipes' candidate timeout
    window: int = 30  # FW_PORTKNOCK_OPEN_WINDOW and the recipes' client timeout
    autoclose: int = 600  # FW_PORTKNOCK_AUTOCLOSE (advanced-mode grants)


def awp_config(backend: str, t: Timing, simple: bool, advanced: bool, set_size: int = SET_SIZE) -> str:
    yes = {True: "yes", False: "no"}
    return (f'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_SIMPLE="{yes[simple]}"\nFW_PORTKNOCK_ADVANCED="{yes[advanced]}"\n'
            f'FW_PORTKNOCK_STEP_TIMEOUT="{t.step}"\nFW_PORTKNOCK_OPEN_WINDOW="{t.window}"\n'
            f'FW_PORTKNOCK_AUTOCLOSE="{t.autoclose}"\nFW_PORTKNOCK_SET_SIZE="{set_size}"\n'
            f'FW_PORTKNOCK_IPV6="yes"\nFW_PORTKNOCK_BACKEND="{backend}"\n')


def advanced_list(udp_doors) -> str | None:
    if not udp_doors:
        return None
    return "".join(f"{port},{knock},{OPEN_SECRET},{CLOSE_SECRET}\n" for port, knock in udp_doors)


class Awp:
    def __init__(self, server, workdir: str, backend: str, timing: Timing = Timing(), set_size: int = SET_SIZE):
        self.server, self.workdir, self.backend, self.timing = server, workdir, backend, timing
        self.set_size = set_size
        self.name = f"awp {backend}"
        self.root: str | None = None
        self.doors: list = []

    def configure(self, doors: list, udp_doors=()) -> None:
        """A fresh awp root holding these doors (the next apply starts from its lists)."""
        config = awp_config(self.backend, self.timing, bool(doors), bool(udp_doors), self.set_size)
        self.root = make_root(self.workdir, config, simple_list(doors) if doors else None,
                              advanced_list(udp_doors))
        self.doors = doors

    def rewrite(self, doors: list) -> None:
        """Change the simple list of the current root in place (for a changed re-apply)."""
        Path(self.root, "etc", "firewall", "simple-portknock-list").write_text(simple_list(doors))
        self.doors = doors

    def apply(self) -> Loaded:
        start = time.monotonic()
        proc = self.server.awp(["-s", "-f"], self.root, timeout=900)
        took = time.monotonic() - start
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return Loaded(proc.returncode == 0, took, lines[-1] if lines and proc.returncode else "")

    def load(self, doors: list, udp_doors=()) -> Loaded:
        self.configure(doors, udp_doors)
        return self.apply()

    def unload(self) -> None:
        if self.root is None:
            return
        pid = self._listener_pid()
        self.server.awp(["remove"], self.root, check=True, timeout=900)
        if pid and self._is_ours(pid):
            os.kill(pid, signal.SIGKILL)  # awp remove should have stopped it
        self.root = None

    def status(self) -> dict:
        proc = self.server.awp(["status", "--json"], self.root, timeout=300)
        return json.loads(proc.stdout)

    def state(self) -> State:
        doc = self.status()
        port = self.doors[0][0] if self.doors else None
        found = State(refused=doc.get("refused", {}))
        for s in doc["sources"]:
            if s["port"] != port:
                continue
            if s["state"] == "knocking":
                found.knocked[s["step"][0]] = found.knocked.get(s["step"][0], 0) + 1
            elif s["state"] in ("open", "granted"):
                found.open += 1
        return found

    def listener_log(self) -> Path:
        return Path(self.root, "var", "log", "awp-knockd.log")

    def _listener_pid(self) -> int | None:
        try:
            return int(Path(self.root, "var", "run", "awp-knockd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"knockd" in cmdline and str(self.root).encode() in cmdline


class BareNft:
    name = "bare nftables"

    def __init__(self, server, timing: Timing = Timing(), set_size: int = SET_SIZE):
        self.server, self.timing, self.set_size = server, timing, set_size
        self.doors: list = []
        self.loaded = False

    def load(self, doors: list, udp_doors=()) -> Loaded:
        text = nft_recipe.ruleset(doors, self.timing.step, self.timing.window, self.set_size, tuple(udp_doors))
        start = time.monotonic()
        proc = self.server.run(["nft", "-f", "-"], input=text, timeout=900, check=False)
        self.doors, self.loaded = doors, proc.returncode == 0
        return Loaded(self.loaded, time.monotonic() - start, proc.stderr.strip()[-300:])

    def unload(self) -> None:
        if self.loaded:
            self.server.run(["nft", "-f", "-"], input=nft_recipe.removal())
            self.loaded = False

    def elements(self, name: str) -> list:
        out = self.server.run(["nft", "-j", "list", "set", *nft_recipe.TABLE.split(), name], timeout=300).stdout
        for item in json.loads(out)["nftables"]:
            if "set" in item:
                return [e["elem"]["val"]["concat"] if isinstance(e, dict) and "elem" in e else e["concat"]
                        for e in item["set"].get("elem", [])]
        return []

    def state(self) -> State:
        port, seq = self.doors[0]
        nxt = {k: m for m, k in enumerate(seq[1:], start=1)}  # candidate (src . k_{m+1}) -> m done
        found = State()
        for _, k in self.elements("candidates4"):
            if k in nxt:
                found.knocked[nxt[k]] = found.knocked.get(nxt[k], 0) + 1
        found.open = sum(1 for _, p in self.elements("clients4") if p == port)
        return found


class NaiveXtRecent:
    name = "naive xt_recent"

    def __init__(self, server, timing: Timing = Timing(), flavour: str = "nft"):
        self.server, self.timing, self.flavour = server, timing, flavour
        self.loaded = False

    def _restore(self, text: str) -> float:
        start = time.monotonic()
        self.server.run([f"iptables-{self.flavour}-restore", "--noflush", "--wait"], input=text, timeout=900)
        return time.monotonic() - start

    def load(self, doors: list, udp_doors=()) -> Loaded:
        middle = len(doors) // 2  # the knocked door sits half way down the chain
        ordered = [*doors[1:middle + 1], doors[0], *doors[middle + 1:]]
        self.index, self.knocks = ordered.index(doors[0]), len(doors[0][1])
        took = self._restore(naive.ruleset(ordered, self.timing.step, self.timing.window))
        self.loaded = True
        return Loaded(True, took)

    def unload(self) -> None:
        if self.loaded:
            self._restore(naive.removal())
            self.loaded = False

    def _count(self, name: str) -> int:
        proc = self.server.run(["cat", f"/proc/net/xt_recent/{name}"], check=False)
        return len(proc.stdout.splitlines()) if proc.returncode == 0 else 0

    def state(self) -> State:
        found = State(open=self._count(naive.open_list(self.index)))
        for m in range(1, self.knocks):
            found.knocked[m] = self._count(naive.stage_list(self.index, m))
        return found


class Nothing:
    name = "none"

    def load(self, doors: list, udp_doors=()) -> Loaded:
        return Loaded(True, 0.0)

    def unload(self) -> None:
        pass

    def state(self) -> State:
        return State()


def all_subjects(server, workdir: str, timing: Timing = Timing()) -> list:
    """The four rulesets, in the order every table shows them."""
    return [Awp(server, workdir, "nftables", timing), Awp(server, workdir, "iptables-nft", timing),
            BareNft(server, timing), NaiveXtRecent(server, timing)]
