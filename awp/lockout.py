"""Refuse an apply that would close the admin's own SSH port to them (ufw does the same)."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from awp.model import Config

_ESTABLISHED = "01"


def lockout_risk(config: Config, ssh_connection: str | None, sessions=None) -> str | None:
    """A message if the SSH session we run in arrives on a port awp is about to protect for a
    client that is not in FW_PORTKNOCK_ALLOW; None otherwise.

    SSH_CONNECTION is "client_ip client_port server_ip server_port". The session must also
    exist in this network namespace (`sessions`: established (client, client_port,
    server_port) triples), so awp run inside another namespace, as the tests and the demo
    do, is not refused because of the host's own session.
    """
    parsed = _parse(ssh_connection)
    if parsed is None:
        return None
    client, client_port, port = parsed
    if client.version == 6 and not config.settings.ipv6:
        return None
    protected = {d.port for d in config.active_simple} | {d.port for d in config.active_advanced}
    if port not in protected or any(client in net for net in config.settings.allow):
        return None
    if (client, client_port, port) not in (established_sessions() if sessions is None else sessions):
        return None
    return (f"your SSH session from {client} arrives on port {port}, which this configuration "
            f"closes to new connections; your session survives, but to reconnect you will have to "
            f"knock. Add {client} to FW_PORTKNOCK_ALLOW, or run again with --force")


def _parse(ssh_connection: str | None):
    parts = (ssh_connection or "").split()
    if len(parts) != 4 or not (parts[1].isdigit() and parts[3].isdigit()):
        return None
    try:
        client = ipaddress.ip_address(parts[0].split("%")[0])
    except ValueError:
        return None
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
        client = client.ipv4_mapped
    return client, int(parts[1]), int(parts[3])


def established_sessions(proc: Path = Path("/proc/net")) -> set:
    """(remote address, remote port, local port) of established TCP connections here."""
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        found |= parse_established(text)
    return found


def parse_established(text: str) -> set:
    found = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[3] == _ESTABLISHED:
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            remote_hex, remote_port = cols[2].rsplit(":", 1)
            found.add((_address(remote_hex), int(remote_port, 16), local_port))
    return found


def _address(hex_text: str):
    """/proc/net/tcp* print addresses as 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_text)
    words = b"".join(struct.pack(">I", w) for w in struct.unpack(f"<{len(raw) // 4}I", raw))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
