#!/usr/bin/env bash
# benches/anomaly_days.sh — the backup anomaly check over simulated days of the shop: it must stay
# quiet through DAYS normal days and fire on a mass encryption and on a mass deletion.
#
#   benches/anomaly_days.sh                       # defaults below; about a minute
#   DAYS=60 SCALE=0.05 benches/anomaly_days.sh
#
# benches/gen_dataset.py makes the shop at SCALE, then each day benches/mutate_dataset.py applies
# a day of business (at INTENSITY) and the day is backed up into three repositories:
#   forever   one full on day 0, incrementals after; default thresholds
#   weekly    a full on day 0, 7, 14, ..., incrementals otherwise; default thresholds
#   all-rules like forever, with --anomaly-min-files 1: at a small SCALE a day changes fewer than
#             the default 10 files of a kind, which keeps the share rules out of the default runs;
#             here every rule is scored every day, to show its margin
# After the last day, two attacks, each followed by a backup into every repository:
#   encrypt   30% of the files (chosen at random, seeded) overwritten with random bytes of their size
#   delete    30% of the remaining files deleted
# Every backup's verdict (`backup --json`, its "anomaly" object) goes into $BENCH_DIR/anomaly.tsv;
# the summary gives the highest score of the normal days per schedule (overall and per rule) and
# the attacks' scores.
# The script exits 1 when a normal day was marked anomalous or an attack was not.
#
# Variables: BENCH_DIR [/tmp/strata-anomaly], DAYS [30], SCALE [0.02], INTENSITY [1], SEED [42],
# STRATA [target/release/strata, built here], PYTHON [python3].
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/tmp/strata-anomaly}
DAYS=${DAYS:-30}
SCALE=${SCALE:-0.02}
INTENSITY=${INTENSITY:-1}
SEED=${SEED:-42}
STRATA=${STRATA:-}
PY=${PYTHON:-python3}
unset STRATA_REPO STRATA_CONFIG
export XDG_CONFIG_HOME=$BENCH_DIR/no-config

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

if [[ -z $STRATA ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
  STRATA=$ROOT/target/release/strata
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/logs"
DATA=$BENCH_DIR/data
TSV=$BENCH_DIR/anomaly.tsv
log "Generating the shop (scale $SCALE)"
$PY "$HERE/gen_dataset.py" --out "$DATA" --scale "$SCALE" --seed "$SEED" >/dev/null
SCHEDULES="forever weekly all-rules"
for r in $SCHEDULES; do
  "$STRATA" --repo "$BENCH_DIR/$r" init >/dev/null
done
printf 'day\tschedule\tkind\texit\tscore\trule\tanomalous\treference_files\tadded\trewritten\trewritten_incompressible\tdeleted\tcompression_ratio\tnew_bytes\tdeleted_score\trewritten_score\tencrypted_score\tgrowth_score\n' >"$TSV"

# backup DAY SCHEDULE [ARGS...] — one backup of the shop, its verdict appended to the TSV.
backup() {
  local day=$1 sched=$2
  shift 2
  local out=$BENCH_DIR/logs/$sched-$day.json rc=0
  "$STRATA" --repo "$BENCH_DIR/$sched" backup --json --source-name shop "$@" "$DATA" \
    >"$out" 2>"$BENCH_DIR/logs/$sched-$day.err" || rc=$?
  $PY - "$out" "$day" "$sched" "$rc" >>"$TSV" <<'EOF'
import json, sys
path, day, sched, rc = sys.argv[1:]
try:
    v = json.load(open(path))
except ValueError:
    sys.exit(f"{sched} day {day}: backup failed (exit {rc}), see {path[:-5]}.err")
a = v["anomaly"] or {}
f = a.get("figures", {})
rules = a.get("rules") or [{"rule": "-"}]
ratio = f.get("compression_ratio")
per_rule = {r["rule"]: f"{r['score']:.3f}" for r in a.get("rules") or []}
print("\t".join(str(x) for x in [
    day, sched, v["kind"], rc, f"{a.get('score', 0):.3f}", rules[0]["rule"],
    int(a.get("anomalous", False)), f.get("reference_files"), f.get("added"), f.get("rewritten"),
    f.get("rewritten_incompressible"), f.get("deleted"),
    "-" if ratio is None else f"{ratio:.2f}", f.get("new_bytes")]
    + [per_rule.get(r, "-") for r in ("deleted", "rewritten", "encrypted", "growth")]))
EOF
}

# backup_all DAY — the day's backup into every repository.
backup_all() {
  backup "$1" forever
  backup "$1" all-rules --anomaly-min-files 1
  if (($1 % 7 == 0)); then
    backup "$1" weekly --kind full
  else
    backup "$1" weekly
  fi
}

log "Day 0: full backups"
backup_all 0
for day in $(seq 1 "$DAYS"); do
  $PY "$HERE/mutate_dataset.py" --root "$DATA" --day "$day" --scale "$SCALE" --seed "$SEED" \
    --intensity "$INTENSITY" 2>>"$BENCH_DIR/logs/mutate.log"
  backup_all "$day"
done
log "Day $((DAYS + 1)): 30% of the files encrypted"
# attack encrypt|delete — applies the attack to the shop.
attack() {
  $PY - "$DATA" "$1" "$SEED" <<'EOF'
import math, os, random, sys
root, what, seed = sys.argv[1], sys.argv[2], sys.argv[3]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
rng = random.Random(f"{seed}-{what}")
for p in rng.sample(files, math.ceil(0.3 * len(files))):
    if what == "delete":
        os.remove(p)
    else:
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            f.write(rng.randbytes(size))
print(f"{what}: {math.ceil(0.3 * len(files))} of {len(files)} files", file=sys.stderr)
EOF
}
attack encrypt
backup "$((DAYS + 1))" forever
backup "$((DAYS + 1))" all-rules --anomaly-min-files 1
backup "$((DAYS + 1))" weekly
log "Day $((DAYS + 2)): 30% of the files deleted"
attack delete
backup "$((DAYS + 2))" forever
backup "$((DAYS + 2))" all-rules --anomaly-min-files 1
backup "$((DAYS + 2))" weekly

$PY - "$TSV" "$DAYS" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
days = int(sys.argv[2])
bad = False
print(f"{'schedule':<9} {'normal days':>11} {'max score':>9} {'on day':>6} {'rule':<10} {'median':>7}"
      f"   {'encrypt':>14}   {'delete':>14}")
for sched in ("forever", "weekly", "all-rules"):
    normal = [r for r in rows if r["schedule"] == sched and 1 <= int(r["day"]) <= days]
    top = max(normal, key=lambda r: float(r["score"]))
    scores = sorted(float(r["score"]) for r in normal)
    fired = [r["day"] for r in normal if r["anomalous"] == "1"]
    enc, dele = (next(r for r in rows if r["schedule"] == sched and int(r["day"]) == d)
                 for d in (days + 1, days + 2))
    def verdict(r):
        return f"{float(r['score']):6.2f} {r['rule']:<7}" if r["anomalous"] == "1" else f"{float(r['score']):6.2f} QUIET"
    print(f"{sched:<9} {len(normal):>11} {float(top['score']):>9.3f} {top['day']:>6} {top['rule']:<10}"
          f" {scores[len(scores) // 2]:>7.3f}   {verdict(enc):>14}   {verdict(dele):>14}")
    if fired:
        print(f"  FAIL: {sched}: normal days marked anomalous: {', '.join(fired)}")
        bad = True
    for name, r in (("encrypt", enc), ("delete", dele)):
        if r["anomalous"] != "1" or r["exit"] != "3":
            print(f"  FAIL: {sched}: {name} not marked (exit {r['exit']})")
            bad = True
print("\nhighest score of each rule over the normal days (- : the rule never applied)")
print(f"{'schedule':<9} {'deleted':>8} {'rewritten':>9} {'encrypted':>9} {'growth':>7}")
for sched in ("forever", "weekly", "all-rules"):
    normal = [r for r in rows if r["schedule"] == sched and 1 <= int(r["day"]) <= days]
    def top(rule):
        v = [float(r[rule + "_score"]) for r in normal if r[rule + "_score"] != "-"]
        return f"{max(v):.3f}" if v else "-"
    print(f"{sched:<9} {top('deleted'):>8} {top('rewritten'):>9} {top('encrypted'):>9} {top('growth'):>7}")
sys.exit(1 if bad else 0)
EOF
log "Per-backup figures: $TSV"
