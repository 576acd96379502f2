"""`make demo`: awp's main job for real, in throwaway network namespaces.

The shipped example configuration (etc/) is applied with `awp -s -f` inside a server
namespace; a client knocks with real telnet; the door opens for that client only. Then the
same for advanced mode with client/knock.sh. The host's own firewall is never touched, and
every namespace and process the demo made is removed at the end, also on failure.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "netns"))
sys.path.insert(0, str(REPO))

from harness import Lab  # noqa: E402

from awp.lists import parse_simple  # noqa: E402

console = Console(highlight=False, soft_wrap=True)
DEMO_SECRETS = "demo-open-secret-4711", "demo-close-secret-4711"


def step(text: str) -> None:
    console.print(f"\n[bold cyan]==> {text}[/]")


def show(cmd: str, proc) -> None:
    console.print(f"[dim]$ {cmd}[/]")
    for stream in (proc.stdout, proc.stderr):
        if stream.strip():
            console.print(stream.rstrip(), markup=False)


def verdict(lab: Lab, client, port: int) -> bool:
    ok = client.tcp_connect(lab.server_ip4(client), port, timeout=2.0)
    colour = "green" if ok else "red"
    console.print(f"  {client.name} ({client.ip4}) -> {lab.server_ip4(client)}:{port}: "
                  f"[{colour}]{'OPEN, connected' if ok else 'closed (no answer)'}[/]")
    return ok


def make_root(base: Path, advanced: bool) -> Path:
    root = Path(tempfile.mkdtemp(prefix="awp-demo-", dir=base))
    shutil.copytree(REPO / "etc", root / "etc")
    if advanced:
        config = root / "etc" / "config"
        config.write_text(config.read_text().replace('FW_PORTKNOCK_ADVANCED="no"', 'FW_PORTKNOCK_ADVANCED="yes"'))
        adv = root / "etc" / "firewall" / "advanced-portknock-list"
        adv.write_text(f"2222,2000,{DEMO_SECRETS[0]},{DEMO_SECRETS[1]}\n")
        adv.chmod(0o600)
    return root


def simple_demo(lab: Lab, root: Path) -> list[str]:
    server, knocker, other = lab.server, lab.clients[0], lab.clients[1]
    door = parse_simple((root / "etc/firewall/simple-portknock-list").read_text(), "list")[0]
    failures = []
    step(f"simple mode: the shipped example door {door.port}:{','.join(map(str, door.knocks))}")
    server.serve_tcp(door.port)
    show("awp -s -f", server.awp(["-s", "-f"], str(root), check=True))
    step("before knocking, the protected port is closed to everyone")
    if verdict(lab, knocker, door.port) or verdict(lab, other, door.port):
        failures.append("port open before knocking")
    step(f"{knocker.name} knocks with telnet: telnet host PORT, Ctrl-C, for each port in order")
    for port in door.knocks:
        console.print(f"[dim]$ telnet {lab.server_ip4(knocker)} {port}   (Connection refused: a knock port answers as an unused port of this host does)[/]")
        knocker.knock_telnet(lab.server_ip4(knocker), [port], hold=0.4)
    step("after the knock: open for the knocker, still closed for the other client")
    if not verdict(lab, knocker, door.port):
        failures.append("door did not open for the knocker")
    if verdict(lab, other, door.port):
        failures.append("door opened for a client that did not knock")
    step("awp status (read from the kernel)")
    show("awp status", server.awp(["status"], str(root), check=True))
    return failures


def advanced_demo(lab: Lab, root: Path) -> list[str]:
    server, knocker, other = lab.server, lab.clients[0], lab.clients[1]
    knock_sh = str(REPO / "client" / "knock.sh")
    failures = []
    step("advanced mode: door 2222, one-time passwords on UDP 2000 (listener started by awp -s -f)")
    server.serve_tcp(2222)
    show("awp -s -f", server.awp(["-s", "-f"], str(root), check=True))
    if verdict(lab, knocker, 2222):
        failures.append("advanced door open before knocking")
    step(f"{knocker.name}: client/knock.sh {lab.server_ip4(knocker)} 2000 -   (secret on stdin)")
    knocker.run([knock_sh, lab.server_ip4(knocker), "2000", "-"], input=DEMO_SECRETS[0] + "\n")
    if not _eventually(lambda: knocker.tcp_connect(lab.server_ip4(knocker), 2222, timeout=1.0)):
        failures.append("advanced door did not open")
    verdict(lab, knocker, 2222)
    if verdict(lab, other, 2222):
        failures.append("advanced door opened for a client that did not knock")
    step("awp status")
    show("awp status", server.awp(["status"], str(root), check=True))
    step(f"{knocker.name} closes the door with the close secret")
    knocker.run([knock_sh, lab.server_ip4(knocker), "2000", "-"], input=DEMO_SECRETS[1] + "\n")
    if not _eventually(lambda: not knocker.tcp_connect(lab.server_ip4(knocker), 2222, timeout=1.0)):
        failures.append("advanced door did not close")
    verdict(lab, knocker, 2222)
    step("the listener's log: one line per decision")
    console.print((root / "var/log/awp-knockd.log").read_text().rstrip(), markup=False)
    return failures


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="awp-demo-") as tmp:
        with Lab(clients=2, tag="demo") as lab:
            failures += simple_demo(lab, make_root(Path(tmp), advanced=False))
        with Lab(clients=2, tag="demo") as lab:
            root = make_root(Path(tmp), advanced=True)
            try:
                failures += advanced_demo(lab, root)
            finally:
                lab.server.awp(["remove"], str(root))
        from fleet_demo import fleet_demo
        failures += fleet_demo(Path(tmp))
    step("cleaned up: namespaces deleted, listener stopped")
    for failure in failures:
        console.print(f"[red]demo FAILED: {failure}[/]")
    if not failures:
        console.print("[green]demo OK[/]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
