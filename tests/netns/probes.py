"""Small programs the netns tests run inside a namespace (python -c SCRIPT args...)."""

# Does a UDP port answer? A connected socket sends, waits for an answer, sends again: an
# ICMP port unreachable shows as "refused"; a filtered port as "timeout" and then "ok".
UDP_PROBE = r"""
import json, socket, sys
dst, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
def attempt(f):
    try:
        f()
        return "ok"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
with socket.socket(family, socket.SOCK_DGRAM) as s:
    s.settimeout(1.0)
    s.connect((dst, port))
    first = attempt(lambda: s.send(b"probe\n"))
    answer = attempt(lambda: s.recv(100))
    second = attempt(lambda: s.send(b"probe\n"))
print(json.dumps({"send1": first, "recv": answer, "send2": second}))
"""
