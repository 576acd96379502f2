"""Refuse an apply that would close the admin's own SSH port to them (ufw does the same)."""

from __future__ import annotations

import ipaddress

from awp.model import Config


def lockout_risk(config: Config, ssh_connection: str | None) -> str | None:
    """A message if the SSH session we run in arrives on a port awp is about to protect for a
    client that is not in FW_PORTKNOCK_ALLOW; None otherwise. SSH_CONNECTION is
    "client_ip client_port server_ip server_port"."""
    parts = (ssh_connection or "").split()
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    try:
        client = ipaddress.ip_address(parts[0].split("%")[0])
    except ValueError:
        return None
    if client.version == 6 and not config.settings.ipv6:
        return None
    port = int(parts[3])
    protected = {d.port for d in config.active_simple} | {d.port for d in config.active_advanced}
    if port not in protected or any(client in net for net in config.settings.allow):
        return None
    return (f"your SSH session from {client} arrives on port {port}, which this configuration "
            f"closes to new connections; your session survives, but to reconnect you will have to "
            f"knock. Add {client} to FW_PORTKNOCK_ALLOW, or run again with --force")
