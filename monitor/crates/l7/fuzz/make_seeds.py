#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (seeds/TARGET/NAME) from ../tests/fixtures/*.segments:
the client's bytes for tls_client_hello, both directions in h2_decoder's chunk format for
h2_decoder (see fuzz_targets/h2_decoder.rs). Run from this folder."""
import glob
import os

here = os.path.dirname(os.path.abspath(__file__))
for target in ("tls_client_hello", "h2_decoder"):
    os.makedirs(os.path.join(here, "seeds", target), exist_ok=True)
for path in sorted(glob.glob(os.path.join(here, "..", "tests", "fixtures", "*.segments"))):
    name = os.path.basename(path).rsplit(".", 1)[0]
    segs = []
    for line in open(path):
        if line.strip():
            d, h = line.split()
            segs.append((d, bytes.fromhex(h)))
    client = b"".join(b for d, b in segs if d == "c")
    if name.startswith("tls"):
        open(os.path.join(here, "seeds", "tls_client_hello", name), "wb").write(client)
        continue
    out = bytearray([0])
    for d, b in segs:
        for i in range(0, len(b), 127):
            chunk = b[i:i + 127]
            out.append((0x80 if d == "s" else 0) | len(chunk))
            out += chunk
    open(os.path.join(here, "seeds", "h2_decoder", name), "wb").write(bytes(out))
