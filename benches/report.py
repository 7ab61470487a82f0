#!/usr/bin/env python3
"""Turn benches/run.sh's results.tsv (tool <TAB> key <TAB> value) into a Markdown report.

Usage: report.py RESULTS.tsv

Every figure comes from the file; a missing or failed measurement shows as "n/a" and
its target verdict as "n/a". MB means 10^6 bytes throughout; RSS is printed in MB too.
"""

import sys
from collections import defaultdict

TOOLS = ("strata", "restic", "borg")
MB = 1e6


def load(path):
    res = defaultdict(dict)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                res[parts[0]][parts[1]] = parts[2]
    return res


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


class R:
    def __init__(self, path):
        self.raw = load(path)
        self.meta = self.raw["meta"]
        self.limits = self.raw["limits"]
        self.tools = [t for t in TOOLS if t in self.meta.get("tools", "").split()]
        self.derive()

    def get(self, tool, key):
        return num(self.raw[tool].get(key))

    def derive(self):
        ds = num(self.meta.get("dataset_bytes"))
        for t in self.tools:
            d = self.raw[t]
            inc, noc = num(d.get("repo.incr_bytes")), num(d.get("repo.nochange_bytes"))
            if inc is not None and noc is not None:
                d["repo.growth_bytes"] = inc - noc
            wall = num(d.get("backup.full.wall_s"))
            if ds and wall:
                d["backup.full.mbs"] = ds / wall / MB
            rwall = num(d.get("restore.full.wall_s"))
            if ds and rwall:
                d["restore.full.mbs"] = ds / rwall / MB
            rss = [num(d.get(f"backup.{k}.rss_kb")) for k in ("full", "nochange", "incr")]
            if all(r is not None for r in rss):
                d["backup.peak_rss_kb"] = max(rss)
            r1, r2 = num(d.get("backup.full.rss_kb")), num(d.get("scale2.full.rss_kb"))
            if r1 and r2:
                d["scale2.rss_ratio"] = r2 / r1
        lim = [num(self.limits.get(k)) for k in ("disk_read_mbs", "blake3_mbs", "zstd3_mbs")]
        if all(v is not None for v in lim):
            self.limits["min_mbs"] = min(lim)


# value formatters: (raw number) -> text
def f_s(v): return f"{v:.2f} s"
def f_ms(v): return f"{v:.1f} ms"
def f_mb(v): return f"{v / MB:.1f} MB"
def f_rss(v): return f"{v * 1024 / MB:.0f} MB"
def f_mbs(v): return f"{v:.0f} MB/s"
def f_ops(v): return f"{v:.0f} ops/s"
def f_n(v): return f"{v:.0f}"
def f_x(v): return f"{v:.2f}x"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def both(*checks):
    """All known checks must pass; n/a if any is unknown."""
    if any(c is None for c in checks):
        return None
    return all(checks)


def le(a, b):
    return None if a is None or b is None else a <= b


def ge(a, b):
    return None if a is None or b is None else a >= b


def times(f, v):
    return None if v is None else f * v


def mn(*vs):
    vs = [v for v in vs if v is not None]
    return min(vs) if vs else None


# Rows: (key, label, formatter, target text, check(strata, restic, borg, report) -> bool/None)
BACKUP_ROWS = [
    ("backup.full.wall_s", "Full backup, wall", f_s, "<= 0.5x restic and <= 0.6x borg",
     lambda s, r, b, R: both(le(s, times(0.5, r)), le(s, times(0.6, b)))),
    ("backup.full.mbs", "Full backup throughput", f_mbs, ">= 70% of min(disk, blake3, zstd-3)",
     lambda s, r, b, R: ge(s, times(0.7, num(R.limits.get("min_mbs"))))),
    ("backup.nochange.wall_s", "No-change backup, wall", f_s, "<= 0.3x borg",
     lambda s, r, b, R: le(s, times(0.3, b))),
    ("backup.incr.wall_s", "Day-1 incremental, wall", f_s, "<= 0.5x restic",
     lambda s, r, b, R: le(s, times(0.5, r))),
    ("repo.full_bytes", "Repository size after full", f_mb, "<= borg",
     lambda s, r, b, R: le(s, b)),
    ("repo.growth_bytes", "Repository growth, day 1", f_mb, "<= restic",
     lambda s, r, b, R: le(s, r)),
    ("backup.full.rss_kb", "Peak RSS, full", f_rss, "", None),
    ("backup.nochange.rss_kb", "Peak RSS, no-change", f_rss, "", None),
    ("backup.incr.rss_kb", "Peak RSS, incremental", f_rss, "", None),
    ("backup.peak_rss_kb", "Peak RSS, any backup", f_rss, "<= 200 MB",
     lambda s, r, b, R: le(times(1024, s), 200 * MB)),
]

RESTORE_ROWS = [
    ("restore.full.wall_s", "Full restore of the full snapshot, wall", f_s, "<= 0.5x restic and <= 0.4x borg",
     lambda s, r, b, R: both(le(s, times(0.5, r)), le(s, times(0.4, b)))),
    ("restore.full.mbs", "Full restore throughput (dataset bytes / wall)", f_mbs, "", None),
    ("restore.full.rss_kb", "Full restore, peak RSS", f_rss, "", None),
    ("restore.full_fsync.wall_s", "Full restore with --fsync (strata only), wall", f_s, "", None),
    ("restore.same_as_strata", "Restored tree identical to strata's (diff -r)", None, "yes", None),
]

READ_ROWS = [
    ("cat.warm_ms", "One order JSON, warm (cat/dump/extract)", f_ms, "", None),
    ("cat.cold_ms", "One order JSON, cold cache", f_ms, "", None),
    ("mount.listable_ms", "Mount: latest snapshot root listable", f_ms, "<= 100 ms",
     lambda s, r, b, R: le(s, 100)),
    ("mount.seq_read_mbs", "Mount: cold sequential read of big file (median of pairs)", f_mbs, ">= 2x borg",
     lambda s, r, b, R: ge(s, times(2, b))),
    ("mount.seq_disk_mbs", "Raw disk read of the same file just before each (median)", f_mbs, "", None),
    ("mount.seq_vs_disk", "Mount cold read / raw disk read, median of pairs", f_x, ">= 0.8x",
     lambda s, r, b, R: ge(s, 0.8)),
    ("mount.seq_read2_mbs", "Mount: second sequential read (page cache kept)", f_mbs, ">= 2x restic",
     lambda s, r, b, R: ge(s, times(2, r))),
    ("mount.pread_ops", "Mount: random 4 KiB preads, cold", f_ops, ">= 2x restic",
     lambda s, r, b, R: ge(s, times(2, r))),
    ("mount.lslR_s", "Mount: ls -lR, cold", f_s, "<= 0.5x faster of restic/borg",
     lambda s, r, b, R: le(s, times(0.5, mn(r, b)))),
    ("mount.find_s", "Mount: find \\| wc -l, cold", f_s, "", None),
    ("mount.find_count", "Mount: entries found", f_n, "= live tree",
     lambda s, r, b, R: None if s is None or num(R.meta.get("live_find_count")) is None
     else s == num(R.meta.get("live_find_count"))),
    ("mount.diff_s", "Mount: diff -r against the live tree", f_s, "<= 0.5x faster of restic/borg",
     lambda s, r, b, R: le(s, times(0.5, mn(r, b)))),
    ("mount.diff_identical", "Mount: diff -r finds no difference", None, "yes",
     lambda s, r, b, R: None if "mount.diff_identical" not in R.raw["strata"]
     else R.raw["strata"]["mount.diff_identical"] == "yes"),
    ("mount.root", "Mount: directory measured (in the mount)", None, "", None),
    ("mount.rss_kb", "Mount process peak RSS (VmHWM)", f_rss, "<= 100 MB + cache (judge by hand)", None),
]

OPTIONAL_ROWS = [
    ("chain.backup_total_s", "CHAIN: all small incrementals, total wall", f_s, "", None),
    ("chain.repo_bytes", "CHAIN: repository size at the end", f_mb, "", None),
    ("chain.cat_first.warm_ms", "CHAIN: order JSON from the first snapshot, warm", f_ms, "<= 20 ms",
     lambda s, r, b, R: le(s, 20)),
    ("chain.cat_first.cold_ms", "CHAIN: order JSON from the first snapshot, cold", f_ms, "", None),
    ("chain.cat_latest.warm_ms", "CHAIN: same JSON from the latest snapshot, warm", f_ms, "", None),
    ("many.snapshots_added", "MANY: snapshots added", f_n, "", None),
    ("many.listable_ms", "MANY: mount root listable", f_ms, "<= 150 ms (500 snapshots)",
     lambda s, r, b, R: le(s, 150)),
    ("many.rss_kb", "MANY: mount peak RSS", f_rss, "", None),
    ("scale2.full.wall_s", "SCALE2: full backup at 2x data, wall", f_s, "", None),
    ("scale2.full.rss_kb", "SCALE2: peak RSS at 2x data", f_rss, "", None),
    ("scale2.rss_ratio", "SCALE2: peak RSS 2x data / 1x data", f_x, "<= 1.2x (memory does not grow with data)",
     lambda s, r, b, R: le(s, 1.2)),
]


def cell(rep, tool, key, fmt):
    raw = rep.raw[tool].get(key)
    if raw is None:
        return "—"
    if fmt is None:
        return str(raw)
    v = num(raw)
    return fmt(v) if v is not None else str(raw)


def table(rep, rows, only_present=False):
    tools = rep.tools
    head = ["Figure"] + tools
    if "strata" in tools:
        head += [f"strata/{t}" for t in tools if t != "strata"] + ["Target", "Verdict"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, fmt, target, check in rows:
        if only_present and not any(key in rep.raw[t] for t in tools):
            continue
        line = [label] + [cell(rep, t, key, fmt) for t in tools]
        if "strata" in tools:
            s = rep.get("strata", key)
            for t in tools:
                if t != "strata":
                    q = ratio(s, rep.get(t, key)) if fmt not in (None, f_n, f_x) else None
                    line.append(f"{q:.2f}" if q is not None else "")
            v = check(s, rep.get("restic", key), rep.get("borg", key), rep) if check else None
            line += [target, "" if not check else ("n/a" if v is None else ("PASS" if v else "FAIL"))]
        out.append("| " + " | ".join(line) + " |")
    return "\n".join(out)


def main():
    rep = R(sys.argv[1])
    m, lim = rep.meta, rep.limits
    ds = num(m.get("dataset_bytes"))
    print(f"# strata benchmark: scale {m.get('scale')}, {m.get('date')}\n")
    print(f"- Machine: {m.get('cpu')}, {m.get('mem_gb')} GB RAM, Linux {m.get('kernel')}; "
          f"cold caches: {m.get('cold_cache')}")
    names = {t: f"{t} {m.get(t, '?')}" for t in rep.tools}
    if "restic" in names and m.get("restic_repo_version"):
        names["restic"] += f" (repository format v{m['restic_repo_version']})"
    print("- Tools: " + ", ".join(names.values()))
    if ds:
        print(f"- Dataset: {ds / MB:.1f} MB in {m.get('dataset_files')} files (seed {m.get('seed')}); "
              f"after day 1: {num(m.get('dataset_bytes_day1') or 0) / MB:.1f} MB")
    if m.get("bench_runtime_s"):
        print(f"- Benchmark run time: {num(m['bench_runtime_s']) / 60:.1f} min; load average at start "
              f"{m.get('loadavg_start', '?')}, at end {m.get('loadavg_end', '?')} (other work on the "
              f"machine skews every figure)")
    print()
    if lim:
        print("## Machine limits\n")
        print("| Limit | Value |\n|---|---|")
        for key, label in (("disk_read_mbs", "Cold sequential disk read (dd, big file)"),
                           ("blake3_mbs", "BLAKE3, one core, in memory"),
                           ("zstd1_mbs", "zstd -1, one core (sqlite + logs)"),
                           ("zstd3_mbs", "zstd -3, one core (sqlite + logs)"),
                           ("zstd1_sqlite_mbs", "zstd -1, sqlite file"),
                           ("zstd1_logs_mbs", "zstd -1, logs"),
                           ("zstd3_sqlite_mbs", "zstd -3, sqlite file"),
                           ("zstd3_logs_mbs", "zstd -3, logs"),
                           ("min_mbs", "min(disk, BLAKE3, zstd -3)")):
            v = num(lim.get(key))
            print(f"| {label} | {f_mbs(v) if v is not None else 'n/a'} |")
        print()
    print("## Backup\n")
    print(table(rep, BACKUP_ROWS))
    if "strata" in rep.tools and num(lim.get("min_mbs")):
        s = rep.get("strata", "backup.full.mbs")
        if s is not None:
            print(f"\nstrata full backup throughput: {s:.0f} MB/s = {100 * s / num(lim['min_mbs']):.0f}% "
                  f"of min(disk, BLAKE3, zstd -3) = {num(lim['min_mbs']):.0f} MB/s")
    if any(k.startswith("restore.") for t in rep.tools for k in rep.raw[t]):
        print("\n## Restore\n")
        print(table(rep, RESTORE_ROWS, only_present=True))
    print("\n## Read side\n")
    print(f"Single file: `{m.get('cat_file', '?')}`. Live tree entries (find | wc -l): "
          f"{m.get('live_find_count', 'n/a')}.\n")
    print(table(rep, READ_ROWS))
    if any(k.startswith(("chain.", "many.", "scale2.")) for t in rep.tools for k in rep.raw[t]):
        print("\n## Optional scenarios\n")
        print(table(rep, OPTIONAL_ROWS, only_present=True))
    bad = [(t, k) for t in rep.tools for k, v in rep.raw[t].items()
           if k.endswith(".correct") and v != "yes"]
    if bad:
        print("\n**Wrong output** (bytes differ from the live file): " + ", ".join(f"{t} {k}" for t, k in bad))


if __name__ == "__main__":
    main()
