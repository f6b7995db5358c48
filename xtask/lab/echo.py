#!/usr/bin/env python3
"""TCP echo server for the monitor lab (started by `cargo xtask lab`).

Echoes every byte back until the client closes. One thread per connection; dual-stack "::"
by default, 0.0.0.0 with --ipv4-only. Quiet: only errors go to stderr.
"""

import argparse
import socket
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionError:
                return
            if not data:
                return
            try:
                sock.sendall(data)
            except ConnectionError:
                return


class DualStackServer(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class V4Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=9000)
    family = ap.add_mutually_exclusive_group()
    family.add_argument("--dual-stack", action="store_true", default=True)
    family.add_argument("--ipv4-only", action="store_true")
    args = ap.parse_args()
    if args.ipv4_only or not socket.has_ipv6:
        srv = V4Server(("0.0.0.0", args.port), Echo)
    else:
        srv = DualStackServer(("::", args.port), Echo)
    print(f"echo.py listening on port {args.port}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
