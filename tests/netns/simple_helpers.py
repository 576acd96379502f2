"""Helpers for test_simple.py: an awp root with simple doors applied in a Lab's server, knock
sequences, SYN and reply counters (raw table, outside awp's filter rules), and an in-process
apply whose firewall tools run inside the server namespace.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import make_root

PORT = 22  # the protected port
SEQ = (7481, 2203, 9127, 4410, 6602)  # knocks A, B, C, D, E: in no ascending/descending order
A, B, C, D, E = SEQ
DOOR = f"{PORT}:{','.join(map(str, SEQ))}\n"
SHORT_SEQ = SEQ[:3]  # for the tests that hold every knock for seconds
SHORT_DOOR = f"{PORT}:{','.join(map(str, SHORT_SEQ))}\n"
OTHER_PORT = 80
OTHER_SEQ = (3301, 8808, 1207, 5150)  # another door's knocks: X1, X2, X3, X4
OTHER_DOOR = f"{OTHER_PORT}:{','.join(map(str, OTHER_SEQ))}\n"
WRONG = 5555  # a TCP port of the server that awp knows nothing about
FAST = {"FW_PORTKNOCK_STEP_TIMEOUT": "10", "FW_PORTKNOCK_OPEN_WINDOW": "15"}  # roomy: CI is a busy 2-core box
NO = 1.0  # connect timeout where the connect is expected to fail

PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e.__class__.__name__, e)
"""


def settings(backend: str, **overrides: str) -> str:
    """An awp config: on, FW_PORTKNOCK_BACKEND=`backend` (the test's), fast timers."""
    values = {"FW_PORTKNOCK": "yes", "FW_PORTKNOCK_BACKEND": backend, **FAST, **overrides}
    return "".join(f'{key}="{value}"\n' for key, value in values.items())


def root_with(tmp_path, backend: str, simple: str | None = DOOR, **overrides: str) -> str:
    return make_root(tmp_path, settings(backend, **overrides), simple, None)


def apply(lab, root: str) -> subprocess.CompletedProcess:
    result = lab.server.awp(["-s", "-f"], root)
    assert result.returncode == 0, f"awp -s -f failed ({result.returncode}): {result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def serve(lab, families=(4, 6), port: int = PORT) -> None:
    for family in families:
        lab.server.serve_tcp(port, family)


def setup(lab, tmp_path, backend: str, simple: str = DOOR, families=(4, 6), **overrides: str) -> str:
    """Service on PORT, awp root with `simple` on `backend`, applied; returns the root."""
    serve(lab, families)
    root = root_with(tmp_path, backend, simple, **overrides)
    apply(lab, root)
    return root


def addr(lab, client, family: int = 4) -> str:
    return lab.server_ip6(client) if family == 6 else lab.server_ip4(client)


def knock(lab, client, ports, family: int = 4, delay: float = 0.05) -> None:
    client.knock_raw(addr(lab, client, family), list(ports), delay=delay)


def connects(lab, client, family: int = 4, port: int = PORT, expect: bool = True) -> bool:
    """A real TCP connect (banner read). Where it should succeed, up to 3 tries of 2 s: other
    namespaces' floods share the kernel's per-CPU backlog and can cost a packet (two SYNs
    of one try, rarely). Where it should fail, one try with a short timeout."""
    target = addr(lab, client, family)
    if not expect:
        return client.tcp_connect(target, port, timeout=NO)
    return any(client.tcp_connect(target, port, timeout=2.0) for _ in range(3))


def probe(lab, client, port: int, family: int = 4, timeout: float = 2.0) -> str:
    """'connected', 'timeout', 'refused' or 'error ...' for a plain connect()."""
    argv = [sys.executable, "-c", PROBE, addr(lab, client, family), port, timeout]
    return client.run(argv, timeout=timeout + 10).stdout.strip()


def in_parallel(*jobs) -> list:
    """Run callables in threads; re-raise the first failure."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result(timeout=120) for f in futures]


# --- counters in the raw table: what reached the server, what it sent back ---------------


def count_rule(host, family: int, chain: str, match: list) -> None:
    host.iptables(["-t", "raw", "-A", chain, *match], family)


def raw_counts(host, family: int) -> list[tuple[int, str]]:
    """(packets, rule text) for every rule of the raw table, in order."""
    tool = f"{'ip6' if family == 6 else 'ip'}tables-nft-save"
    text = host.run([tool, "-c", "-t", "raw"]).stdout
    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^\[(\d+):\d+\] (-A .*)$", text, re.M)]


def count_syns(host, family: int, source: str, ports) -> None:
    for port in ports:
        count_rule(host, family, "PREROUTING", ["-s", source, "-p", "tcp", "--syn", "--dport", port])


def syns(host, family: int, source: str) -> dict[int, int]:
    """SYNs per destination port from source, as counted by count_syns()."""
    found = {}
    for packets, rule in raw_counts(host, family):
        m = re.search(r"-s (\S+)/\d+ .*--dport (\d+)", rule)
        if rule.startswith("-A PREROUTING") and m and m.group(1) == source:
            found[int(m.group(2))] = packets
    return found


# --- awp in-process, its firewall tools run inside the server namespace --------------------


def netns_runner(namespace: str, intercept=None):
    """A runner for awp.backend whose every command runs in `namespace`, never here.

    intercept(argv, stdin, real), if given, sees every command first and answers for it: it
    may call real(argv, stdin) (the command in the namespace), call it with other input, or
    return a made-up awp.backend.runner.Result instead."""
    from awp.backend.runner import run

    def real(argv, stdin=None):
        return run(["ip", "netns", "exec", namespace, *argv], stdin)

    if intercept is None:
        return real
    return lambda argv, stdin=None: intercept(argv, stdin, real)


def is_ipv6_load(argv) -> bool:
    """The real ip6tables-*-restore load (not the --test one)."""
    return argv[0].startswith("ip6tables-") and argv[0].endswith("-restore") and "--test" not in argv


def plan_in(root: str, runner):
    """(backend, plan) for the configuration in `root`, the backend talking through `runner`."""
    from awp.backend import select
    from awp.load import load_config
    from awp.paths import Root

    config = load_config(Root(Path(root)))
    backend = select(config.settings.backend, runner)
    return backend, backend.plan(config)
