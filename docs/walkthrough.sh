#!/usr/bin/env bash
# The README's e-commerce walkthrough, end to end, on a small generated shop in a temporary
# directory: backups of all three kinds, reading back with `strata` and through the mount,
# backing up while mounted, retention, restore and monitoring. Every step checks its result; the
# script exits non-zero at the first one that does not hold. Needs `strata` on PATH, fuse3,
# sqlite3 and python3 (for the JSON), and root or a user allowed to mount FUSE.
#
#   PATH=target/release:$PATH docs/walkthrough.sh
#
# The test suite runs it (tests/integration/walkthrough.rs).
set -euo pipefail

W=$(mktemp -d /tmp/strata-walkthrough.XXXXXX)
MNT=$W/mnt
cleanup() {
  fusermount3 -u "$MNT" 2>/dev/null || true
  # An unmounted mount process is still removing its copy of the index for a moment.
  for _ in $(seq 50); do rm -rf "$W" 2>/dev/null && break; sleep 0.1; done
  true
}
trap cleanup EXIT
step() { printf '== %s\n' "$*"; }
fail() { printf 'walkthrough: %s\n' "$*" >&2; exit 1; }

export STRATA_REPO=$W/backup/shop
SHOP=$W/srv/shop
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "a shop: orders database, order documents, media, logs"
mkdir -p "$SHOP"/{db,orders/2026/11/20,media,logs}
sqlite3 "$SHOP/db/orders.sqlite" \
  "create table orders(id integer primary key, status text, total integer);
   insert into orders values (1041, 'shipped', 1200), (1042, 'paid', 4999);"
for i in $(seq 1000 1050); do
  printf '{"order": %d, "status": "paid"}\n' "$i" >"$SHOP/orders/2026/11/20/order-$i.json"
done
head -c 300000 /dev/urandom >"$SHOP/media/product-17.jpg"
printf 'GET /checkout 200\n' >"$SHOP/logs/access.log"

step "init, a full backup, an incremental, a differential"
strata init
strata backup --kind full --tag weekly "$SHOP"
printf '{"order": 1042, "status": "shipped"}\n' >"$SHOP/orders/2026/11/20/order-1042.json"
sqlite3 "$SHOP/db/orders.sqlite" "update orders set status = 'shipped' where id = 1042"
printf 'GET /cart 200\n' >>"$SHOP/logs/access.log"
strata backup --tag nightly "$SHOP"
rm "$SHOP/orders/2026/11/20/order-1000.json"
strata backup --kind differential "$SHOP"

step "snapshots, for people and for scripts"
strata snapshots
n=$(strata snapshots --json | json 'len(d)')
[ "$n" = 3 ] || fail "expected 3 snapshots, found $n"
first=$(strata snapshots --json | json 'd[0]["id"]')
last=$(strata snapshots --json | json 'd[-1]["id"]')
kinds=$(strata snapshots --json | json '" ".join(s["kind"] for s in d)')
[ "$kinds" = "full incremental differential" ] || fail "kinds: $kinds"

step "one order, as of the last backup and as of the first"
strata cat latest orders/2026/11/20/order-1042.json | grep -q shipped || fail "latest order-1042"
strata cat "${first:0:4}" orders/2026/11/20/order-1042.json | grep -q paid || fail "first order-1042"
strata log orders/2026/11/20/order-1042.json
strata find 'order-1000*.json'
# diff exits 1 when the two differ, as diff(1) does.
changed=$(strata diff "${first:0:4}" latest orders) && fail "diff found no change"
grep -q -- '- orders/2026/11/20/order-1000.json' <<<"$changed" || fail "diff misses the deleted order"
strata diff latest --live "$SHOP" || fail "diff --live: the tree changed since the last backup?"

step "every snapshot at once, through the mount"
mkdir -p "$MNT"
strata mount "$MNT" --daemon
ls "$MNT/snapshots/"
[ "$(ls "$MNT/snapshots/" | wc -l)" = 3 ] || fail "mount lists $(ls "$MNT/snapshots/" | wc -l) snapshots"
diff -r "$MNT/latest/media" "$SHOP/media" || fail "media differ from the live tree"
q=$(sqlite3 "file:$MNT/latest/db/orders.sqlite?immutable=1" "select status from orders where id = 1042")
[ "$q" = shipped ] || fail "sqlite in place: $q"
old=$(ls "$MNT/snapshots/" | grep -- "-${first:0:8}\$")
grep -q paid "$MNT/snapshots/$old/orders/2026/11/20/order-1042.json" || fail "the first snapshot's order"
newest=$(ls "$MNT/changes/" | grep -- "-${last:0:8}\$")
grep -q 'order-1000.json' "$MNT/changes/$newest/.deleted" || fail "changes/.deleted"
ls "$MNT/versions/"

step "a backup while mounted appears in the mount"
printf '{"order": 1051, "status": "paid"}\n' >"$SHOP/orders/2026/11/20/order-1051.json"
strata backup --tag nightly "$SHOP"
for _ in $(seq 50); do
  [ -e "$MNT/latest/orders/2026/11/20/order-1051.json" ] && break
  sleep 0.1
done
[ -e "$MNT/latest/orders/2026/11/20/order-1051.json" ] || fail "the new snapshot is not in the mount"

step "retention beside the mount, then a check"
strata forget --keep-last 3 --prune
strata check --read-data
fusermount3 -u "$MNT"
# The mount process ends once unmounted and removes its copy of the index (readers/).
for _ in $(seq 50); do
  [ -z "$(ls -A "$STRATA_REPO/readers" 2>/dev/null | grep -v '^epoch$')" ] && break
  sleep 0.1
done

step "restore, and compare with the live tree"
strata restore latest --target "$W/restored"
diff -r "$W/restored" "$SHOP" || fail "restore differs from the live tree"

step "monitoring: a metrics file and a Nagios line"
strata backup --metrics-file "$W/strata.prom" "$SHOP"
grep -q '^strata_last_success_timestamp_seconds{' "$W/strata.prom" || fail "metrics file"
strata check --nagios --max-age 1d | grep -q '^STRATA OK' || fail "nagios"
step "walkthrough complete"
