"""Stealth (awp(8) STEALTH): a scanner cannot tell awp's ports from the host's unused ports.

On the nftables and iptables-nft backends, against a host whose unused ports answer (no
firewall: the kernel resets, or sends ICMP port unreachable) and one whose unused ports are
dropped (a foreign policy-drop table, as awp(8) COEXISTENCE asks for it), nmap from a client
namespace must report every port in the state it reports for the same server without awp,
except the protected ports, which are really open without awp and, with awp and no knock,
show what an unused port shows. Knocks still work (from another client: the scans trip awp's
scan guard for the scanner), rejects do not slow or break knock clients, the advanced knock
port answers the same whatever a datagram holds and whether the listener runs, `awp check`
warns about a hand-set value the host contradicts, and awp's rejects are rate limited exactly
as the kernel's own answers.

The server runs one simple door on 22 (knocks 7481,2203,9127,4410,6602) and one advanced door
on 2222 (knock port UDP 2000), a TCP service on both protected ports.
"""

from __future__ import annotations

import re

import os
import signal
import subprocess
import time

import pytest
from advanced_helpers import OPEN, AwpServer, knock, wait_connect, write_private
from harness import make_root, wait_for
from scan_helpers import (ADVANCED_DOOR, ADVANCED_PORT, BASES, KERNEL_UNREACHABLE, KNOCK_PORT, SEQ,
                          SIMPLE_DOOR, SIMPLE_PORT, UNUSED, UNUSED_TCP, UNUSED_UDP, answer_every_udp_probe,
                          config_text, expected_with_awp, family_of,
                          nmap_ports, serve_protected, summary, syns, udp_answers)
from simple_helpers import WRONG, connects, probe

pytestmark = pytest.mark.netns

BACKENDS = ("nftables", "iptables-nft")
A, B, C, D, E = SEQ


@pytest.fixture
def stealth_servers(tmp_path):
    """AwpServers whose settings file is exactly `config` (scan_helpers.config_text); every
    server made is cleaned up (awp remove, and its supervisor and listener stopped by pid)."""
    made: list[AwpServer] = []

    def make(lab, config: str, advanced: str | None = ADVANCED_DOOR, simple: str | None = SIMPLE_DOOR):
        backend = re.search(r'FW_PORTKNOCK_BACKEND="([^"]+)"', config).group(1)
        made.append(AwpServer(lab, tmp_path, backend, advanced, simple))
        write_private(made[-1].config_path, config)
        return made[-1]

    yield make
    for srv in made:
        srv.cleanup()


@pytest.fixture
def make_server3(lab3, stealth_servers):
    return lambda config, **kw: stealth_servers(lab3, config, **kw)


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    """awp refuses to close the SSH port of the session it runs in; the lab is not that one.
    Wide columns, so that warnings are not wrapped."""
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.setenv("COLUMNS", "300")


def apply_verbose(host, root: str) -> str:
    """`awp -v -s -f`; its log says what FW_PORTKNOCK_STEALTH="auto" chose."""
    proc = host.awp(["-v", "-s", "-f"], root)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


AUTO_SAYS = {"drop": "unused ports of this host are dropped", "reject": "unused ports of this host answer"}


# --- 1. scans: every port as without awp, the protected ports as unused ones ------------------

# (name, nmap arguments, address family). Every awp port is below 10,000; one scan covers all
# 65,535. UDP: 1990-2010 (the advanced knock port 2000 and its neighbours) only: each closed UDP
# port costs an ICMP port unreachable, which the kernel rate-limits (1 a second per destination
# after a burst of 6, net.ipv4.icmp_ratelimit), so a full UDP scan of an answering host takes
# nmap hours (and the server namespace's per-destination limit is lifted for these scans,
# answer_every_udp_probe, so that no port is left unanswered at random).
SCANS = (
    ("sS all", ["-sS", "-p1-65535"], 4),
    ("sS v6", ["-sS", "-p1-10000"], 6),
    ("sT", ["-sT", "-p1-10000"], 4),
    ("sU", ["-sU", "-p1990-2010"], 4),
    ("sU v6", ["-sU", "-p1990-2010"], 6),
    ("sS in order", ["-sS", "-r", "-p1-10000"], 4),
)

# nmap paces itself by the answers it gets: against a host that resets, it is fast on its own,
# and forcing a rate makes it lose answers (they show as "filtered"); against a host that
# drops, it would crawl, so there the rate is forced and the timeouts are short (a veth's round
# trip is well under a millisecond). Bounded either way: retries, --host-timeout, a timeout.
PACE = {
    "reject": ["--max-retries", "3"],
    "drop": ["--max-retries", "1", "--min-rate", "30000", "--initial-rtt-timeout", "100ms",
             "--max-rtt-timeout", "300ms"],
}


def scan_all(lab, client, style: str) -> dict[str, dict]:
    found = {}
    for name, args, family in SCANS:
        target = lab.server_ip6(client) if family == 6 else lab.server_ip4(client)
        found[name] = nmap_ports(client, target, [*args, *PACE[style]])
    return found


def designed(style: str, scan_type: str, ports: set[int], open_ports=(SIMPLE_PORT, ADVANCED_PORT)) -> dict:
    """What the base itself must show without awp: the services open, every other port unused."""
    unused = UNUSED[style][scan_type]
    opened = {p for p in ports if p in open_ports} if scan_type != "-sU" else set()
    found = {unused: ports - opened}
    if opened:
        found[("open", "syn-ack")] = opened
    return found


@pytest.mark.parametrize("backend,base", [
    ("nftables", "none"), ("nftables", "nft-drop"),
    ("iptables-nft", "none"), ("iptables-nft", "nft-drop"), ("iptables-nft", "iptables-drop"),
])
def test_scans_see_awp_ports_as_unused_ports(lab, stealth_servers, backend, base):
    scanner, knocker = lab.clients
    style, make_base = BASES[base]
    make_base(lab.server)
    serve_protected(lab.server)
    answer_every_udp_probe(lab.server)

    before = scan_all(lab, scanner, style)
    for name, args, _family in SCANS:
        ports = set().union(*before[name].values())
        assert before[name] == designed(style, args[0], ports), f"the base without awp, {name}: {summary(before[name])}"

    srv = stealth_servers(lab, config_text(backend), advanced=ADVANCED_DOOR, simple=SIMPLE_DOOR)
    srv.start()
    assert AUTO_SAYS[style] in apply_verbose(lab.server, srv.root)
    after = scan_all(lab, scanner, style)
    differ = {}
    for name, args, _family in SCANS:
        expected = expected_with_awp(before[name], UNUSED[style][args[0]])
        if after[name] != expected:
            differ[name] = {"with awp": summary(after[name]), "expected": summary(expected)}
    assert not differ, differ

    # awp was in force all along: the scans opened nothing, a knock from elsewhere opens
    d_knocker = lab.server_ip4(knocker)
    assert not connects(lab, scanner, expect=False)
    knocker.knock_raw(d_knocker, list(SEQ), delay=0.05)
    assert connects(lab, knocker) and not connects(lab, scanner, expect=False)
    knock(srv, knocker, d_knocker, OPEN, "open")
    assert wait_connect(knocker, d_knocker, ADVANCED_PORT)
    assert not connects(lab, scanner, port=ADVANCED_PORT, expect=False)


# --- 2. with rejects, knock clients return at once, and knocks behave --------------------------


def timed(client, argv: list[str], limit: float = 8.0) -> tuple[float, str, int]:
    """(seconds, stdout + stderr, exit code) of one client command, killed after `limit`."""
    start = time.monotonic()
    try:
        proc = client.run(argv, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return limit, "still waiting: killed", -1
    return time.monotonic() - start, proc.stdout + proc.stderr, proc.returncode


def knock_with(client, argv_for, dst: str, ports) -> list[tuple[float, str, int]]:
    return [timed(client, argv_for(dst, port)) for port in ports]


def telnet(dst: str, port: int) -> list:
    return ["telnet", dst, port]


def nc(dst: str, port: int) -> list:
    return ["nc", "-n", "-v", "-z", "-w", "5", dst, port]


def assert_refused_at_once(results, what: str) -> None:
    """Each knock got a reset: refused, and long before nc's 5 s timeout (for a dropped SYN,
    telnet would wait for minutes; a busy box may take a second to start a client)."""
    slow = [(round(t, 2), out) for t, out, rc in results if t > 2.5 or rc == 0 or "refused" not in out]
    assert not slow, f"{what}: knocks not refused at once: {slow}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_rejects_knocks_are_refused_at_once_and_open(lab3, tmp_path, backend):
    c1, c2, c3 = lab3.clients
    for family in (4, 6):
        lab3.server.serve_tcp(SIMPLE_PORT, family)
    root = make_root(tmp_path, config_text(backend, FW_PORTKNOCK_ADVANCED="no"), SIMPLE_DOOR, None)
    assert AUTO_SAYS["reject"] in apply_verbose(lab3.server, root)
    d1, d2 = lab3.server_ip4(c1), lab3.server_ip4(c2)

    telnets = knock_with(c1, telnet, d1, SEQ)
    assert_refused_at_once(telnets, "telnet")
    assert connects(lab3, c1)
    # the knocker only; the protected port resets the others, as an unused port does
    assert [probe(lab3, c, SIMPLE_PORT) for c in (c2, c3)] == ["refused", "refused"]

    wrong = knock_with(c2, nc, d2, (A, B, WRONG, C, D, E))
    assert_refused_at_once(wrong, "nc, wrong sequence")
    assert probe(lab3, c2, SIMPLE_PORT) == "refused", "a wrong port in the sequence must reset it"
    assert_refused_at_once(knock_with(c2, nc, d2, SEQ), "nc")
    assert connects(lab3, c2) and probe(lab3, c3, SIMPLE_PORT) == "refused"

    # a client that retransmits: every SYN sent twice, as identical bytes; over IPv6
    d3v6 = lab3.server_ip6(c3)
    answers = syns(c3, d3v6, [(port, 2) for port in SEQ], gap=0.05)
    assert answers == {port: {"rst": 2, "synack": 0} for port in SEQ}, answers
    assert connects(lab3, c3, 6)
    assert probe(lab3, c3, SIMPLE_PORT) == "refused", "c3 knocked over IPv6 only"


# --- 3. the advanced knock port: one answer whatever the datagram, listener up or down ---------


def datagrams(srv, client, dst: str) -> list[tuple[str, int, bytes]]:
    """(what, port, bytes): a valid knock, junk of its size, other sizes, and the same to an
    unused port of the host."""
    src = client.ip6 if family_of(dst) == 6 else client.ip4
    valid = srv.macs.payload(OPEN, src)
    return [("valid knock", KNOCK_PORT, valid),
            ("hex junk, knock-sized", KNOCK_PORT, os.urandom(32).hex().encode() + b"\n"),
            ("binary junk, knock-sized", KNOCK_PORT, os.urandom(len(valid))),
            ("10 bytes", KNOCK_PORT, b"0123456789"),
            ("empty", KNOCK_PORT, b""),
            ("1400 bytes", KNOCK_PORT, os.urandom(1400)),
            ("knock to an unused port", UNUSED_UDP, valid),
            ("empty to an unused port", UNUSED_UDP, b"")]


def answers_to(srv, client, dst: str) -> dict[str, str]:
    sent = datagrams(srv, client, dst)
    got = udp_answers(client, dst, [(port, data) for _what, port, data in sent], gap=0.02, listen=1.0)
    return {what: answer for (what, _port, _data), answer in zip(sent, got)}


def stop_listener(srv) -> None:
    """SIGKILL this root's supervisor (it would restart the listener), then its listener."""
    for pid in srv.supervisors() + srv.listeners():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not srv.listeners() and not srv.supervisors(), 5.0, "the listener to be gone")


@pytest.mark.parametrize("base", ["none", "nft-drop"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_advanced_knock_port_answers_alike(lab, stealth_servers, backend, base):
    c1, c2 = lab.clients
    style, make_base = BASES[base]
    make_base(lab.server)
    serve_protected(lab.server)
    answer_every_udp_probe(lab.server)  # every datagram gets its answer (the limit: test 5)
    srv = stealth_servers(lab, config_text(backend, FW_PORTKNOCK_SIMPLE="no"), advanced=ADVANCED_DOOR, simple=None)
    srv.start()

    for when, client in (("listener up", c1), ("listener stopped", c2)):
        if client is c2:
            stop_listener(srv)
        for dst in (lab.server_ip4(client), lab.server_ip6(client)):
            expected = KERNEL_UNREACHABLE[family_of(dst)] if style == "reject" else "silent"
            got = answers_to(srv, client, dst)
            assert got == dict.fromkeys(got, expected), f"{when}, {dst}: {got}"

    # the valid knocks among them were knocks: they opened for c1 (both families), not for c2
    for dst in (lab.server_ip4(c1), lab.server_ip6(c1)):
        assert wait_connect(c1, dst, ADVANCED_PORT), f"the valid knock to {dst} did not open"
    assert not wait_connect(c2, lab.server_ip4(c2), ADVANCED_PORT, timeout=1.0)
    accepted = [line for line in srv.log.text().splitlines() if "knock accepted" in line]
    assert len(accepted) == 2, accepted


# --- 4. awp check and --dry-run follow what the host does ------------------------------------


def check_warnings(host, tmp_path, backend: str, stealth: str) -> list[str]:
    root = make_root(tmp_path, config_text(backend, stealth), SIMPLE_DOOR, ADVANCED_DOOR)
    proc = host.awp(["check"], root)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if "FW_PORTKNOCK_STEALTH" in line]


def dry_run(host, tmp_path, backend: str) -> str:
    root = make_root(tmp_path, config_text(backend), SIMPLE_DOOR, ADVANCED_DOOR)
    proc = host.awp(["-s", "-f", "--dry-run"], root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


REJECTS = {"nftables": ("reject with tcp reset", "reject with icmpx port-unreachable"),
           "iptables-nft": ("-j REJECT --reject-with tcp-reset", "--reject-with icmp-port-unreachable",
                            "--reject-with icmp6-port-unreachable")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_and_dry_run_follow_the_host(lab, tmp_path, backend):
    """On each base in turn (the server's firewall flushed in between; iptables-legacy last:
    nft cannot flush it), a hand-set value the host contradicts draws one warning, and auto's
    rules are the host's style."""
    host = lab.server
    for base in ("none", "nft-drop", "iptables-drop", "legacy-drop"):
        host.run(["nft", "flush", "ruleset"])
        seen, make_base = BASES[base]
        make_base(host)
        other = "drop" if seen == "reject" else "reject"
        warned = check_warnings(host, tmp_path, backend, other)
        assert len(warned) == 1 and f'"{other}", but unused ports of this host are' in warned[0], (base, warned)
        assert ("dropped" if seen == "drop" else "answered") in warned[0], (base, warned)
        assert check_warnings(host, tmp_path, backend, seen) == [], base
        assert check_warnings(host, tmp_path, backend, "auto") == [], base
        rules = dry_run(host, tmp_path, backend)
        if seen == "reject":
            assert all(text in rules for text in REJECTS[backend]), (base, rules)
        else:
            assert "reject" not in rules.lower() and "drop" in rules.lower(), (base, rules)


# --- 5. rate: awp's rejects come from the kernel's own paths ------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_rejects_are_limited_as_the_kernels_own_answers(lab3, make_server3, backend):
    """ICMP: the kernel's per-destination limit (burst 6, then 1 a second) applies to awp's
    port unreachables as to its own, out of the same bucket. TCP: no limit, for either."""
    c1, c2, c3 = lab3.clients
    assert lab3.server.sysctl("net.ipv4.icmp_ratelimit") == "1000", "a fresh namespace's default"
    lab3.server.serve_tcp(SIMPLE_PORT)  # a closed protected port must reset every SYN, not just some
    srv = make_server3(config_text(backend))
    assert AUTO_SAYS["reject"] in apply_verbose(lab3.server, srv.root)

    for family in (4, 6):
        dst = lab3.server_ip6 if family == 6 else lab3.server_ip4
        # 20 datagrams in 0.1 s from each of two sources: as many answers from the kernel's
        # own unused port as from awp's knock port (the burst, 6, and nothing more)
        own = udp_answers(c1, dst(c1), [(UNUSED_UDP, b"x")] * 20, gap=0.005, listen=0.5)
        awps = udp_answers(c2, dst(c2), [(KNOCK_PORT, b"x")] * 20, gap=0.005, listen=0.5)
        n_own, n_awp = (sum(a != "silent" for a in got) for got in (own, awps))
        assert 5 <= n_own <= 8 and abs(n_own - n_awp) <= 1, (family, n_own, n_awp)
        # one bucket: once the kernel's own answers have drained it, awp's port gets none
        mixed = udp_answers(c3, dst(c3), [(UNUSED_UDP, b"x")] * 10 + [(KNOCK_PORT, b"x")] * 10, gap=0.005,
                            listen=0.5)
        assert sum(a != "silent" for a in mixed[:10]) >= 5 and sum(a != "silent" for a in mixed[10:]) <= 1, mixed

    count = 300
    for client, port in ((c1, UNUSED_TCP), (c2, C), (c2, A), (c3, SIMPLE_PORT)):
        got = syns(client, lab3.server_ip4(client), [(port, 1)] * count)
        assert got == {port: {"rst": count, "synack": 0}}, (port, got)
