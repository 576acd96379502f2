"""The examples users copy, applied with `awp -s -f` in a server namespace and knocked with
real clients: the two shipped in etc/, and the two printed in the AEO documentation
(simple `22:1,2,3,4,5 23:7,8,9,10,11` on one line; advanced `22,2000,hipjazz,superawesome`
and `23,2001,elite,october`). Each door opens for the client that knocked, not for another.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from advanced_helpers import (KNOCK_SH, config_text, deliver, refused, wait_connect, write_private)
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from harness import REPO, make_root
from simple_helpers import addr, connects

pytestmark = pytest.mark.netns

SHIPPED = REPO / "etc"
SHIPPED_SIMPLE = (22, (7481, 2203, 9127, 4410))  # etc/firewall/simple-portknock-list
SHIPPED_ADVANCED = "#2222,2000,change-this-open-secret,change-this-close-secret"  # commented out
AEO_SIMPLE = "22:1,2,3,4,5 23:7,8,9,10,11\n"
AEO_ADVANCED = "22,2000,hipjazz,superawesome\n23,2001,elite,october\n"


def shipped(name: str) -> str:
    return (SHIPPED / name).read_text()


def apply_ok(lab, root: str) -> subprocess.CompletedProcess:
    proc = lab.server.awp(["-s", "-f"], root)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


def knock_sh(client, dst: str, port: int, secret: str, path: str | None = None):
    """client/knock.sh <dst> <port> -, the secret on stdin; with `path`, PATH is only that."""
    env = ["env", f"PATH={path}"] if path else []
    bash = f"{path}/bash" if path else "bash"
    return client.run([*env, bash, KNOCK_SH, dst, port, "-"], input=secret + "\n", timeout=30)


def tools_without_ip(tmp_path) -> str:
    """A bin directory with what knock.sh needs, but neither ip nor python3 (its last fallback)."""
    bindir = tmp_path / "knock-bin"
    bindir.mkdir()
    for tool in ("bash", "od", "openssl", "readlink"):
        (bindir / tool).symlink_to(shutil.which(tool))
    return str(bindir)


def knocked(srv, client, dst: str, src: str, door: tuple[int, int], secret: str, action: str,
            path: str | None = None) -> None:
    """knock.sh, then wait for the listener's 'knock accepted' line for this door."""
    port, knock_port = door
    mark = deliver(srv.log, src, lambda: knock_sh(client, dst, knock_port, secret, path))
    srv.log.wait(rf"knock accepted decision={action} reason=ok src={re.escape(src)} knock_port={knock_port} "
                 rf"port={port} ", mark)


# --- the simple examples: real TCP knocks ----------------------------------------------------


def test_shipped_simple_example_opens_with_knock_and_telnet(lab, tmp_path):
    c1, c2 = lab.clients
    port, knocks = SHIPPED_SIMPLE
    assert f"{port}:{','.join(map(str, knocks))}" in shipped("firewall/simple-portknock-list")
    root = make_root(tmp_path, shipped("config"), shipped("firewall/simple-portknock-list"), None)
    for family in (4, 6):
        lab.server.serve_tcp(port, family)
    proc = apply_ok(lab, root)
    assert "awp: warning" not in proc.stderr
    assert not connects(lab, c1, 4, port, expect=False)

    c1.knock_knockd(addr(lab, c1, 4), list(knocks))
    c2.knock_telnet(addr(lab, c2, 6), list(knocks), hold=0.5)
    assert connects(lab, c1, 4, port) and connects(lab, c2, 6, port)
    assert not connects(lab, c2, 4, port, expect=False), "opened for c2's IPv6 address only"
    assert not connects(lab, c1, 6, port, expect=False), "opened for c1's IPv4 address only"


def test_aeo_simple_example_two_doors_on_one_line(lab, tmp_path):
    c1, c2 = lab.clients
    config = 'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_SIMPLE="yes"\n'
    root = make_root(tmp_path, config, AEO_SIMPLE, None)
    for port in (22, 23):
        lab.server.serve_tcp(port)
    proc = apply_ok(lab, root)
    assert proc.stderr.count("ascending or descending") == 2, proc.stderr  # warned, applied

    c1.knock_nc(addr(lab, c1), [1, 2, 3, 4, 5])
    assert connects(lab, c1, 4, 22)
    assert not connects(lab, c1, 4, 23, expect=False)
    c1.knock_knockd(addr(lab, c1), [7, 8, 9, 10, 11])
    assert connects(lab, c1, 4, 23)
    assert not (connects(lab, c2, 4, 22, expect=False) or connects(lab, c2, 4, 23, expect=False))


# --- the advanced examples: client/knock.sh ----------------------------------------------------


def install_shipped_advanced(srv) -> None:
    """A plain copy is refused with the command that fixes it, which works; the documented
    `install -m 600` works too. Then the example door is uncommented, as a user would."""
    target = srv.advanced_path
    shutil.copy(SHIPPED / "firewall" / "advanced-portknock-list", target)
    proc = srv.awp("check")
    fix = re.search(r"fix it with: (chmod 600 \S+)$", proc.stderr.strip())
    assert proc.returncode == 3 and fix and fix.group(1) == f"chmod 600 {target}", proc.stderr
    subprocess.run(fix.group(1).split(), check=True)
    assert srv.awp("check").returncode == 0
    target.unlink()
    subprocess.run(["install", "-o", "root", "-g", "root", "-m", "600",
                    str(SHIPPED / "firewall" / "advanced-portknock-list"), str(target)], check=True)
    assert srv.awp("check").returncode == 0
    text = target.read_text()
    assert SHIPPED_ADVANCED in text
    write_private(target, text.replace(SHIPPED_ADVANCED, SHIPPED_ADVANCED[1:]))


def test_shipped_advanced_example_installed_as_documented_opens_and_closes(lab, tmp_path, make_server):
    c1, c2 = lab.clients
    config = shipped("config").replace('FW_PORTKNOCK_ADVANCED="no"', 'FW_PORTKNOCK_ADVANCED="yes"')
    assert 'FW_PORTKNOCK_ADVANCED="yes"' in config
    srv = make_server(None, simple_list=shipped("firewall/simple-portknock-list"))
    write_private(srv.config_path, config.replace('FW_PORTKNOCK_BACKEND="auto"',
                                                  f'FW_PORTKNOCK_BACKEND="{srv.backend}"'))
    install_shipped_advanced(srv)
    srv.start()
    lab.server.serve_tcp(2222)
    d1, d2 = lab.server_ip4(c1), lab.server_ip4(c2)
    assert refused(c1, d1, 2222)

    bindir = tools_without_ip(tmp_path)  # knock.sh finds its source address without ip(8)
    knocked(srv, c1, d1, c1.ip4, (2222, 2000), "change-this-open-secret", "open", bindir)
    assert wait_connect(c1, d1, 2222)
    assert refused(c2, d2, 2222)
    knocked(srv, c1, d1, c1.ip4, (2222, 2000), "change-this-close-secret", "close")
    assert refused(c1, d1, 2222)


def test_aeo_advanced_example_opens_each_door_for_the_knocker(lab, tmp_path, make_server):
    c1, c2 = lab.clients
    srv = make_server(AEO_ADVANCED)
    proc = srv.awp("check")
    assert proc.returncode == 0 and proc.stderr.count("awp: warning:") == 3, proc.stderr  # 3 short secrets
    assert not any(s in proc.stdout + proc.stderr for s in ("hipjazz", "superawesome", "elite", "october"))
    srv.start()  # awp -s -f, and wait until the listener captures
    for port in (22, 23):
        lab.server.serve_tcp(port)
    d1, d2 = lab.server_ip4(c1), lab.server_ip4(c2)

    knocked(srv, c1, d1, c1.ip4, (22, 2000), "hipjazz", "open")
    assert wait_connect(c1, d1, 22)
    assert refused(c1, d1, 23) and refused(c2, d2, 22)
    knocked(srv, c1, d1, c1.ip4, (23, 2001), "elite", "open")
    assert wait_connect(c1, d1, 23)
    knocked(srv, c1, d1, c1.ip4, (22, 2000), "superawesome", "close")
    assert refused(c1, d1, 22)
    assert wait_connect(c1, d1, 23) and refused(c2, d2, 23)
