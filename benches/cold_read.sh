#!/usr/bin/env bash
# The mount's cold sequential read by hand, for A/B tests of builds: rounds alternate the builds,
# so that the machine's moods (this VM's disk reads 350 MB/s to 1.7 GB/s a minute apart) fall on
# all of them alike.
#
#   benches/cold_read.sh [-n ROUNDS] [-r READAHEAD_KB] STRATA_BIN... [-- MOUNT_ARGS...]
#
# Per round and build: the page cache dropped, a raw `dd bs=1M` of $FILE under $DATA; then a fresh
# mount of $REPO, the page cache dropped, `dd bs=1M` of the same file through the mount's first
# snapshot. Prints both speeds, their ratio (what the benchmark's "cold read ÷ raw disk" judges),
# the mount's user and system CPU and the machine's idle, iowait and steal time during the mount's
# `dd`, in centiseconds. `-r` sets the mount's readahead (its bdi `read_ahead_kb`) after mounting.
# Needs root (drop_caches) and fuse3. Defaults: the SCALE2 benchmark's repository and data.
set -euo pipefail
REPO=${REPO:-/tmp/strata-bench2/repos/strata}
DATA=${DATA:-/tmp/strata-bench2/data}
FILE=${FILE:-big/archive.bin}
ROUNDS=3
RA=
while getopts n:r: opt; do
  case $opt in
    n) ROUNDS=$OPTARG ;;
    r) RA=$OPTARG ;;
    *) sed -n '6p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
source "$(dirname "$0")/hand_ab.sh"
hand_ab_setup cold-read "$@"
# Seconds a dd took, from its summary line.
dd_secs() { dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/copied/ { print $(NF-3) }'; }
size=$(stat -c %s "$DATA/$FILE")

for round in $(seq "$ROUNDS"); do
  for bin in "${BINS[@]}"; do
    drop
    raw=$(dd_secs "$DATA/$FILE")
    "$bin" --repo "$REPO" mount "$MNT" "${MOUNT_ARGS[@]}" >"$MNT.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do [[ -e $MNT/latest ]] && break; sleep 0.05; done
    [[ -e $MNT/latest ]] || { cat "$MNT.log" >&2; exit 1; }
    if [[ -n $RA ]]; then
      bdi=$(awk -v m="$MNT" '$5 == m { print $3 }' /proc/self/mountinfo)
      echo "$RA" >"/sys/class/bdi/$bdi/read_ahead_kb"
    fi
    snap=$(ls "$MNT/snapshots" | awk 'NR == 1')
    drop
    read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
    read -r _ _ _ _ idle0 wait0 _ _ steal0 _ </proc/stat
    secs=$(dd_secs "$MNT/snapshots/$snap/$FILE")
    read -r _ _ _ _ idle1 wait1 _ _ steal1 _ </proc/stat
    read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
    unmount
    awk -v b="$(basename "$bin")" -v r="$round" -v n="$size" -v raw="$raw" -v m="$secs" \
      -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v i=$((idle1 - idle0)) -v w=$((wait1 - wait0)) \
      -v st=$((steal1 - steal0)) 'BEGIN {
        d = n / raw / 1e6; t = n / m / 1e6
        printf "round %d %-20s raw %5.0f MB/s  mount %5.0f MB/s  ratio %.2f  mount cpu user %d sys %d  machine idle %d iowait %d steal %d\n",
          r, b, d, t, t / d, u, s, i, w, st
      }'
    sleep 1
  done
done
