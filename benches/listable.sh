#!/usr/bin/env bash
# The mount's cold start by hand, for A/B tests of builds: rounds alternate the builds, so that
# the machine's moods (a loaded VM adds tens of milliseconds to a cold start) fall on all of them
# alike.
#
#   benches/listable.sh [-n ROUNDS] STRATA_BIN... [-- MOUNT_ARGS...]
#
# Per round and build: the page cache dropped, then `strata mount` of $REPO started and the time
# until `latest/` lists with `orders/` in it, polled every 5 ms by bash builtins only (no forks
# while the mount starts), as the benchmark's "root listable" does. Prints that time and the
# mount's own "ready in N ms" (from the process start to the mount answering), in milliseconds.
# Needs root (drop_caches) and fuse3. Default repository: the SCALE2 benchmark's, which after a run
# with MANY_SNAPSHOTS=500 ends 503 snapshots deep.
set -euo pipefail
REPO=${REPO:-/tmp/strata-bench2/repos/strata}
ROUNDS=5
while getopts n: opt; do
  case $opt in
    n) ROUNDS=$OPTARG ;;
    *) sed -n '6p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
source "$(dirname "$0")/hand_ab.sh"
hand_ab_setup listable "$@"
exec {POLL_FD}<> <(:)

for round in $(seq "$ROUNDS"); do
  for bin in "${BINS[@]}"; do
    drop
    t0=$EPOCHREALTIME
    "$bin" --repo "$REPO" mount "$MNT" "${MOUNT_ARGS[@]}" >"$MNT.log" 2>&1 &
    PID=$!
    deadline=$((${t0/./} + 10000000))
    until [[ -d $MNT/latest/orders ]] && compgen -G "$MNT/latest/*" >/dev/null; do
      if ! kill -0 "$PID" 2>/dev/null || ((${EPOCHREALTIME/./} > deadline)); then
        cat "$MNT.log" >&2
        exit 1
      fi
      read -r -t 0.005 -u "$POLL_FD" || true
    done
    t1=$EPOCHREALTIME
    unmount
    ready=$(grep -o 'ready in [0-9]* ms' "$MNT.log" | grep -o '[0-9]*' || echo '?')
    printf 'round %d %-20s listable %4d ms  ready %4s ms\n' "$round" "$(basename "$bin")" \
      $(((${t1/./} - ${t0/./}) / 1000)) "$ready"
    # The repository lock can outlive an unmount by a moment.
    sleep 0.6
  done
done
