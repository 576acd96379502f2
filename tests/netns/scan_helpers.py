"""Helpers for test_stealth.py: a server with one simple and one advanced door on a host whose
unused ports answer (no firewall) or are dropped (a foreign policy-drop table), nmap runs
parsed into {state: ports}, and small raw-socket programs that count what comes back.

Every command here runs inside a Lab's namespaces; nothing touches the root namespace.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

from advanced_helpers import DOOR as ADVANCED_DOOR
from advanced_helpers import KNOCK_PORT
from advanced_helpers import PORT as ADVANCED_PORT
from simple_helpers import DOOR as SIMPLE_DOOR
from simple_helpers import PORT as SIMPLE_PORT
from simple_helpers import SEQ

PROTECTED = (SIMPLE_PORT, ADVANCED_PORT)  # 22 and 2222: a real service listens on both
UNUSED_UDP = KNOCK_PORT - 1  # 1999: no socket, no rule
UNUSED_TCP = 5555
STEP = 3  # FW_PORTKNOCK_STEP_TIMEOUT: short, so a tripped scan guard wears off soon

# What an unused port shows in each style, per scan type (nmap's state, reason).
UNUSED = {
    "reject": {"-sS": ("closed", "reset"), "-sT": ("closed", "conn-refused"), "-sU": ("closed", "port-unreach")},
    "drop": {"-sS": ("filtered", "no-response"), "-sT": ("filtered", "no-response"),
             "-sU": ("open|filtered", "no-response")},
}

# A policy-drop host as awp(8) COEXISTENCE asks for it: the admin's own table accepts the
# protected ports and lets awp do the gating; ICMP is accepted (IPv6 neighbour discovery).
NFT_POLICY_DROP = f"""
table inet admin {{
    chain input {{
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iif lo accept
        meta l4proto {{ icmp, ipv6-icmp }} accept
        tcp dport {{ {SIMPLE_PORT}, {ADVANCED_PORT} }} accept
    }}
}}
"""


def config_text(backend: str, stealth: str = "auto", **extra: str) -> str:
    values = {"FW_PORTKNOCK": "yes", "FW_PORTKNOCK_BACKEND": backend, "FW_PORTKNOCK_STEALTH": stealth,
              "FW_PORTKNOCK_SIMPLE": "yes", "FW_PORTKNOCK_ADVANCED": "yes",
              "FW_PORTKNOCK_STEP_TIMEOUT": str(STEP), "FW_PORTKNOCK_OPEN_WINDOW": "30", **extra}
    return "".join(f'{key}="{value}"\n' for key, value in values.items())


# --- the host's own firewall, inside the server namespace -----------------------------------


def base_none(host) -> None:
    """No firewall: the kernel answers every unused port (reset, port unreachable)."""


def base_nft_drop(host) -> None:
    host.run(["nft", "-f", "-"], input=NFT_POLICY_DROP)


def base_iptables_drop(host, variant: str = "nft") -> None:
    """iptables INPUT policy DROP (both families), with ACCEPTs for the protected ports."""
    for family in (4, 6):
        def rule(*args):
            host.iptables(list(args), family, variant)
        rule("-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        rule("-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
        rule("-A", "INPUT", "-p", "icmp" if family == 4 else "ipv6-icmp", "-j", "ACCEPT")
        for port in PROTECTED:
            rule("-A", "INPUT", "-p", "tcp", "--dport", port, "-j", "ACCEPT")
        rule("-P", "INPUT", "DROP")


def base_legacy_drop(host) -> None:
    """The same in iptables-legacy's tables, which `nft list ruleset` does not show."""
    base_iptables_drop(host, "legacy")


BASES = {"none": ("reject", base_none), "nft-drop": ("drop", base_nft_drop),
         "iptables-drop": ("drop", base_iptables_drop), "legacy-drop": ("drop", base_legacy_drop)}


def serve_protected(host) -> None:
    for port in PROTECTED:
        for family in (4, 6):
            host.serve_tcp(port, family)


def answer_every_udp_probe(host) -> None:
    """No per-destination ICMP rate limit in the server namespace (the default, 1 s with a
    burst of 6, would leave some ports of a UDP scan unanswered at random, with or without
    awp). The limit itself is tested apart: awp's answers share the kernel's bucket."""
    host.sysctl("net.ipv4.icmp_ratelimit", 0)
    host.sysctl("net.ipv6.icmp.ratelimit", 0)


# --- nmap ------------------------------------------------------------------------------------


def nmap_ports(client, target: str, args: list[str], timeout: float = 90) -> dict[tuple[str, str], set[int]]:
    """{(state, reason): ports} for every port nmap scanned, from its XML (which names the
    ports it folds into <extraports> since 7.80). Bounded: --host-timeout and a process timeout."""
    family = ["-6"] if ":" in target else []
    argv = ["nmap", "-n", "-Pn", "--reason", "-oX", "-", "--host-timeout", f"{int(timeout) - 15}s",
            *family, *args, target]
    xml = client.run(argv, timeout=timeout).stdout
    return parse_nmap_xml(xml, scanned=expand(_port_arg(args)))


def _port_arg(args: list[str]) -> str:
    for arg in args:
        if arg.startswith("-p"):
            return arg[2:]
    raise ValueError(f"no -p in {args}")


def expand(ranges: str) -> set[int]:
    found: set[int] = set()
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def parse_nmap_xml(xml: str, scanned: set[int]) -> dict[tuple[str, str], set[int]]:
    host = ET.fromstring(xml).find("host")
    if host is None or host.find("ports") is None:
        raise AssertionError(f"nmap reported no ports (host timed out?):\n{xml[-2000:]}")
    states: dict[tuple[str, str], set[int]] = {}
    for port in host.find("ports").iter("port"):
        state = port.find("state")
        states.setdefault((state.get("state"), state.get("reason")), set()).add(int(port.get("portid")))
    for extra in host.find("ports").iter("extraports"):
        for reasons in extra.iter("extrareasons"):
            states.setdefault((extra.get("state"), reasons.get("reason")), set()).update(expand(reasons.get("ports")))
    seen = set().union(*states.values()) if states else set()
    assert seen == scanned, f"nmap did not report {len(scanned - seen)} port(s): {sorted(scanned - seen)[:20]}"
    return states


def expected_with_awp(before: dict, unused: tuple[str, str], protected=PROTECTED) -> dict:
    """The scan without awp, the protected ports moved to the unused ports' state."""
    after = {key: set(ports) - set(protected) for key, ports in before.items()}
    moved = {p for ports in before.values() for p in ports if p in protected}
    after.setdefault(unused, set()).update(moved)
    return {key: ports for key, ports in after.items() if ports}


def summary(states: dict) -> dict:
    """{state/reason: ports, or a count if many} for assertion messages."""
    return {f"{s}/{r}": sorted(p) if len(p) < 12 else f"{len(p)} ports" for (s, r), p in sorted(states.items())}


# --- raw packets, counted at the client -------------------------------------------------------

# Sends TCP SYNs from a raw socket and counts what comes back to them. stdin: {"src", "dst",
# "probes": [[dport, times], ...], "gap", "listen"}: one SYN per probe (its own source port and
# sequence number), sent `times` times as identical bytes (a retransmit). Prints
# {"dport": {"rst": n, "synack": n}} counting the answers to our source ports; listens for
# `listen` seconds, or until every copy sent has had an answer.
SYNS = r"""
import json, os, random, select, socket, struct, sys, time
a = json.loads(sys.stdin.read())
v6 = ":" in a["dst"]
fam = socket.AF_INET6 if v6 else socket.AF_INET
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def syn(sport, dport, seq):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    src, dst = (socket.inet_pton(fam, x) for x in (a["src"], a["dst"]))
    pseudo = src + dst + (struct.pack("!IxxxB", 20, 6) if v6 else struct.pack("!xBH", 6, 20))
    return hdr[:16] + struct.pack("!H", csum(pseudo + hdr)) + hdr[18:]
rx = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
rx.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE
tx = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
sports = random.sample(range(20000, 60000), len(a["probes"]))
mine = {}
for sport, (dport, times) in zip(sports, a["probes"]):
    mine[sport] = dport
    pkt = syn(sport, dport, random.getrandbits(32))
    for _ in range(times):
        tx.sendto(pkt, (a["dst"], 0))
    time.sleep(a["gap"])
counts = {str(d): {"rst": 0, "synack": 0} for d, _ in a["probes"]}
deadline, due, seen = time.monotonic() + a["listen"], sum(t for _, t in a["probes"]), 0
while seen < due and (left := deadline - time.monotonic()) > 0 and select.select([rx], [], [], left)[0]:
    data, peer = rx.recvfrom(65535)
    tcp = data if v6 else data[(data[0] & 15) * 4:]
    sport, dport, flags = struct.unpack("!HH", tcp[:4]) + (tcp[13],)
    if peer[0] != a["dst"] or dport not in mine or mine[dport] != sport:
        continue
    kind = "rst" if flags & 0x04 else "synack" if flags & 0x12 == 0x12 else None
    if kind:
        counts[str(sport)][kind] += 1
        seen += 1
print(json.dumps(counts))
"""

# Sends UDP datagrams, each from its own socket (source port), and reports what came back to
# each: the ICMP destination unreachable (type/code, read from a raw ICMP socket, matched by the
# quoted ports), a UDP reply, or nothing. stdin: {"dst", "datagrams": [[dport, hex], ...],
# "gap", "listen"}. Prints a list, one entry per datagram: "unreachable <type>/<code>",
# "reply" or "silent"; listens for `listen` seconds, or until every datagram has an answer.
UDP_ANSWERS = r"""
import json, select, socket, struct, sys, time
a = json.loads(sys.stdin.read())
v6 = ":" in a["dst"]
fam = socket.AF_INET6 if v6 else socket.AF_INET
icmp = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
icmp.setsockopt(socket.SOL_SOCKET, 33, 1 << 22)  # SO_RCVBUFFORCE
socks, answers = [], []
for dport, payload in a["datagrams"]:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind(("::" if v6 else "0.0.0.0", 0))
    s.setblocking(False)
    s.sendto(bytes.fromhex(payload), (a["dst"], dport))
    socks.append((s.getsockname()[1], dport, s))
    answers.append("silent")
    time.sleep(a["gap"])
index = {(sport, dport): i for i, (sport, dport, _) in enumerate(socks)}
deadline = time.monotonic() + a["listen"]
while "silent" in answers and (left := deadline - time.monotonic()) > 0:
    ready = select.select([icmp] + [s for _, _, s in socks], [], [], left)[0]
    if not ready:
        break
    for r in ready:
        if r is not icmp:
            try:
                r.recv(2048)
                answers[[s for _, _, s in socks].index(r)] = "reply"
            except OSError:
                pass  # the error an ICMP answer leaves on the socket; counted below
            continue
        data, peer = icmp.recvfrom(65535)
        msg = data if v6 else data[(data[0] & 15) * 4:]
        inner = msg[8:]
        udp = inner[40:] if v6 else inner[(inner[0] & 15) * 4:]
        if len(udp) >= 4 and peer[0] == a["dst"] and msg[0] in ((1,) if v6 else (3,)):
            key = struct.unpack("!HH", udp[:4])
            if key in index:
                answers[index[key]] = f"unreachable {msg[0]}/{msg[1]}"
print(json.dumps(answers))
"""


def syns(client, dst: str, probes: list[tuple[int, int]], gap: float = 0.0, listen: float = 1.0) -> dict[int, dict]:
    """SYNs from client's address to dst: probes = [(dport, times sent)]; the answers, summed
    per destination port: {dport: {"rst": n, "synack": n}}."""
    spec = {"src": client.ip6 if ":" in dst else client.ip4, "dst": dst, "probes": probes,
            "gap": gap, "listen": listen}
    out = client.run([sys.executable, "-c", SYNS], input=json.dumps(spec),
                     timeout=30 + len(probes) * gap + listen)
    return {int(port): counts for port, counts in json.loads(out.stdout).items()}


def udp_answers(client, dst: str, datagrams: list[tuple[int, bytes]], gap: float = 0.0,
                listen: float = 1.5) -> list[str]:
    spec = {"dst": dst, "datagrams": [[port, data.hex()] for port, data in datagrams], "gap": gap,
            "listen": listen}
    out = client.run([sys.executable, "-c", UDP_ANSWERS], input=json.dumps(spec),
                     timeout=30 + len(datagrams) * gap + listen)
    return json.loads(out.stdout)


KERNEL_UNREACHABLE = {4: "unreachable 3/3", 6: "unreachable 1/4"}  # ICMP(v6) port unreachable


def family_of(addr: str) -> int:
    return 6 if ":" in addr else 4

