#!/usr/bin/env bash
# Peak memory of `strata mount` under the benchmark's read workload, on one snapshot.
#
#   benches/mount_rss.sh [STRATA_BIN]
#
# Mounts $REPO (default: the SCALE2 benchmark's repository) with --cache-size $CACHE, then, with the
# page cache dropped before each step: dd of big/archive.bin, 2,000 random 4 KiB preads, ls -lR of
# the snapshot, diff -r of each top-level directory against $DATA. Prints VmHWM/VmRSS (KiB) after
# each step. Needs root (drop_caches) and fuse3. The peak minus the cache is what the "100 MB +
# --cache-size" target judges.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-${STRATA_BIN:-$HERE/../target/release/strata}}
REPO=${REPO:-/tmp/strata-bench2/repos/strata}
DATA=${DATA:-/tmp/strata-bench2/data}
CACHE=${CACHE:-256M}
MNT=$(mktemp -d /tmp/strata-mount-rss.XXXXXX)
"$BIN" --repo "$REPO" mount "$MNT" --cache-size "$CACHE" >"$MNT.log" 2>&1 &
PID=$!
trap 'fusermount3 -u "$MNT" 2>/dev/null || true; wait $PID 2>/dev/null || true; rmdir "$MNT"; rm -f "$MNT.log"' EXIT
for _ in $(seq 200); do [[ -e $MNT/latest ]] && break; sleep 0.05; done
S=$(ls "$MNT/snapshots" | awk 'NR == 1') # (head would end ls early: SIGPIPE under pipefail)
R=$MNT/snapshots/$S
mem() { echo "$1: $(awk '/VmHWM|VmRSS/ { printf "%s %s  ", $1, $2 }' "/proc/$PID/status")"; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
mem start
drop; dd if="$R/big/archive.bin" of=/dev/null bs=1M 2>/dev/null; mem "after dd"
drop; python3 "$HERE/bench_helpers.py" pread "$R/big/archive.bin" --count 2000 --seed 42 >/dev/null; mem "after preads"
drop; ls -lR "$R" >/dev/null; mem "after ls -lR"
for d in "$R"/*/; do
  d=$(basename "$d")
  drop; diff -r "$R/$d" "$DATA/$d" >/dev/null || true
done
mem "after diff -r"
