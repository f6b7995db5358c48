#!/usr/bin/env python3
"""HTTP/1.1 keep-alive test server for the monitor lab (started by `cargo xtask lab`).

Endpoints (HEAD works on every GET endpoint, without a body):
  GET  /any?bytes=N      -> 200, N bytes with Content-Length
  GET  /chunked?bytes=N  -> 200, Transfer-Encoding: chunked, exactly N bytes in 16 KiB chunks
  POST /echo             -> reads the Content-Length body, 200 with body "received=<n>"
  GET  /                 -> 200, "ok\n"
anything else            -> 404 (with Content-Length, so keep-alive continues)

Logging is quiet (errors only, to stderr). Listens on all addresses of the pod: dual-stack
"::" by default, or 0.0.0.0 with --ipv4-only.
"""

import argparse
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 16 * 1024
MAX_BYTES = 1 << 31
_LINE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.\n"
BLOCK = (_LINE * (CHUNK // len(_LINE) + 1))[:CHUNK]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "monitor-lab/1"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass

    def _simple(self, status, body, head=False, content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _bytes_param(self, query):
        values = parse_qs(query).get("bytes", ["0"])
        try:
            n = int(values[0])
        except ValueError:
            return None
        if n < 0 or n > MAX_BYTES:
            return None
        return n

    def _write_exact(self, n, chunked):
        left = n
        while left > 0:
            piece = BLOCK if left >= CHUNK else BLOCK[:left]
            if chunked:
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            left -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _get(self, head):
        url = urlsplit(self.path)
        if url.path in ("/any", "/chunked"):
            n = self._bytes_param(url.query)
            if n is None:
                self._simple(400, b"bad bytes=\n", head)
                return
            chunked = url.path == "/chunked"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(n))
            self.end_headers()
            if not head:
                self._write_exact(n, chunked)
        elif url.path == "/":
            self._simple(200, b"ok\n", head)
        else:
            self._simple(404, b"not found\n", head)

    def do_GET(self):
        self._get(head=False)

    def do_HEAD(self):
        self._get(head=True)

    def _read_body(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None
        if length < 0:
            return None
        got = 0
        while got < length:
            data = self.rfile.read(min(CHUNK, length - got))
            if not data:
                break
            got += len(data)
        return got

    def do_POST(self):
        n = self._read_body()
        if n is None:
            self.close_connection = True
            self._simple(400, b"bad Content-Length\n")
            return
        if urlsplit(self.path).path == "/echo":
            self._simple(200, b"received=%d" % n)
        else:
            self._simple(404, b"not found\n")


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class V4Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    family = ap.add_mutually_exclusive_group()
    family.add_argument("--dual-stack", action="store_true", default=True)
    family.add_argument("--ipv4-only", action="store_true")
    args = ap.parse_args()
    if args.ipv4_only or not socket.has_ipv6:
        httpd = V4Server(("0.0.0.0", args.port), Handler)
    else:
        httpd = DualStackServer(("::", args.port), Handler)
    print(f"server.py listening on port {args.port}", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
