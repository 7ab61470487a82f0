#!/usr/bin/env bash
# benches/lifecycle.sh — a year of nightly backups, then forget + prune: strata (two schedules)
# against restic `forget --prune` and borg `prune` + `compact`, on the same history.
#
#   benches/lifecycle.sh                    # defaults below; results in $BENCH_DIR/lifecycle.tsv
#   DAYS=120 SCALE=0.002 benches/lifecycle.sh
#
# History: benches/gen_dataset.py at a small SCALE, then DAYS x benches/mutate_dataset.py (one
# "day of business" at INTENSITY) each followed by one backup per tool, stamped with a simulated
# date (day N = 2025-01-01 + N days, 02:00 UTC) so retention policies see a real calendar:
#   strata-weekly   full on day 0, 7, 14, ..., incremental otherwise
#   strata-forever  one full, then incrementals only
#   restic, borg    their normal (forever-incremental, deduplicated) backups
# Then, timed with /usr/bin/time -v (wall, peak RSS):
#   strata forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune
#   restic forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune
#   borg prune --keep-daily 7 --keep-weekly 4 --keep-monthly 12 ; borg compact
# and repository sizes (du -sb) before and after.
#
# Variables: BENCH_DIR [/tmp/strata-lifecycle], DAYS [365], SCALE [0.002], INTENSITY [0.2],
# SEED [42], TOOLS ["strata restic borg"], STRATA [target/release/strata, built here with
# `--features test-hooks`: only such a build obeys STRATA_TEST_NOW_NS, which stamps the dates].
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/tmp/strata-lifecycle}
DAYS=${DAYS:-365}
SCALE=${SCALE:-0.002}
INTENSITY=${INTENSITY:-0.2}
SEED=${SEED:-42}
TOOLS=${TOOLS:-"strata restic borg"}
STRATA=${STRATA:-}
PY=${PYTHON:-python3}
POLICY=(--keep-daily 7 --keep-weekly 4 --keep-monthly 12)
BASE=1735696800 # 2025-01-01T02:00:00Z

export RESTIC_PASSWORD=x
export RESTIC_CACHE_DIR=$BENCH_DIR/home/restic-cache
export BORG_BASE_DIR=$BENCH_DIR/home/borg
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset STRATA_REPO

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
has() { [[ " $TOOLS " == *" $1 "* ]]; }
RESULTS=$BENCH_DIR/lifecycle.tsv
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" | tee -a "$RESULTS" >&2; }
size() { du -sb "$1" | cut -f1; }

# timed NAME CMD... — runs CMD under /usr/bin/time -v, records wall seconds and peak RSS (KiB).
timed() {
  local name=$1; shift
  local tv=$BENCH_DIR/time-$name.txt
  /usr/bin/time -v "$@" >"$BENCH_DIR/out-$name.txt" 2>"$tv"
  record "$name" wall_s "$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tv")"
  record "$name" max_rss_kib "$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")"
}

if [[ -z $STRATA ]]; then
  (cd "$ROOT" && cargo build --release --features test-hooks)
  STRATA=$ROOT/target/release/strata
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/repos" "$BENCH_DIR/home"
: >"$RESULTS"
DATA=$BENCH_DIR/data
REPOS=$BENCH_DIR/repos
log "Generating dataset (scale $SCALE)"
$PY "$HERE/gen_dataset.py" --out "$DATA" --scale "$SCALE" --seed "$SEED" >/dev/null
record meta dataset_bytes "$(size "$DATA")"
record meta days "$DAYS"

if has strata; then
  "$STRATA" --repo "$REPOS/strata-weekly" init >/dev/null
  "$STRATA" --repo "$REPOS/strata-forever" init >/dev/null
fi
has restic && restic -r "$REPOS/restic" init >/dev/null
has borg && borg init -e none "$REPOS/borg" >/dev/null

start=$(date +%s)
for ((d = 0; d < DAYS; d++)); do
  ((d > 0)) && $PY "$HERE/mutate_dataset.py" --root "$DATA" --day "$d" --scale "$SCALE" \
    --seed "$SEED" --intensity "$INTENSITY" >/dev/null
  t=$((BASE + d * 86400))
  stamp=$(date -u -d "@$t" +%Y-%m-%dT%H:%M:%S)
  if has strata; then
    kind=incremental
    ((d % 7 == 0)) && kind=full
    STRATA_TEST_NOW_NS=${t}000000000 "$STRATA" --repo "$REPOS/strata-weekly" backup \
      --kind "$kind" --source-name data "$DATA" >/dev/null
    STRATA_TEST_NOW_NS=${t}000000000 "$STRATA" --repo "$REPOS/strata-forever" backup \
      --source-name data "$DATA" >/dev/null
  fi
  has restic && restic -r "$REPOS/restic" backup -q --time "${stamp/T/ }" "$DATA" >/dev/null
  has borg && borg create --compression zstd,3 "$REPOS/borg::day-$d" "$DATA" --timestamp "$stamp"
  ((d % 30 == 0)) && log "day $d ($(($(date +%s) - start)) s)"
done
record meta history_s "$(($(date +%s) - start))"

for r in strata-weekly strata-forever restic borg; do
  [[ -d $REPOS/$r ]] && record "$r" repo_bytes_before "$(size "$REPOS/$r")"
done
if has strata; then
  for r in strata-weekly strata-forever; do
    timed "$r" "$STRATA" --repo "$REPOS/$r" forget "${POLICY[@]}" --prune --json
    record "$r" repo_bytes_after "$(size "$REPOS/$r")"
    record "$r" snapshots_after "$("$STRATA" --repo "$REPOS/$r" snapshots --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')"
  done
fi
if has restic; then
  timed restic restic -r "$REPOS/restic" forget "${POLICY[@]}" --prune
  record restic repo_bytes_after "$(size "$REPOS/restic")"
  record restic snapshots_after "$(restic -r "$REPOS/restic" snapshots --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')"
fi
if has borg; then
  timed borg-prune borg prune "${POLICY[@]}" "$REPOS/borg"
  timed borg-compact borg compact "$REPOS/borg"
  record borg repo_bytes_after "$(size "$REPOS/borg")"
  record borg snapshots_after "$(borg list --short "$REPOS/borg" | wc -l)"
fi
log "Results in $RESULTS"
