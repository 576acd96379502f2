"""`awp status --watch` as a person sees it: under tmux in an 80-column pane, in the server
namespace, while a flood of spoofed first knocks (198.19.128.0/17, bounded) fills the sets.
The pane is read with `tmux capture-pane -p`, twice, a refresh apart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
from crowd import spoofed_syns
from harness import awp_command, wait_for
from simple_helpers import PORT, SEQ, connects, knock, setup

pytestmark = pytest.mark.netns
FLOOD = {"nftables": 10_000, "iptables-nft": 2_000}
SHOWN = {"nftables": 1_000, "iptables-nft": 50}  # xt_recent keeps ip_list_tot (100) sources per list
WIDTH, HEIGHT = 80, 30


class Tmux:
    """A tmux server of this test's own (its own socket name), killed through that socket."""

    def __init__(self, name: str):
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout

    def pane(self) -> str:
        return self.run("capture-pane", "-p", "-t", "watch")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux():
    assert shutil.which("tmux"), "tmux is required (DEB_PKGS in the Makefile)"
    server = Tmux(f"awp-test-{os.getpid()}")
    yield server
    server.kill()


def clock(pane: str) -> str:
    found = re.search(r"^awp status (\d\d:\d\d:\d\d) ", pane, re.M)
    assert found, pane
    return found.group(1)


def test_watch_under_tmux_during_a_flood(lab, tmp_path, backend, tmux, monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    c1, c2 = lab.clients
    root = setup(lab, tmp_path, backend, families=(4,), FW_PORTKNOCK_STEP_TIMEOUT="60",
                 FW_PORTKNOCK_OPEN_WINDOW="60")
    knock(lab, c1, SEQ)
    assert connects(lab, c1), "one real knocker is in"
    sent = spoofed_syns(c2, lab.server_ip4(c2), SEQ[0], FLOOD[backend], rate=10_000)
    assert sent["sent"] == FLOOD[backend], sent

    cmd, extra = awp_command()
    env = " ".join(f"{k}={v}" for k, v in extra.items())
    command = f"env -u LINES -u COLUMNS {env} TERM=xterm-256color ip netns exec {lab.server.name} {' '.join(cmd)} --root {root} " \
              f"status --watch --interval 1"
    tmux.run("new-session", "-d", "-s", "watch", "-x", str(WIDTH), "-y", str(HEIGHT), command)
    wait_for(lambda: "sources" in tmux.pane(), 20, "the first frame")
    first = tmux.pane()
    wait_for(lambda: clock(tmux.pane()) != clock(first), 5, "a refresh (the clock in the header)")
    second = tmux.pane()

    assert tmux.run("display", "-p", "-t", "watch", "#{pane_width}").strip() == str(WIDTH)
    for pane in (first, second):
        assert max(len(line) for line in pane.splitlines()) <= WIDTH, pane
        assert "doors (1)" in pane and re.search(rf"^{PORT} +simple +tcp {SEQ[0]},", pane, re.M), pane
        count = int(re.search(r"^sources ([\d,]+):", pane, re.M).group(1).replace(",", ""))
        assert count > SHOWN[backend], pane
        assert re.search(rf"^{PORT} +knocking 1/{len(SEQ)} +[\d,]+$", pane, re.M), pane
        assert re.search(rf"^{PORT} +{re.escape(c1.ip4)} +open ", pane, re.M), "the open source is on top"
        assert re.search(r"^top [3-9]:", pane, re.M), "a 30-line pane has room for more than the minimum"
    time.sleep(2.5)  # two more refreshes: drawn in place, nothing scrolls into the history
    assert int(tmux.run("display", "-p", "-t", "watch", "#{history_size}").strip()) <= HEIGHT, tmux.pane()
    assert len(tmux.pane().splitlines()) <= HEIGHT
