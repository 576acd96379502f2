"""What an accepted advanced-mode knock costs the listener, piece by piece: run by
latency_bench.py inside the server namespace while awp is loaded there.

    python advanced_parts.py ROOT REPS

Times, each REPS times (medians, in ms, one JSON line): the replay cache's add (what the
listener does before the grant: rewrite the cache file, fsync it and its directory, in
ROOT/var, so on the same file system as the listener's), and the backend's grants.open()
for the root's advanced door (nftables: libnftables in process; iptables: a write to
/proc/net/xt_recent), from REPS addresses of 198.18.40.0/24 that send nothing; each grant
is closed again. The MAC check itself is timed with awp.otp over the door's secrets. And
NFLOG's delivery: a datagram over loopback to a port that a table of this script's own
(`inet awpbenchnflog`, removed at the end) logs to group 4748, received through awp's
NflogSocket as the listener configures it when idle (qthresh 1: every packet sent at once)
and as it did before issue 7 (qthresh 100, flush timeout 1 cs).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from awp import otp  # noqa: E402
from awp.backend import select  # noqa: E402
from awp.knockd.nflog import NflogSocket, Packet  # noqa: E402
from awp.knockd.verify import check  # noqa: E402
from awp.knockd.replay import ReplayCache  # noqa: E402
from awp.load import load_config  # noqa: E402
from awp.paths import Root  # noqa: E402

FIRST = ipaddress.IPv4Address("198.18.40.1")
MAX_REPS = 250
NFLOG_GROUP, NFLOG_PORT = 4748, 2999
NFLOG_TABLE = f"""add table inet awpbenchnflog
add chain inet awpbenchnflog input {{ type filter hook input priority 0; policy accept; }}
add rule inet awpbenchnflog input iif lo udp dport {NFLOG_PORT} log group {NFLOG_GROUP} snaplen 256 drop
"""


def timed(fn, reps: int) -> float:
    took = []
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        took.append(time.perf_counter() - start)
    return statistics.median(took) * 1000


def main() -> int:
    root, reps = Root(Path(sys.argv[1])), min(int(sys.argv[2]), MAX_REPS)
    config = load_config(root)
    door = config.active_advanced[0]
    grants = select(config.settings.backend).grants(config)
    found = {}
    with tempfile.TemporaryDirectory(dir=root.base / "var") as tmp:
        cache = ReplayCache(Path(tmp) / "replay-cache")
        minute = otp.minute_of(time.time())
        found["replay_add_ms"] = timed(lambda i: cache.add(f"{i:064x}", minute, minute), reps)
        found["replay_add_nosync_ms"] = timed(lambda i: cache.add(f"{i + reps:064x}", minute, minute, sync=False), reps)
    found["grant_open_ms"] = timed(lambda i: grants.open(door.port, FIRST + i, 600), reps)
    found["grant_close_ms"] = timed(lambda i: grants.close(door.port, FIRST + i), reps)
    found["check_ms"] = time_check(config, door, reps)
    found["nflog_awp_ms"] = time_nflog(reps, qthresh=1, timeout_cs=None)
    found["nflog_old_ms"] = time_nflog(reps, qthresh=100, timeout_cs=1)
    print(json.dumps(found))
    return 0


def time_check(config, door, reps: int) -> float:
    """The listener's checks on a valid open knock (MAC over the window, replay lookup)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "unit"))
    from pknock_ref import ref_payload

    doors = {door.knock_port: door}
    payloads = [ref_payload(door.open_secret.value.decode(), str(FIRST + i), time.time()) for i in range(reps)]
    packets = [Packet(4, FIRST + i, ipaddress.ip_address("198.18.1.1"), 40000, door.knock_port, p, len(p))
               for i, p in enumerate(payloads)]
    minute = otp.minute_of(time.time())
    cache = ReplayCache(Path("/nonexistent-awp-bench"))
    return timed(lambda i: check(packets[i], doors, cache, minute), reps)


def time_nflog(reps: int, qthresh: int, timeout_cs: int | None) -> float:
    """Send -> receive of one lone datagram through NFLOG (20 ms apart; receive bounded)."""
    subprocess.run(["nft", "-f", "-"], input=NFLOG_TABLE, text=True, check=True, timeout=30)
    took = []
    try:
        with NflogSocket(NFLOG_GROUP, qthresh=qthresh, timeout_cs=timeout_cs) as nflog, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(reps):
                start = time.perf_counter()
                udp.sendto(b"x" * 65, ("127.0.0.1", NFLOG_PORT))
                if nflog.receive(timeout=2.0):
                    took.append(time.perf_counter() - start)
                time.sleep(0.02)
    finally:
        subprocess.run(["nft", "delete", "table", "inet", "awpbenchnflog"], check=False, timeout=30)
    return statistics.median(took) * 1000 if took else None


if __name__ == "__main__":
    sys.exit(main())
