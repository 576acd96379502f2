"""Run in a client namespace by fleet_bench.py: knock one node, time the first connect to a
(maybe other) node. One JSON line of results on stdout. Bounded: each trial gives up after
`bound` seconds, and the whole run after len(sources) trials.

    python fleet_trials.py '{"knock": IP, "connect": IP, "sources": [...], "secret": S, ...}'
"""

import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from pknock_ref import ref_payload  # noqa: E402

TRY = 0.02  # one connect attempt waits this long for the SYN-ACK


def connect_once(src: str, dst: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((src, 0))
        s.settimeout(TRY)
        try:
            s.connect((dst, port))
            return True
        except OSError:
            return False


def trial(a: dict, src: str, when: float) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((src, 0))
        t0 = time.monotonic()
        u.sendto(ref_payload(a["secret"], src, when), (a["knock"], a["knock_port"]))
    deadline = t0 + a["bound"]
    while time.monotonic() < deadline:
        if connect_once(src, a["connect"], a["port"]):
            return {"src": src, "ok": True, "ms": (time.monotonic() - t0) * 1000}
        time.sleep(0.001)
    return {"src": src, "ok": False, "ms": None}


def burst(a: dict) -> dict:
    """Every (source, minute) open MAC once, back to back: accepted knocks per second."""
    now = time.time()
    sent = 0
    t0 = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for offset in (-60, 0, 60):
            for src in a["sources"]:
                payload = ref_payload(a["secret"], src, now + offset)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((src, 0))
                    s.sendto(payload, (a["knock"], a["knock_port"]))
                sent += 1
                if a.get("pace"):
                    time.sleep(a["pace"])
    return {"sent": sent, "send_s": time.monotonic() - t0}


def main() -> None:
    a = json.loads(sys.argv[1])
    if a.get("burst"):
        print(json.dumps(burst(a)))
        return
    results = []
    for i, src in enumerate(a["sources"]):
        if i and a.get("gap"):
            time.sleep(a["gap"])
        results.append(trial(a, src, time.time()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
