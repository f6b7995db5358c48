#!/usr/bin/env python3
"""A non-Rust gRPC client of the collector, built from proto/monitor.proto alone.

Compiles the .proto with grpc_tools (Debian's python3-grpc-tools) into a temporary directory,
then calls Observe over mTLS and prints one JSON object per received record:
{"kind":..., "rule":..., "severity":..., "node":..., "seq":..., "json": <the record>}.

usage: observe.py --target HOST:PORT --proto monitor.proto --ca ca.pem --cert cli.pem
                  --key cli.key [--server-name NAME] [--kind K]... [--rule R]... [--limit N]
"""
import argparse
import importlib
import json
import os
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--kind", action="append", default=[])
    ap.add_argument("--rule", action="append", default=[])
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()

    from grpc_tools import protoc
    import grpc

    out = tempfile.mkdtemp(prefix="observe-py-")
    proto_dir = os.path.dirname(os.path.abspath(args.proto))
    rc = protoc.main([
        "protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.abspath(args.proto),
    ])
    if rc != 0:
        sys.exit(f"protoc failed on {args.proto} (exit {rc})")
    sys.path.insert(0, out)
    pb = importlib.import_module("monitor_pb2")
    stubs = importlib.import_module("monitor_pb2_grpc")

    def read(p):
        with open(p, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )
    channel = grpc.secure_channel(
        args.target, creds,
        options=[("grpc.ssl_target_name_override", args.server_name)],
    )
    stub = stubs.ObserveStub(channel)
    req = pb.ObserveRequest(kind=args.kind, rule=args.rule, limit=args.limit, follow=False)
    n = 0
    for rec in stub.Observe(req, timeout=30):
        print(json.dumps({
            "kind": rec.kind, "rule": rec.rule, "severity": rec.severity,
            "node": rec.node, "boot_id": rec.boot_id, "seq": rec.seq,
            "source_pod": rec.source.pod, "path": rec.path, "status": rec.status,
            "json": json.loads(rec.json),
        }), flush=True)
        n += 1
    print(f"observe.py: {n} record(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
