#!/usr/bin/env bash
# How much a day's dump of a changing PostgreSQL database adds to a strata repository, when the
# dumps are stored with `strata backup --stdin-from-command` (docs/PERFORMANCE.md, "Database
# dumps"). Runs a throwaway cluster as the `postgres` user on a Unix socket under $BENCH_DIR, makes
# a shop database of $ORDERS orders, and for each dump format stores day 1, applies a day's
# changes, stores day 2 and prints day 2's size and what it added.
#
#   benches/dump_dedup.sh                    # 1,000,000 orders (dumps of ~60-200 MB), a few minutes
#   ORDERS=100000 benches/dump_dedup.sh      # quicker
#
# Needs root and Debian's postgresql package. STRATA_BIN defaults to target/release/strata.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${ORDERS:-1000000}
WORK=${BENCH_DIR:-/tmp/strata-dump-bench}
STRATA=${STRATA_BIN:-target/release/strata}
[ -x "$STRATA" ] || cargo build --release
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

rm -rf "$WORK"
mkdir -p "$WORK/pg"
chown postgres: "$WORK/pg"
PORT=$((20000 + $$ % 30000))
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PORT -k $WORK/pg -c listen_addresses='' -c fsync=off" start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null' EXIT
CONN=(-h "$WORK/pg" -p "$PORT" -U postgres)
sql() { "$PGBIN/psql" "${CONN[@]}" -X -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

sql postgres "CREATE DATABASE shop"
sql shop "
CREATE TABLE customers(id int PRIMARY KEY, name text, email text, street text, city text);
CREATE TABLE orders(id bigserial PRIMARY KEY, customer int NOT NULL, status text NOT NULL,
                    total numeric(12,2) NOT NULL, created timestamptz NOT NULL, items jsonb NOT NULL);
INSERT INTO customers SELECT i, 'Customer ' || i, 'c' || i || '@example.com',
       i % 997 || ' Market Street', (ARRAY['Berlin','Paris','Madrid','Rome','Vienna'])[i % 5 + 1]
  FROM generate_series(1, $((ORDERS / 10))) i;
INSERT INTO orders(customer, status, total, created, items)
  SELECT i % $((ORDERS / 10)) + 1, 'delivered', (i % 99991) / 100.0,
         timestamptz '2025-01-01' + i * interval '30 seconds',
         jsonb_build_array(jsonb_build_object('sku', 'SKU-' || i % 4999, 'qty', i % 5 + 1,
                                              'price', (i % 9973) / 100.0))
  FROM generate_series(1, $ORDERS) i;"
sql shop "VACUUM ANALYZE"
sql postgres "CREATE DATABASE shop_uniform TEMPLATE shop"
sql postgres "CREATE DATABASE shop_sparse TEMPLATE shop"

# A day of trading: 1% new orders, the newest 2% shipped, 0.05% of the orders of the last month
# (the newest 10%) amended, 0.5% of the customers updated.
DAY="
INSERT INTO orders(customer, status, total, created, items)
  SELECT i % $((ORDERS / 10)) + 1, 'new', (i % 7919) / 100.0, now() - i * interval '8 seconds',
         jsonb_build_array(jsonb_build_object('sku', 'SKU-' || i % 313, 'qty', 1, 'price', 9.99))
  FROM generate_series(1, $((ORDERS / 100))) i;
UPDATE orders SET status = 'shipped' WHERE id > (SELECT max(id) FROM orders) - $((ORDERS / 50));
UPDATE orders SET status = 'returned', total = 0
  WHERE id IN (SELECT $((ORDERS * 9 / 10)) + (random() * $((ORDERS / 10)))::bigint
               FROM generate_series(1, $((ORDERS / 2000))));
UPDATE customers SET street = 'moved: ' || street WHERE id % 200 = 7;"
# 3% of all orders updated, spread over the whole table.
UNIFORM="UPDATE orders SET status = 'audited' WHERE id % 33 = 5;"
# A few old orders amended: 0.01% of all orders, anywhere in the table.
SPARSE="UPDATE orders SET status = 'returned', total = 0 WHERE id % 10000 = 4321;"

FORMATS=("-Fc" "-Fc -Z0" "-Fp")
store() { # repo db format
    "$STRATA" --repo "$1" backup --json --stdin-from-command --stdin-filename dump \
        --source-name "$2" -- "$PGBIN/pg_dump" "${CONN[@]}" $3 -d "$2" > "$WORK/last.json"
    python3 -c "import json,sys; v=json.load(open('$WORK/last.json')); s=v['stats'];
print(v['size'], s['new_bytes'], s['stored_bytes'], s['elapsed_ms'])"
}
printf '%-8s %-8s %12s %12s %12s %12s %7s %12s\n' scenario format "day-1 dump" "day-1 stored" \
    "day-2 dump" "day-2 new" "new %" "day-2 stored"
for scenario in day sparse uniform; do
    case $scenario in
        day) db=shop; changes=$DAY ;;
        sparse) db=shop_sparse; changes=$SPARSE ;;
        uniform) db=shop_uniform; changes=$UNIFORM ;;
    esac
    declare -A first=()
    for i in "${!FORMATS[@]}"; do
        "$STRATA" --repo "$WORK/repo-$scenario-$i" init >/dev/null
        read -r size _ stored _ < <(store "$WORK/repo-$scenario-$i" "$db" "${FORMATS[$i]}")
        first[$i]="$size $stored"
    done
    sql "$db" "$changes"
    for i in "${!FORMATS[@]}"; do
        read -r size new stored _ < <(store "$WORK/repo-$scenario-$i" "$db" "${FORMATS[$i]}")
        read -r size1 stored1 <<< "${first[$i]}"
        printf '%-8s %-8s %12s %12s %12s %12s %6.1f%% %12s\n' "$scenario" "${FORMATS[$i]}" \
            "$size1" "$stored1" "$size" "$new" "$(python3 -c "print($new * 100 / $size)")" "$stored"
    done
done
