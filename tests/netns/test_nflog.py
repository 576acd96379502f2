"""NflogSocket against the real kernel: NFLOG + DROP in a throwaway server namespace.

Two namespaces joined by a veth pair (198.18.200.1/24 and 2001:2:0:200::1/64 on the
server side, .2 on the client side). The server's INPUT chain (IPv4 and IPv6) sends UDP
port 2000 to NFLOG group 4747 and drops it, after an ESTABLISHED,RELATED accept as awp's
own rules have (that rule turns conntrack on, which makes IPv6 reassemble fragments before
INPUT). The reader runs as a child process inside the server namespace
(`ip netns exec ... python -c READER`) and prints one JSON line per packet; senders are
short python children in the client namespace.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
GROUP = 4747
PORT = 2000
CLOSED_PORT = 2001
SRV4, CLI4 = "198.18.200.1", "198.18.200.2"
SRV6, CLI6 = "2001:2:0:200::1", "2001:2:0:200::2"
COPY = 256
CMD_TIMEOUT = 30
KNOCK = b"0123456789abcdef" * 4 + b"\n"

READER = r"""
import json, select, sys, time
from awp.knockd.nflog import NflogSocket

args = json.loads(sys.argv[1])
def emit(**kw):
    print(json.dumps(kw), flush=True)
def nf_log():
    return [open(f"/proc/sys/net/netfilter/nf_log/{f}").read().strip() for f in (2, 10)]

before = nf_log()
sock = NflogSocket(args["group"], copy_range=args["copy"], rcvbuf=args["rcvbuf"])
emit(event="ready", nf_log_before=before, nf_log_after=nf_log())
deadline = time.monotonic() + args["lifetime"]
if args["wait_go"]:  # let the kernel queue fill up while nobody reads
    ready, _, _ = select.select([sys.stdin], [], [], args["lifetime"])
    if not ready or not sys.stdin.readline():
        sys.exit(0)
emit(event="reading")
flood = 0
while time.monotonic() < deadline:
    ready, _, _ = select.select([sock, sys.stdin], [], [], 0.5)
    if sys.stdin in ready:
        break  # the test closed our stdin
    for p in sock.receive(0):
        if p.payload.startswith(b"flood"):
            flood += 1
            continue
        emit(event="packet", family=int(p.family), src=str(p.src), dst=str(p.dst),
             sport=p.sport, dport=p.dport, length=p.length, payload=p.payload.hex(),
             flood=flood, overruns=sock.overruns)
sock.close()
"""

SENDER = r"""
import json, socket, sys
a = json.loads(sys.argv[1])
family = socket.AF_INET6 if ":" in a["dst"] else socket.AF_INET
payload = bytes.fromhex(a["hex"]) if "hex" in a else bytes(i % 251 for i in range(a["size"]))
with socket.socket(family, socket.SOCK_DGRAM) as s:
    s.bind(("", a["sport"]))
    for _ in range(a["count"]):
        s.sendto(payload, (a["dst"], a["dport"]))
"""

def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=CMD_TIMEOUT)


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def in_ns(ns: str, script: str, args: dict) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", script, json.dumps(args)]


def build(srv: str, cli: str) -> None:
    run("ip", "netns", "add", srv)
    run("ip", "netns", "add", cli)
    run("ip", "-n", srv, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        "netns", cli)
    for ns, dev, a4, a6 in ((srv, "veth0", SRV4, SRV6), (cli, "veth1", CLI4, CLI6)):
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev)
        run("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad")
        run("ip", "-n", ns, "link", "set", dev, "up")
    for tool in ("iptables", "ip6tables"):
        ipt = ("ip", "netns", "exec", srv, tool, "-w", "-A", "INPUT")
        run(*ipt, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        run(*ipt, "-p", "udp", "--dport", str(PORT), "-j", "NFLOG",
            "--nflog-group", str(GROUP), "--nflog-size", str(COPY))
        run(*ipt, "-p", "udp", "--dport", str(PORT), "-j", "DROP")


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0:  # fail, never skip: a green run must mean this tier ran
        pytest.fail("netns tests need root (network namespaces)", pytrace=False)
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed", pytrace=False)
    srv, cli = f"awpnf-s{os.getpid()}", f"awpnf-c{os.getpid()}"
    try:
        build(srv, cli)
        yield srv, cli
    finally:
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=CMD_TIMEOUT)


class Reader:
    """The reader child in the server namespace; its JSON lines arrive on a queue."""

    def __init__(self, ns: str, tmp: Path, rcvbuf: int = 4 << 20, wait_go: bool = False):
        args = {"group": GROUP, "copy": COPY, "rcvbuf": rcvbuf, "wait_go": wait_go,
                "lifetime": 60}
        self.stderr_path = tmp / "reader.stderr"
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                in_ns(ns, READER, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, text=True, cwd=ROOT, env=child_env())
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, pred, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            self.seen.append(line)
            if pred(line):
                return line
        stderr = self.stderr_path.read_text()
        raise AssertionError(f"reader never reported it; saw {self.seen[-5:]}; stderr: {stderr}")

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def send(ns: str, dst: str, payload: bytes | int, *, sport: int = 40001, count: int = 1,
         dport: int = PORT) -> None:
    """Send ``payload`` (or that many bytes of the ``pattern``) ``count`` times."""
    args = {"dst": dst, "dport": dport, "sport": sport, "count": count}
    args.update({"size": payload} if isinstance(payload, int) else {"hex": payload.hex()})
    subprocess.run(in_ns(ns, SENDER, args), check=True, timeout=CMD_TIMEOUT + 30,
                   env=child_env())


def probe(ns: str, dst: str, dport: int) -> dict:
    from probes import UDP_PROBE

    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", UDP_PROBE, dst, str(dport)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                         env=child_env())
    return json.loads(out.stdout)


def pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def is_packet(payload: bytes):
    return lambda line: line["event"] == "packet" and line["payload"] == payload.hex()


FAMILIES = pytest.mark.parametrize(
    "family, src, dst, ip_header", [(2, CLI4, SRV4, 20), (10, CLI6, SRV6, 40)], ids=["v4", "v6"])


@FAMILIES
def test_knock_is_seen_with_its_addresses_and_ports(net, tmp_path, family, src, dst, ip_header):
    srv, cli = net
    with Reader(srv, tmp_path) as reader:
        reader.wait_for(lambda line: line["event"] == "reading")
        send(cli, dst, KNOCK, sport=40001)
        got = reader.wait_for(is_packet(KNOCK))
    assert (got["family"], got["src"], got["dst"]) == (family, src, dst)
    assert (got["sport"], got["dport"], got["length"]) == (40001, PORT, len(KNOCK))


@FAMILIES
def test_big_datagram_reports_real_length_and_copies_the_range(
    net, tmp_path, family, src, dst, ip_header
):
    srv, cli = net
    copied = pattern(65000)[: COPY - ip_header - 8]
    with Reader(srv, tmp_path) as reader:
        reader.wait_for(lambda line: line["event"] == "reading")
        send(cli, dst, 65000, sport=40002)
        got = reader.wait_for(is_packet(copied))
    assert (got["src"], got["sport"], got["length"]) == (src, 40002, 65000)


def test_marker_is_seen_after_a_flood_overran_the_kernel_queue(net, tmp_path):
    srv, cli = net
    marker = b"marker-after-flood"
    with Reader(srv, tmp_path, rcvbuf=64 * 1024, wait_go=True) as reader:
        reader.wait_for(lambda line: line["event"] == "ready")
        send(cli, SRV4, b"flood" + b"x" * 60, sport=40003, count=20000)
        reader.go()
        reader.wait_for(lambda line: line["event"] == "reading")
        send(cli, SRV4, marker, sport=40004)
        got = reader.wait_for(is_packet(marker), timeout=20)
    assert got["overruns"] >= 1, "the small buffer should have overflowed"
    assert 0 < got["flood"] < 20000


@pytest.mark.parametrize("dst", [SRV4, SRV6], ids=["v4", "v6"])
def test_without_a_reader_the_port_looks_filtered(net, dst):
    _srv, cli = net
    assert probe(cli, dst, CLOSED_PORT)["recv"] == "refused", "control: ICMP must get through"
    assert probe(cli, dst, PORT) == {"send1": "ok", "recv": "timeout", "send2": "ok"}


def test_a_second_reader_on_the_group_is_refused(net, tmp_path):
    srv, _cli = net
    attempt = "from awp.knockd.nflog import NflogSocket\nNflogSocket(4747)\n"
    with Reader(srv, tmp_path) as reader:
        reader.wait_for(lambda line: line["event"] == "ready")
        out = subprocess.run(["ip", "netns", "exec", srv, sys.executable, "-c", attempt],
                             capture_output=True, text=True, timeout=CMD_TIMEOUT,
                             env=child_env())
    assert out.returncode != 0
    assert "NFLOG group 4747" in out.stderr


def test_opening_leaves_the_namespace_default_logger_alone(net, tmp_path):
    srv, _cli = net
    with Reader(srv, tmp_path) as reader:
        ready = reader.wait_for(lambda line: line["event"] == "ready")
    assert ready["nf_log_after"] == ready["nf_log_before"]
