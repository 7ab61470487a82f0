#!/usr/bin/env bash
# benches/run.sh — strata vs restic vs BorgBackup on the same data, in the same run.
#
# Usage (as root: the script drops the page cache before every cold measurement):
#
#   benches/run.sh                          full scale: ~2.4 GB, ~100k files (about 20-25 min)
#   SCALE=0.02 benches/run.sh               smoke run: ~50 MB (about 1-2 min)
#   SCALE=0.1 CHAIN=30 benches/run.sh       add the "30 snapshots back" scenario
#   SKIP_MOUNT=1 TOOLS="restic borg" benches/run.sh
#
# What it does, in order (see docs/PERFORMANCE.md for what each figure means):
#   1. generate the dataset (benches/gen_dataset.py), unless a pristine copy of the same SCALE/SEED exists
#   2. measure machine limits: cold disk read, single-core BLAKE3, single-core zstd -1 / -3
#   3. backups, tool after tool on the same tree, each into its own fresh repository:
#      full, no-change (same tree again), then benches/mutate_dataset.py ("a day of business")
#      and the day's incremental; wall time, peak RSS, repository size and growth
#   3b. full restore of the full snapshot into fresh directories (strata restore, restic restore,
#      borg extract; strata again with --fsync): wall time, peak RSS, and diff -r of each tool's
#      tree against strata's
#   4. read side: one order JSON via `strata cat` / `restic dump` / `borg extract --stdout`
#   5. mounts: time until the snapshot root is listable, cold sequential read, random 4 KiB preads,
#      ls -lR, find | wc -l, diff -r against the live tree, the mount process's peak RSS
#   6. optional: CHAIN (N small days + incrementals, then read from the first snapshot),
#      MANY_SNAPSHOTS (mount start-up with many snapshots), SCALE2 (peak RSS at 2x the data)
#   7. print the report (benches/report.py) and write it to $BENCH_DIR/report.md
#
# Environment knobs (defaults in brackets):
#   BENCH_DIR       work directory: dataset, repositories, mount points, logs [/tmp/strata-bench]
#   SCALE           dataset size factor; 1 = ~2.4 GB / 100k files [1]
#   SEED            dataset seed [42]
#   TOOLS           tools to compare, any of: strata restic borg ["strata restic borg"]
#   STRATA_BIN      strata binary; if unset, `cargo build --release` and use target/release/strata
#   SKIP_LIMITS=1   skip the machine-limit measurements
#   SKIP_RESTORE=1  skip the full-restore phase
#   RESTORE_FRESH_FS  1: restore each tool into its own freshly made ext4 filesystem (a loop
#                   image under $BENCH_DIR/restore), so no tool pays for the previous one's
#                   deleted inodes; 0: restore into $BENCH_DIR's filesystem [1 when root]
#   SKIP_CAT=1      skip the single-file read (cat/dump/extract) timings
#   SKIP_MOUNT=1    skip all mount measurements (SKIP_STRATA_MOUNT=1: skip only strata's mount)
#   CHAIN=N         after the main run, N small mutations + incrementals per tool, then time reading
#                   one order JSON from the first snapshot [0]
#   MANY_SNAPSHOTS=N  make N more (tiny) snapshots and time mount start-up again [0]
#   MANY_TOOLS      tools for MANY_SNAPSHOTS ["strata"]
#   SCALE2=1        also back up a dataset of 2*SCALE into a fresh repository and compare peak RSS [0]
#   SCALE2_TOOLS    tools for SCALE2 ["strata"]
#   RUNS            hyperfine runs for warm single-file reads [20]; COLD_RUNS for cold ones [5]
#   PREADS          number of random 4 KiB preads [2000]
#   SEQ_PAIRS       cold-read pairs (raw disk read, then the mount's read of the same file) [3]
#   BORG_COMPRESSION  [zstd,3]
#   STRATA_MOUNT_SUBPATH  path of the latest snapshot's root inside a strata mount; if unset,
#                   the first of latest/, snapshots/latest/ that holds orders/
#   MOUNT_TIMEOUT   seconds to wait for a mount to become listable [120]
#   NO_DROP_CACHES=1  do not drop the page cache (non-root); cold figures are then warm
#
# A tool that fails a step gets "n/a" for that step; the run goes on. Raw values are in
# $BENCH_DIR/results.tsv, every command's output in $BENCH_DIR/logs/.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

BENCH_DIR=${BENCH_DIR:-/tmp/strata-bench}
SCALE=${SCALE:-1}
SEED=${SEED:-42}
TOOLS=${TOOLS:-"strata restic borg"}
SKIP_LIMITS=${SKIP_LIMITS:-0}
SKIP_CAT=${SKIP_CAT:-0}
SKIP_RESTORE=${SKIP_RESTORE:-0}
RESTORE_FRESH_FS=${RESTORE_FRESH_FS:-$([[ $(id -u) == 0 ]] && echo 1 || echo 0)}
SKIP_MOUNT=${SKIP_MOUNT:-0}
SKIP_STRATA_MOUNT=${SKIP_STRATA_MOUNT:-0}
CHAIN=${CHAIN:-0}
MANY_SNAPSHOTS=${MANY_SNAPSHOTS:-0}
MANY_TOOLS=${MANY_TOOLS:-strata}
SCALE2=${SCALE2:-0}
SCALE2_TOOLS=${SCALE2_TOOLS:-strata}
RUNS=${RUNS:-20}
COLD_RUNS=${COLD_RUNS:-5}
PREADS=${PREADS:-2000}
SEQ_PAIRS=${SEQ_PAIRS:-3}
BORG_COMPRESSION=${BORG_COMPRESSION:-zstd,3}
MOUNT_TIMEOUT=${MOUNT_TIMEOUT:-120}
NO_DROP_CACHES=${NO_DROP_CACHES:-0}

DATA=$BENCH_DIR/data
REPOS=$BENCH_DIR/repos
MNT=$BENCH_DIR/mnt
LOGDIR=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/results.tsv
PY=${PYTHON:-python3}
HELP="$PY $HERE/bench_helpers.py"

export RESTIC_PASSWORD=x
export RESTIC_CACHE_DIR=$BENCH_DIR/home/restic-cache
export BORG_BASE_DIR=$BENCH_DIR/home/borg
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset STRATA_REPO

# ---------------------------------------------------------------------------------------------
# Small utilities

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
warn() { log "WARN: $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / s / 1e6; else print "n/a" }'; }
has() { [[ " $TOOLS " == *" $1 "* ]]; }
# median V... — of the numeric values ("n/a" when none).
median() {
  printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# record TOOL KEY VALUE — one line of results.tsv; TOOL is a tool name or "meta"/"limits".
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

CAN_DROP=1
drop_caches() {
  sync
  if [[ $CAN_DROP == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# timed NAME CMD... — run CMD with its output in $LOGDIR/NAME.log; sets LAST_WALL (s) and
# LAST_RSS (KiB, peak resident set of the process tree's largest process). Returns CMD's status.
LAST_WALL=n/a
LAST_RSS=n/a
timed() {
  local name=$1 t0 t1 rc=0
  shift
  t0=$(now)
  /usr/bin/time -f '%e %M' -o "$LOGDIR/$name.time" "$@" >"$LOGDIR/$name.log" 2>&1 || rc=$?
  t1=$(now)
  if ((rc == 0)); then
    LAST_WALL=$(elapsed "$t0" "$t1")
    LAST_RSS=$(awk 'END { print $2 }' "$LOGDIR/$name.time")
  else
    LAST_WALL=n/a
    LAST_RSS=n/a
    warn "$name failed (exit $rc), see $LOGDIR/$name.log"
  fi
  return $rc
}

# measure TOOL KEY CMD... — timed + record KEY.wall_s and KEY.rss_kb for TOOL.
measure() {
  local tool=$1 key=$2 rc=0
  shift 2
  timed "$tool.$key" "$@" || rc=$?
  record "$tool" "$key.wall_s" "$LAST_WALL"
  record "$tool" "$key.rss_kb" "$LAST_RSS"
  return $rc
}

repo_bytes() { if [[ -d $1 ]]; then du -sb "$1" | cut -f1; else echo n/a; fi; }

# ---------------------------------------------------------------------------------------------
# The three tools behind one interface. Archive / tag names: full, nochange, day1, chainN, manyN.

STRATA=""

# init_cmd TOOL REPO / backup_cmd TOOL REPO NAME KIND SOURCE — set CMD to the command's argv.
CMD=()
init_cmd() {
  case $1 in
    strata) CMD=("$STRATA" --repo "$2" init) ;;
    restic) CMD=(restic -r "$2" init) ;;
    borg) CMD=(borg init -e none "$2") ;;
  esac
}

backup_cmd() {
  case $1 in
    strata) CMD=("$STRATA" --repo "$2" backup --kind "$4" --tag "$3" "$5") ;;
    restic) CMD=(restic -r "$2" backup --tag "$3" "$5") ;;
    borg) CMD=(borg create --compression "$BORG_COMPRESSION" "$2::$3" "$5") ;;
  esac
}

# The command (one string, for hyperfine) that prints file REL of SNAPSHOT on stdout.
# SNAPSHOT is "latest" or a tool-specific id / archive name.
tool_cat_cmd() { # TOOL SNAPSHOT REL
  local snap=$2
  case $1 in
    strata) printf '%q --repo %q cat %q %q' "$STRATA" "$REPOS/strata" "$snap" "$3" ;;
    restic) printf 'restic -r %q dump %q %q' "$REPOS/restic" "$snap" "$DATA/$3" ;;
    borg)
      [[ $snap == latest ]] && snap=$BORG_LATEST
      printf 'borg extract --stdout %q %q' "$REPOS/borg::$snap" "${DATA#/}/$3"
      ;;
  esac
}

BORG_LATEST=day1

# ---------------------------------------------------------------------------------------------
# Setup

# Unmount whatever is still mounted under $MNT (also broken "transport endpoint" mounts).
cleanup_mounts() {
  local m
  awk -v p="$MNT/" 'index($2, p) == 1 { print $2 }' /proc/mounts | while read -r m; do
    fusermount -u "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

MOUNT_PID=""
on_exit() {
  [[ -n $MOUNT_PID ]] && kill "$MOUNT_PID" 2>/dev/null
  cleanup_mounts
  cleanup_restore_fs
}

# Unmount the loop filesystems of the restore phase.
cleanup_restore_fs() {
  local m
  awk -v p="$BENCH_DIR/restore/" 'index($2, p) == 1 { print $2 }' /proc/mounts | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
trap on_exit EXIT

setup() {
  mkdir -p "$BENCH_DIR" "$MNT" "$LOGDIR"
  cleanup_mounts
  rm -rf "$REPOS" "$BENCH_DIR/home" "$LOGDIR"/* "$BENCH_DIR/report.md"
  mkdir -p "$REPOS" "$BENCH_DIR/home"
  : >"$RESULTS"

  if [[ $NO_DROP_CACHES == 1 ]] || ! (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    CAN_DROP=0
    warn "cannot drop the page cache: cold figures will be warm"
  fi
  [[ -x /usr/bin/time ]] || { log "installing GNU time"; apt-get install -y time >/dev/null; }

  local t have=""
  for t in $TOOLS; do
    case $t in
      strata) setup_strata && have+=" strata" ;;
      restic | borg)
        if command -v "$t" >/dev/null; then have+=" $t"; else warn "$t is not installed; skipping it"; fi
        ;;
      *) warn "unknown tool $t" ;;
    esac
  done
  TOOLS=${have# }
  [[ -n $TOOLS ]] || { log "no tool to benchmark"; exit 1; }

  record meta date "$(date -u +%Y-%m-%dT%H:%MZ)"
  record meta scale "$SCALE"
  record meta seed "$SEED"
  record meta tools "$TOOLS"
  record meta cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo) x $(nproc)"
  record meta mem_gb "$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
  record meta kernel "$(uname -r)"
  record meta cold_cache "$([[ $CAN_DROP == 1 ]] && echo yes || echo no)"
  record meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
  has restic && record meta restic "$(restic version | awk '{ print $2 }')"
  has borg && record meta borg "$(borg --version | awk '{ print $2 }')"
  has strata && record meta strata "$("$STRATA" --version 2>/dev/null | head -1 | sed 's/^strata //' || echo '?') ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit'))"
  log "tools: $TOOLS; scale $SCALE; work dir $BENCH_DIR"
}

setup_strata() {
  if [[ -n ${STRATA_BIN:-} ]]; then
    STRATA=$STRATA_BIN
  else
    log "building strata (cargo build --release)"
    if ! (cd "$ROOT" && cargo build --release) >"$LOGDIR/cargo-build.log" 2>&1; then
      warn "cargo build --release failed (see $LOGDIR/cargo-build.log); strata figures will be n/a"
      return 1
    fi
    STRATA=$ROOT/target/release/strata
  fi
  if [[ ! -x $STRATA ]]; then
    warn "no strata binary at $STRATA; strata figures will be n/a"
    return 1
  fi
  STRATA=$(cd "$(dirname "$STRATA")" && pwd)/$(basename "$STRATA")
}

# gen_data DIR SCALE — (re)generate unless a pristine copy with the same scale and seed exists.
gen_data() {
  local dir=$1 scale=$2 marker="$1.pristine"
  if [[ -d $dir && -f $marker && $(cat "$marker") == "scale=$scale seed=$SEED" ]]; then
    log "dataset $dir is pristine (scale $scale, seed $SEED); reusing it"
    return
  fi
  rm -rf "$dir" "$marker"
  log "generating dataset at scale $scale into $dir"
  "$PY" "$HERE/gen_dataset.py" --out "$dir" --scale "$scale" --seed "$SEED" 2>&1 | tee "$LOGDIR/gen-$(basename "$dir").log" >&2
  echo "scale=$scale seed=$SEED" >"$marker"
}

mutate() { # DAY INTENSITY
  rm -f "$DATA.pristine"
  "$PY" "$HERE/mutate_dataset.py" --root "$DATA" --day "$1" --scale "$SCALE" --seed "$SEED" \
    --intensity "$2" 2>>"$LOGDIR/mutate.log"
}

# ---------------------------------------------------------------------------------------------
# Phase 2: machine limits

phase_limits() {
  log "machine limits"
  local big="$DATA/big/archive.bin" size t0 t1 lvl
  size=$(stat -c %s "$big")
  drop_caches
  t0=$(now)
  dd if="$big" of=/dev/null bs=4M 2>>"$LOGDIR/limits.log"
  t1=$(now)
  record limits disk_read_mbs "$(mbs "$size" "$(elapsed "$t0" "$t1")")"

  if ! "$PY" -c 'import blake3' 2>/dev/null; then
    log "installing the blake3 python module (pip install blake3)"
    "$PY" -m pip install --quiet blake3 >>"$LOGDIR/limits.log" 2>&1 || true
  fi
  record limits blake3_mbs "$($HELP blake3 --mib 1024 2>>"$LOGDIR/limits.log" || echo n/a)"

  if ! command -v zstd >/dev/null; then
    apt-get install -y zstd >>"$LOGDIR/limits.log" 2>&1 || true
  fi
  if command -v zstd >/dev/null; then
    local db="$DATA/db/orders.sqlite" logs=() dbsize logsize
    mapfile -t logs < <(find "$DATA/logs" -type f -name '*.log' | sort)
    dbsize=$(stat -c %s "$db")
    logsize=$(cat "${logs[@]}" | wc -c) # also warms the page cache: this measures the CPU
    cat "$db" >/dev/null
    for lvl in 1 3; do
      local tdb tlogs
      t0=$(now); zstd -q -"$lvl" -T1 -c "$db" >/dev/null; t1=$(now); tdb=$(elapsed "$t0" "$t1")
      t0=$(now); zstd -q -"$lvl" -T1 -c "${logs[@]}" >/dev/null; t1=$(now); tlogs=$(elapsed "$t0" "$t1")
      record limits "zstd${lvl}_sqlite_mbs" "$(mbs "$dbsize" "$tdb")"
      record limits "zstd${lvl}_logs_mbs" "$(mbs "$logsize" "$tlogs")"
      record limits "zstd${lvl}_mbs" "$(mbs $((dbsize + logsize)) "$(awk -v a="$tdb" -v b="$tlogs" 'BEGIN { print a + b }')")"
    done
  else
    warn "zstd not available; zstd limits are n/a"
  fi
}

# ---------------------------------------------------------------------------------------------
# Phase 3: backups

phase_backups() {
  local t kind
  record meta dataset_bytes "$(du -sb "$DATA" | cut -f1)"
  record meta dataset_files "$(find "$DATA" -type f | wc -l)"

  for t in $TOOLS; do
    log "$t: init + full backup"
    rm -rf "${REPOS:?}/$t"
    init_cmd "$t" "$REPOS/$t"
    if timed "$t.init" "${CMD[@]}"; then
      drop_caches
      backup_cmd "$t" "$REPOS/$t" full full "$DATA"
      measure "$t" backup.full "${CMD[@]}" || true
    else
      record "$t" backup.full.wall_s n/a
    fi
    record "$t" repo.full_bytes "$(repo_bytes "$REPOS/$t")"
  done
  if has restic; then
    record meta restic_repo_version "$(restic -r "$REPOS/restic" cat config 2>/dev/null | awk -F'[:,]' '/"version"/ { gsub(/ /, "", $2); print $2 }')"
  fi

  for t in $TOOLS; do
    log "$t: no-change backup"
    drop_caches
    backup_cmd "$t" "$REPOS/$t" nochange incremental "$DATA"
    measure "$t" backup.nochange "${CMD[@]}" || true
    record "$t" repo.nochange_bytes "$(repo_bytes "$REPOS/$t")"
  done

  log "a day of business (mutate_dataset.py --day 1)"
  mutate 1 1

  for t in $TOOLS; do
    log "$t: the day's incremental backup"
    drop_caches
    backup_cmd "$t" "$REPOS/$t" day1 incremental "$DATA"
    measure "$t" backup.incr "${CMD[@]}" || true
    record "$t" repo.incr_bytes "$(repo_bytes "$REPOS/$t")"
  done
  record meta dataset_bytes_day1 "$(du -sb "$DATA" | cut -f1)"
}

# ---------------------------------------------------------------------------------------------
# Phase 3b: full restore

RESTORE_DIR=$BENCH_DIR/restore

# restore_cmd TOOL SNAPSHOT TARGET [EXTRA...] — set CMD. restic and borg recreate the absolute
# source path under the target; strata writes the snapshot root as the target.
restore_cmd() {
  local t=$1 snap=$2 dir=$3
  shift 3
  case $t in
    strata) CMD=("$STRATA" --repo "$REPOS/strata" restore "$snap" --target "$dir" "$@") ;;
    restic) CMD=(restic -r "$REPOS/restic" restore "$snap" --target "$dir") ;;
    borg) CMD=(env -C "$dir" borg extract "$REPOS/borg::$snap") ;;
  esac
}

# fresh_target DIR — an empty directory to restore into: with RESTORE_FRESH_FS=1 the root of a
# new ext4 filesystem (sparse loop image DIR.img, twice the dataset plus 1 GiB).
fresh_target() {
  local m=$1 size
  mkdir -p "$m"
  [[ $RESTORE_FRESH_FS == 1 ]] || return 0
  size=$(($(du -sb "$DATA" | cut -f1) * 2 + (1 << 30)))
  if truncate -s "$size" "$m.img" && mkfs.ext4 -q -F "$m.img" >>"$LOGDIR/restore-fs.log" 2>&1 &&
    mount -o loop "$m.img" "$m" 2>>"$LOGDIR/restore-fs.log"; then
    rmdir "$m/lost+found"
  else
    warn "cannot make a fresh filesystem at $m; restoring into $BENCH_DIR's filesystem"
    rm -f "$m.img"
  fi
}

drop_target() { # DIR
  if mountpoint -q "$1"; then umount "$1"; fi
  rm -rf "$1" "$1.img"
}

# The copy of the dataset's root inside a tool's restore target.
restored_root() { if [[ $1 == strata ]]; then echo "$2"; else echo "$2$DATA"; fi; }

# The id (or archive name) of the tool's full snapshot, the first one made.
full_snapshot() {
  case $1 in
    strata) "$STRATA" --repo "$REPOS/strata" snapshots --json 2>>"$LOGDIR/strata.restore.log" | $HELP snapshot-id strata oldest ;;
    restic) restic -r "$REPOS/restic" snapshots --json 2>>"$LOGDIR/restic.restore.log" | $HELP snapshot-id restic oldest ;;
    borg) echo full ;;
  esac
}

phase_restore() {
  local t snap dir rc
  cleanup_restore_fs
  rm -rf "$RESTORE_DIR"
  record meta restore_fresh_fs "$RESTORE_FRESH_FS"
  for t in $TOOLS; do
    if ! snap=$(full_snapshot "$t") || [[ -z $snap ]]; then
      warn "$t: cannot find the full snapshot"
      record "$t" restore.full.wall_s n/a
      continue
    fi
    dir=$RESTORE_DIR/$t
    fresh_target "$dir"
    log "$t: full restore of the full snapshot"
    drop_caches
    restore_cmd "$t" "$snap" "$dir"
    measure "$t" restore.full "${CMD[@]}" || continue
    if [[ $t == strata ]]; then
      log "strata: the same restore with --fsync"
      drop_target "$RESTORE_DIR/strata-fsync"
      fresh_target "$RESTORE_DIR/strata-fsync"
      drop_caches
      restore_cmd strata "$snap" "$RESTORE_DIR/strata-fsync" --fsync
      measure strata restore.full_fsync "${CMD[@]}" || true
      drop_target "$RESTORE_DIR/strata-fsync"
    elif [[ -d $RESTORE_DIR/strata ]]; then
      # The trees must hold the same bytes: one snapshot of one source, restored by two tools.
      rc=0
      diff -r -q "$RESTORE_DIR/strata" "$(restored_root "$t" "$dir")" >"$LOGDIR/$t.restore.diff" 2>&1 || rc=$?
      case $rc in
        0) record "$t" restore.same_as_strata yes ;;
        *) record "$t" restore.same_as_strata "NO (see logs/$t.restore.diff)" ;;
      esac
      drop_target "$dir"
    fi
  done
  for t in $TOOLS strata-fsync; do drop_target "$RESTORE_DIR/$t"; done
  rm -rf "$RESTORE_DIR"
}

# ---------------------------------------------------------------------------------------------
# Phase 4: one file through the tool's own CLI

# The order JSON the read-side tests fetch: dated 2023-01, which the mutator never touches.
pick_order() { (cd "$DATA" && find orders/2023/01 -type f -name '*.json' | sort | sed -n '5p;$p' | head -1); }

# time_cat TOOL KEY SNAPSHOT REL — correctness check, then warm and cold timings via hyperfine.
time_cat() {
  local tool=$1 key=$2 snap=$3 rel=$4 cmd
  cmd=$(tool_cat_cmd "$tool" "$snap" "$rel")
  if ! bash -c "$cmd" >"$LOGDIR/$tool.$key.out" 2>"$LOGDIR/$tool.$key.log"; then
    warn "$tool: $key failed, see $LOGDIR/$tool.$key.log"
    record "$tool" "$key.warm_ms" n/a
    record "$tool" "$key.cold_ms" n/a
    return 0
  fi
  if [[ -n ${5:-} ]]; then
    cmp -s "$LOGDIR/$tool.$key.out" "$5" && record "$tool" "$key.correct" yes || record "$tool" "$key.correct" NO
  fi
  if command -v hyperfine >/dev/null; then
    hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$LOGDIR/$tool.$key.warm.json" \
      "$cmd" >>"$LOGDIR/$tool.$key.log" 2>&1 &&
      record "$tool" "$key.warm_ms" "$($HELP hyperfine-mean "$LOGDIR/$tool.$key.warm.json")" ||
      record "$tool" "$key.warm_ms" n/a
    if [[ $CAN_DROP == 1 ]]; then
      hyperfine -N --style none --runs "$COLD_RUNS" --prepare "bash -c 'sync; echo 3 > /proc/sys/vm/drop_caches'" \
        --export-json "$LOGDIR/$tool.$key.cold.json" "$cmd" >>"$LOGDIR/$tool.$key.log" 2>&1 &&
        record "$tool" "$key.cold_ms" "$($HELP hyperfine-mean "$LOGDIR/$tool.$key.cold.json")" ||
        record "$tool" "$key.cold_ms" n/a
    fi
  else
    local i t0 t1
    bash -c "$cmd" >/dev/null 2>&1
    t0=$(now)
    for ((i = 0; i < RUNS; i++)); do bash -c "$cmd" >/dev/null 2>&1; done
    t1=$(now)
    record "$tool" "$key.warm_ms" "$(awk -v a="$t0" -v b="$t1" -v n="$RUNS" 'BEGIN { printf "%.2f", (b - a) * 1000 / n }')"
  fi
}

phase_cat() {
  local t rel
  rel=$(pick_order)
  record meta cat_file "$rel"
  for t in $TOOLS; do
    log "$t: read one order JSON ($rel)"
    time_cat "$t" cat latest "$rel" "$DATA/$rel"
  done
}

# ---------------------------------------------------------------------------------------------
# Phase 5: mounts

# Print the directory that shows the latest snapshot's copy of $DATA inside mount point $2.
# A candidate counts only if it holds the dataset's orders/ directory, so a half-ready mount
# or an unexpected layout can never be measured by mistake.
mount_root() { # TOOL MOUNTPOINT [SNAPSHOT-NAME]
  local m=$2 c candidates=()
  case $1 in
    restic) candidates=("$m/snapshots/latest$DATA") ;;
    borg) candidates=("$m/${3:-$BORG_LATEST}$DATA") ;;
    strata)
      if [[ -n ${STRATA_MOUNT_SUBPATH:-} ]]; then
        candidates=("$m/$STRATA_MOUNT_SUBPATH")
      else
        candidates=("$m/latest" "$m/snapshots/latest" "$m/latest$DATA")
      fi
      ;;
  esac
  for c in "${candidates[@]}"; do
    if [[ -d $c/orders ]]; then
      MOUNT_ROOT=$c
      return 0
    fi
  done
  return 1
}

# start_mount TOOL KEY — mount the whole repository in the background, wait until the latest
# snapshot's root can be listed; records KEY.listable_ms. Sets MOUNT_PID and MOUNT_ROOT.
start_mount() {
  local tool=$1 key=$2 m="$MNT/$1" t0 t1 deadline
  mkdir -p "$m"
  cleanup_mounts
  drop_caches
  # The wait loop below forks nothing (bash builtins only: clock, glob, timed read), so that
  # the poller neither competes with the starting mount for the two CPUs nor pays cold exec
  # costs of its own; it lists the directory in-process, as `ls` would.
  exec {POLL_FD}<> <(:)
  t0=$EPOCHREALTIME
  case $tool in
    # --busy-poll: the CPU keepers are off by default (a mount left running must not spend CPU);
    # the figures in docs/PERFORMANCE.md are measured with them on. STRATA_MOUNT_ARGS overrides.
    strata) "$STRATA" --repo "$REPOS/strata" mount "$m" ${STRATA_MOUNT_ARGS---busy-poll} \
              >"$LOGDIR/$tool.$key.log" 2>&1 & ;;
    restic) restic -r "$REPOS/restic" mount "$m" >"$LOGDIR/$tool.$key.log" 2>&1 & ;;
    borg) borg mount -f "$REPOS/borg" "$m" >"$LOGDIR/$tool.$key.log" 2>&1 & ;;
  esac
  MOUNT_PID=$!
  local deadline_us=$(( ${t0/./} + MOUNT_TIMEOUT * 1000000 ))
  while :; do
    if mount_root "$tool" "$m" && compgen -G "$MOUNT_ROOT/*" >/dev/null; then break; fi
    if ! kill -0 "$MOUNT_PID" 2>/dev/null; then
      warn "$tool mount exited early, see $LOGDIR/$tool.$key.log"
      MOUNT_PID=""
      record "$tool" "$key.listable_ms" n/a
      cleanup_mounts
      return 1
    fi
    if (( ${EPOCHREALTIME/./} > deadline_us )); then
      warn "$tool mount not listable after ${MOUNT_TIMEOUT}s"
      stop_mount "$tool"
      record "$tool" "$key.listable_ms" n/a
      return 1
    fi
    read -r -t 0.005 -u "$POLL_FD" || true
  done
  t1=$EPOCHREALTIME
  exec {POLL_FD}>&-
  record "$tool" "$key.listable_ms" "$(( (${t1/./} - ${t0/./} + 500) / 1000 ))"
  # Resolve symlinks (restic's snapshots/latest, strata's latest): `find` and `ls -lR` do not
  # follow a symlink given as their starting point.
  MOUNT_ROOT=$(cd "$MOUNT_ROOT" && pwd -P)
  record "$tool" "$key.root" "${MOUNT_ROOT#"$m"/}"
}

stop_mount() { # TOOL
  local m="$MNT/$1" i
  fusermount -u "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  if [[ -n $MOUNT_PID ]]; then
    for ((i = 0; i < 200; i++)); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$MOUNT_PID" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
  fi
  MOUNT_PID=""
}

mount_hwm_kb() { awk '/VmHWM/ { print $2 }' "/proc/$MOUNT_PID/status" 2>/dev/null || echo n/a; }

phase_mount_one() {
  local t=$1 r big t0 t1 out rc
  log "$t: mount"
  start_mount "$t" mount || return 0
  r=$MOUNT_ROOT
  big="$r/big/archive.bin"

  # The disk's speed drifts by 3x over minutes on a shared VM, so each cold read through the mount
  # is paired with a raw read of the source file just before it; medians of SEQ_PAIRS pairs.
  local i d m ds=() ms=() qs=() size
  size=$(stat -c %s "$big")
  for ((i = 0; i < SEQ_PAIRS; i++)); do
    drop_caches
    t0=$(now); dd if="$DATA/big/archive.bin" of=/dev/null bs=1M 2>>"$LOGDIR/$t.mount.log"; t1=$(now)
    d=$(mbs "$size" "$(elapsed "$t0" "$t1")")
    drop_caches
    t0=$(now)
    if dd if="$big" of=/dev/null bs=1M 2>>"$LOGDIR/$t.mount.log"; then
      t1=$(now); m=$(mbs "$size" "$(elapsed "$t0" "$t1")")
    else
      m=n/a
    fi
    log "$t: cold read pair $((i + 1)): disk $d MB/s, mount $m MB/s"
    ds+=("$d"); ms+=("$m")
    qs+=("$(awk -v m="$m" -v d="$d" 'BEGIN { if (m + 0 > 0 && d + 0 > 0) printf "%.3f", m / d; else print "n/a" }')")
  done
  record "$t" mount.seq_read_mbs "$(median "${ms[@]}")"
  record "$t" mount.seq_disk_mbs "$(median "${ds[@]}")"
  record "$t" mount.seq_vs_disk "$(median "${qs[@]}")"
  # The second read, caches not dropped: what a tool's page-cache handling gives.
  t0=$(now)
  if dd if="$big" of=/dev/null bs=1M 2>>"$LOGDIR/$t.mount.log"; then
    t1=$(now); record "$t" mount.seq_read2_mbs "$(mbs "$size" "$(elapsed "$t0" "$t1")")"
  else
    record "$t" mount.seq_read2_mbs n/a
  fi

  drop_caches
  if out=$($HELP pread "$big" --count "$PREADS" --seed "$SEED" 2>>"$LOGDIR/$t.mount.log"); then
    record "$t" mount.pread_ops "${out%% *}"
  else
    record "$t" mount.pread_ops n/a
  fi

  drop_caches
  t0=$(now)
  if ls -lR "$r" >/dev/null 2>>"$LOGDIR/$t.mount.log"; then
    t1=$(now); record "$t" mount.lslR_s "$(elapsed "$t0" "$t1")"
  else
    record "$t" mount.lslR_s n/a
  fi

  drop_caches
  t0=$(now)
  out=$(find "$r" 2>>"$LOGDIR/$t.mount.log" | wc -l)
  t1=$(now)
  record "$t" mount.find_s "$(elapsed "$t0" "$t1")"
  record "$t" mount.find_count "$out"

  drop_caches
  t0=$(now)
  rc=0
  diff -r "$r" "$DATA" >"$LOGDIR/$t.mount.diff" 2>&1 || rc=$?
  t1=$(now)
  record "$t" mount.diff_s "$(elapsed "$t0" "$t1")"
  case $rc in
    0) record "$t" mount.diff_identical yes ;;
    1) record "$t" mount.diff_identical "NO (see logs/$t.mount.diff)" ;;
    *) record "$t" mount.diff_identical "error (see logs/$t.mount.diff)" ;;
  esac

  record "$t" mount.rss_kb "$(mount_hwm_kb)"
  stop_mount "$t"
}

phase_mount() {
  local t
  record meta live_find_count "$(find "$DATA" | wc -l)"
  for t in $TOOLS; do
    if [[ $t == strata && $SKIP_STRATA_MOUNT == 1 ]]; then continue; fi
    phase_mount_one "$t"
  done
}

# ---------------------------------------------------------------------------------------------
# Optional phases

phase_chain() {
  local i t total first rel cmd
  log "CHAIN=$CHAIN: small days + incrementals"
  declare -A tot
  for t in $TOOLS; do tot[$t]=0; done
  for ((i = 1; i <= CHAIN; i++)); do
    mutate $((100 + i)) 0.1
    for t in $TOOLS; do
      drop_caches
      backup_cmd "$t" "$REPOS/$t" "chain$i" incremental "$DATA"
      if timed "$t.chain$i" "${CMD[@]}"; then
        tot[$t]=$(awk -v a="${tot[$t]}" -v b="$LAST_WALL" 'BEGIN { printf "%.3f", a + b }')
      else
        tot[$t]=n/a
      fi
    done
  done
  BORG_LATEST=chain$CHAIN
  rel=$(pick_order)
  for t in $TOOLS; do
    record "$t" chain.backup_total_s "${tot[$t]}"
    record "$t" chain.repo_bytes "$(repo_bytes "$REPOS/$t")"
    case $t in
      strata) first=$("$STRATA" --repo "$REPOS/strata" snapshots --json 2>>"$LOGDIR/strata.chain.log" | $HELP snapshot-id strata oldest 2>>"$LOGDIR/strata.chain.log") || first="" ;;
      restic) first=$(restic -r "$REPOS/restic" snapshots --json 2>>"$LOGDIR/restic.chain.log" | $HELP snapshot-id restic oldest) || first="" ;;
      borg) first=full ;;
    esac
    if [[ -z $first ]]; then
      warn "$t: cannot find the first snapshot"
      record "$t" chain.cat_first.warm_ms n/a
    else
      log "$t: read one order JSON from the first of $((CHAIN + 3)) snapshots"
      time_cat "$t" chain.cat_first "$first" "$rel" "$DATA/$rel"
    fi
    log "$t: read the same order JSON from the latest snapshot"
    time_cat "$t" chain.cat_latest latest "$rel" "$DATA/$rel"
  done
}

phase_many_snapshots() {
  local t i
  for t in $MANY_TOOLS; do
    has "$t" || continue
    log "$t: $MANY_SNAPSHOTS more snapshots (one appended log line each)"
    for ((i = 1; i <= MANY_SNAPSHOTS; i++)); do
      echo "many-snapshots $i" >>"$DATA/logs/app.log"
      backup_cmd "$t" "$REPOS/$t" "many$i" incremental "$DATA"
      timed "$t.many" "${CMD[@]}" || { warn "$t: stopping at snapshot $i"; break; }
    done
    rm -f "$DATA.pristine"
    BORG_LATEST=many$((i - 1))
    record "$t" many.snapshots_added $((i - 1))
    if [[ $SKIP_MOUNT != 1 && ! ($t == strata && $SKIP_STRATA_MOUNT == 1) ]]; then
      start_mount "$t" many && { record "$t" many.rss_kb "$(mount_hwm_kb)"; stop_mount "$t"; }
    fi
  done
}

phase_scale2() {
  local t s2
  s2=$(awk -v s="$SCALE" 'BEGIN { print 2 * s }')
  gen_data "$BENCH_DIR/data2" "$s2"
  record meta scale2_dataset_bytes "$(du -sb "$BENCH_DIR/data2" | cut -f1)"
  for t in $SCALE2_TOOLS; do
    has "$t" || continue
    log "$t: full backup at scale $s2"
    rm -rf "${REPOS:?}/$t-x2"
    init_cmd "$t" "$REPOS/$t-x2"
    timed "$t.x2.init" "${CMD[@]}" || continue
    drop_caches
    backup_cmd "$t" "$REPOS/$t-x2" full full "$BENCH_DIR/data2"
    measure "$t" scale2.full "${CMD[@]}" || true
    record "$t" scale2.repo_bytes "$(repo_bytes "$REPOS/$t-x2")"
  done
}

# ---------------------------------------------------------------------------------------------

main() {
  local t_start
  t_start=$(now)
  setup
  gen_data "$DATA" "$SCALE"
  # A phase that trips over an unexpected error is reported and the run goes on.
  [[ $SKIP_LIMITS == 1 ]] || phase_limits || warn "phase_limits did not finish"
  phase_backups || warn "phase_backups did not finish"
  [[ $SKIP_RESTORE == 1 ]] || phase_restore || warn "phase_restore did not finish"
  [[ $SKIP_CAT == 1 ]] || phase_cat || warn "phase_cat did not finish"
  [[ $SKIP_MOUNT == 1 ]] || phase_mount || warn "phase_mount did not finish"
  if ((CHAIN > 0)); then phase_chain || warn "phase_chain did not finish"; fi
  if ((MANY_SNAPSHOTS > 0)); then phase_many_snapshots || warn "phase_many_snapshots did not finish"; fi
  if [[ $SCALE2 == 1 ]]; then phase_scale2 || warn "phase_scale2 did not finish"; fi
  record meta bench_runtime_s "$(elapsed "$t_start" "$(now)")"
  record meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" "$HERE/report.py" "$RESULTS" | tee "$BENCH_DIR/report.md"
  log "raw results: $RESULTS; report: $BENCH_DIR/report.md; logs: $LOGDIR"
}

main "$@"
