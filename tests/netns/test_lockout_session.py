"""An apply that would close the admin's own SSH port to them is refused unless --force."""

from __future__ import annotations

import os
import sys

import pytest
from harness import awp_command, make_root
from views import holders, snapshot

pytestmark = pytest.mark.netns

CONFIG = 'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_BACKEND="{backend}"\n'
DOOR = "22:7481,2203,9127\n"
# Print the client-side (address, port) of an established connection, then hold it open.
HOLD = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 22), timeout=5)
print(*s.getsockname()[:2], flush=True)
time.sleep(60)
"""


def _session(lab, client):
    proc = client.spawn([sys.executable, "-c", HOLD, lab.server_ip4(client)], stdout=-1, text=True)
    address, port = proc.stdout.readline().split()
    return f"{address} {port} {lab.server_ip4(client)} 22"


def _awp_with_ssh(server, root, ssh, *args):
    cmd = ["env", f"SSH_CONNECTION={ssh}"]
    awp, extra = awp_command()
    return server.run([*cmd, *awp, "--root", root, *args], check=False, env={**os.environ, **extra})


def test_refused_without_force_applied_with_it(lab, tmp_path, backend):
    server, client = lab.server, lab.clients[0]
    server.serve_tcp(22)
    root = make_root(tmp_path, CONFIG.format(backend=backend), DOOR, None)
    ssh = _session(lab, client)
    before = snapshot(server)
    refused = _awp_with_ssh(server, root, ssh, "-s", "-f")
    assert refused.returncode == 5, refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert snapshot(server) == before
    forced = _awp_with_ssh(server, root, ssh, "-s", "-f", "--force")
    assert forced.returncode == 0, forced.stderr
    assert holders(server) == {backend}
    assert not client.tcp_connect(lab.server_ip4(client), 22, timeout=1.0), "22 is a door now"


def test_allowlisted_admin_is_not_refused(lab, tmp_path, backend):
    server, client = lab.server, lab.clients[0]
    server.serve_tcp(22)
    config = CONFIG.format(backend=backend) + f'FW_PORTKNOCK_ALLOW="{client.ip4}"\n'
    root = make_root(tmp_path, config, DOOR, None)
    assert _awp_with_ssh(server, root, _session(lab, client), "-s", "-f").returncode == 0


def test_host_session_does_not_refuse_an_apply_in_another_namespace(lab, tmp_path, backend):
    """SSH_CONNECTION names a session that does not exist in the server namespace."""
    root = make_root(tmp_path, CONFIG.format(backend=backend), DOOR, None)
    ssh = f"{lab.clients[0].ip4} 50000 {lab.server_ip4(lab.clients[0])} 22"
    assert _awp_with_ssh(lab.server, root, ssh, "-s", "-f").returncode == 0
