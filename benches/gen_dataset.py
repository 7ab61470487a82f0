#!/usr/bin/env python3
"""Generate the e-commerce benchmark dataset for benches/run.sh.

Deterministic: the same --seed and --scale always give the same bytes, the
same names and the same modification times. Layout (sizes at --scale 1):

    orders/YYYY/MM/DD/order-<id>.json  ~100,000 JSON order documents, 1-4 KB each
    db/orders.sqlite                   SQLite database, ~300 MB (customers, orders, order_items)
    media/products/<sku>-<n>.jpg       incompressible "images", 50 KB-2 MB each, ~400 MB in all
    logs/access.log, logs/app.log      current logs (the mutator appends to these)
    logs/archive/*.log                 rotated, compressible text logs; ~300 MB of logs in all
    big/archive.bin                    one 1 GiB file: 1 MiB blocks, half random, half compressible

Every count and size is multiplied by --scale (with small minimums), so
--scale 0.02 gives a ~50 MB dataset for a smoke run and --scale 2 doubles it.

Usage: gen_dataset.py --out DIR [--scale F] [--seed N]
The output directory must not exist or must be empty.
"""

import argparse
import datetime as dt
import json
import os
import random
import sqlite3
import sys
import time

MiB = 1 << 20

# Everything the generator writes carries an mtime derived from the data, so
# two runs with the same seed produce identical metadata too.
EPOCH = dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc)
ORDER_DAYS = 730  # two years of order history: 2023-01-01 .. 2024-12-30
FIXED_MTIME = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp()

# Full-scale targets.
FULL_ORDERS = 100_000
FULL_DB_ORDERS = 950_000  # rows in `orders`; order_items gets ~2.5x this (~300 MB file)
FULL_MEDIA_BYTES = 400 * MiB
FULL_LOG_BYTES = 300 * MiB
FULL_BIG_BYTES = 1024 * MiB

FIRST_NAMES = ("Anna Ben Clara David Emma Felix Greta Hugo Ida Jonas Karla Leon Mia Noah Olga Paul "
               "Quinn Rosa Sven Tara Ulla Viktor Wanda Xaver Yara Zoe Amir Chen Diego Fatima Hiro "
               "Ines Kofi Lena Marta Nils Omar Priya Ravi Sofia").split()
LAST_NAMES = ("Meyer Schmidt Novak Rossi Garcia Dubois Jensen Kowalski Silva Nguyen Tanaka Okafor "
              "Andersen Moreau Fischer Bauer Costa Horvat Lindqvist Petrov Khan Murphy Weber Walsh "
              "Keller Brandt Vogel Lambert Ortiz Sato").split()
CITIES = (("Berlin", "DE", "10115"), ("Hamburg", "DE", "20095"), ("Munich", "DE", "80331"),
          ("Vienna", "AT", "1010"), ("Zurich", "CH", "8001"), ("Paris", "FR", "75001"),
          ("Lyon", "FR", "69001"), ("Milan", "IT", "20121"), ("Madrid", "ES", "28001"),
          ("Lisbon", "PT", "1100-148"), ("Amsterdam", "NL", "1012"), ("Copenhagen", "DK", "1050"),
          ("Stockholm", "SE", "111 20"), ("Warsaw", "PL", "00-001"), ("Prague", "CZ", "110 00"),
          ("Dublin", "IE", "D01"))
STREETS = ("Hauptstrasse Bahnhofstrasse Gartenweg Lindenallee Rue de la Paix Via Roma Calle Mayor "
           "Market Street Kongens Gade Storgatan Dorfstrasse Schillerplatz").split(" ")
PRODUCTS = ("Linen shirt|Wool sweater|Running shoes|Leather belt|Canvas backpack|Ceramic mug|"
            "Espresso beans 1kg|Desk lamp|Bluetooth speaker|USB-C cable 2m|Yoga mat|Water bottle|"
            "Rain jacket|Chef's knife|Cast iron pan|Notebook A5|Fountain pen|Sunglasses|"
            "Phone case|Wireless mouse|Mechanical keyboard|Throw blanket|Scented candle|"
            "Plant pot|Board game|Puzzle 1000pc|Headphones|Smart watch strap|Travel adapter|"
            "Bike light set").split("|")
STATUSES = ("delivered",) * 8 + ("shipped", "cancelled", "returned", "processing")
PAYMENT = ("card", "card", "card", "paypal", "invoice", "klarna", "apple_pay")
CARRIERS = ("DHL", "UPS", "DPD", "GLS", "PostNL", "Hermes")
NOTES = ("", "", "", "Please leave at the door.", "Gift wrap, no invoice in the parcel.",
         "Call before delivery.", "Deliver to the neighbour at number 12 if absent.",
         "Customer asked for express handling after the first parcel was lost in transit.")


def scaled(n, scale, minimum=1):
    return max(minimum, int(round(n * scale)))


def order_day(order_index, n_orders):
    """Orders are spread evenly over ORDER_DAYS, ids increase with time."""
    return min(ORDER_DAYS - 1, order_index * ORDER_DAYS // max(1, n_orders))


def order_path(root, order_id, when):
    return os.path.join(root, "orders", f"{when:%Y}", f"{when:%m}", f"{when:%d}",
                        f"order-{order_id}.json")


def make_address(rng):
    city, country, postcode = rng.choice(CITIES)
    return {
        "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "street": f"{rng.choice(STREETS)} {rng.randint(1, 240)}",
        "postcode": postcode,
        "city": city,
        "country": country,
    }


def make_order(rng, order_id, when, status=None):
    """One order document; the item count drives the size (about 1-4 KB)."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    customer_id = rng.randint(1, 250_000)
    shipping = make_address(rng)
    billing = shipping if rng.random() < 0.8 else make_address(rng)
    items = []
    for line in range(rng.randint(1, 12)):
        qty = rng.choice((1, 1, 1, 2, 2, 3, 5))
        price = round(rng.uniform(3, 250), 2)
        items.append({
            "line": line + 1,
            "sku": f"SKU-{rng.randint(10000, 99999)}",
            "name": rng.choice(PRODUCTS),
            "quantity": qty,
            "unit_price": price,
            "currency": "EUR",
            "vat_rate": 0.19,
            "line_total": round(qty * price, 2),
        })
    subtotal = round(sum(i["line_total"] for i in items), 2)
    shipping_fee = 0.0 if subtotal > 50 else 4.95
    tax = round(subtotal * 0.19 / 1.19, 2)
    return {
        "order_id": order_id,
        "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": status or rng.choice(STATUSES),
        "channel": rng.choice(("web", "web", "app", "marketplace")),
        "customer": {
            "id": customer_id,
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{customer_id % 1000}@example.com",
            "phone": f"+49 {rng.randint(150, 179)} {rng.randint(1000000, 9999999)}",
            "loyalty_tier": rng.choice(("none", "none", "silver", "gold")),
        },
        "shipping_address": shipping,
        "billing_address": billing,
        "items": items,
        "totals": {"subtotal": subtotal, "tax_included": tax, "shipping": shipping_fee,
                   "total": round(subtotal + shipping_fee, 2), "currency": "EUR"},
        "payment": {"method": rng.choice(PAYMENT), "transaction_id": f"tx_{rng.getrandbits(64):016x}",
                    "captured": True},
        "fulfilment": {"carrier": rng.choice(CARRIERS),
                       "tracking": f"{rng.getrandbits(48):012X}",
                       "warehouse": rng.choice(("BER-1", "HAM-2", "WAW-1"))},
        "notes": rng.choice(NOTES),
    }


def write_order(root, order_id, when, rng, status=None):
    path = order_path(root, order_id, when)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(make_order(rng, order_id, when, status), f, indent=2)
        f.write("\n")
    return path


def gen_orders(root, scale, seed):
    rng = random.Random(f"{seed}-orders")
    n = scaled(FULL_ORDERS, scale, 50)
    for i in range(n):
        day = order_day(i, n)
        when = EPOCH + dt.timedelta(days=day, seconds=rng.randint(0, 86399))
        path = write_order(root, 1_000_000 + i, when, rng)
        ts = when.timestamp() + 3600
        os.utime(path, (ts, ts))
    return n


def gen_db(root, scale, seed):
    rng = random.Random(f"{seed}-db")
    path = os.path.join(root, "db", "orders.sqlite")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript("""
        PRAGMA journal_mode = DELETE;
        PRAGMA synchronous = OFF;
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT,
                                country TEXT, created_at TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, created_at TEXT,
                             status TEXT, channel TEXT, total_cents INTEGER, currency TEXT,
                             shipping_street TEXT, shipping_city TEXT, payment_ref TEXT, note TEXT);
        CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, name TEXT,
                                  quantity INTEGER, unit_price_cents INTEGER);
    """)
    n_customers = scaled(250_000, scale, 100)
    con.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?)", (
        (cid, f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", f"customer{cid}@example.com",
         *rng.choice(CITIES)[:2], (EPOCH + dt.timedelta(days=rng.randint(0, 700))).strftime("%Y-%m-%d"))
        for cid in range(1, n_customers + 1)))
    n_orders = scaled(FULL_DB_ORDERS, scale, 200)
    item_id = 0

    def order_rows():
        for oid in range(1, n_orders + 1):
            when = EPOCH + dt.timedelta(seconds=oid * ORDER_DAYS * 86400 // n_orders)
            city = rng.choice(CITIES)
            yield (oid, rng.randint(1, n_customers), when.strftime("%Y-%m-%d %H:%M:%S"),
                   rng.choice(STATUSES), rng.choice(("web", "app", "marketplace")),
                   rng.randint(500, 90000), "EUR", f"{rng.choice(STREETS)} {rng.randint(1, 240)}",
                   city[0], f"tx_{rng.getrandbits(64):016x}", rng.choice(NOTES))

    def item_rows():
        nonlocal item_id
        for oid in range(1, n_orders + 1):
            for _ in range(rng.randint(1, 4)):
                item_id += 1
                yield (item_id, oid, f"SKU-{rng.randint(10000, 99999)}", rng.choice(PRODUCTS),
                       rng.choice((1, 1, 2, 3)), rng.randint(300, 25000))

    con.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?)", order_rows())
    con.executemany("INSERT INTO order_items VALUES (?,?,?,?,?,?)", item_rows())
    con.executescript("""
        CREATE INDEX orders_customer ON orders(customer_id);
        CREATE INDEX orders_created ON orders(created_at);
        CREATE INDEX items_order ON order_items(order_id);
    """)
    con.commit()
    con.close()
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return os.path.getsize(path)


def gen_media(root, scale, seed):
    rng = random.Random(f"{seed}-media")
    target = scaled(FULL_MEDIA_BYTES, scale, 2 * MiB)
    d = os.path.join(root, "media", "products")
    os.makedirs(d, exist_ok=True)
    total = n = 0
    while total < target:
        # log-uniform between 50 KB and 2 MB: many thumbnails, a few large photos
        size = int(50_000 * (40 ** rng.random()))
        size = min(size, target - total) if target - total > 50_000 else size
        path = os.path.join(d, f"SKU-{10000 + n * 7 % 90000}-{n}.jpg")
        write_random(path, size, rng)
        total += size
        n += 1
    return n, total


def write_random(path, size, rng, mtime=FIXED_MTIME):
    with open(path, "wb") as f:
        left = size
        while left:
            k = min(left, 4 * MiB)
            f.write(rng.randbytes(k))
            left -= k
    os.utime(path, (mtime, mtime))


PATHS = ("/api/cart", "/api/checkout", "/api/orders", "/product/{}", "/search?q={}", "/static/app.{}.js",
         "/category/{}", "/api/payment/callback", "/account/orders", "/")
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2) Safari/604.1",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0", "shop-app/4.2.1 (Android 14)",
          "Googlebot/2.1 (+http://www.google.com/bot.html)")
APP_MSGS = ("order {} created", "payment captured for order {}", "stock reserved for order {}",
            "shipment label printed for order {}", "cache miss for product {}",
            "slow query on orders took {} ms", "email sent to customer {}",
            "retrying webhook delivery {}", "session expired for customer {}")
LEVELS = ("INFO",) * 12 + ("DEBUG",) * 4 + ("WARN", "ERROR")


def log_lines(rng, start_ts, nbytes, kind):
    """Yield chunks of log text totalling about nbytes, with increasing timestamps."""
    ts = start_ts
    written = 0
    while written < nbytes:
        lines = []
        for _ in range(200):
            ts += rng.random() * 0.2
            stamp = dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            if kind == "access":
                path = rng.choice(PATHS).format(rng.randint(1, 99999))
                lines.append(f'10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} - - '
                             f'[{stamp}Z] "GET {path} HTTP/1.1" {rng.choice((200, 200, 200, 200, 304, 404, 500))} '
                             f'{rng.randint(120, 48000)} "{rng.choice(AGENTS)}" rt={rng.randint(1, 900)}ms\n')
            else:
                msg = rng.choice(APP_MSGS).format(rng.randint(1, 2_000_000))
                lines.append(f"{stamp}Z {rng.choice(LEVELS):5} [worker-{rng.randint(1, 16):02}] "
                             f"shop.{rng.choice(('orders', 'payments', 'catalog', 'mail'))}: {msg} "
                             f"request_id={rng.getrandbits(64):016x}\n")
        chunk = "".join(lines)
        written += len(chunk)
        yield chunk, ts


def gen_logs(root, scale, seed):
    rng = random.Random(f"{seed}-logs")
    target = scaled(FULL_LOG_BYTES, scale, 2 * MiB)
    d = os.path.join(root, "logs", "archive")
    os.makedirs(d, exist_ok=True)
    days = 30
    per_file = target // (2 * (days + 1))
    start = dt.datetime(2024, 12, 1, tzinfo=dt.timezone.utc).timestamp()
    total = 0
    for day in range(days + 1):
        for kind in ("access", "app"):
            if day < days:
                when = dt.datetime.fromtimestamp(start + day * 86400, dt.timezone.utc)
                path = os.path.join(d, f"{kind}-{when:%Y-%m-%d}.log")
            else:
                path = os.path.join(root, "logs", f"{kind}.log")
            with open(path, "w") as f:
                for chunk, _ in log_lines(rng, start + day * 86400, per_file, kind):
                    f.write(chunk)
            mtime = start + (day + 1) * 86400
            os.utime(path, (mtime, mtime))
            total += os.path.getsize(path)
    return total


def compressible_block(rng, size, symbols):
    """size bytes drawn from `symbols` distinct byte values: unique, but compresses well."""
    table = bytes(ord("a") + (i % symbols) for i in range(256))
    return rng.randbytes(size).translate(table)


def write_big_block(f, rng, size):
    r = rng.random()
    if r < 0.5:
        f.write(rng.randbytes(size))                   # random: incompressible
    elif r < 0.85:
        f.write(compressible_block(rng, size, 16))     # ~2:1
    else:
        f.write(compressible_block(rng, size, 2))      # ~8:1


def gen_big(root, scale, seed):
    rng = random.Random(f"{seed}-big")
    size = scaled(FULL_BIG_BYTES, scale, 8 * MiB)
    size -= size % MiB
    path = os.path.join(root, "big", "archive.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            write_big_block(f, rng, MiB)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if os.path.exists(args.out) and os.listdir(args.out):
        sys.exit(f"gen_dataset: {args.out} is not empty")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    def step(name, fn):
        t = time.time()
        result = fn(args.out, args.scale, args.seed)
        print(f"gen_dataset: {name:7} {result} ({time.time() - t:.1f} s)", file=sys.stderr)

    step("orders", gen_orders)
    step("db", gen_db)
    step("media", gen_media)
    step("logs", gen_logs)
    step("big", gen_big)
    print(f"gen_dataset: done in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
