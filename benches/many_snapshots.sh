#!/usr/bin/env bash
# What months of hourly backups cost: a repository of a 200-file source backed up $COUNT times
# (default 10,000: a full, then incrementals, one simulated hour apart), then the four figures
# that must not grow with the number of snapshots a command does not touch:
#
#   no-change backup      strata backup SRC            (adds one snapshot per run)
#   cat latest            strata cat latest d3/f7.txt
#   snapshots --json      strata snapshots --json
#   mount ready           strata mount MNT, until `latest/` lists (polled every 2 ms)
#
#   benches/many_snapshots.sh [STRATA_BIN...]
#
# Each binary is measured on its own copy of the cached repository (`cp -a`), warm page cache,
# with hyperfine when installed (`apt-get install hyperfine`), else a loop; medians in ms.
# The repository is built once into $DIR/base-$COUNT (about 15-30 min for 10,000 on 2 cores) and
# reused by later runs. Building stamps snapshots with STRATA_TEST_NOW_NS, which only a build with
# `--features test-hooks` honours: $BUILD_BIN (default: such a build, made here). Without it the
# snapshots carry the real clock, which changes no figure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
COUNT=${COUNT:-10000}
DIR=${DIR:-/tmp/strata-many}
RUNS=${RUNS:-20}
BASE=$DIR/base-$COUNT
SRC=$DIR/src
mkdir -p "$DIR"

make_source() {
  [[ -d $SRC ]] && return
  python3 - "$SRC" <<'EOF'
import os, random, sys
root = sys.argv[1]
r = random.Random(1)
for d in range(10):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
    for f in range(20):
        with open(f"{root}/d{d}/f{f}.txt", "wb") as fh:
            fh.write(bytes(r.getrandbits(8) for _ in range(r.randint(100, 4000))))
EOF
  # Old timestamps: no backup reads a file again because it changed within a clock tick.
  find "$SRC" -exec touch -d '2026-01-01 00:00:00' {} +
}

build_repo() {
  [[ -f $BASE/done ]] && return
  local bin=${BUILD_BIN:-}
  if [[ -z $bin ]]; then
    (cd "$HERE/.." && cargo build --release --features test-hooks >&2)
    bin=$DIR/strata-test-hooks
    cp "$HERE/../target/release/strata" "$bin"
  fi
  rm -rf "$BASE"
  mkdir -p "$BASE"
  "$bin" --repo "$BASE/repo" init >/dev/null
  local start=$(($(date +%s) - COUNT * 3600 - 3600))
  local t0=$SECONDS
  for i in $(seq 0 $((COUNT - 1))); do
    STRATA_TEST_NOW_NS=$(((start + i * 3600) * 1000000000)) \
      "$bin" --repo "$BASE/repo" backup "$SRC" >/dev/null
    if ((i % 500 == 0)); then
      echo "built $i of $COUNT snapshots ($((SECONDS - t0)) s)" >&2
    fi
  done
  touch "$BASE/done"
  echo "built $COUNT snapshots in $((SECONDS - t0)) s" >&2
}

# Median of the hyperfine runs of one command, in ms.
time_cmd() {
  local out=$DIR/hf.json
  if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$out" "$@" >/dev/null 2>&1
    python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$out"
  else
    local ts=()
    for _ in $(seq "$RUNS"); do
      local a=$EPOCHREALTIME
      $1 >/dev/null 2>&1
      local b=$EPOCHREALTIME
      ts+=($(((${b/./} - ${a/./}) / 1000)))
    done
    printf '%s\n' "${ts[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
  fi
}

# Median time from starting `strata mount` until `latest/` lists, in ms (RUNS/4 rounds).
mount_ready() {
  local bin=$1 repo=$2 mnt=$DIR/mnt ts=() ready=()
  mkdir -p "$mnt"
  exec {poll}<> <(:)
  for _ in $(seq $(((RUNS + 3) / 4))); do
    local t0=$EPOCHREALTIME
    "$bin" --repo "$repo" mount "$mnt" >"$DIR/mount.log" 2>&1 &
    local pid=$!
    local deadline=$((${t0/./} + 20000000))
    until [[ -d $mnt/latest/d3 ]] && compgen -G "$mnt/latest/*" >/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null || ((${EPOCHREALTIME/./} > deadline)); then
        cat "$DIR/mount.log" >&2
        return 1
      fi
      read -r -t 0.002 -u "$poll" || true
    done
    local t1=$EPOCHREALTIME
    ts+=($(((${t1/./} - ${t0/./}) / 1000)))
    ready+=("$(grep -o 'ready in [0-9]* ms' "$DIR/mount.log" | grep -o '[0-9]*' || echo 0)")
    kill -INT "$pid"
    wait "$pid" || true
  done
  local med
  med=$(printf '%s\n' "${ts[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  local rmed
  rmed=$(printf '%s\n' "${ready[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  echo "$med $rmed"
}

measure() {
  local bin=$1 name repo
  name=$(basename "$bin")
  repo=$DIR/run-$name/repo
  rm -rf "$DIR/run-$name"
  mkdir -p "$DIR/run-$name"
  cp -a "$BASE/repo" "$repo"
  # One command first: it opens the index once (an older build's lookup files are rewritten,
  # anything a newer build derives is made), as the first of a timer's backups would.
  "$bin" --repo "$repo" snapshots >/dev/null
  local backup cat snaps mount
  backup=$(time_cmd "$bin --repo $repo backup $SRC")
  cat=$(time_cmd "$bin --repo $repo cat latest d3/f7.txt")
  snaps=$(time_cmd "$bin --repo $repo snapshots --json")
  mount=$(mount_ready "$bin" "$repo")
  local n
  n=$("$bin" --repo "$repo" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  printf '%-24s %6s snapshots  backup %7s ms  cat %7s ms  snapshots --json %7s ms  mount listable %s ms (ready in %s ms)\n' \
    "$name" "$n" "$backup" "$cat" "$snaps" ${mount% *} ${mount#* }
  rm -rf "$DIR/run-$name"
}

make_source
build_repo
BINS=("$@")
if ((${#BINS[@]} == 0)); then
  (cd "$HERE/.." && cargo build --release >&2)
  BINS=("$HERE/../target/release/strata")
fi
echo "$COUNT-snapshot repository: $(du -sh "$BASE/repo" | cut -f1), $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for b in "${BINS[@]}"; do
  measure "$b"
done
