#!/usr/bin/env python3
"""The backdoor's lookups, one per connection, timed: the client of the detection-latency test.

  lookups.py HOST PORT PATH COUNT [MIN_GAP_MS MAX_GAP_MS]

Sends COUNT requests `GET PATH/<i>` (i = 0..COUNT-1), each on a new TCP connection, waiting
for each response and then a random 20-50 ms (or MIN_GAP_MS..MAX_GAP_MS) before the next.
Just before each request is written it takes time.clock_gettime(CLOCK_MONOTONIC), the clock
the test harness stamps the agent's output lines with, and prints one line per request:

  <i> <monotonic seconds at send> <status>
"""
import os
import random
import socket
import sys
import time

# The response reader is rawclient.py's, next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rawclient import read_responses  # noqa: E402


def main():
    host, port, path, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    lo, hi = (float(sys.argv[5]), float(sys.argv[6])) if len(sys.argv) > 6 else (20.0, 50.0)
    out = []
    for i in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = (
            f"GET {path}/{i} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lookups.py\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        t = time.clock_gettime(time.CLOCK_MONOTONIC)
        s.sendall(req)
        [(status, _length)] = read_responses(s, 1)
        s.close()
        out.append(f"{i} {t:.9f} {status}")
        time.sleep(random.uniform(lo, hi) / 1000.0)
    print("\n".join(out))


if __name__ == "__main__":
    main()
