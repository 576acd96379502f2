"""Self-tests of the netns harness: topology, traffic, knock clients, nmap. No awp involved."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

from harness import Lab, awp_command, list_namespaces, make_root, port_state, sh

pytestmark = pytest.mark.netns

PORT = 2222


def drop_syns(host, port: int, family: int = 4) -> None:
    host.iptables(["-I", "INPUT", "-p", "tcp", "--syn", "--dport", port, "-j", "DROP"], family)


def packets(host, port: int, family: int = 4) -> int:
    """Sum of the packet counters of INPUT rules matching dport."""
    listing = host.iptables(["-L", "INPUT", "-v", "-n", "-x"], family)
    hits = [line for line in listing.splitlines() if re.search(rf"\bdpt:{port}\b", line)]
    return sum(int(line.split()[0]) for line in hits)


def settled(host, port: int, family: int, expect: int, timeout: float = 1.0) -> int:
    """The counter once it reached expect (or after timeout), to compare exactly."""
    deadline = time.monotonic() + timeout
    while packets(host, port, family) < expect and time.monotonic() < deadline:
        time.sleep(0.05)
    return packets(host, port, family)


def server_addr(lab, client, family: int) -> str:
    return lab.server_ip6(client) if family == 6 else lab.server_ip4(client)


# --- namespaces ------------------------------------------------------------------------


def test_namespaces_come_up_and_go_away():
    with Lab(clients=2, tag="updown") as lab:
        names = [h.name for h in lab.hosts]
        assert set(names) <= list_namespaces()
        assert all(n.startswith("awpt-") and f"-{os.getpid()}-" in n for n in names)
        for i, client in enumerate(lab.clients, 1):
            addrs = client.run(["ip", "addr", "show", "eth0"]).stdout
            assert f"198.18.{i}.2/24" in addrs and f"2001:2:0:{i}::2/64" in addrs
            assert "tentative" not in addrs
            assert f"via 198.18.{i}.1" in client.run(["ip", "route"]).stdout
            assert f"via 2001:2:0:{i}::1" in client.run(["ip", "-6", "route"]).stdout
        assert lab.server.sysctl("net.ipv4.conf.all.rp_filter") == "0"
    assert not set(names) & list_namespaces()


def test_exception_inside_with_still_cleans_up():
    with pytest.raises(ZeroDivisionError):
        with Lab(clients=1, tag="boom") as lab:
            names = [h.name for h in lab.hosts]
            sleeper = lab.clients[0].spawn(["sleep", "60"])
            1 / 0
    assert not set(names) & list_namespaces()
    assert sleeper.returncode is not None


def _bad_link(self, i, client):
    sh(["ip", "-n", self.server.name, "link", "add", "x" * 20, "type", "veth"])


def _interrupted_link(self, i, client):
    raise KeyboardInterrupt


@pytest.mark.parametrize("link, error", [(_bad_link, RuntimeError),
                                         (_interrupted_link, KeyboardInterrupt)])
def test_failed_setup_is_loud_and_cleans_up(monkeypatch, link, error):
    monkeypatch.setattr(Lab, "_link", link)
    lab = Lab(clients=1, tag="fail")
    with pytest.raises(error) as info:
        with lab:
            pass
    assert error is KeyboardInterrupt or "stderr: Error: " in str(info.value)
    assert not {h.name for h in lab.hosts} & list_namespaces()


def test_labs_get_unique_names():
    with Lab(clients=1) as a, Lab(clients=1) as b:
        assert a.server.name != b.server.name


# --- TCP -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_connect_from_each_client(lab, family):
    lab.server.serve_tcp(PORT, family)
    for client in lab.clients:
        assert client.tcp_connect(server_addr(lab, client, family), PORT)
        assert not client.tcp_connect(server_addr(lab, client, family), PORT + 1)


def test_drop_rule_in_server_blocks_connect(lab):
    client = lab.clients[0]
    for family in (4, 6):
        lab.server.serve_tcp(PORT, family)
    lab.server.iptables(["-I", "INPUT", "-p", "tcp", "--dport", PORT, "-j", "DROP"], 4)
    assert not client.tcp_connect(lab.server_ip4(client), PORT, timeout=1.0)
    assert client.tcp_connect(lab.server_ip6(client), PORT)
    lab.server.iptables(["-I", "INPUT", "-p", "tcp", "--dport", PORT, "-j", "DROP"], 6)
    assert not client.tcp_connect(lab.server_ip6(client), PORT, timeout=1.0)


@pytest.mark.parametrize("family", [4, 6])
def test_established_session_survives_syn_drop(lab, family):
    client = lab.clients[1]
    addr = server_addr(lab, client, family)
    lab.server.serve_tcp(PORT, family)
    session = client.open_session(addr, PORT)
    assert session.alive()
    drop_syns(lab.server, PORT, family)
    assert not client.tcp_connect(addr, PORT, timeout=1.0)
    assert session.alive() and session.alive()
    lab.server.iptables(["-I", "INPUT", "-p", "tcp", "--dport", PORT, "-j", "DROP"], family)
    assert not session.alive()
    session.close()


def test_closed_session_is_not_alive(lab):
    client = lab.clients[0]
    lab.server.serve_tcp(PORT)
    session = client.open_session(lab.server_ip4(client), PORT)
    session.close()
    assert not session.alive()
    with pytest.raises(RuntimeError, match="not opened"):
        client.open_session(lab.server_ip4(client), PORT + 1)


# --- knock clients ---------------------------------------------------------------------

KNOCKERS = {
    "telnet": lambda host, addr, ports: host.knock_telnet(addr, ports, hold=0.5),
    "nc": lambda host, addr, ports: host.knock_nc(addr, ports, wait=1),
    "knockd": lambda host, addr, ports: host.knock_knockd(addr, ports),
    "raw": lambda host, addr, ports: host.knock_raw(addr, ports, delay=0.05),
}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("knocker", sorted(KNOCKERS))
def test_knock_client_sends_one_syn_per_port(lab, knocker, family):
    ports = [7001, 7002, 7003]
    for port in ports:
        drop_syns(lab.server, port, family)
    client = lab.clients[0]
    KNOCKERS[knocker](client, server_addr(lab, client, family), ports)
    counts = [settled(lab.server, p, family, 1) for p in ports]
    if knocker == "nc":  # -w 1 races the first SYN retransmit (~1.0 s): 1 SYN, rarely 2
        assert all(n in (1, 2) for n in counts), counts
    else:
        assert counts == [1, 1, 1]


def _telnet_syns(lab, client, port: int, counts: dict) -> None:
    client.knock_telnet(lab.server_ip4(client), [port], hold=4.5)
    counts[client.name] = settled(lab.server, port, 4, 99, timeout=0.3)


def test_telnet_hold_retransmits_syn(lab):
    """hold=4.5: SYN at 0 s plus retransmits. Classic RTO backoff (1 s, 2 s) gives 3 SYNs;
    Linux >= 6.7 first retransmits linearly (net.ipv4.tcp_syn_linear_timeouts, default 4),
    every ~1 s, which gives 5. Client 1 forces the classic behaviour, client 2 keeps the
    kernel default."""
    classic, default = lab.clients
    linear = default.sysctl("net.ipv4.tcp_syn_linear_timeouts") if _has_linear(default) else "0"
    if _has_linear(classic):
        classic.sysctl("net.ipv4.tcp_syn_linear_timeouts", 0)
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=_telnet_syns, args=(lab, c, 7100 + i, counts))
               for i, c in enumerate(lab.clients)]
    for port in (7100, 7101):
        drop_syns(lab.server, port)
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert counts == {classic.name: 3, default.name: 5 if int(linear) >= 4 else 3}


def _has_linear(host) -> bool:
    return host.run(["sysctl", "net.ipv4.tcp_syn_linear_timeouts"], check=False).returncode == 0


# --- nmap ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_nmap_port_states(lab, family):
    client = lab.clients[0]
    lab.server.serve_tcp(PORT, family)
    lab.server.iptables(["-I", "INPUT", "-p", "tcp", "--dport", 7200, "-j", "DROP"], family)
    v6 = ["-6"] if family == 6 else []
    out = client.nmap([*v6, "-Pn", "-sS", "-p", f"{PORT},7200,7201",
                       server_addr(lab, client, family)])
    assert [port_state(out, p) for p in (PORT, 7200, 7201)] == ["open", "filtered", "closed"]


def test_port_state_reads_folded_single_port():
    out = ("Nmap scan report for 198.18.1.1\nHost is up.\n\nAll 1 scanned ports on 198.18.1.1 "
           "are in ignored states.\nNot shown: 1 filtered tcp ports (no-response)\n")
    assert port_state(out, 22) == "filtered"
    with pytest.raises(ValueError):
        port_state("nothing here", 22)


# --- iptables-save, awp root, awp command -------------------------------------------------


@pytest.mark.parametrize("variant", ["nft", "legacy"])
@pytest.mark.parametrize("family", [4, 6])
def test_iptables_save_is_comparable(lab, family, variant):
    lab.server.iptables(["-A", "INPUT", "-p", "tcp", "--dport", 7300, "-j", "DROP"],
                        family, variant)
    saved = lab.server.iptables_save(family, variant)
    assert "--dport 7300 -j DROP" in saved
    assert not re.search(r"^# (Generated|Completed)", saved, re.M)  # they carry timestamps
    assert "7300" not in lab.clients[0].iptables_save(family, variant)


def test_make_root(tmp_path):
    root = Path(make_root(tmp_path, 'MODE="simple"\n', "22 1000 2000\n", None))
    fw = root / "etc" / "firewall"
    assert (root / "etc" / "config").read_text() == 'MODE="simple"\n'
    assert (fw / "simple-portknock-list").read_text() == "22 1000 2000\n"
    assert not (fw / "advanced-portknock-list").exists() and (root / "var").is_dir()
    st = (fw / "simple-portknock-list").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert make_root(tmp_path, "", None, None) != str(root)


def test_awp_command_is_runnable():
    cmd, env = awp_command()
    assert Path(cmd[0]).exists()
    assert cmd[1:] == [] or (cmd[1:] == ["-m", "awp"] and "PYTHONPATH" in env)
