//! Human and JSON renderings of command results. JSON field names are a stable interface,
//! documented in README.md.

use std::io::Write;

use super::json::{self, BackupJson, LsEntryJson, PathJson, SnapshotJson};
use crate::backup::BackupOutcome;
use crate::entry::{Entry, Kind};
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::Result;

/// How `ls` prints entries.
pub struct LsFormat {
    /// `-l`
    pub long: bool,
    /// `--json`
    pub json: bool,
}

/// JSON for one path: `path` is lossy UTF-8; `path_hex` carries the exact bytes when they are not
/// valid UTF-8. For objects still built by hand (`check`, `repair`).
pub(super) fn path_json(path: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(PathJson::new(path)) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("a path is an object"),
    }
}

/// Binary-prefixed human size, e.g. `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `strata snapshots`
pub fn snapshots(repo: &Repo, source: Option<&str>, as_json: bool) -> Result<()> {
    let list: Vec<Snapshot> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| source.is_none_or(|src| s.source == src))
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = if as_json {
        let v: Vec<_> = list.iter().map(SnapshotJson::new).collect();
        writeln!(out, "{}", json::pretty(&v))
    } else {
        (|| {
            writeln!(
                out,
                "{:<8}  {:<20}  {:<12}  {:<8}  {:>8}  {:>10}  {:<}",
                "ID", "TIME", "KIND", "PARENT", "FILES", "SIZE", "SOURCE [TAGS]"
            )?;
            for s in &list {
                let tags = if s.tags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", s.tags.join(","))
                };
                writeln!(
                    out,
                    "{:<8}  {:<20}  {:<12}  {:<8}  {:>8}  {:>10}  {}{}",
                    s.id.short(),
                    s.time_rfc3339(),
                    s.kind.name(),
                    s.parent.map(|p| p.short()).unwrap_or_else(|| "-".into()),
                    s.stats.files,
                    human_size(s.stats.total_bytes),
                    s.source,
                    tags
                )?;
            }
            Ok(())
        })()
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(crate::Error::Io {
            context: "Writing",
            path: "standard output".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn mode_string(e: &Entry) -> String {
    let mut s = String::with_capacity(10);
    s.push(e.kind.letter());
    let m = e.mode;
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 => m & 0o4000 != 0,
            5 => m & 0o2000 != 0,
            8 => m & 0o1000 != 0,
            _ => false,
        };
        let set = m & bit != 0;
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

/// One `ls` line (or JSON object).
pub fn ls_entry(out: &mut dyn Write, path: &[u8], e: &Entry, f: &LsFormat) -> std::io::Result<()> {
    if f.json {
        return writeln!(out, "{}", json::line(&LsEntryJson::new(path, e)));
    }
    if f.long {
        write!(
            out,
            "{} {:>5} {:>5} {:>12} {} ",
            mode_string(e),
            e.uid,
            e.gid,
            e.size,
            crate::time::rfc3339(e.mtime_ns)
        )?;
    }
    out.write_all(path)?;
    if f.long && e.kind == Kind::Symlink {
        out.write_all(b" -> ")?;
        out.write_all(&e.target)?;
    }
    out.write_all(b"\n")
}

/// `strata backup` summary.
pub fn backup_result(out: &BackupOutcome, as_json: bool) {
    let s = &out.snapshot;
    if as_json {
        let v = BackupJson {
            snapshot: SnapshotJson::new(s),
            warnings: &out.warnings,
            sqlite_copies: out.sqlite_copies.iter().map(|p| PathJson::new(p)).collect(),
        };
        outln!("{}", json::pretty(&v));
        return;
    }
    outln!(
        "snapshot {} saved ({}, parent {}, source {})",
        s.id.short(),
        s.kind.name(),
        s.parent.map(|p| p.short()).unwrap_or_else(|| "-".into()),
        s.source
    );
    outln!(
        "files: {} in view, {} read ({}), layer entries: {} ({} deleted)",
        s.stats.files,
        s.stats.files_read,
        human_size(s.stats.read_bytes),
        s.stats.layer_entries,
        s.stats.deleted
    );
    outln!(
        "new data: {} chunks, {} → {} stored, in {:.2} s",
        s.stats.new_chunks,
        human_size(s.stats.new_bytes),
        human_size(s.stats.stored_bytes),
        s.stats.elapsed_ms as f64 / 1000.0
    );
    if !out.sqlite_copies.is_empty() {
        outln!(
            "sqlite: {} database(s) stored as consistent copies (SQLite backup API; their -wal, -shm and -journal files not stored):",
            out.sqlite_copies.len()
        );
        for p in &out.sqlite_copies {
            outln!("  {}", String::from_utf8_lossy(p));
        }
    }
    if !out.warnings.is_empty() {
        outln!("{} warning(s); see messages above", out.warnings.len());
    }
}
