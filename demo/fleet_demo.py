"""The fleet scene of `make demo`: two nodes share one Redis; knock node A, connect to node B.

Uses tests/netns/fleet_helpers.FleetLab: a hub namespace with a bridge and a Redis of its
own (bound to 198.18.100.254, no persistence, stopped by PID), two node namespaces, one
client. Everything is removed at the end, also on failure.
"""

from __future__ import annotations

import shutil
import time
import tempfile
from pathlib import Path

from demo import DEMO_SECRETS, REPO, _eventually, console, show, step
from fleet_helpers import FLEET_URL, FleetLab


def fleet_root(base: Path, node: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"awp-demo-{node}-", dir=base))
    shutil.copytree(REPO / "etc", root / "etc")
    config = root / "etc" / "config"
    text = config.read_text().replace('FW_PORTKNOCK_ADVANCED="no"', 'FW_PORTKNOCK_ADVANCED="yes"')
    text = text.replace('FW_PORTKNOCK_FLEET=""', f'FW_PORTKNOCK_FLEET="{FLEET_URL}"')
    config.write_text(text.replace('FW_PORTKNOCK_NODE=""', f'FW_PORTKNOCK_NODE="{node}"'))
    adv = root / "etc" / "firewall" / "advanced-portknock-list"
    adv.write_text(f"2222,2000,{DEMO_SECRETS[0]},{DEMO_SECRETS[1]}\n")
    adv.chmod(0o600)
    return root


def open_to(client, host) -> bool:
    ok = client.tcp_connect(host.ip4, 2222, timeout=1.0)
    colour = "green" if ok else "red"
    console.print(f"  {client.name} ({client.ip4}) -> {host.ip4}:2222: "
                  f"[{colour}]{'OPEN, connected' if ok else 'closed (no answer)'}[/]")
    return ok


def fleet_demo(tmp: Path) -> list[str]:
    failures: list[str] = []
    knock_sh = str(REPO / "client" / "knock.sh")
    with FleetLab(nodes=2, clients=1, tag="demofl") as lab:
        (a, b), client = lab.nodes, lab.clients[0]
        roots = [fleet_root(tmp, "node-a"), fleet_root(tmp, "node-b")]
        try:
            step(f"fleet mode: nodes A ({a.ip4}) and B ({b.ip4}) share a Redis at {FLEET_URL}")
            show("awp fleet-key   (on A; then the same file is copied to B, mode 600)",
                 a.awp(["fleet-key"], str(roots[0]), check=True))
            shutil.copy2(roots[0] / "etc" / "fleet.key", roots[1] / "etc" / "fleet.key")
            for host, root in zip((a, b), roots):
                host.serve_tcp(2222)
                show(f"awp -s -f   (on {host.ip4})", host.awp(["-s", "-f"], str(root), check=True))
            if open_to(client, b):
                failures.append("node B open before any knock")
            step(f"{client.name} knocks node A only: client/knock.sh {a.ip4} 2000 -")
            client.run([knock_sh, a.ip4, "2000", "-"], input=DEMO_SECRETS[0] + "\n")
            if not _eventually(lambda: client.tcp_connect(b.ip4, 2222, timeout=1.0)):
                failures.append("the grant made on A did not reach B")
            open_to(client, b)
            step("awp status on B: the grant came from node-a")
            time.sleep(1.2)  # the listener writes the state awp status shows once a second
            show("awp status", b.awp(["status"], str(roots[1]), check=True))
            step(f"{client.name} closes on node B; A closes too")
            client.run([knock_sh, b.ip4, "2000", "-"], input=DEMO_SECRETS[1] + "\n")
            if not _eventually(lambda: not client.tcp_connect(a.ip4, 2222, timeout=1.0)):
                failures.append("the close made on B did not reach A")
            open_to(client, a)
            step("B's listener log")
            console.print((roots[1] / "var/log/awp-knockd.log").read_text().rstrip(), markup=False)
        finally:
            for host, root in zip((a, b), roots):
                host.awp(["remove"], str(root))
    return failures
