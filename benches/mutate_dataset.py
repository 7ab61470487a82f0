#!/usr/bin/env python3
"""Apply "a day of business" to a dataset made by gen_dataset.py.

Deterministic from (--seed, --day): day N always makes the same changes to the
same starting tree. At --scale 1 and --intensity 1 one day:

    - adds ~1000 new order JSONs (in a new orders/2025/MM/DD/ directory)
    - rewrites ~200 existing order JSONs (status change, a note, a refund line)
    - deletes ~50 order JSONs
    - in db/orders.sqlite: UPDATEs ~200 orders, INSERTs ~100 orders with their items
    - appends ~2 MiB to logs/access.log and to logs/app.log
    - adds 3 media files
    - overwrites 4 MiB in the middle of big/archive.bin, in place

Counts are multiplied by --scale * --intensity (minimum 1 each). The CHAIN
scenario of run.sh uses --intensity 0.1 for 30 small days in a row.

Orders dated 2023-01 are never modified or deleted ("closed" orders), so
benchmarks can read one of them from any snapshot and from the live tree.

Usage: mutate_dataset.py --root DIR --day N [--scale F] [--seed N] [--intensity F]
"""

import argparse
import datetime as dt
import json
import os
import random
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_dataset as g  # noqa: E402

MiB = 1 << 20
PROTECTED_PREFIX = os.path.join("orders", "2023", "01") + os.sep


def count(n, factor):
    return max(1, int(round(n * factor)))


def list_orders(root):
    out = []
    for d, dirs, files in os.walk(os.path.join(root, "orders")):
        dirs.sort()
        rel = os.path.relpath(d, root) + os.sep
        if rel.startswith(PROTECTED_PREFIX):
            continue
        out.extend(os.path.join(d, f) for f in sorted(files))
    return out


def mutate_orders(root, rng, day, factor):
    existing = list_orders(root)
    victims = rng.sample(existing, min(len(existing), count(200, factor) + count(50, factor)))
    modified, deleted = victims[:count(200, factor)], victims[count(200, factor):]
    for path in modified:
        with open(path) as f:
            doc = json.load(f)
        doc["status"] = rng.choice(("returned", "refunded", "delivered", "disputed"))
        doc["notes"] = (doc.get("notes") or "") + f" [day {day}: customer service ticket #{rng.randint(10000, 99999)}]"
        doc.setdefault("history", []).append({"day": day, "event": doc["status"],
                                              "amount": round(rng.uniform(5, 80), 2)})
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    for path in deleted:
        os.remove(path)
    when0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=day)
    n_new = count(1000, factor)
    for i in range(n_new):
        when = when0 + dt.timedelta(seconds=i * 86400 // n_new)
        g.write_order(root, 5_000_000 + day * 100_000 + i, when, rng, status="processing")
    return n_new, len(modified), len(deleted)


def mutate_db(root, rng, day, factor):
    con = sqlite3.connect(os.path.join(root, "db", "orders.sqlite"))
    (max_id,) = con.execute("SELECT max(id) FROM orders").fetchone()
    (max_item,) = con.execute("SELECT max(id) FROM order_items").fetchone()
    n_upd, n_ins = count(200, factor), count(100, factor)
    ids = rng.sample(range(1, max_id + 1), min(max_id, n_upd))
    con.executemany("UPDATE orders SET status = ?, note = ? WHERE id = ?",
                    [(rng.choice(("returned", "refunded", "delivered")), f"updated on day {day}", i) for i in ids])
    stamp = (dt.datetime(2025, 1, 1) + dt.timedelta(days=day)).strftime("%Y-%m-%d %H:%M:%S")
    items = []
    for k in range(n_ins):
        oid = max_id + 1 + k
        con.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (oid, rng.randint(1, 1000), stamp, "processing", "web", rng.randint(500, 90000), "EUR",
                     f"{rng.choice(g.STREETS)} {rng.randint(1, 240)}", rng.choice(g.CITIES)[0],
                     f"tx_{rng.getrandbits(64):016x}", ""))
        for _ in range(rng.randint(1, 4)):
            max_item += 1
            items.append((max_item, oid, f"SKU-{rng.randint(10000, 99999)}", rng.choice(g.PRODUCTS),
                          rng.choice((1, 2)), rng.randint(300, 25000)))
    con.executemany("INSERT INTO order_items VALUES (?,?,?,?,?,?)", items)
    con.commit()
    con.close()
    return n_upd, n_ins


def mutate_logs(root, rng, day, factor):
    nbytes = max(16 * 1024, int(2 * MiB * factor))
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp() + day * 86400
    for kind in ("access", "app"):
        with open(os.path.join(root, "logs", f"{kind}.log"), "a") as f:
            for chunk, _ in g.log_lines(rng, start, nbytes, kind):
                f.write(chunk)
    return 2 * nbytes


def mutate_media(root, rng, day, factor):
    n = count(3, factor)
    for i in range(n):
        size = int(50_000 * (40 ** rng.random()))
        path = os.path.join(root, "media", "products", f"SKU-new-d{day}-{i}.jpg")
        with open(path, "wb") as f:
            f.write(rng.randbytes(size))
    return n


def mutate_big(root, rng, day, factor):
    path = os.path.join(root, "big", "archive.bin")
    size = os.path.getsize(path)
    length = max(64 * 1024, min(4 * MiB, size // 8))
    length = max(64 * 1024, int(length * min(1.0, factor)) // 4096 * 4096)
    # Somewhere in the middle half of the file, a different place every day.
    offset = size // 4 + (day * 7919 * 4096 + rng.randrange(0, MiB)) % (size // 2)
    offset -= offset % 4096
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(rng.randbytes(length))
    return offset, length


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--day", type=int, required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--intensity", type=float, default=1.0)
    args = ap.parse_args()
    rng = random.Random(f"{args.seed}-mutate-{args.day}")
    factor = args.scale * args.intensity
    new, mod, dele = mutate_orders(args.root, rng, args.day, factor)
    upd, ins = mutate_db(args.root, rng, args.day, factor)
    logs = mutate_logs(args.root, rng, args.day, factor)
    media = mutate_media(args.root, rng, args.day, factor)
    off, length = mutate_big(args.root, rng, args.day, factor)
    print(f"mutate_dataset: day {args.day}: orders +{new} ~{mod} -{dele}; db {upd} updated, {ins} orders inserted; "
          f"logs +{logs} B; media +{media}; big {length} B at {off}", file=sys.stderr)


if __name__ == "__main__":
    main()
