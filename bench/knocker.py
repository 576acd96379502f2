"""Knock-then-connect trials, run inside a client namespace by the benchmarks.

Reads one JSON request per line on stdin, answers one JSON line per request, ends at EOF
(or after MAX_TRIALS). A request:

    {"kind": "tcp", "dst": "198.18.1.1", "port": 2222, "knocks": [7481, 2203, 9127, 4410],
     "src": null, "bound": 1.0, "gap": 1.0, "poll": 0.001}
    {"kind": "udp", "dst": "198.18.1.1", "port": 2222, "knock_port": 2000,
     "secret": "...", "src": "198.18.1.10", "bound": 2.0}

The clock starts just before the first knock leaves. tcp: one non-blocking connect() per
knock port, each socket closed at once (a closed SYN_SENT socket never retransmits, so a
lost knock stays lost), `gap` seconds apart (default 0: back to back). udp: one datagram with a valid one-time password for `src`
(tests/unit/pknock_ref.py), and again every `repeat_gap` seconds (default 0.4) until it was
sent `repeat` times (default 1), as knock.sh --repeat does, while the polls go on. Then a non-blocking connect() to `port` every `poll` seconds
(default POLL), each kept for KEEP seconds (at most MAX_PENDING at once), until one completes or `bound` seconds have
passed since the last knock.
A udp request with "payload_hex" sends those bytes instead (a packet another tool built,
say an fwknop SPA packet). kind "cmd": {"kind": "cmd", "argv": [...], "input": "...", ...}
starts a knock client program (stdin: input), and the polls start at once, beside it; the
clock starts just before the program does, so its start-up is in the figure. The program
must end within `bound` seconds (else it is killed).
Answer: {"ok": bool, "ms": latency or null, "polls": n}.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

POLL = 0.005
KEEP = 0.95  # under the first SYN retransmission (1 s): a poll is one SYN, but it waits for
# its SYN-ACK as long as it can, since a busy server delays it
MAX_TRIALS = 10_000
MAX_BOUND = 10.0
MAX_GAP = 5.0
MAX_REPEAT = 10
MIN_POLL = 0.0005
MAX_PENDING = 200  # poll sockets kept at once (select() takes descriptors below 1024)


def new_socket(kind: int, src: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    if src:
        sock.bind((src, 0))
    return sock


def knock_tcp(req: dict) -> None:
    gap = min(float(req.get("gap", 0)), MAX_GAP)
    socks = [new_socket(socket.SOCK_STREAM, req.get("src")) for _ in req["knocks"]]
    for i, (sock, port) in enumerate(zip(socks, req["knocks"])):
        if i and gap:
            time.sleep(gap)
        sock.connect_ex((req["dst"], port))
        if gap:
            sock.close()  # before its SYN is retransmitted (1 s), which would knock again out of order
    for sock in socks:
        sock.close()


def knock_udp(req: dict, payload: bytes) -> None:
    with new_socket(socket.SOCK_DGRAM, req["src"]) as sock:
        sock.sendto(payload, (req["dst"], req["knock_port"]))


def udp_payload(req: dict) -> bytes:
    if req.get("payload_hex"):
        return bytes.fromhex(req["payload_hex"])
    from pknock_ref import ref_payload

    return ref_payload(req["secret"], req["src"], time.time())


def poll_connect(req: dict, start: float, resend=None) -> tuple[float | None, int]:
    """Seconds from start to the first completed connect, or None; and polls sent.
    resend(now) is called before each poll (the repeats of a UDP knock)."""
    deadline = time.perf_counter() + min(float(req["bound"]), MAX_BOUND)
    poll = max(float(req.get("poll", POLL)), MIN_POLL)
    pending: list[tuple[socket.socket, float]] = []
    polls = 0
    try:
        while time.perf_counter() < deadline:
            if resend:
                resend(time.perf_counter())
            sock = new_socket(socket.SOCK_STREAM, req.get("src"))
            sock.connect_ex((req["dst"], req["port"]))
            pending.append((sock, time.perf_counter()))
            polls += 1
            done = wait_tick(pending, time.perf_counter() + poll)
            if done is not None:
                return done - start, polls
            pending = expire(pending, time.perf_counter() - KEEP)
            while len(pending) > MAX_PENDING:
                pending.pop(0)[0].close()
        return None, polls
    finally:
        for sock, _ in pending:
            sock.close()


def wait_tick(pending, tick_end: float) -> float | None:
    """Wait until tick_end for one pending connect to complete; its completion time."""
    while (left := tick_end - time.perf_counter()) > 0:
        writable = select.select([], [s for s, _ in pending], [], left)[1]
        for sock in writable:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                return time.perf_counter()
            pending[:] = [(s, t) for s, t in pending if s is not sock]
            sock.close()
    return None


def expire(pending, older_than: float):
    kept = []
    for sock, sent in pending:
        if sent < older_than:
            sock.close()
        else:
            kept.append((sock, sent))
    return kept


def repeater(req: dict, payload: bytes, start: float, sent: list[int] | None = None):
    """The resend() of poll_connect: the knock's copies 2..repeat, repeat_gap seconds apart
    (sent[0] counts them)."""
    times = [start + k * min(float(req.get("repeat_gap", 0.4)), MAX_GAP)
             for k in range(1, min(int(req.get("repeat", 1)), MAX_REPEAT))]

    def resend(now: float) -> None:
        while times and times[0] <= now:
            times.pop(0)
            knock_udp(req, payload)
            if sent is not None:
                sent[0] += 1
    return resend


def run_client(req: dict, start: float) -> dict:
    """kind "cmd": the knock client program beside the polls."""
    import subprocess

    proc = subprocess.Popen(req["argv"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(req.get("input", "").encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    try:
        seconds, polls = poll_connect(req, start)
        try:
            rc = proc.wait(min(float(req["bound"]), MAX_BOUND))
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"ok": seconds is not None, "ms": None if seconds is None else seconds * 1000, "polls": polls,
            "rc": rc}


def trial(req: dict) -> dict:
    payload = udp_payload(req) if req["kind"] == "udp" else b""
    start = time.perf_counter()
    if req["kind"] == "cmd":
        return run_client(req, start)
    sent = [1]
    if req["kind"] == "udp":
        knock_udp(req, payload)
        seconds, polls = poll_connect(req, start, repeater(req, payload, start, sent))
    else:
        knock_tcp(req)
        seconds, polls = poll_connect(req, start)
    return {"ok": seconds is not None, "ms": None if seconds is None else seconds * 1000, "polls": polls,
            "copies": sent[0]}


def main() -> int:
    if len(sys.argv) > 1:
        os.sched_setaffinity(0, {int(sys.argv[1])})
    for _, line in zip(range(MAX_TRIALS), sys.stdin):
        print(json.dumps(trial(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
