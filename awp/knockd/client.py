"""`awp knock`: send one advanced-mode knock, like client/knock.sh."""

from __future__ import annotations

import ipaddress
import socket
import time

from awp import otp
from awp.errors import UsageError
from awp.lists import parse_port
from awp.model import Origin


def send_knock(destination: str, port_text: str, secret: str, source: str | None = None) -> str:
    """Send the knock; return "addr:port" it went to. The MAC covers `source` if given (the
    address the server sees, behind NAT), else the address the kernel picks towards dst."""
    port = parse_port(port_text, "knock port", Origin("command line", 0))
    if not secret:
        raise UsageError("the secret is empty")
    family, address = _resolve(destination, port)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(address)  # picks the route and source address; sends nothing
        src = _source(source or sock.getsockname()[0])
        payload = otp.build_payload(secret.encode("utf-8"), src, otp.minute_of(time.time()))
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
