#!/usr/bin/env bash
# benches/s3.sh — a repository in object storage side by side with the same repository on local
# disk: the benchmark's shop dataset backed up into both, then the same reads from both. The
# bucket is served by s3s-fs (an S3 server that keeps objects as files) on 127.0.0.1, over a
# directory on the same disk as the local repository, so the difference is what the S3 protocol,
# the requests and the bucket's block cache cost.
#
# Usage:
#   benches/s3.sh                   ~240 MB dataset (SCALE=0.1), 3 runs of each
#   SCALE=0.25 RUNS=5 benches/s3.sh
#
# Figures (medians over RUNS; each run alternates local and bucket, so both see the same load):
#   backup       full backup of the dataset into a fresh repository, page cache dropped first
#   backup-same  the next backup, nothing changed (wall time; for the bucket also the requests it
#                made, from `backup --json`)
#   mount-read   cold sequential read of big/archive.bin through `strata mount` (page cache
#                dropped; for the bucket also its block cache, CACHE/blocks/, removed), MB/s
#   restore      `strata restore latest` into a new directory, page cache (and the bucket's block
#                cache) dropped
#   cat-small    `strata cat` of one order document with the page cache dropped; for the bucket
#                its block cache removed too and its index cache (sled index, lookup files) kept
#   server-read  the server's own rate: every pack of the bucket fetched whole by curl, 8 at a
#                time, page cache dropped (MB/s): what bounds the mount's read from the bucket
#
# The server (SERVER):
#   s3s-fs   (default) the Rust server the tests use (`cargo install s3s-fs@0.14.1 --locked
#            --features binary`). It streams every GET through 4 KiB reads, about 200 MB/s at
#            best here, so it caps what a sequential read through the mount can reach.
#   s3rver   the Node.js S3 server from npm (`s3rver@3`, installed into BENCH_DIR on first use),
#            streaming files in 64 KiB reads: closer to what a real object store gives one client.
#
# Needs root (drop_caches), fuse3 and the server. Knobs: BENCH_DIR [/tmp/strata-s3-bench],
# SCALE [0.1], SEED [42], RUNS [3], SERVER [s3s-fs], STRATA_BIN [cargo build --release →
# target/release/strata], S3S_FS [s3s-fs on PATH].
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/strata-s3-bench}
SCALE=${SCALE:-0.1}
SEED=${SEED:-42}
RUNS=${RUNS:-3}
SERVER=${SERVER:-s3s-fs}
S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo /usr/local/bin/s3s-fs)}
case $SERVER in
s3s-fs)
    [ -x "$S3S_FS" ] || { echo "s3s-fs not found (cargo install s3s-fs@0.14.1 --locked --features binary)" >&2; exit 1; }
    ;;
s3rver)
    command -v node >/dev/null || { echo "s3rver needs Node.js (apt-get install nodejs npm)" >&2; exit 1; }
    ;;
*) echo "SERVER is s3s-fs or s3rver" >&2; exit 1 ;;
esac
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
results="$BENCH_DIR/results.tsv"
: >"$results"

# The server, on a free port, over a root with one bucket; stopped on exit.
s3root="$BENCH_DIR/s3root"
rm -rf "$s3root"
mkdir -p "$s3root/bench"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$SERVER" = s3rver ]; then
    if [ ! -x "$BENCH_DIR/s3rver/node_modules/.bin/s3rver" ]; then
        mkdir -p "$BENCH_DIR/s3rver"
        (cd "$BENCH_DIR/s3rver" && npm install --silent s3rver@3 >/dev/null)
    fi
    "$BENCH_DIR/s3rver/node_modules/.bin/s3rver" --silent -d "$s3root" -a 127.0.0.1 -p "$port" \
        --configure-bucket bench >"$BENCH_DIR/server.log" 2>&1 &
    key=S3RVER secret=S3RVER # the only credentials s3rver takes
else
    "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key bench --secret-key benchsecret "$s3root" \
        >"$BENCH_DIR/server.log" 2>&1 &
    key=bench secret=benchsecret
fi
server=$!
mnt="$BENCH_DIR/mnt"
cleanup() {
    mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt" || true
    kill "$server" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
export XDG_CACHE_HOME="$BENCH_DIR/cache"

repo_of() { # repo_of KIND — a new prefix each run: nothing is deleted behind the server's back
    if [ "$1" = bucket ]; then echo "s3://bench/repo-$run"; else echo "$BENCH_DIR/repo-local"; fi
}
strata() { # strata KIND ARGS...
    local kind=$1
    shift
    "$STRATA_BIN" --repo "$(repo_of "$kind")" "$@"
}
cold() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
# The bucket's block cache (what a machine downloaded of its packs).
drop_blocks() {
    rm -rf "$XDG_CACHE_HOME"/strata/*/blocks
}
now() { date +%s.%N; }
record() { # record KIND FIGURE VALUE
    echo "$1 $2 $3" >>"$results"
}

mount_read() { # mount_read KIND — MB/s of a cold sequential read of big/archive.bin
    local kind=$1
    mkdir -p "$mnt"
    strata "$kind" mount "$mnt" >"$BENCH_DIR/mount-$kind.out" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        grep -q '^Mounted' "$BENCH_DIR/mount-$kind.out" 2>/dev/null && break
        sleep 0.05
    done
    [ "$kind" = bucket ] && drop_blocks
    cold
    local size start end
    size=$(stat -c %s "$data/big/archive.bin")
    start=$(now)
    cat "$mnt/latest/big/archive.bin" >/dev/null
    end=$(now)
    record "$kind" mount-read "$(echo "$size / ($end - $start) / 1000000" | bc -l)"
    fusermount3 -u "$mnt"
    wait "$pid" || true
}

# What the server itself serves: every pack of this run's bucket repository fetched whole with
# curl, 8 at a time, page cache dropped, in MB/s. The mount's cold read is bounded by this.
server_ceiling() {
    local dir="$s3root/bench/repo-$run/packs" list="$BENCH_DIR/packs.txt"
    find "$dir" -type f -size +1M | sed -e "s|^$s3root/||" -e 's|\._S3rver_object$||' >"$list"
    local bytes
    bytes=$(find "$dir" -type f -size +1M -printf '%s\n' | awk '{s += $1} END {print s}')
    cold
    local start end
    start=$(now)
    xargs -P 8 -I{} curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "$key:$secret" \
        -H x-amz-content-sha256:UNSIGNED-PAYLOAD -o /dev/null "$AWS_ENDPOINT_URL/{}" <"$list"
    end=$(now)
    record bucket server-read "$(echo "$bytes / ($end - $start) / 1000000" | bc -l)"
}

for run in $(seq "$RUNS"); do
    for kind in local bucket; do
        rm -rf "$BENCH_DIR/repo-local" "$XDG_CACHE_HOME"
        strata "$kind" init >/dev/null
        cold
        start=$(now)
        strata "$kind" backup "$data" >/dev/null 2>"$BENCH_DIR/last.err"
        end=$(now)
        record "$kind" backup "$(echo "$end - $start" | bc -l)"
        start=$(now)
        strata "$kind" backup --json "$data" >"$BENCH_DIR/same-$kind.json" 2>"$BENCH_DIR/last.err"
        end=$(now)
        record "$kind" backup-same "$(echo "$end - $start" | bc -l)"
        if [ "$kind" = bucket ]; then
            python3 - "$BENCH_DIR/same-$kind.json" >>"$results" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["requests"]
for k in ("get", "put", "list", "delete"):
    print(f"bucket req-{k} {r[k]}")
EOF
        fi
        mount_read "$kind"
        [ "$kind" = bucket ] && server_ceiling
        rm -rf "$BENCH_DIR/restored"
        [ "$kind" = bucket ] && drop_blocks
        cold
        start=$(now)
        strata "$kind" restore latest --target "$BENCH_DIR/restored" >/dev/null
        end=$(now)
        record "$kind" restore "$(echo "$end - $start" | bc -l)"
        rm -rf "$BENCH_DIR/restored"
        strata "$kind" cat latest "$order" >/dev/null # the index cache and lookup files are there
        [ "$kind" = bucket ] && drop_blocks
        cold
        start=$(now)
        strata "$kind" cat latest "$order" >/dev/null
        end=$(now)
        record "$kind" cat-small "$(echo "($end - $start) * 1000" | bc -l)"
    done
done

python3 - "$results" "$SCALE" "$(du -sm "$data" | cut -f1)" "$SERVER" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(kind, fig):
    v = [float(r[2]) for r in rows if r[0] == kind and r[1] == fig]
    return statistics.median(v) if v else None
print(f"server {sys.argv[4]}, SCALE={sys.argv[2]} ({sys.argv[3]} MB), medians of {len([r for r in rows if r[:2] == ['local', 'backup']])} runs")
print(f"{'figure':<34} {'local':>9} {'bucket':>9} {'bucket/local':>13}")
for fig, label, unit in (("backup", "full backup", "s"), ("backup-same", "no-change backup", "s"),
                         ("mount-read", "cold sequential read (mount)", "MB/s"),
                         ("restore", "full restore, cold", "s"),
                         ("cat-small", "cat of one order, cold", "ms")):
    l, b = med("local", fig), med("bucket", fig)
    fmt = "{:>9.1f}" if unit != "s" else "{:>9.2f}"
    print(f"{label + ' (' + unit + ')':<34} {fmt.format(l)} {fmt.format(b)} {b / l:>13.2f}")
ceiling = med("bucket", "server-read")
print(f"the server's own cold read of the packs (curl, 8 in flight): {ceiling:.1f} MB/s; "
      f"the mount reads from the bucket at {med('bucket', 'mount-read') / ceiling:.2f} of it")
req = {k: med("bucket", "req-" + k) for k in ("get", "put", "list", "delete")}
print("requests of the no-change backup (bucket): " +
      ", ".join(f"{k.upper()} {v:.0f}" for k, v in req.items()))
EOF
