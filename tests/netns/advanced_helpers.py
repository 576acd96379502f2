"""Helpers for test_advanced.py: an awp root with advanced doors applied in a Lab's server,
its listener, the listener log, and senders that run inside client namespaces.

Packets are built with the independent reference of the wire format (tests/unit/pknock_ref.py),
never with awp.otp, so the tests do not check awp against itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from awp.paths import Root

from harness import REPO, awp_command, make_root, wait_for

sys.path.insert(0, str(REPO / "tests" / "unit"))
from pknock_ref import ref_mac  # noqa: E402

KNOCK_SH = REPO / "client" / "knock.sh"
PORT = 2222  # protected TCP port
KNOCK_PORT = 2000  # its UDP knock port
OPEN = "opensecret1"
CLOSE = "closesecret1"
DOOR = f"{PORT},{KNOCK_PORT},{OPEN},{CLOSE}\n"
SETTLE = 3.0  # how long a knock may take to show its effect

SENDER = r"""
import json, socket, sys, time
a = json.loads(sys.stdin.read())
family = socket.AF_INET6 if ":" in a["dst"] else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as s:
    for i, h in enumerate(a["payloads"]):
        if i:
            time.sleep(a["gap"])
        s.sendto(bytes.fromhex(h), (a["dst"], a["port"]))
"""

FLOOD = r"""
import json, os, socket, sys, time
dst, port, count, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
sent = errors = 0
deadline = time.monotonic() + limit
with socket.socket(family, socket.SOCK_DGRAM) as s:
    s.connect((dst, port))
    while sent + errors < count and time.monotonic() < deadline:
        try:
            s.send(os.urandom(32).hex().encode() + b"\n")
            sent += 1
        except OSError:
            errors += 1
print(json.dumps({"sent": sent, "errors": errors}))
"""

def config_text(backend: str, advanced: str = "yes", simple: str = "no", autoclose: int = 3600,
                group: int | None = None, **more: str) -> str:
    """An awp config on FW_PORTKNOCK_BACKEND=`backend`; `more`: other settings, verbatim."""
    lines = ['FW_PORTKNOCK="yes"', f'FW_PORTKNOCK_BACKEND="{backend}"', f'FW_PORTKNOCK_SIMPLE="{simple}"',
             f'FW_PORTKNOCK_ADVANCED="{advanced}"', f'FW_PORTKNOCK_AUTOCLOSE="{autoclose}"']
    lines += [f'{key}="{value}"' for key, value in more.items()]
    if group is not None:
        lines.append(f'FW_PORTKNOCK_NFLOG_GROUP="{group}"')
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Root-owned file with `mode` (as make_root writes it), replaced atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchown(f.fileno(), 0, 0)
        os.fchmod(f.fileno(), mode)
        f.write(text)
    os.replace(tmp, path)


# --- time and one-time passwords ---------------------------------------------------------


def safe_now(margin: float = 2.0) -> float:
    """Now, but never in the last `margin` seconds of a minute (a knock built then could
    reach the listener in the next minute)."""
    now = time.time()
    if now % 60 > 60 - margin:
        time.sleep(60 - now % 60 + 0.2)
        now = time.time()
    return now


def wait_second(lo: int, hi: int, limit: float = 70.0) -> float:
    """Sleep until the wall clock's second-of-minute is in [lo, hi]; returns that time."""
    deadline = time.monotonic() + limit
    for _ in range(int(limit * 10) + 1):
        now = time.time()
        if lo <= now % 60 <= hi:
            return now
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise RuntimeError(f"second {lo}-{hi} of a minute never came")


class Macs:
    """Fresh one-time passwords: each (secret, address, minute) is handed out once, since
    the listener accepts every MAC once only (it has a replay cache)."""

    def __init__(self):
        self.used: set[tuple[str, str, int]] = set()

    def use(self, secret: str, addr: str, epoch: float) -> None:
        self.used.add((secret, addr, int(epoch // 60)))

    def epoch(self, secret: str, addr: str) -> int:
        """A time (seconds) whose minute is in the listener's window and not used yet."""
        now = safe_now()
        for offset in (0, 60, -60):
            t = int(now) + offset
            if (secret, addr, t // 60) not in self.used:
                self.use(secret, addr, t)
                return t
        raise RuntimeError(f"no fresh minute left for {addr}; wait for the next minute")

    def mac(self, secret: str, addr: str) -> str:
        return ref_mac(secret, addr, self.epoch(secret, addr))

    def payload(self, secret: str, addr: str, trailer: bytes = b"\n") -> bytes:
        return self.mac(secret, addr).encode("ascii") + trailer


# --- sending from a client namespace ------------------------------------------------------


def send(client, dst: str, payloads: list[bytes], port: int = KNOCK_PORT, gap: float = 0.0) -> None:
    """Each payload as one UDP datagram from `client` to dst:port (exact bytes)."""
    spec = {"dst": dst, "port": port, "payloads": [p.hex() for p in payloads], "gap": gap}
    client.run([sys.executable, "-c", SENDER], input=json.dumps(spec), timeout=30)


def flood(client, dst: str, count: int, port: int = KNOCK_PORT, limit: float = 60.0) -> dict:
    out = client.run([sys.executable, "-c", FLOOD, dst, port, count, limit], timeout=limit + 30)
    return json.loads(out.stdout)


def udp_probe(client, dst: str, port: int) -> dict:
    from probes import UDP_PROBE

    return json.loads(client.run([sys.executable, "-c", UDP_PROBE, dst, port]).stdout)


def knock_sh(client, dst: str, secret: str, *opts, port: int = KNOCK_PORT, stdin: bool = False):
    """client/knock.sh inside the client namespace; the secret as argument or on stdin."""
    argv = ["bash", KNOCK_SH, *opts, dst, port, "-" if stdin else secret]
    return client.run(argv, input=secret + "\n" if stdin else None, timeout=30)


def awp_knock(client, dst: str, secret: str, port: int = KNOCK_PORT) -> subprocess.CompletedProcess:
    """`awp knock <dst> <port> -`, the secret on stdin."""
    cmd, extra = awp_command()
    env = {**os.environ, **extra} if extra else None
    return client.run([*cmd, "knock", dst, port, "-"], input=secret + "\n", env=env, check=False)


def wait_connect(client, dst: str, port: int = PORT, timeout: float = SETTLE) -> bool:
    """Poll a real TCP connect until it succeeds (True) or `timeout` passes (False). Each try
    may take 1.5 s, so that one SYN retransmit (after 1 s) fits: other tests' floods share
    the kernel's per-CPU backlog and can cost this test a packet."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout) + 2):
        if client.tcp_connect(dst, port, timeout=1.5):
            return True
        if time.monotonic() > deadline:
            return False
    return False


def refused(client, dst: str, port: int = PORT) -> bool:
    """A single connect attempt that must not get through (the SYN is dropped)."""
    return not client.tcp_connect(dst, port, timeout=1.0)


def open_session(client, dst: str, port: int = PORT, tries: int = 3):
    """client.open_session, tried up to `tries` times (its connect timeout is 2 s)."""
    for attempt in range(tries):
        try:
            return client.open_session(dst, port)
        except RuntimeError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


# --- the listener log ---------------------------------------------------------------------


class ListenerLog:
    def __init__(self, path: Path):
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        return len(self.text())

    def since(self, mark: int) -> str:
        return self.text()[mark:]

    def wait(self, pattern: str, mark: int, timeout: float = SETTLE) -> str:
        """The first line after `mark` that matches `pattern` (regex), polled with a bound."""
        regex = re.compile(pattern)
        found: list[str] = []

        def seen() -> bool:
            found[:] = [l for l in self.since(mark).splitlines() if regex.search(l)]
            return bool(found)

        try:
            wait_for(seen, timeout, f"log line /{pattern}/", interval=0.05)
        except RuntimeError:
            raise AssertionError(f"no log line /{pattern}/ within {timeout}s; log after mark:\n"
                                 f"{self.since(mark)[-3000:]}") from None
        return found[0]


def deliver(log: ListenerLog, src: str, do_send, timeout: float = SETTLE) -> int:
    """do_send(), then wait for the listener's decision (any line) about `src`; if none came,
    do_send() once more: a busy host (other tests' floods) may have lost the datagram. A
    knock that was only late then shows up as a replay, which no test here minds.
    Returns the log mark taken before the first send."""
    mark = log.mark()
    decision = rf"knock (accepted|rejected) .*src={re.escape(src)} "
    for attempt in range(2):
        do_send()
        try:
            log.wait(decision, mark, timeout)
            return mark
        except AssertionError:
            if attempt:
                raise
    return mark


def accepted(action: str, src: str) -> str:
    """The line of an accepted knock (awp(8) LOGGING: keys in a fixed order)."""
    return rf"knock accepted decision={action} reason=ok src={re.escape(src)} knock_port={KNOCK_PORT} port={PORT} "


def rejected(reason: str, src: str) -> str:
    return rf"knock rejected decision=reject reason={reason} src={re.escape(src)} "


# --- the server: root, apply, listener ----------------------------------------------------


class AwpServer:
    """An awp root applied in the lab's server namespace, and the listener it runs.

    cleanup() (a finalizer) runs `awp remove` for the root and then kills, by pid, every
    process whose command line names this root: the root is a fresh directory, so such a
    process can only be one this test started.
    """

    def __init__(self, lab, tmp_path, backend: str, advanced_list: str | None = DOOR,
                 simple_list: str | None = None, **settings):
        self.lab = lab
        self.host = lab.server
        self.backend = backend
        self.root = make_root(tmp_path, config_text(backend, **settings), simple_list, advanced_list)
        self.base = Path(self.root)
        self.log = ListenerLog(Root(self.base).listener_log)
        self.macs = Macs()

    @property
    def config_path(self) -> Path:
        return Root(self.base).config

    @property
    def advanced_path(self) -> Path:
        return Root(self.base).advanced_list

    @property
    def simple_path(self) -> Path:
        return Root(self.base).simple_list

    @property
    def pidfile(self) -> Path:
        return Root(self.base).pidfile

    def write_config(self, **settings) -> None:
        """Replace the settings file: config_text(this server's backend, **settings)."""
        write_private(self.config_path, config_text(self.backend, **settings))

    def awp(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.host.awp(list(args), self.root, timeout=timeout)

    def apply(self) -> subprocess.CompletedProcess:
        proc = self.awp("-s", "-f")
        assert proc.returncode == 0, f"awp -s -f failed ({proc.returncode}): {proc.stderr}"
        return proc

    def start(self) -> int:
        """`awp -s -f`, then wait until the listener it started has logged that it runs.
        `awp -s -f` returns before the listener captures knocks (see test_advanced.py,
        test_listener_captures_once_awp_calls_it_started); without this wait a test that
        knocks at once could lose its knock and go flaky."""
        mark = self.log.mark()
        self.apply()
        pid = self.wait_listener()
        self.log.wait(rf"listener (started|reloaded).*(pid={pid}|doors=)", mark)
        return pid

    def pid(self) -> int | None:
        """The pid written in the pidfile if that process is a live listener of this root."""
        try:
            text = self.pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() and self.is_listener(int(text)) else None

    def is_listener(self, pid: int) -> bool:
        """pid is alive (not a zombie) and runs `awp ... --root <this root> ... knockd`."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state not in ("Z", "X") and b"knockd" in argv and self.root.encode() in argv

    def supervisors(self) -> list[int]:
        """Every live `awp supervise` process of this root."""
        found = []
        for p in Path("/proc").iterdir():
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0") if p.name.isdigit() else []
            except (FileNotFoundError, ProcessLookupError):
                continue
            if b"supervise" in argv and self.root.encode() in argv:
                found.append(int(p.name))
        return sorted(found)

    def listeners(self) -> list[int]:
        """Every live listener process of this root (scanning /proc)."""
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        return sorted(pid for pid in pids if self.is_listener(pid))

    def kill_listener(self, sig: int = signal.SIGKILL) -> int:
        pid = self.pid()
        assert pid, f"no listener running; log:\n{self.log.text()[-2000:]}"
        os.kill(pid, sig)
        wait_for(lambda: not self.is_listener(pid), 5.0, f"listener {pid} to end")
        return pid

    def wait_listener(self, timeout: float = 5.0) -> int:
        wait_for(lambda: self.pid() is not None, timeout, "the listener to run")
        return self.pid()

    def cleanup(self) -> None:
        try:
            self.awp("remove")
        finally:
            for pid in self.supervisors() + self.listeners():  # supervisors first: they restart
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for(lambda: not self.listeners() and not self.supervisors(), 5.0,
                     "this root's listeners and supervisor to end")


# --- fixtures and knock helpers shared by the advanced-mode test files -----------------------


@pytest.fixture
def servers(tmp_path, backend):
    """AwpServer factory for any lab, on the test's backend: servers(lab, ...); settings are
    config_text()'s keywords. Every server made is cleaned up (listener stopped) afterwards."""
    made: list[AwpServer] = []

    def make(lab, advanced_list: str | None = DOOR, simple_list: str | None = None, **settings):
        srv = AwpServer(lab, tmp_path, backend, advanced_list, simple_list, **settings)
        made.append(srv)
        return srv

    yield make
    errors = []
    for srv in made:
        try:
            srv.cleanup()
        except Exception as exc:  # clean up every server before reporting
            errors.append(exc)
    assert not errors, errors


@pytest.fixture
def make_server(lab, servers):
    """servers() for the test's `lab`."""
    return lambda *args, **kwargs: servers(lab, *args, **kwargs)


@pytest.fixture
def server(lab, make_server) -> AwpServer:
    """The default door applied, its listener running, a TCP service on the protected port."""
    srv = make_server()
    srv.start()
    lab.server.serve_tcp(PORT)
    return srv


def post(srv: AwpServer, client, dst: str, payload: bytes, port: int = KNOCK_PORT) -> int:
    """These exact bytes as one datagram from client; returns the log mark once the listener
    decided about them (see advanced_helpers.deliver)."""
    return deliver(srv.log, client_addr(client, dst), lambda: send(client, dst, [payload], port))


def post_sh(srv: AwpServer, client, dst: str, secret: str, *opts, stdin: bool = False) -> int:
    """client/knock.sh; returns the log mark once the listener decided about it."""
    return deliver(srv.log, client_addr(client, dst),
                   lambda: knock_sh(client, dst, secret, *opts, stdin=stdin))


def knock(srv: AwpServer, client, dst: str, secret: str, action: str) -> str:
    """A fresh valid knock (reference implementation) and its 'knock accepted' log line."""
    mark = post(srv, client, dst, srv.macs.payload(secret, client_addr(client, dst)))
    return srv.log.wait(accepted(action, client_addr(client, dst)), mark)


def client_addr(client, dst: str) -> str:
    return client.ip6 if ":" in dst else client.ip4


def assert_rejected(srv: AwpServer, mark: int, reason: str, src: str) -> None:
    srv.log.wait(rejected(reason, src), mark)
    assert "knock accepted" not in srv.log.since(mark)
