//! The `--json` objects of the commands (check and repair keep theirs in `cli/check.rs`), as
//! `Serialize` structs. Field names and shapes are a stable interface, documented in README.md.
//!
//! Keys are printed sorted, as they always have been (serde_json's map orders them, and scripts
//! compare outputs byte for byte): every object goes through [`line`] or [`pretty`], which sort
//! them. The structs therefore list fields in reading order and compose with `flatten`.

use serde::Serialize;

use crate::diff::{Change, DiffItem, DiffSummary, Method};
use crate::entry::{Entry, Kind};
use crate::forget::{Decision, RewriteStats};
use crate::history::{self, FindStats, Step};
use crate::prune::PruneStats;
use crate::restore::{Action, Conflict, Problem, ProblemKind, RestoreStats};
use crate::snapshot::Snapshot;

fn sorted<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("JSON of plain data")
}

/// One object on one line.
pub fn line<T: Serialize>(v: &T) -> String {
    sorted(v).to_string()
}

/// One object, indented: a command's result. For a repository in a bucket, the object also
/// says what the command asked of object storage so far (`requests`: GET, PUT, LIST, DELETE
/// counts and bytes each way).
pub fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(&with_requests(sorted(v))).expect("JSON of plain data")
}

/// A command's result on one line, with `requests` as [`pretty`] adds it.
pub fn result<T: Serialize>(v: &T) -> String {
    with_requests(sorted(v)).to_string()
}

/// `,"requests":{...}` for a result streamed by hand (as `diff --json` is), empty for a local
/// repository.
pub fn requests_field() -> String {
    requests().map_or_else(String::new, |r| format!(",\"requests\":{r}"))
}

fn with_requests(mut v: serde_json::Value) -> serde_json::Value {
    if let (serde_json::Value::Object(m), Some(r)) = (&mut v, requests()) {
        m.insert("requests".into(), r);
    }
    v
}

/// What this process asked of object storage, when it used a bucket.
fn requests() -> Option<serde_json::Value> {
    crate::repo::remote::active().then(|| sorted(&crate::repo::remote::requests()))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path: `path` is lossy UTF-8; `path_hex` carries the exact bytes when they are not valid
/// UTF-8.
#[derive(Serialize)]
pub struct PathJson {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
}

impl PathJson {
    pub fn new(path: &[u8]) -> PathJson {
        PathJson {
            path: lossy(path),
            path_hex: std::str::from_utf8(path)
                .is_err()
                .then(|| path.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}

/// A snapshot record (`snapshots`, `backup`, `forget`, `consolidate`).
#[derive(Serialize)]
pub struct SnapshotJson<'a> {
    id: String,
    short_id: String,
    time: String,
    time_ns: i64,
    kind: &'static str,
    parent: Option<String>,
    depth: u32,
    source: &'a str,
    host: &'a str,
    tags: &'a [String],
    files: u64,
    dirs: u64,
    size: u64,
    stats: SnapshotStatsJson,
}

#[derive(Serialize)]
struct SnapshotStatsJson {
    layer_entries: u64,
    deleted: u64,
    files_read: u64,
    read_bytes: u64,
    new_chunks: u64,
    new_bytes: u64,
    stored_bytes: u64,
    warnings: u64,
    elapsed_ms: u64,
}

impl<'a> SnapshotJson<'a> {
    pub fn new(s: &'a Snapshot) -> SnapshotJson<'a> {
        let t = &s.stats;
        SnapshotJson {
            id: s.id.to_string(),
            short_id: s.id.short(),
            time: s.time_rfc3339(),
            time_ns: s.time_ns,
            kind: s.kind.name(),
            parent: s.parent.map(|p| p.to_string()),
            depth: s.depth,
            source: &s.source,
            host: &s.host,
            tags: &s.tags,
            files: t.files,
            dirs: t.dirs,
            size: t.total_bytes,
            stats: SnapshotStatsJson {
                layer_entries: t.layer_entries,
                deleted: t.deleted,
                files_read: t.files_read,
                read_bytes: t.read_bytes,
                new_chunks: t.new_chunks,
                new_bytes: t.new_bytes,
                stored_bytes: t.stored_bytes,
                warnings: t.warnings,
                elapsed_ms: t.elapsed_ms,
            },
        }
    }
}

/// `backup --json`: the new snapshot, the warnings of its backup, the SQLite databases it
/// stored as consistent copies, and the anomaly check's verdict (`null` when turned off).
#[derive(Serialize)]
pub struct BackupJson<'a> {
    #[serde(flatten)]
    pub snapshot: SnapshotJson<'a>,
    pub warnings: &'a [String],
    pub sqlite_copies: Vec<PathJson>,
    pub anomaly: Option<&'a crate::backup::anomaly::Assessment>,
}

/// One `ls --json` line.
#[derive(Serialize)]
pub struct LsEntryJson {
    #[serde(flatten)]
    path: PathJson,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
    mtime_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunks: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rdev: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nlink: Option<u32>,
}

impl LsEntryJson {
    pub fn new(path: &[u8], e: &Entry) -> LsEntryJson {
        let file = e.kind == Kind::File;
        LsEntryJson {
            path: PathJson::new(path),
            kind: e.kind.name(),
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: crate::time::rfc3339(e.mtime_ns),
            mtime_ns: e.mtime_ns,
            target: (e.kind == Kind::Symlink).then(|| lossy(&e.target)),
            stored_size: file.then(|| e.stored_size()),
            chunks: file.then_some(e.chunks.len()),
            rdev: matches!(e.kind, Kind::CharDev | Kind::BlockDev).then_some(e.rdev),
            nlink: (e.nlink > 1).then_some(e.nlink),
        }
    }
}

/// The fields of an entry that history and diff output show.
#[derive(Serialize)]
pub struct EntryJson {
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    uid: u32,
    gid: u32,
    mtime: String,
    mtime_ns: i64,
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

impl EntryJson {
    pub fn new(e: &Entry) -> EntryJson {
        EntryJson {
            kind: e.kind.name(),
            size: e.size,
            mode: format!("{:04o}", e.mode),
            uid: e.uid,
            gid: e.gid,
            mtime: crate::time::rfc3339(e.mtime_ns),
            mtime_ns: e.mtime_ns,
            hash: history::content_hash(e),
            target: (e.kind == Kind::Symlink).then(|| lossy(&e.target)),
        }
    }
}

/// A snapshot named in `diff`, `find` and `log` output.
#[derive(Serialize)]
pub struct SnapRefJson {
    id: String,
    short_id: String,
    time: String,
    kind: &'static str,
    source: String,
}

impl SnapRefJson {
    pub fn new(s: &Snapshot) -> SnapRefJson {
        SnapRefJson {
            id: s.id.to_string(),
            short_id: s.id.short(),
            time: s.time_rfc3339(),
            kind: s.kind.name(),
            source: s.source.clone(),
        }
    }
}

/// The new side of a diff: a snapshot, or a directory on disk.
#[derive(Serialize)]
#[serde(untagged)]
pub enum DiffSideJson {
    Snapshot(SnapRefJson),
    Live { live: String },
}

/// The opening fields of `diff --json`; `changes` and `summary` follow, streamed.
#[derive(Serialize)]
pub struct DiffHeadJson {
    pub old: SnapRefJson,
    pub new: DiffSideJson,
    pub path: Option<String>,
}

/// One change of `diff --json`.
#[derive(Serialize)]
pub struct DiffItemJson {
    #[serde(flatten)]
    path: PathJson,
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_only: Option<bool>,
    old: Option<EntryJson>,
    new: Option<EntryJson>,
}

impl DiffItemJson {
    pub fn new(item: &DiffItem) -> DiffItemJson {
        let modified = item.change == Change::Modified;
        DiffItemJson {
            path: PathJson::new(&item.path),
            change: item.change.name(),
            fields: modified.then(|| item.fields.iter().map(|f| f.name()).collect()),
            metadata_only: modified.then(|| item.metadata_only()),
            old: item.old.as_ref().map(EntryJson::new),
            new: item.new.as_ref().map(EntryJson::new),
        }
    }
}

/// The `summary` of `diff --json`.
#[derive(Serialize)]
pub struct DiffSummaryJson {
    added: u64,
    removed: u64,
    modified: u64,
    content_modified: u64,
    metadata_modified: u64,
    type_changed: u64,
    total: u64,
    paths_examined: u64,
    files_read: u64,
    method: &'static str,
    layers: Vec<String>,
}

impl DiffSummaryJson {
    pub fn new(s: &DiffSummary) -> DiffSummaryJson {
        let (method, layers) = match &s.method {
            Method::Layers(l) => ("layers", l.iter().map(|i| i.to_string()).collect()),
            Method::FullWalk => ("full_walk", Vec::new()),
            Method::Live => ("live", Vec::new()),
        };
        DiffSummaryJson {
            added: s.added,
            removed: s.removed,
            modified: s.content_modified + s.metadata_modified,
            content_modified: s.content_modified,
            metadata_modified: s.metadata_modified,
            type_changed: s.type_changed,
            total: s.total(),
            paths_examined: s.paths_examined,
            files_read: s.files_read,
            method,
            layers,
        }
    }
}

/// `find --json`.
#[derive(Serialize)]
pub struct FindJson<'a> {
    pub pattern: &'a str,
    pub matches: Vec<FindMatchJson>,
    pub stats: FindStatsJson,
}

/// One path `find` matched, and the snapshots that hold it.
#[derive(Serialize)]
pub struct FindMatchJson {
    #[serde(flatten)]
    path: PathJson,
    snapshots: Vec<FindHitJson>,
}

#[derive(Serialize)]
struct FindHitJson {
    #[serde(flatten)]
    snapshot: SnapRefJson,
    #[serde(flatten)]
    entry: EntryJson,
}

impl FindMatchJson {
    pub fn new(path: &[u8], hits: &[(Snapshot, Entry)]) -> FindMatchJson {
        FindMatchJson {
            path: PathJson::new(path),
            snapshots: hits
                .iter()
                .map(|(s, e)| FindHitJson {
                    snapshot: SnapRefJson::new(s),
                    entry: EntryJson::new(e),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct FindStatsJson {
    snapshots: u64,
    layers_scanned: u64,
    entries_scanned: u64,
}

impl FindStatsJson {
    pub fn new(s: &FindStats) -> FindStatsJson {
        FindStatsJson {
            snapshots: s.snapshots,
            layers_scanned: s.layers_scanned,
            entries_scanned: s.entries_scanned,
        }
    }
}

/// `log --json`.
#[derive(Serialize)]
pub struct LogJson<'a> {
    #[serde(flatten)]
    pub path: PathJson,
    pub sources: Vec<LogSourceJson<'a>>,
}

/// The history of the path in one source.
#[derive(Serialize)]
pub struct LogSourceJson<'a> {
    source: &'a str,
    versions: usize,
    steps: Vec<StepJson>,
}

impl<'a> LogSourceJson<'a> {
    pub fn new(source: &'a str, steps: &[Step]) -> LogSourceJson<'a> {
        LogSourceJson {
            source,
            versions: steps.iter().filter(|s| s.entry.is_some()).count(),
            steps: steps.iter().map(StepJson::new).collect(),
        }
    }
}

#[derive(Serialize)]
struct StepJson {
    event: &'static str,
    snapshot: String,
    short_id: String,
    time: String,
    kind: &'static str,
    last_snapshot: String,
    snapshots: u64,
    layer: Option<String>,
    #[serde(flatten)]
    entry: Option<EntryJson>,
}

impl StepJson {
    fn new(s: &Step) -> StepJson {
        StepJson {
            event: s.event.name(),
            snapshot: s.first.id.to_string(),
            short_id: s.first.id.short(),
            time: s.first.time_rfc3339(),
            kind: s.first.kind.name(),
            last_snapshot: s.last.to_string(),
            snapshots: s.snapshots,
            layer: s.layer.map(|l| l.to_string()),
            entry: s.entry.as_ref().map(EntryJson::new),
        }
    }
}

/// What `forget` and `consolidate` rewrote.
#[derive(Serialize)]
pub struct RewriteJson {
    forgotten: u64,
    merged: u64,
    materialised: u64,
    records_rewritten: u64,
    entries_copied: u64,
    whiteouts_dropped: u64,
    entries_deleted: u64,
    elapsed_ms: u64,
}

impl RewriteJson {
    pub fn new(s: &RewriteStats) -> RewriteJson {
        RewriteJson {
            forgotten: s.forgotten,
            merged: s.merged,
            materialised: s.materialised,
            records_rewritten: s.records_rewritten,
            entries_copied: s.entries_copied,
            whiteouts_dropped: s.whiteouts_dropped,
            entries_deleted: s.entries_deleted,
            elapsed_ms: s.elapsed_ms,
        }
    }
}

/// `prune --json`, and the `prune` of `forget --prune --json`.
#[derive(Serialize)]
pub struct PruneJson {
    dry_run: bool,
    packs_total: u64,
    packs_deleted: u64,
    packs_rewritten: u64,
    packs_written: u64,
    packs_skipped: u64,
    records_removed: u64,
    records_copied: u64,
    live_chunks: u64,
    bytes_before: u64,
    bytes_after: u64,
    reclaimed_bytes: u64,
    garbage_bytes_kept: u64,
    orphan_entries: u64,
    tmp_packs_removed: u64,
    elapsed_ms: u64,
}

impl PruneJson {
    pub fn new(s: &PruneStats, dry_run: bool) -> PruneJson {
        PruneJson {
            dry_run,
            packs_total: s.packs_total,
            packs_deleted: s.packs_deleted,
            packs_rewritten: s.packs_rewritten,
            packs_written: s.packs_written,
            packs_skipped: s.packs_skipped,
            records_removed: s.records_removed,
            records_copied: s.records_copied,
            live_chunks: s.live_chunks,
            bytes_before: s.bytes_before,
            bytes_after: s.bytes_after,
            reclaimed_bytes: s.reclaimed_bytes(),
            garbage_bytes_kept: s.garbage_bytes_kept,
            orphan_entries: s.orphan_entries,
            tmp_packs_removed: s.tmp_packs_removed,
            elapsed_ms: s.elapsed_ms,
        }
    }
}

/// `forget --json`.
#[derive(Serialize)]
pub struct ForgetJson<'a> {
    pub dry_run: bool,
    pub decisions: Vec<DecisionJson<'a>>,
    pub stats: Option<RewriteJson>,
    pub prune: Option<PruneJson>,
}

/// What `forget` decided for one snapshot, and why.
#[derive(Serialize)]
pub struct DecisionJson<'a> {
    snapshot: SnapshotJson<'a>,
    action: &'static str,
    reasons: &'a [String],
}

impl<'a> DecisionJson<'a> {
    pub fn new(d: &'a Decision) -> DecisionJson<'a> {
        DecisionJson {
            snapshot: SnapshotJson::new(&d.snapshot),
            action: if d.keep { "keep" } else { "remove" },
            reasons: &d.reasons,
        }
    }
}

/// `consolidate --json`.
#[derive(Serialize)]
pub struct ConsolidateJson<'a> {
    pub snapshot: SnapshotJson<'a>,
    pub stats: RewriteJson,
}

/// `restore --json`.
#[derive(Serialize)]
pub struct RestoreJson<'a> {
    snapshot: &'a str,
    target: String,
    dry_run: bool,
    files: u64,
    dirs: u64,
    symlinks: u64,
    hardlinks: u64,
    specials: u64,
    replaced: u64,
    unchanged: u64,
    deleted: u64,
    stale_temp_removed: u64,
    written_bytes: u64,
    chunks_read: u64,
    verified_files: u64,
    owners_skipped: u64,
    specials_skipped: u64,
    elapsed_ms: u64,
    conflicts: Vec<ConflictJson>,
    problems: Vec<ProblemJson<'a>>,
    actions: Vec<ActionJson>,
}

#[derive(Serialize)]
struct ConflictJson {
    #[serde(flatten)]
    path: PathJson,
    existing: &'static str,
    snapshot: &'static str,
    would: &'static str,
}

#[derive(Serialize)]
struct ProblemJson<'a> {
    #[serde(flatten)]
    path: PathJson,
    kind: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct ActionJson {
    #[serde(flatten)]
    path: PathJson,
    action: &'static str,
}

impl<'a> RestoreJson<'a> {
    pub fn new(
        snapshot: &'a str,
        target: &std::path::Path,
        dry_run: bool,
        s: &'a RestoreStats,
    ) -> RestoreJson<'a> {
        let conflict = |c: &Conflict| ConflictJson {
            path: PathJson::new(&c.path),
            existing: c.existing,
            snapshot: c.snapshot,
            would: c.would,
        };
        let problem = |p: &'a Problem| ProblemJson {
            path: PathJson::new(&p.path),
            kind: match p.kind {
                ProblemKind::Unsafe => "unsafe",
                ProblemKind::Error => "error",
            },
            message: &p.message,
        };
        let action = |a: &Action| ActionJson {
            path: PathJson::new(&a.path),
            action: a.action,
        };
        RestoreJson {
            snapshot,
            target: target.to_string_lossy().into_owned(),
            dry_run,
            files: s.files,
            dirs: s.dirs,
            symlinks: s.symlinks,
            hardlinks: s.hardlinks,
            specials: s.specials,
            replaced: s.replaced,
            unchanged: s.unchanged,
            deleted: s.deleted,
            stale_temp_removed: s.stale_temp_removed,
            written_bytes: s.written_bytes,
            chunks_read: s.chunks_read,
            verified_files: s.verified_files,
            owners_skipped: s.owners_skipped,
            specials_skipped: s.specials_skipped,
            elapsed_ms: s.elapsed_ms,
            conflicts: s.conflicts.iter().map(conflict).collect(),
            problems: s.problems.iter().map(problem).collect(),
            actions: s.actions.iter().map(action).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Field;

    fn symlink() -> Entry {
        Entry {
            kind: Kind::Symlink,
            mode: 0o777,
            uid: 1,
            gid: 2,
            size: 3,
            target: b"abc".to_vec(),
            ..Entry::whiteout()
        }
    }

    #[test]
    fn keys_are_sorted_and_flattened_paths_keep_their_hex() {
        let e = symlink();
        let ls = line(&LsEntryJson::new(b"d/\xff", &e));
        assert_eq!(
            ls,
            r#"{"gid":2,"mode":"0777","mtime":"1970-01-01T00:00:00Z","mtime_ns":0,"path":"d/�","path_hex":"642fff","size":3,"target":"abc","type":"symlink","uid":1}"#
        );
        let item = DiffItem {
            path: b"a".to_vec(),
            change: Change::Modified,
            old: Some(e.clone()),
            new: None,
            fields: vec![Field::Target],
        };
        let d = line(&DiffItemJson::new(&item));
        assert!(
            d.starts_with(r#"{"change":"modified","fields":["target"],"metadata_only":false,"new":null,"old":{"gid":2,"hash":null,"#),
            "{d}"
        );
        assert!(d.ends_with(r#""uid":1},"path":"a"}"#), "{d}");
    }
}
