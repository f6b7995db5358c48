#!/usr/bin/env python3
"""Raw TCP clients for lab tests: things curl cannot do.

  rawclient.py pipeline HOST PORT PATH...   send every request in one write, read all responses
  rawclient.py split HOST PORT PATH         send a request head in two TCP segments, 200 ms apart
  rawclient.py tcp HOST PORT MESSAGE        non-HTTP: send MESSAGE to an echo server, read it back

Prints one line per response (status and body length) so tests can compare with the records.
"""
import socket
import sys
import time


def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_responses(s, n):
    """Reads n Content-Length delimited responses; returns [(status, body_len)]."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed early")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(buf) < length:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed early")
            buf += chunk
        buf = buf[length:]
        out.append((status, length))
    return out


def main():
    mode, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
    s = connect(host, port)
    if mode == "pipeline":
        paths = sys.argv[4:]
        reqs = b"".join(
            b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (p.encode(), host.encode()) for p in paths
        )
        s.sendall(reqs)
        for status, length in read_responses(s, len(paths)):
            print(status, length)
    elif mode == "split":
        path = sys.argv[4]
        head = b"GET %s HTTP/1.1\r\nHost: %s\r\nX-Split: yes\r\n\r\n" % (path.encode(), host.encode())
        cut = head.index(b"\r\n") + 4  # inside the second line
        s.sendall(head[:cut])
        time.sleep(0.2)
        s.sendall(head[cut:])
        for status, length in read_responses(s, 1):
            print(status, length)
    elif mode == "tcp":
        msg = sys.argv[4].encode()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        print(len(got))
    else:
        raise SystemExit("unknown mode " + mode)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()


if __name__ == "__main__":
    main()
