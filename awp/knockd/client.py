"""`awp knock`: send one advanced-mode knock (like client/knock.sh) or a simple-mode
sequence, and optionally wait until a TCP port answers."""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable

from awp import otp
from awp.errors import DoorNotOpen, UsageError
from awp.lists import parse_port
from awp.model import Origin


MAX_REPEAT = 5
REPEAT_GAP = 0.4  # seconds between two copies: 5 copies are all sent within 1.6 s


def send_knock(destination: str, port_text: str, secret: str, source: str | None = None,
               repeat: int = 1, sleep=time.sleep) -> str:
    """Send the knock `repeat` times (the same datagram, REPEAT_GAP apart; the server grants
    once and calls the others repeats); return "addr:port" it went to. The MAC covers
    `source` if given (the address the server sees, behind NAT), else the address the kernel
    picks towards dst."""
    if not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"--repeat wants a count of 1-{MAX_REPEAT}, got {repeat}")
    port = parse_port(port_text, "knock port", Origin("command line", 0))
    if not secret:
        raise UsageError("the secret is empty")
    family, address = _resolve(destination, port)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(address)  # picks the route and source address; sends nothing
        src = _source(source or sock.getsockname()[0])
        payload = otp.build_payload(secret.encode("utf-8"), src, otp.minute_of(time.time()))
        for i in range(repeat):
            if i:
                sleep(REPEAT_GAP)
            sock.send(payload)
    return f"{address[0]}:{port}"


def _resolve(destination: str, port: int):
    try:
        infos = socket.getaddrinfo(destination, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {destination}: {exc.strerror}") from None
    family, _type, _proto, _name, address = infos[0]
    return family, address


def _source(text: str):
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        raise UsageError(f"source address {text!r} is not an IP address") from None


# --- simple-mode knocks and waiting for the door ---------------------------------------

_STEP_RE = re.compile(r"([0-9]{1,5})(?:/(tcp|udp))?", re.ASCII)
MAX_STEPS = 64
MAX_DELAY_MS = 60_000


@dataclass(frozen=True)
class Step:
    port: int
    proto: str  # "tcp" or "udp"

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"


def parse_sequence(text: str) -> tuple[Step, ...]:
    """"7001,7003,7002/udp" -> steps; TCP is the default. UsageError names the bad step."""
    steps = []
    for n, token in enumerate(text.split(","), 1):
        m = _STEP_RE.fullmatch(token)
        if not m or (len(m.group(1)) > 1 and m.group(1).startswith("0")) or not 1 <= int(m.group(1)) <= 65535:
            raise UsageError(f"--sequence step {n} {token!r} is not PORT, PORT/tcp or PORT/udp (port 1-65535)")
        steps.append(Step(int(m.group(1)), m.group(2) or "tcp"))
    if len(steps) > MAX_STEPS:
        raise UsageError(f"--sequence has {len(steps)} steps; at most {MAX_STEPS}")
    return tuple(steps)


def send_sequence(destination: str, steps: tuple[Step, ...], delay_ms: int = 100) -> str:
    """One knock per step, in order, `delay_ms` apart. A TCP step is a non-blocking
    connect (its SYN leaves in the connect call; the socket is closed when the delay is up,
    whatever came back); a UDP step is one empty datagram. Nothing is read."""
    if not 0 <= delay_ms <= MAX_DELAY_MS:
        raise UsageError(f"--delay must be 0-{MAX_DELAY_MS} ms, got {delay_ms}")
    family, address = _resolve(destination, steps[0].port)
    for i, step in enumerate(steps):
        if i:
            time.sleep(delay_ms / 1000)
        target = (address[0], step.port, *address[2:])
        kind = socket.SOCK_DGRAM if step.proto == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as sock:
            sock.setblocking(False)
            try:
                if step.proto == "udp":
                    sock.sendto(b"", target)
                else:
                    sock.connect_ex(target)  # EINPROGRESS: the SYN is out
            except OSError as exc:
                raise UsageError(f"cannot send knock {step} to {address[0]}: {exc.strerror}") from None
    return address[0]


def tcp_answers(destination: str, port: int, timeout: float) -> bool:
    """One TCP connect, bounded by `timeout`; True iff the handshake completed."""
    try:
        socket.create_connection((destination, port), timeout=max(0.05, timeout)).close()
        return True
    except OSError:  # refused, timed out, unreachable
        return False


def knock_and_wait(knock: Callable[[], object], destination: str, port: int, total: float, tries: int,
                   clock: Callable[[], float] = time.monotonic, sleep=time.sleep,
                   answers=tcp_answers) -> int:
    """Knock, then try TCP `port` until the try's share of `total` seconds is up; up to
    `tries` knocks. Returns the number of knocks it took; raises DoorNotOpen after `total`."""
    if not 1 <= tries <= 20:
        raise UsageError(f"--tries must be 1-20, got {tries}")
    if not 0 < total <= 600:
        raise UsageError(f"--wait-timeout must be more than 0 and at most 600 s, got {total:g}")
    end = clock() + total
    for n in range(1, tries + 1):
        knock()
        slice_end = min(end, clock() + (end - clock()) / (tries - n + 1))
        while (left := slice_end - clock()) > 0:
            if answers(destination, port, left):
                return n
            sleep(min(0.2, max(0.0, slice_end - clock())))  # refused at once: do not spin
    raise DoorNotOpen(f"TCP port {port} of {destination} did not answer within {total:g} s "
                      f"after {tries} knock(s)")
