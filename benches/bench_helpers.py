#!/usr/bin/env python3
"""Small measuring helpers for benches/run.sh. Each subcommand prints one value on stdout.

    blake3 [--mib N]                 single-core BLAKE3 throughput over an N MiB in-memory buffer, MB/s
    pread FILE [--count N] [--seed S] [--size B]
                                     N random, B-aligned preads of B bytes; prints "ops_per_s seconds"
    snapshot-id TOOL [oldest|newest] read `snapshots --json` output of restic or strata on stdin,
                                     print the id of the oldest (default) or newest snapshot
    hyperfine-mean FILE              mean time in ms from a hyperfine --export-json file
"""

import argparse
import json
import os
import random
import sys
import time


def cmd_blake3(args):
    import blake3  # pip install blake3 (the Rust crate's Python binding)
    buf = bytes(args.mib << 20)
    blake3.blake3(buf[: 1 << 20], max_threads=1).digest()  # warm up
    best = None
    for _ in range(3):
        t = time.perf_counter()
        blake3.blake3(buf, max_threads=1).digest()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(f"{len(buf) / best / 1e6:.1f}")


def cmd_pread(args):
    fd = os.open(args.file, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        blocks = max(1, size // args.size)
        rng = random.Random(args.seed)
        offsets = [rng.randrange(blocks) * args.size for _ in range(args.count)]
        t = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, args.size, off)) == 0:
                sys.exit(f"pread: short read at {off}")
        dt = time.perf_counter() - t
    finally:
        os.close(fd)
    print(f"{args.count / dt:.1f} {dt:.3f}")


def _snapshot_list(doc):
    """Accept a bare list, or an object holding the list under a usual key."""
    if isinstance(doc, dict):
        for key in ("snapshots", "items", "data"):
            if isinstance(doc.get(key), list):
                return doc[key]
        raise SystemExit("snapshot-id: no snapshot list in the JSON object")
    return doc


def _time_of(snap, index):
    for key in ("time", "created", "created_at", "timestamp", "start_time", "date"):
        if key in snap:
            return str(snap[key])
    return f"{index:012d}"  # keep the tool's own order


def cmd_snapshot_id(args):
    snaps = _snapshot_list(json.load(sys.stdin))
    if not snaps:
        raise SystemExit("snapshot-id: no snapshots")
    ordered = sorted(enumerate(snaps), key=lambda p: (_time_of(p[1], p[0]), p[0]))
    _, snap = ordered[0] if args.which == "oldest" else ordered[-1]
    for key in ("id", "snapshot_id", "short_id", "name"):
        if key in snap:
            print(snap[key])
            return
    raise SystemExit("snapshot-id: snapshot without an id field")


def cmd_hyperfine_mean(args):
    with open(args.file) as f:
        doc = json.load(f)
    print(f"{doc['results'][0]['mean'] * 1000:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("blake3")
    p.add_argument("--mib", type=int, default=1024)
    p.set_defaults(fn=cmd_blake3)
    p = sub.add_parser("pread")
    p.add_argument("file")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--size", type=int, default=4096)
    p.set_defaults(fn=cmd_pread)
    p = sub.add_parser("snapshot-id")
    p.add_argument("tool", choices=("restic", "strata"))
    p.add_argument("which", nargs="?", choices=("oldest", "newest"), default="oldest")
    p.set_defaults(fn=cmd_snapshot_id)
    p = sub.add_parser("hyperfine-mean")
    p.add_argument("file")
    p.set_defaults(fn=cmd_hyperfine_mean)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
