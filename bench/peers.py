"""The peers of bench/peers_bench.py, pure: fwknopd's and knockd's configuration files, the
root namespace's firewall as a comparable text, and the side-by-side rows. No I/O here.

fwknopd 2.6.10 (Debian fwknop-server) is compiled for iptables only ("compiled for firewall
bin: /usr/sbin/iptables"; it has no nftables backend, firewalld, ipfw and pf are the
others); Debian's /usr/sbin/iptables is iptables-nft. The bench names
/usr/sbin/iptables-nft in FIREWALL_EXE and starts fwknopd with `ip netns exec`, so every
rule it adds lands in the server namespace's own nftables tables. knockd 0.8 runs the
commands it is given; they name iptables-nft too and run in knockd's namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IPTABLES = "/usr/sbin/iptables-nft"
FWKNOP_PORT = 62201  # fwknop's default SPA port (udp)
KNOCKD_SEQUENCE = (7481, 2203, 9127)  # tcp, no order
ACCESS_TIMEOUT = 30  # seconds a peer keeps a source open (fwknopd's default)


@dataclass(frozen=True)
class FwknopdFiles:
    conf: str
    access: str


def fwknopd_files(interface: str, run_dir: str, port: int, key_b64: str, hmac_b64: str,
                  loop_sleep: int | None = None) -> FwknopdFiles:
    """fwknopd.conf and access.conf for one protected TCP port: SPA over UDP on `port`, seen
    by pcap on `interface` only (not promiscuous), a Rijndael key and an HMAC-SHA256 key,
    rules by iptables-nft (inside the namespace fwknopd runs in). The rest is Debian's
    shipped default (PCAP_LOOP_SLEEP 100000 us among them, unless loop_sleep is given)."""
    conf = (f"PCAP_INTF                   {interface};\n"
            "ENABLE_PCAP_PROMISC         N;\n"
            f"PCAP_FILTER                 udp dst port {FWKNOP_PORT};\n"
            f"FWKNOP_RUN_DIR              {run_dir};\n"
            f"FIREWALL_EXE                {IPTABLES};\n"
            "ENABLE_DIGEST_PERSISTENCE   Y;\n"
            "EXIT_AT_INTF_DOWN           N;\n"
            + (f"PCAP_LOOP_SLEEP             {loop_sleep};\n" if loop_sleep is not None else ""))
    access = (f"SOURCE                      ANY\n"
              f"OPEN_PORTS                  tcp/{port}\n"
              f"KEY_BASE64                  {key_b64}\n"
              f"HMAC_KEY_BASE64             {hmac_b64}\n"
              "HMAC_DIGEST_TYPE            SHA256\n"
              f"FW_ACCESS_TIMEOUT           {ACCESS_TIMEOUT}\n")
    return FwknopdFiles(conf, access)


def knockd_conf(interface: str, log_file: str, pid_file: str, port: int,
                sequence: tuple[int, ...] = KNOCKD_SEQUENCE) -> str:
    """knockd.conf: one door, a TCP SYN sequence, the source let in to `port` by
    iptables-nft for ACCESS_TIMEOUT seconds (start_command / stop_command)."""
    rule = f"INPUT -s %IP% -p tcp --dport {port} -j ACCEPT"
    return ("[options]\n"
            f"    Interface   = {interface}\n"
            f"    LogFile     = {log_file}\n"
            f"    PidFile     = {pid_file}\n"
            "[door]\n"
            f"    sequence      = {','.join(f'{p}:tcp' for p in sequence)}\n"
            "    seq_timeout   = 5\n"
            "    tcpflags      = syn\n"
            f"    start_command = {IPTABLES} -w 5 -I {rule}\n"
            f"    cmd_timeout   = {ACCESS_TIMEOUT}\n"
            f"    stop_command  = {IPTABLES} -w 5 -D {rule}\n")


def base_rules(port: int, closed_udp: tuple[int, ...] = (), closed_tcp: tuple[int, ...] = ()) -> str:
    """iptables-nft-restore text for the server namespace under a peer: the protected port
    and the knock ports dropped (a peer sees its knocks by pcap, before INPUT, and inserts
    its ACCEPT rules ahead of these)."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]"]
    lines += [f"-A INPUT -p udp --dport {p} -j DROP" for p in closed_udp]
    lines += [f"-A INPUT -p tcp --dport {p} -j DROP" for p in (*closed_tcp, port)]
    return "\n".join([*lines, "COMMIT", ""])


_COUNTERS = (re.compile(r"\[\d+:\d+\]"), re.compile(r"counter packets \d+ bytes \d+"),
             re.compile(r"^# (Generated|Completed) .*$", re.M))


def normalize_firewall(text: str) -> str:
    """A firewall listing without what changes by itself (packet counters, save stamps)."""
    for pattern in _COUNTERS:
        text = pattern.sub("", text)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def firewall_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Names of the listings (nft list ruleset, iptables-legacy-save ...) that differ."""
    return sorted(name for name in before.keys() | after.keys()
                  if normalize_firewall(before.get(name, "")) != normalize_firewall(after.get(name, "")))


def times(value: float | None, base: float | None) -> str:
    """value / base as "12.3x" (the peer against awp), "-" when either is missing."""
    if value is None or not base:
        return "-"
    r = value / base
    return f"{r:.1f}x" if r >= 1 else f"{r:.2f}x"


def log_per_million(log_bytes: int, delivered: int) -> float | None:
    return log_bytes * 1e6 / delivered if delivered else None
