#!/usr/bin/env bash
# A mount left running must not grow: walk every snapshot of a repository ten times in a row
# through one mount and sample the mount's memory after each walk.
#
#   REPO=... benches/ten_walks.sh [STRATA_BIN] [-- MOUNT_ARGS...]
#
# Each walk is `find MNT/snapshots/ -ls >/dev/null` (every entry of every snapshot, with its
# attributes). After each: the mount's VmRSS and VmHWM (/proc/PID/status), its inode table
# (`strata_mount_inodes` in .strata/stats) and the entries walked. The verdict compares the peak
# (VmHWM) with the chunk cache (--cache-size, default 256 MiB) + 100 MB. WALKS changes the count.
# Not a timed test: a benchmark, run by hand (needs fuse3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../target/release/strata}
shift $(($# > 0 ? 1 : 0))
[[ ${1:-} == -- ]] && shift
MOUNT_ARGS=("$@")
: "${REPO:?set REPO to a strata repository}"
WALKS=${WALKS:-10}
CACHE_MB=${CACHE_MB:-256}
MNT=$(mktemp -d /tmp/strata-walks.XXXXXX)
"$BIN" --repo "$REPO" mount "$MNT" --cache-size "${CACHE_MB}M" "${MOUNT_ARGS[@]}" >"$MNT.log" 2>&1 &
PID=$!
trap 'fusermount3 -u "$MNT" 2>/dev/null || true; wait $PID 2>/dev/null || true; rmdir "$MNT"; rm -f "$MNT.log"' EXIT
for _ in $(seq 400); do [[ -d $MNT/snapshots ]] && break; sleep 0.05; done
kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$PID/status"; }
inodes() { awk '$1 == "strata_mount_inodes" { print $2 }' "$MNT/.strata/stats"; }
echo "$(ls "$MNT/snapshots" | wc -l) snapshots; start: VmRSS $(($(kb VmRSS) / 1024)) MB"
peak=0
for i in $(seq "$WALKS"); do
  t0=$SECONDS
  n=$(find "$MNT/snapshots/" -ls | wc -l)
  rss=$(kb VmRSS)
  hwm=$(kb VmHWM)
  ((hwm > peak)) && peak=$hwm
  printf 'walk %2d: %8d entries in %4d s; VmRSS %5d MB, VmHWM %5d MB, inode table %s\n' \
    "$i" "$n" $((SECONDS - t0)) $((rss / 1024)) $((hwm / 1024)) "$(inodes)"
done
limit=$((CACHE_MB * 1024 * 1024 / 1000000 + 100))
verdict=PASS
(((peak * 1024 / 1000000) > limit)) && verdict=FAIL
echo "peak VmHWM $((peak * 1024 / 1000000)) MB; limit (chunk cache + 100 MB) $limit MB: $verdict"
