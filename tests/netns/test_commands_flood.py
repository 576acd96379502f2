"""Door commands under a flood of opens, end to end in namespaces, on every backend (its own
file: it waits for the runner's summary line, which comes at most every 10 s)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from advanced_helpers import servers  # noqa: F401  (pytest fixture)
from commands_helpers import SEQ, SIMPLE_DOOR, SIMPLE_PORT, _plain_environment, awp_knock, scripts, with_doors  # noqa: F401

pytestmark = pytest.mark.netns


SEQUENCE_FLOOD = r"""
import json, socket, sys, time
dst, limit, count, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ports = [int(p) for p in sys.argv[5:]]
done = 0
start = time.monotonic()
deadline = start + limit
while done < count and time.monotonic() < deadline:
    ahead = start + done / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
    for port in ports:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((dst, port))  # the SYN leaves here
        s.close()
    done += 1
print(json.dumps({"sequences": done, "seconds": limit - max(0.0, deadline - time.monotonic())}))
"""


def test_a_door_opening_a_thousand_times_a_second_runs_its_command_a_bounded_number_of_times(
        lab, servers, backend, scripts):
    """One source sends the simple sequence 1,000 times a second for 3 s: the hundreds of
    opens that reach the listener coalesce into a few runs (at most 2 at a time: the
    workers), one summary line counts what was merged, and the listener still takes the
    door's next open."""
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    slow = Path(scripts["marker"]).with_name("slow.sh")
    slow.write_text(f'#!/bin/sh\necho "$AWP_ACTION" >> "{scripts["out"]}/slow"\nsleep 1\n')
    slow.chmod(0o755)
    srv = servers(lab, advanced_list=None, simple_list=SIMPLE_DOOR, advanced="no", simple="yes",
                  FW_PORTKNOCK_STEP_TIMEOUT="10", FW_PORTKNOCK_OPEN_WINDOW="60")
    with_doors(srv, f"[{SIMPLE_PORT}]\non_open = {slow}\n")
    srv.start()
    mark = srv.log.mark()
    out = json.loads(c1.run([sys.executable, "-c", SEQUENCE_FLOOD, dst, 3.0, 3000, 1000, *SEQ], timeout=60).stdout)
    rate = out["sequences"] / out["seconds"]
    assert out["sequences"] >= 2000, out
    ended = time.monotonic()
    srv.log.wait(r"commands summary queued=\d+ coalesced=(\d+) dropped=\d+", mark, timeout=15)
    time.sleep(max(0.0, ended + 11 - time.monotonic()))  # summaries come at most every 10 s
    summary = re.findall(r"commands summary queued=(\d+) coalesced=(\d+) dropped=(\d+)", srv.log.since(mark))
    queued, coalesced, dropped = (sum(int(line[i]) for line in summary) for i in range(3))
    runs = (scripts["out"] / "slow").read_text().split()
    assert runs and set(runs) == {"open"}
    assert len(runs) <= 2 * (out["seconds"] + 3), f"{len(runs)} runs for a {out['seconds']:.1f} s flood"
    assert dropped == 0 and queued == len(runs), (summary, len(runs))  # one source: never more than 1 waits
    # the kernel bars a source for a step timeout once a knock of its flood arrives out of
    # turn (what scans do), so not every sequence sent opens; hundreds do, within a second
    assert queued + coalesced + dropped >= 100, (summary, out, f"{rate:.0f} sequences/s sent")
    assert srv.pid(), "the listener died"
    lab.server.serve_tcp(SIMPLE_PORT)
    knocked = awp_knock(lab.clients[1], "--sequence", ",".join(map(str, SEQ)), lab.server_ip4(lab.clients[1]),
                        "--wait", str(SIMPLE_PORT))
    assert knocked.returncode == 0, knocked.stderr
