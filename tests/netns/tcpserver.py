"""Tiny TCP server for the netns tests: banner, then echo lines until the peer closes.

    python tcpserver.py PORT [4|6]

Every connection gets the line "awp-test-ok", then every line it sends is written back,
so a client can prove later that its session is still established. Stdlib only; one
thread per connection; ends when killed (SIGTERM/SIGKILL from the harness).
"""

from __future__ import annotations

import socket
import socketserver
import sys

BANNER = b"awp-test-ok\n"
MAX_LINE = 4096


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(BANNER)
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            self.wfile.write(line)


class Server4(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        """Peers reset or vanish all the time here (knocks, nmap); stay quiet."""


class Server6(Server4):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def main(argv: list[str]) -> int:
    port = int(argv[1])
    family = argv[2] if len(argv) > 2 else "4"
    server_cls, host = (Server6, "::") if family == "6" else (Server4, "0.0.0.0")
    with server_cls((host, port), EchoHandler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
