#!/usr/bin/env bash
# benches/encryption.sh — what encryption costs: the same dataset backed up into a plain and an
# encrypted repository, then the same reads from both. Prints, per operation, the median wall
# and CPU (user+sys) seconds of each kind and the ratio encrypted / plain.
#
# Usage:
#   benches/encryption.sh                 ~600 MB dataset (SCALE=0.25), 3 runs of each
#   SCALE=1 RUNS=5 benches/encryption.sh  the full 2.4 GB benchmark dataset
#
# Operations (each run alternates plain and encrypted, so both see the same machine load):
#   backup    full backup of the dataset into a fresh repository
#   restore   `strata restore latest` into a fresh directory
#   cat       `strata cat latest big/archive.bin` (the dataset's largest file) to /dev/null
#   cat-small `strata cat` of one order document, 20 times in a row
#   snapshots `strata snapshots`: the fixed cost of a command (for an encrypted repository, mostly
#             the key derivation)
#   cat-cached, cat-small-cached, snapshots-cached
#             the same with `--key-cache 10m` and, for the encrypted repository, no passphrase at
#             all: the key a first command unlocked is taken from the kernel keyring (README,
#             "Encryption"); `strata key forget` drops it after each run. The plain repository
#             runs the same commands (the option does nothing there)
#   mount     sequential read of big/archive.bin through `strata mount`: wall time of the read,
#             CPU time of the mount process during it
# By default the page cache is not dropped (warm: what encryption adds is CPU, shown at its
# largest); COLD=1 (root) drops it before each backup, restore, cat and mount read, which is how
# benches/run.sh measures and what a restore from a backup disk looks like. The key derivation
# (argon2id; KDF_MEMORY_KIB, KDF_ITERATIONS) is paid once per command and is part of every
# encrypted figure; `snapshots` shows it alone.
#
# Knobs: BENCH_DIR [/tmp/strata-enc-bench], SCALE [0.25], SEED [42], RUNS [3], CAT_RUNS [3] (the
# big `cat`s are timed that many times per run: they are short, and noisy on a loaded machine),
# STRATA_BIN [cargo build --release → target/release/strata], KDF_MEMORY_KIB [65536],
# KDF_ITERATIONS [3].
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/strata-enc-bench}
SCALE=${SCALE:-0.25}
SEED=${SEED:-42}
RUNS=${RUNS:-3}
CAT_RUNS=${CAT_RUNS:-3}
KDF_MEMORY_KIB=${KDF_MEMORY_KIB:-65536}
KDF_ITERATIONS=${KDF_ITERATIONS:-3}
if [ -z "${STRATA_BIN:-}" ]; then
    (cd "$here/.." && cargo build --release -q)
    STRATA_BIN="$here/../target/release/strata"
fi
mkdir -p "$BENCH_DIR"
data="$BENCH_DIR/data-$SCALE-$SEED"
if [ ! -d "$data" ]; then
    python3 "$here/gen_dataset.py" --out "$data.tmp" --scale "$SCALE" --seed "$SEED" >/dev/null
    mv "$data.tmp" "$data"
fi
order=$(cd "$data" && find orders -name '*.json' -print -quit)
pass="$BENCH_DIR/passphrase"
printf 'benchmark passphrase\n' >"$pass"
results="$BENCH_DIR/results.tsv"
: >"$results"

# Drops the page cache when COLD=1.
cold() {
    if [ "${COLD:-0}" = 1 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# timed KIND OP COMMAND... — runs COMMAND, appends "KIND OP wall cpu" to the results.
timed() {
    local kind=$1 op=$2
    shift 2
    local t
    /usr/bin/time -f '%e %U %S' -o "$BENCH_DIR/time.out" "$@" >/dev/null 2>"$BENCH_DIR/last.err"
    t=$(tail -1 "$BENCH_DIR/time.out")
    echo "$kind $op $(echo "$t" | awk '{print $1, $2 + $3}')" >>"$results"
}

strata() { # strata KIND ARGS...
    local kind=$1
    shift
    if [ "$kind" = enc ]; then
        "$STRATA_BIN" --repo "$BENCH_DIR/repo-$kind" --password-file "$pass" "$@"
    else
        "$STRATA_BIN" --repo "$BENCH_DIR/repo-$kind" "$@"
    fi
}
strata_cached() { # strata_cached KIND ARGS... — with the key cache, without a passphrase
    local kind=$1
    shift
    "$STRATA_BIN" --repo "$BENCH_DIR/repo-$kind" --key-cache 10m "$@" </dev/null
}
cat_small() { # cat_small KIND PATH [strata|strata_cached]
    for _ in $(seq 20); do "${3:-strata}" "$1" cat latest "$2" >/dev/null; done
}
export -f strata strata_cached cat_small
export STRATA_BIN BENCH_DIR pass

# CPU seconds (user + system) the process `pid` has used so far.
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

mount_read() { # mount_read KIND — wall time of the read, CPU time of the mount process
    local kind=$1 mnt="$BENCH_DIR/mnt-$1" args=(--repo "$BENCH_DIR/repo-$1")
    [ "$kind" = enc ] && args+=(--password-file "$pass")
    mkdir -p "$mnt"
    "$STRATA_BIN" "${args[@]}" mount "$mnt" --no-busy-poll >"$BENCH_DIR/mount-$kind.out" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        grep -q '^Mounted' "$BENCH_DIR/mount-$kind.out" 2>/dev/null && break
        sleep 0.05
    done
    cold
    local before after start end
    before=$(cpu_of "$pid")
    start=$(date +%s.%N)
    cat "$mnt/latest/big/archive.bin" >/dev/null
    end=$(date +%s.%N)
    after=$(cpu_of "$pid")
    echo "$kind mount $(echo "$end - $start" | bc) $(echo "$after - $before" | bc)" >>"$results"
    fusermount3 -u "$mnt"
    wait "$pid" || true
}

for run in $(seq "$RUNS"); do
    for kind in plain enc; do
        rm -rf "$BENCH_DIR/repo-$kind" "$BENCH_DIR/restore-$kind"
        if [ "$kind" = enc ]; then
            strata enc init --encrypt --kdf-memory "$KDF_MEMORY_KIB" \
                --kdf-iterations "$KDF_ITERATIONS" >/dev/null
        else
            strata plain init >/dev/null
        fi
        cold
        timed "$kind" backup bash -c 'strata "$@"' _ "$kind" backup "$data"
        cold
        timed "$kind" restore bash -c 'strata "$@"' _ "$kind" restore latest \
            --target "$BENCH_DIR/restore-$kind"
        rm -rf "$BENCH_DIR/restore-$kind"
        strata "$kind" cat latest "$order" >/dev/null # builds the big layer's lookup table
        for _ in $(seq "$CAT_RUNS"); do
            cold
            timed "$kind" cat bash -c 'strata "$@"' _ "$kind" cat latest big/archive.bin
        done
        timed "$kind" cat-small bash -c 'cat_small "$@"' _ "$kind" "$order"
        timed "$kind" snapshots bash -c 'strata "$@"' _ "$kind" snapshots
        strata "$kind" --key-cache 10m snapshots >/dev/null # unlocks once, caches the key
        for _ in $(seq "$CAT_RUNS"); do
            cold
            timed "$kind" cat-cached bash -c 'strata_cached "$@"' _ "$kind" cat latest big/archive.bin
        done
        timed "$kind" cat-small-cached bash -c 'cat_small "$@"' _ "$kind" "$order" strata_cached
        timed "$kind" snapshots-cached bash -c 'strata_cached "$@"' _ "$kind" snapshots
        [ "$kind" = enc ] && strata enc key forget >/dev/null
        mount_read "$kind"
    done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
ops = []
for r in rows:
    if r[1] not in ops:
        ops.append(r[1])
def med(kind, op, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == kind and r[1] == op)
print(f"{'operation':<17} {'plain wall':>10} {'enc wall':>9} {'ratio':>6}   {'plain cpu':>9} {'enc cpu':>8} {'ratio':>6}")
for op in ops:
    pw, ew = med("plain", op, 2), med("enc", op, 2)
    pc, ec = med("plain", op, 3), med("enc", op, 3)
    ratio = lambda a, b: f"{a / b:>6.2f}" if b > 0 else f"{'-':>6}"
    print(f"{op:<17} {pw:>10.2f} {ew:>9.2f} {ratio(ew, pw)}   {pc:>9.2f} {ec:>8.2f} {ratio(ec, pc)}")
EOF
