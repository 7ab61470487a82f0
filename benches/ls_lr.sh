#!/usr/bin/env bash
# `ls -lR` of a whole snapshot through the mount, cold, for A/B tests of builds (and restic when
# $RESTIC_REPO is set): rounds alternate the mounts so that the machine's load falls on all alike.
#
#   REPO=... [RESTIC_REPO=... RESTIC_PASSWORD=...] benches/ls_lr.sh [-n ROUNDS] STRATA_BIN... [-- MOUNT_ARGS...]
#
# Per round and mount: the page cache dropped, then the wall time of `ls -lR` of the latest
# snapshot's root (strata: MNT/latest/, restic: MNT/snapshots/latest/), its line count, and the
# mount's CPU time (user + system, from /proc) spent during it. Needs root (drop_caches), fuse3.
# A dataset: `benches/gen_dataset.py --out DATA --scale 0.25` (26k entries), backed up once.
set -euo pipefail
ROUNDS=3
while getopts n: opt; do
  case $opt in
    n) ROUNDS=$OPTARG ;;
    *) sed -n '5p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
BINS=()
while (($#)) && [[ $1 != -- ]]; do BINS+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
MOUNT_ARGS=("$@")
: "${REPO:?set REPO to a strata repository}"
MNT=$(mktemp -d /tmp/strata-lslr.XXXXXX)
PID=
cleanup() {
  fusermount3 -u "$MNT" 2>/dev/null || true
  [[ -n $PID ]] && wait "$PID" 2>/dev/null || true
  rmdir "$MNT" 2>/dev/null || true
}
trap cleanup EXIT
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
cpu_ms() { awk '{ print int(($14 + $15) * 1000 / 100) }' "/proc/$1/stat"; }

run_one() { # label, dir to list (after the mount answers)
  local label=$1 dir=$2
  for _ in $(seq 400); do [[ -d $dir ]] && break; sleep 0.05; done
  drop
  local c0 t0 t1 lines
  c0=$(cpu_ms "$PID")
  t0=$EPOCHREALTIME
  lines=$(ls -lR "$dir" | wc -l)
  t1=$EPOCHREALTIME
  printf '%-22s ls -lR %7.2f s  %6d lines  mount CPU %5d ms\n' "$label" \
    "$(echo "${t1/./} - ${t0/./}" | bc | awk '{ print $1 / 1e6 }')" "$lines" \
    $(($(cpu_ms "$PID") - c0))
  fusermount3 -u "$MNT"
  wait "$PID" || true
  PID=
  sleep 0.5
}

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for bin in "${BINS[@]}"; do
    "$bin" --repo "$REPO" mount "$MNT" "${MOUNT_ARGS[@]}" >/dev/null 2>&1 &
    PID=$!
    run_one "$(basename "$bin")" "$MNT/latest/"
  done
  if [[ -n ${RESTIC_REPO:-} ]]; then
    restic -r "$RESTIC_REPO" mount "$MNT" >/dev/null 2>&1 &
    PID=$!
    for _ in $(seq 400); do [[ -d $MNT/snapshots/latest ]] && break; sleep 0.05; done
    run_one restic "$MNT/snapshots/latest/"
  fi
done
