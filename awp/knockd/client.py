"""`awp knock`: send one advanced-mode knock, like client/knock.sh."""

from __future__ import annotations

import ipaddress
import socket
import time

from awp import otp
from awp.errors import UsageError
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
