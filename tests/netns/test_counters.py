"""python-iptables' role: reading the legacy tables for `awp status`. It must see exactly what
iptables-legacy-save -c shows, and it must never be used on nf_tables rules. iptables-legacy
only, by nature; test_simple.py's status test reads every backend's counters."""

from __future__ import annotations

import json
import sys

import pytest
from harness import make_root

pytestmark = pytest.mark.netns

CONFIG = 'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_BACKEND="{variant}"\nFW_PORTKNOCK_OPEN_WINDOW="30"\n'
DOOR = "22:7481,2203,9127,4410\n"
READ = """
import json, sys
from awp.backend.counters import from_iptc, from_save
import subprocess
family = int(sys.argv[1])
save = subprocess.run([("iptables" if family == 4 else "ip6tables") + "-legacy-save", "-c"],
                      capture_output=True, text=True, check=True).stdout
print(json.dumps({"iptc": {p: [c.accepted, c.dropped] for p, c in from_iptc(family).items()},
                  "save": {p: [c.accepted, c.dropped] for p, c in from_save(save).items()}}))
"""


def _read(host, family: int) -> dict:
    return json.loads(host.run([sys.executable, "-c", READ, str(family)]).stdout)


def test_iptc_counters_match_legacy_save(lab, tmp_path):
    server, client = lab.server, lab.clients[0]
    root = make_root(tmp_path, CONFIG.format(variant="iptables-legacy"), DOOR, None)
    server.serve_tcp(22)
    assert server.awp(["-s", "-f"], root).returncode == 0
    addr = lab.server_ip4(client)
    assert not client.tcp_connect(addr, 22, timeout=1.0)
    client.knock_raw(addr, [7481, 2203, 9127, 4410])
    assert client.tcp_connect(addr, 22)
    seen = _read(server, 4)
    assert seen["iptc"] == seen["save"]
    accepted, dropped = seen["iptc"]["22"]
    assert accepted == 1 and dropped >= 1
    assert _read(server, 6)["iptc"] == _read(server, 6)["save"]


def test_legacy_backend_rules_are_invisible_to_nft_and_vice_versa(lab, tmp_path):
    server = lab.server
    root = make_root(tmp_path, CONFIG.format(variant="iptables-legacy"), DOOR, None)
    assert server.awp(["-s", "-f"], root).returncode == 0
    assert "AWP-INPUT" in server.iptables_save(4, "legacy")
    assert "AWP-INPUT" not in server.iptables_save(4, "nft")
    status = server.awp(["status"], root)
    assert status.returncode == 0 and "22" in status.stdout
    assert server.awp(["remove"], root).returncode == 0
    assert "AWP" not in server.iptables_save(4, "legacy")
