"""Throwaway network namespaces for awp's end-to-end tests (plain module, no pytest).

    with Lab(clients=2) as lab:
        lab.server.serve_tcp(22)
        assert lab.clients[0].tcp_connect(lab.server_ip4(lab.clients[0]), 22)

Topology: one server namespace and N client namespaces, one veth pair per client.
Client i (1-based) is 198.18.<i>.2/24 and 2001:2:0:<i>::2/64; the server side of that
link is 198.18.<i>.1/24 and 2001:2:0:<i>::1/64. Nothing is ever configured in the root
namespace: links are created inside the lab's namespaces with `ip -n`.

Leaving the `with` block kills every process the lab started (by PID, whole process
group), deletes every namespace and checks that they are gone. Failures raise
RuntimeError with the failing command's output; nothing is silently skipped.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TCPSERVER = Path(__file__).with_name("tcpserver.py")
PREFIX = "awpt-"
BANNER = "awp-test-ok"
_counter = itertools.count(1)

CONNECT_CLIENT = r"""
import socket, sys
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((addr, port), timeout=timeout) as s:
        ok = s.makefile("rb").readline(100) == b"awp-test-ok\n"
except OSError:
    ok = False
sys.exit(0 if ok else 1)
"""

SESSION_CLIENT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    f = s.makefile("rb")
    if f.readline(100) != b"awp-test-ok\n":
        raise OSError("no banner")
except OSError as e:
    print("failed", e, flush=True)
    sys.exit(1)
print("connected", flush=True)
for line in sys.stdin:
    try:
        s.sendall(b"ping\n")
        ok = f.readline(100) == b"ping\n"
    except OSError:
        ok = False
    print("pong" if ok else "dead", flush=True)
"""

PEER_SERVER = r"""
import socket, sys
port, family = int(sys.argv[1]), socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
s.listen(16)
for _ in range(1000):
    conn, peer = s.accept()
    print(peer[0], flush=True)
    try:
        conn.sendall(peer[0].encode() + b"\n")
    except OSError:
        pass
    conn.close()
"""

PEER_CLIENT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        print(s.makefile("rb").readline(100).decode().strip())
except OSError:
    sys.exit(1)
"""

RAW_KNOCK = r"""
import socket, sys, time
addr, delay = sys.argv[1], float(sys.argv[2])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
for port in sys.argv[3:]:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((addr, int(port)))
    time.sleep(delay)
    s.close()
"""


def _fail(what: str, proc: subprocess.CompletedProcess) -> RuntimeError:
    return RuntimeError(
        f"{what} failed (rc={proc.returncode})\n"
        f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
    )


def sh(argv: list[str], timeout: float = 30, input: str | None = None, check: bool = True,
       env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv (text mode, captured); on check failure raise with stdout and stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          input=input, env=env)
    if check and proc.returncode != 0:
        raise _fail(" ".join(argv), proc)
    return proc


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll predicate until it is true; bounded in time and in count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def list_namespaces() -> set[str]:
    out = sh(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def stop(proc: subprocess.Popen, first: int = signal.SIGTERM, grace: float = 2.0) -> None:
    """Signal proc's process group (it leads its own session), then SIGKILL if needed.

    A leader that was already reaped is left alone: its PID may belong to someone else now.
    """
    for sig in (first, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


def port_state(nmap_output: str, port: int, proto: str = "tcp") -> str:
    """'open', 'closed', 'filtered', 'open|filtered', ... for port in nmap's normal output."""
    m = re.search(rf"^{port}/{proto}\s+(\S+)", nmap_output, re.M)
    if m:
        return m.group(1)
    # nmap >= 7.92 folds single ports in an "ignored" state into a summary line
    m = re.search(rf"are in ignored states\.\nNot shown: 1 (\S+) {proto} port", nmap_output)
    if m:
        return m.group(1)
    raise ValueError(f"port {port}/{proto} not found in nmap output:\n{nmap_output}")


def awp_command() -> tuple[list[str], dict[str, str]]:
    """The awp console script of the venv, else `python -m awp` with the repo on PYTHONPATH."""
    script = REPO / ".venv" / "bin" / "awp"
    if script.exists():
        return [str(script)], {}
    return [str(REPO / ".venv" / "bin" / "python"), "-m", "awp"], {"PYTHONPATH": str(REPO)}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchown(f.fileno(), 0, 0)
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def make_root(tmp_path, config: str, simple: str | None, advanced: str | None) -> str:
    """A fresh awp root under tmp_path; a list given as None is not created."""
    root = Path(tempfile.mkdtemp(prefix="awp-root-", dir=tmp_path))
    (root / "etc" / "firewall").mkdir(parents=True)
    (root / "var").mkdir()
    _write_private(root / "etc" / "config", config)
    for name, text in (("simple", simple), ("advanced", advanced)):
        if text is not None:
            _write_private(root / "etc" / "firewall" / f"{name}-portknock-list", text)
    return str(root)


class Session:
    """An established TCP connection held by a child process inside a namespace."""

    def __init__(self, proc: subprocess.Popen):
        self._proc = proc
        self._buf = b""

    def readline(self, timeout: float) -> str | None:
        """One line from the child, or None on timeout or EOF."""
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def alive(self) -> bool:
        """Send a line over the connection; True iff it is echoed within 2 s."""
        if self._proc.poll() is not None:
            return False
        try:
            self._proc.stdin.write(b"ping\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            return False
        return self.readline(3.0) == "pong"

    def close(self) -> None:
        stop(self._proc)


class Host:
    """One namespace of a Lab. ip4/ip6: this host's own address (server: on client 1's link)."""

    def __init__(self, name: str, ip4: str, ip6: str, procs: list[subprocess.Popen]):
        self.name, self.ip4, self.ip6 = name, ip4, ip6
        self._procs = procs

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.ip4}, {self.ip6})"

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, argv: list[str], timeout: float = 30, input: str | None = None,
            check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return sh(self._wrap(argv), timeout=timeout, input=input, check=check, env=env)

    def spawn(self, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start argv in a new session; the lab kills its process group on exit."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self._wrap(argv), start_new_session=True, **popen_kwargs)
        self._procs.append(proc)
        return proc

    def listening(self, port: int, family: int = 4) -> bool:
        out = self.run(["ss", "-Hltn", f"-{family}", f"sport = :{port}"]).stdout
        return bool(out.strip())

    def serve_tcp(self, port: int, family: int = 4) -> None:
        """Banner + echo server (tcpserver.py) on port; returns once it listens."""
        log = tempfile.TemporaryFile()
        proc = self.spawn([sys.executable, TCPSERVER, port, family], stdout=log, stderr=log)

        def up() -> bool:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"tcpserver on {self.name}:{port} died: {log.read()!r}")
            return self.listening(port, family)

        wait_for(up, 5.0, f"tcpserver on {self.name} port {port}/v{family}")

    def serve_peer(self, port: int, family: int = 4) -> None:
        """A TCP server on port that writes each client's address back as one line ("who
        connected": the source address this host sees); returns once it listens."""
        log = tempfile.TemporaryFile()
        proc = self.spawn([sys.executable, "-c", PEER_SERVER, port, family], stdout=log, stderr=log)

        def up() -> bool:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"peer server on {self.name}:{port} died: {log.read()!r}")
            return self.listening(port, family)

        wait_for(up, 5.0, f"peer server on {self.name} port {port}/v{family}")

    def peer_seen(self, addr: str, port: int, timeout: float = 2.0) -> str | None:
        """Connect and read the line a serve_peer() server writes: the address it saw, or None."""
        argv = [sys.executable, "-c", PEER_CLIENT, addr, port, timeout]
        out = self.run(argv, timeout=timeout + 10, check=False)
        return out.stdout.strip() or None if out.returncode == 0 else None

    def tcp_connect(self, addr: str, port: int, timeout: float = 2.0) -> bool:
        """A real connect from this namespace; True iff connected and the banner arrived."""
        argv = [sys.executable, "-c", CONNECT_CLIENT, addr, port, timeout]
        return self.run(argv, timeout=timeout + 10, check=False).returncode == 0

    def open_session(self, addr: str, port: int) -> Session:
        argv = [sys.executable, "-c", SESSION_CLIENT, addr, port]
        session = Session(self.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        line = session.readline(5.0)
        if line != "connected":
            session.close()
            raise RuntimeError(f"session {self.name} -> [{addr}]:{port} not opened: {line}")
        return session

    def knock_telnet(self, addr: str, ports: list[int], hold: float = 0.5) -> None:
        """Real telnet per port, interrupted (SIGINT, then SIGKILL) after hold seconds."""
        for port in ports:
            proc = self.spawn(["telnet", addr, port], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(hold)
            stop(proc, first=signal.SIGINT, grace=1.0)

    def knock_nc(self, addr: str, ports: list[int], wait: int = 1) -> None:
        """`nc -z -w wait` per port. wait=1 races the ~1 s SYN retransmit: 1 SYN, rarely 2."""
        for port in ports:
            self.run(["nc", "-n", "-z", "-w", wait, addr, port], timeout=wait + 10, check=False)

    def knock_knockd(self, addr: str, ports: list[int], delay_ms: int = 0) -> None:
        """knockd's `knock` client (TCP); -6 for IPv6 addresses, -d delay between hits."""
        family = "-6" if ":" in addr else "-4"
        argv = ["knock", family, "-d", delay_ms, addr, *ports]
        self.run(argv, timeout=10 + len(ports) * (1 + delay_ms / 1000))

    def knock_raw(self, addr: str, ports: list[int], delay: float = 0.1) -> None:
        """Non-blocking connect() per port, socket closed after delay seconds."""
        argv = [sys.executable, "-c", RAW_KNOCK, addr, delay, *ports]
        self.run(argv, timeout=10 + len(ports) * (1 + delay))

    def nmap(self, args: list[str], timeout: float = 60) -> str:
        return self.run(["nmap", "-n", "--host-timeout", "30s", *args], timeout=timeout).stdout

    def sysctl(self, name: str, value: str | int | None = None) -> str:
        """Read (value None) or set a sysctl of this namespace; returns the value."""
        if value is not None:
            self.run(["sysctl", "-qw", f"{name}={value}"])
        return self.run(["sysctl", "-n", name]).stdout.strip()

    def iptables(self, args: list[str], family: int = 4, variant: str = "nft") -> str:
        tool = f"{'ip6' if family == 6 else 'ip'}tables-{variant}"
        return self.run([tool, "-w", "5", *args]).stdout

    def iptables_save(self, family: int = 4, variant: str = "nft") -> str:
        """iptables-save output without the timestamped comment lines."""
        tool = f"{'ip6' if family == 6 else 'ip'}tables-{variant}-save"
        lines = self.run([tool]).stdout.splitlines(keepends=True)
        return "".join(l for l in lines if not l.startswith(("# Generated", "# Completed")))

    def nft(self, args: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """The nft program inside this namespace (`-f -` reads `input`)."""
        return self.run(["nft", *args], input=input, check=check)

    def nft_ruleset(self) -> str:
        """`nft list ruleset`: every nftables table of this namespace, iptables-nft's included."""
        return self.nft(["list", "ruleset"]).stdout

    def awp(self, args: list[str], root: str, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess:
        cmd, extra_env = awp_command()
        env = {**os.environ, **extra_env} if extra_env else None
        return self.run([*cmd, "--root", root, *args], timeout=timeout, check=check, env=env)


class Lab:
    """Server + N clients in fresh namespaces; created on __enter__, removed on __exit__."""

    def __init__(self, clients: int = 2, tag: str = ""):
        if not 1 <= clients <= 200:
            raise ValueError(f"clients must be 1..200, got {clients}")
        tag = re.sub(r"[^a-z0-9]", "", tag.lower())[:12]
        base = f"{PREFIX}{os.getpid()}-{next(_counter)}{'-' + tag if tag else ''}"
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        self.server = Host(f"{base}-srv", "198.18.1.1", "2001:2:0:1::1", self._procs)
        self.clients = [Host(f"{base}-c{i}", f"198.18.{i}.2", f"2001:2:0:{i}::2", self._procs)
                        for i in range(1, clients + 1)]

    @property
    def hosts(self) -> list[Host]:
        return [self.server, *self.clients]

    def _index(self, client: Host) -> int:
        return self.clients.index(client) + 1

    def server_ip4(self, client: Host) -> str:
        return f"198.18.{self._index(client)}.1"

    def server_ip6(self, client: Host) -> str:
        return f"2001:2:0:{self._index(client)}::1"

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        for host in self.hosts:
            self._add_namespace(host)
        self.server.sysctl("net.ipv4.conf.all.rp_filter", 0)
        self.server.sysctl("net.ipv4.conf.default.rp_filter", 0)
        for i, client in enumerate(self.clients, 1):
            self._link(i, client)
        for i, client in enumerate(self.clients, 1):
            for ns, dev in ((self.server.name, f"awp-c{i}"), (client.name, "eth0")):
                wait_for(lambda: self._link_ready(ns, dev), 5.0, f"{dev} up in {ns}")

    def _add_namespace(self, host: Host) -> None:
        sh(["ip", "netns", "add", host.name])
        self._made.append(host.name)
        host.sysctl("net.ipv6.conf.all.accept_dad", 0)
        host.sysctl("net.ipv6.conf.default.accept_dad", 0)
        sh(["ip", "-n", host.name, "link", "set", "lo", "up"])

    def _link(self, i: int, client: Host) -> None:
        """veth awp-c<i> (server) <-> eth0 (client i), addresses, default routes."""
        srv, cli, dev = self.server.name, client.name, f"awp-c{i}"
        sh(["ip", "-n", srv, "link", "add", dev, "type", "veth",
            "peer", "name", "eth0", "netns", cli])
        for ns, link, v4, v6 in ((srv, dev, f"198.18.{i}.1", f"2001:2:0:{i}::1"),
                                 (cli, "eth0", client.ip4, client.ip6)):
            sh(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", link])
            sh(["ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", link, "nodad"])
            sh(["ip", "-n", ns, "link", "set", link, "up"])
        sh(["ip", "-n", cli, "route", "add", "default", "via", f"198.18.{i}.1"])
        sh(["ip", "-n", cli, "-6", "route", "add", "default", "via", f"2001:2:0:{i}::1"])

    def route_through_server(self) -> None:
        """Make the server a router between its client links (IPv4 and IPv6 forwarding on):
        for three-namespace topologies, say client 1 -- server (gateway) -- client 2 (an
        inner host, whose default route already points at the server)."""
        self.server.sysctl("net.ipv4.ip_forward", 1)
        self.server.sysctl("net.ipv6.conf.all.forwarding", 1)

    @staticmethod
    def _link_ready(ns: str, dev: str) -> bool:
        """Carrier up, link-local address present, no address tentative (DAD done)."""
        out = sh(["ip", "-n", ns, "-6", "addr", "show", "dev", dev]).stdout
        return "state UP" in out and "scope link" in out and "tentative" not in out

    def close(self) -> None:
        """Kill our processes, delete our namespaces, raise if any namespace is left."""
        try:
            for proc in reversed(self._procs):
                stop(proc)
        finally:
            errors = [sh(["ip", "netns", "del", n], check=False).stderr for n in self._made]
            left = set(self._made) & list_namespaces()
            if left:
                raise RuntimeError(f"namespaces left behind: {sorted(left)}: {errors}")
            self._made.clear()
