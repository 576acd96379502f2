"""Helpers for test_fleet.py and bench/fleet_bench.py: a fleet of awp nodes on one LAN.

    hub namespace: bridge br0 198.18.100.254/16, and our own redis-server bound to that address
    node i:   198.18.100.<i>/16     (its own awp root and listener: AwpServer)
    client j: 198.18.100.<100+j>/16 (reaches every node directly, same source address to all)

Nothing is configured in the root namespace. The Redis is started here, bound to the hub's
address only, with no persistence (--save '' --appendonly no), and stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from advanced_helpers import DOOR, AwpServer, write_private
from harness import PREFIX, Host, _counter, list_namespaces, sh, stop, wait_for

NET = "198.18.100"
REDIS_IP = f"{NET}.254"
REDIS_PORT = 6390
FLEET_URL = f"redis://{REDIS_IP}:{REDIS_PORT}/0"
KEY_HEX = "5a" * 32


class Redis:
    """redis-server in the hub namespace; kill(), stall() (SIGSTOP), resume() and start again."""

    def __init__(self, hub: Host):
        self.hub = hub
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="awp-redis-")
        self.extra: list[str] = []  # more redis-server arguments (TLS, an ACL user)
        self.cli_args: list[str] = []
        self.cli_env: dict[str, str] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--bind", REDIS_IP, "--port", REDIS_PORT, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--dir", self.dir, "--logfile", "", "--loglevel", "warning",
                *self.extra]
        self.proc = self.hub.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.ping(), 5.0, "redis-server to answer")

    def cli(self, *args, check: bool = True) -> str:
        return self.hub.run(["redis-cli", "-h", REDIS_IP, "-p", REDIS_PORT, *self.cli_args, *args], check=check,
                            timeout=10, env=self.cli_env).stdout

    def ping(self) -> bool:
        return self.hub.run(["redis-cli", "-h", REDIS_IP, "-p", REDIS_PORT, *self.cli_args, "ping"], check=False,
                            timeout=5, env=self.cli_env).stdout.strip() == "PONG"

    def with_tls_and_acl(self, user: str, password: str) -> Path:
        """Restart-ready arguments: TLS only (a CA and a server certificate made here with
        openssl) and an ACL user limited to awp's keys; the default user is off. The password
        goes to redis-server in an ACL file, never on a command line. Returns the CA file."""
        d = Path(self.dir)
        ssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        sh([*ssl, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-subj", "/CN=awp test CA"])
        sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "redis.key", "-out", d / "redis.csr",
            "-subj", f"/CN={REDIS_IP}"])
        (d / "san.ext").write_text(f"subjectAltName=IP:{REDIS_IP}\n")
        sh(["openssl", "x509", "-req", "-in", d / "redis.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
            "-CAcreateserial", "-days", "1", "-out", d / "redis.crt", "-extfile", d / "san.ext"])
        acl = d / "users.acl"
        acl.write_text(f"user default off\nuser {user} on >{password} ~awp:* &* +@all\n")
        acl.chmod(0o600)
        self.extra = ["--port", "0", "--tls-port", str(REDIS_PORT), "--tls-cert-file", str(d / "redis.crt"),
                      "--tls-key-file", str(d / "redis.key"), "--tls-ca-cert-file", str(d / "ca.crt"),
                      "--tls-auth-clients", "no", "--aclfile", str(acl)]
        self.cli_args = ["--tls", "--cacert", str(d / "ca.crt"), "--user", user]
        self.cli_env = {**os.environ, "REDISCLI_AUTH": password}
        return d / "ca.crt"

    def kill(self) -> None:
        stop(self.proc, first=signal.SIGKILL)
        self.proc = None

    def stall(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            stop(self.proc)


class FleetLab:
    """The hub (bridge + Redis), `nodes` node namespaces and `clients` client namespaces."""

    def __init__(self, nodes: int = 2, clients: int = 1, tag: str = "fleet"):
        base = f"{PREFIX}{os.getpid()}-{next(_counter)}-{tag[:8]}"
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        self.hub = Host(f"{base}-hub", REDIS_IP, "2001:2:0:100::fe", self._procs)
        self.nodes = [Host(f"{base}-n{i}", f"{NET}.{i}", f"2001:2:0:100::{i}", self._procs)
                      for i in range(1, nodes + 1)]
        self.clients = [Host(f"{base}-c{j}", f"{NET}.{100 + j}", f"2001:2:0:100::{100 + j:x}", self._procs)
                        for j in range(1, clients + 1)]
        self.redis = Redis(self.hub)

    def __enter__(self) -> FleetLab:
        try:
            self._build()
            self.redis.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        hub = self.hub.name
        sh(["ip", "netns", "add", hub])
        self._made.append(hub)
        sh(["ip", "-n", hub, "link", "set", "lo", "up"])
        sh(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", hub, "addr", "add", f"{REDIS_IP}/16", "dev", "br0"])
        sh(["ip", "-n", hub, "link", "set", "br0", "up"])
        for i, host in enumerate(self.nodes + self.clients):
            sh(["ip", "netns", "add", host.name])
            self._made.append(host.name)
            port = f"p{i}"
            sh(["ip", "-n", host.name, "link", "set", "lo", "up"])
            sh(["ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.name])
            sh(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
            sh(["ip", "-n", host.name, "addr", "add", f"{host.ip4}/16", "dev", "eth0"])
            sh(["ip", "-n", host.name, "link", "set", "eth0", "up"])
        for host in self.nodes + self.clients:
            wait_for(lambda: "state UP" in sh(["ip", "-n", host.name, "link", "show", "eth0"]).stdout, 5.0,
                     f"eth0 up in {host.name}")

    def close(self) -> None:
        try:
            self.redis.close()
            for proc in reversed(self._procs):
                stop(proc)
        finally:
            for name in reversed(self._made):
                sh(["ip", "netns", "del", name], check=False)
            left = set(self._made) & list_namespaces()
            if left:
                raise RuntimeError(f"namespaces left behind: {sorted(left)}")
            self._made.clear()


def fleet_node(host: Host, tmp_path, backend: str, name: str, key_hex: str | None = KEY_HEX,
               required: bool = False, **settings) -> AwpServer:
    """An AwpServer (its own root, the default door) on `host`, in the fleet as `name`."""
    more = {"FW_PORTKNOCK_FLEET": FLEET_URL, "FW_PORTKNOCK_NODE": name,
            "FW_PORTKNOCK_FLEET_REQUIRED": "yes" if required else "no", **settings}
    srv = AwpServer(SimpleNamespace(server=host), tmp_path, backend, DOOR, None, **more)
    if key_hex is not None:
        write_private(srv.base / "etc" / "fleet.key", key_hex + "\n")
    return srv


def fleet_state(srv: AwpServer) -> dict:
    """The fleet part of `awp status --json` on that node."""
    import json

    proc = srv.awp("status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout).get("fleet") or {}


def wait_fleet(srv: AwpServer, connected: bool, timeout: float = 10.0) -> dict:
    found = {}

    def ok() -> bool:
        found.update(fleet_state(srv))
        return found.get("connected") is connected

    wait_for(ok, timeout, f"fleet connected={connected} on {srv.root}", interval=0.3)
    return found
