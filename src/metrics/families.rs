//! Every metric family strata writes, with its type, help text and labels: one table for the
//! metrics file of the commands, one for the mount's `.strata/stats`. The README's "Monitoring"
//! tables document the same names (a test keeps them in step), and the names follow Prometheus'
//! conventions: the `strata_` prefix, base units (`_seconds`, `_bytes`), `_total` on counters
//! and only there.

use super::text::Kind;

/// One family's definition.
#[derive(Clone, Copy, Debug)]
pub struct Def {
    /// Full name (a counter's ends in `_total`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The labels its series carry (documentation; `command` series of backup add `source`).
    pub labels: &'static [&'static str],
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// How the last run of a command went; labels `command`, plus `source` for backup.
pub const LAST_RUN_TIMESTAMP: Def = def(
    "strata_last_run_timestamp_seconds",
    Gauge,
    &["command", "source"],
    "When the last run of the command ended, successful or not (Unix time)",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const LAST_SUCCESS_TIMESTAMP: Def = def(
    "strata_last_success_timestamp_seconds",
    Gauge,
    &["command", "source"],
    "When the last successful run of the command ended (Unix time)",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const LAST_FAILURE_TIMESTAMP: Def = def(
    "strata_last_failure_timestamp_seconds",
    Gauge,
    &["command", "source"],
    "When the last failed run of the command ended (Unix time)",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const LAST_RUN_SUCCESS: Def = def(
    "strata_last_run_success",
    Gauge,
    &["command", "source"],
    "1 if the last run of the command succeeded, 0 if it failed",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const LAST_RUN_DURATION: Def = def(
    "strata_last_run_duration_seconds",
    Gauge,
    &["command", "source"],
    "How long the last run of the command took",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const LAST_RUN_WARNINGS: Def = def(
    "strata_last_run_warnings",
    Gauge,
    &["command", "source"],
    "Warnings of the last run: paths skipped and an anomalous layer (backup), leftovers (check), conflicts and refused entries (restore)",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const LAST_RUN_ERRORS: Def = def(
    "strata_last_run_errors",
    Gauge,
    &["command", "source"],
    "Errors of the last run: damage problems (check), paths that failed (restore), 1 for a run that failed outright",
);
/// See [`LAST_RUN_TIMESTAMP`].
pub const RUNS: Def = def(
    "strata_runs_total",
    Counter,
    &["command", "source", "result"],
    "Runs of the command, by result (success or failure)",
);

/// What backups of one source read and stored; label `source`.
pub const BACKUP_FILES_READ: Def = def(
    "strata_backup_files_read_total",
    Counter,
    &["source"],
    "Files backup read (changed or new; unchanged files are not read)",
);
/// See [`BACKUP_FILES_READ`].
pub const BACKUP_READ_BYTES: Def = def(
    "strata_backup_read_bytes_total",
    Counter,
    &["source"],
    "Bytes backup read from the source",
);
/// See [`BACKUP_FILES_READ`].
pub const BACKUP_NEW_CHUNKS: Def = def(
    "strata_backup_new_chunks_total",
    Counter,
    &["source"],
    "Chunks backup stored that the repository did not hold yet",
);
/// See [`BACKUP_FILES_READ`].
pub const BACKUP_NEW_BYTES: Def = def(
    "strata_backup_new_bytes_total",
    Counter,
    &["source"],
    "Bytes of new chunks before compression",
);
/// See [`BACKUP_FILES_READ`].
pub const BACKUP_STORED_BYTES: Def = def(
    "strata_backup_stored_bytes_total",
    Counter,
    &["source"],
    "Bytes of new chunks as stored (compressed)",
);
/// See [`BACKUP_FILES_READ`].
pub const BACKUP_SNAPSHOT_FILES: Def = def(
    "strata_backup_snapshot_files",
    Gauge,
    &["source"],
    "Regular files in the view of the last snapshot backup made",
);
/// See [`BACKUP_FILES_READ`].
pub const BACKUP_SNAPSHOT_SIZE: Def = def(
    "strata_backup_snapshot_size_bytes",
    Gauge,
    &["source"],
    "Bytes of the regular files in the view of the last snapshot backup made",
);

/// The anomaly check of the last backup of a source (see `crate::backup::anomaly`).
pub const BACKUP_ANOMALY_SCORE: Def = def(
    "strata_backup_anomaly_score",
    Gauge,
    &["source"],
    "Anomaly score of the last backup's layer: 1 or more is anomalous (0 when not judged: the source's first snapshot)",
);
/// See [`BACKUP_ANOMALY_SCORE`].
pub const BACKUP_ANOMALOUS: Def = def(
    "strata_backup_anomalous",
    Gauge,
    &["source"],
    "1 if the last backup's snapshot was marked anomalous (tag anomaly), else 0",
);
/// See [`BACKUP_ANOMALY_SCORE`].
pub const BACKUP_ANOMALIES: Def = def(
    "strata_backup_anomalies_total",
    Counter,
    &["source"],
    "Backups whose snapshot was marked anomalous",
);
/// See [`BACKUP_ANOMALY_SCORE`].
pub const BACKUP_REWRITTEN_RATIO: Def = def(
    "strata_backup_rewritten_files_ratio",
    Gauge,
    &["source"],
    "Share of the files of the snapshot the last backup was judged against that it rewrote with new content",
);
/// See [`BACKUP_ANOMALY_SCORE`].
pub const BACKUP_DELETED_RATIO: Def = def(
    "strata_backup_deleted_files_ratio",
    Gauge,
    &["source"],
    "Share of the files of the snapshot the last backup was judged against that were gone",
);
/// See [`BACKUP_ANOMALY_SCORE`].
pub const BACKUP_COMPRESSION_RATIO: Def = def(
    "strata_backup_new_data_compression_ratio",
    Gauge,
    &["source"],
    "Stored over plain bytes of the last backup's new data (near 1: it did not compress)",
);
/// What the last check found.
pub const CHECK_DAMAGED_FILES: Def = def(
    "strata_check_damaged_files",
    Gauge,
    &[],
    "Damaged files the last check found (one per snapshot view showing the file)",
);
/// See [`CHECK_DAMAGED_FILES`].
pub const CHECK_DAMAGED_SNAPSHOTS: Def = def(
    "strata_check_damaged_snapshots",
    Gauge,
    &[],
    "Snapshots with damage in their view, found by the last check",
);
/// See [`CHECK_DAMAGED_FILES`].
pub const CHECK_BAD_CHUNKS: Def = def(
    "strata_check_bad_chunks",
    Gauge,
    &[],
    "Chunks and metadata records the last check could not read",
);
/// See [`CHECK_DAMAGED_FILES`].
pub const CHECK_PROBLEMS: Def = def(
    "strata_check_problems",
    Gauge,
    &["severity"],
    "Problems the last check found, by severity (damage or leftover)",
);
/// See [`CHECK_DAMAGED_FILES`].
pub const CHECK_VERIFIED_BYTES: Def = def(
    "strata_check_verified_bytes_total",
    Counter,
    &[],
    "Bytes of records check read and verified",
);

/// Forget, prune and restore.
pub const FORGET_REMOVED: Def = def(
    "strata_forget_removed_snapshots_total",
    Counter,
    &[],
    "Snapshots forget removed",
);
/// See [`FORGET_REMOVED`].
pub const PRUNE_DELETED_PACKS: Def = def(
    "strata_prune_deleted_packs_total",
    Counter,
    &[],
    "Pack files prune deleted",
);
/// See [`FORGET_REMOVED`].
pub const PRUNE_REWRITTEN_PACKS: Def = def(
    "strata_prune_rewritten_packs_total",
    Counter,
    &[],
    "Pack files prune rewrote",
);
/// See [`FORGET_REMOVED`].
pub const PRUNE_RECLAIMED_BYTES: Def = def(
    "strata_prune_reclaimed_bytes_total",
    Counter,
    &[],
    "Bytes of pack files prune freed",
);
/// See [`FORGET_REMOVED`].
pub const RESTORE_FILES: Def = def(
    "strata_restore_files_total",
    Counter,
    &[],
    "Files restore wrote",
);
/// See [`FORGET_REMOVED`].
pub const RESTORE_WRITTEN_BYTES: Def = def(
    "strata_restore_written_bytes_total",
    Counter,
    &[],
    "Bytes restore wrote",
);

/// The repository as the last command saw it; label `repository` (its path).
pub const REPOSITORY_SNAPSHOTS: Def = def(
    "strata_repository_snapshots",
    Gauge,
    &["repository"],
    "Snapshots in the repository",
);
/// See [`REPOSITORY_SNAPSHOTS`].
pub const REPOSITORY_PACKS: Def = def(
    "strata_repository_packs",
    Gauge,
    &["repository"],
    "Pack files in the repository",
);
/// See [`REPOSITORY_SNAPSHOTS`].
pub const REPOSITORY_SIZE: Def = def(
    "strata_repository_size_bytes",
    Gauge,
    &["repository"],
    "Bytes of the repository's pack files",
);
/// See [`REPOSITORY_SNAPSHOTS`].
pub const SOURCE_SNAPSHOTS: Def = def(
    "strata_source_snapshots",
    Gauge,
    &["repository", "source"],
    "Snapshots of each source",
);
/// See [`REPOSITORY_SNAPSHOTS`].
pub const SOURCE_NEWEST: Def = def(
    "strata_source_newest_snapshot_timestamp_seconds",
    Gauge,
    &["repository", "source"],
    "Time of the newest snapshot of each source (Unix time)",
);

/// Every family of the metrics file, in the order written.
pub const FILE: &[Def] = &[
    LAST_RUN_TIMESTAMP,
    LAST_SUCCESS_TIMESTAMP,
    LAST_FAILURE_TIMESTAMP,
    LAST_RUN_SUCCESS,
    LAST_RUN_DURATION,
    LAST_RUN_WARNINGS,
    LAST_RUN_ERRORS,
    RUNS,
    BACKUP_FILES_READ,
    BACKUP_READ_BYTES,
    BACKUP_NEW_CHUNKS,
    BACKUP_NEW_BYTES,
    BACKUP_STORED_BYTES,
    BACKUP_SNAPSHOT_FILES,
    BACKUP_SNAPSHOT_SIZE,
    BACKUP_ANOMALY_SCORE,
    BACKUP_ANOMALOUS,
    BACKUP_ANOMALIES,
    BACKUP_REWRITTEN_RATIO,
    BACKUP_DELETED_RATIO,
    BACKUP_COMPRESSION_RATIO,
    CHECK_DAMAGED_FILES,
    CHECK_DAMAGED_SNAPSHOTS,
    CHECK_BAD_CHUNKS,
    CHECK_PROBLEMS,
    CHECK_VERIFIED_BYTES,
    FORGET_REMOVED,
    PRUNE_DELETED_PACKS,
    PRUNE_REWRITTEN_PACKS,
    PRUNE_RECLAIMED_BYTES,
    RESTORE_FILES,
    RESTORE_WRITTEN_BYTES,
    REPOSITORY_SNAPSHOTS,
    REPOSITORY_PACKS,
    REPOSITORY_SIZE,
    SOURCE_SNAPSHOTS,
    SOURCE_NEWEST,
];

/// The mount's own counters, in `.strata/stats`.
pub const MOUNT_REQUESTS: Def = def(
    "strata_mount_requests_total",
    Counter,
    &["op"],
    "FUSE requests received, by operation",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_LATENCY: Def = def(
    "strata_mount_request_duration_seconds",
    Histogram,
    &["op"],
    "Time from receiving a FUSE request to replying, by operation (operations requested at least once)",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_READ_BYTES: Def = def(
    "strata_mount_read_bytes_total",
    Counter,
    &[],
    "Bytes returned by read requests",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_EIO: Def = def(
    "strata_mount_eio_total",
    Counter,
    &[],
    "Requests answered EIO (corrupt, missing or unreadable data)",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_CACHE_HITS: Def = def(
    "strata_mount_chunk_cache_hits_total",
    Counter,
    &[],
    "Chunks found in the chunk cache",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_CACHE_MISSES: Def = def(
    "strata_mount_chunk_cache_misses_total",
    Counter,
    &[],
    "Chunks not in the chunk cache (read from the pack files)",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_CHUNK_READS: Def = def(
    "strata_mount_chunk_reads_total",
    Counter,
    &[],
    "Chunks read from the pack files, decompressed and verified",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_CHUNK_READ_BYTES: Def = def(
    "strata_mount_chunk_read_bytes_total",
    Counter,
    &[],
    "Bytes of the chunks read from the pack files (decompressed)",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_CACHE_BYTES: Def = def(
    "strata_mount_chunk_cache_bytes",
    Gauge,
    &[],
    "Memory the chunk cache holds",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_CACHE_LIMIT: Def = def(
    "strata_mount_chunk_cache_limit_bytes",
    Gauge,
    &[],
    "The chunk cache's bound (--cache-size)",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_PUSHED_FILES: Def = def(
    "strata_mount_pushed_files_total",
    Counter,
    &[],
    "Files directory readahead handed to the kernel's page cache",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_PUSHED_BYTES: Def = def(
    "strata_mount_pushed_bytes_total",
    Counter,
    &[],
    "Bytes directory readahead handed to the kernel's page cache",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_INODES: Def = def(
    "strata_mount_inodes",
    Gauge,
    &[],
    "Inodes the mount has handed out",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_SNAPSHOTS: Def = def(
    "strata_mount_snapshots",
    Gauge,
    &[],
    "Snapshots the mount shows",
);
/// See [`MOUNT_REQUESTS`].
pub const MOUNT_START_TIME: Def = def(
    "strata_mount_start_time_seconds",
    Gauge,
    &[],
    "When the mount started (Unix time)",
);

/// Every family of the mount's `.strata/stats`, in the order written.
pub const MOUNT: &[Def] = &[
    MOUNT_REQUESTS,
    MOUNT_LATENCY,
    MOUNT_READ_BYTES,
    MOUNT_EIO,
    MOUNT_CACHE_HITS,
    MOUNT_CACHE_MISSES,
    MOUNT_CHUNK_READS,
    MOUNT_CHUNK_READ_BYTES,
    MOUNT_CACHE_BYTES,
    MOUNT_CACHE_LIMIT,
    MOUNT_PUSHED_FILES,
    MOUNT_PUSHED_BYTES,
    MOUNT_INODES,
    MOUNT_SNAPSHOTS,
    MOUNT_START_TIME,
];

/// The definition of a metrics-file family.
pub fn file_def(name: &str) -> Option<&'static Def> {
    FILE.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let all: Vec<&Def> = FILE.iter().chain(MOUNT).collect();
        for (i, d) in all.iter().enumerate() {
            assert!(d.name.starts_with("strata_"), "{}", d.name);
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                d.name
            );
            for unit in [
                "_ms", "_millis", "_kb", "_mb", "_minutes", "_hours", "_days",
            ] {
                assert!(!d.name.contains(unit), "{}: base units only", d.name);
            }
            assert!(
                !d.help.is_empty() && !d.help.ends_with('.'),
                "{}: help",
                d.name
            );
            assert!(
                all[..i].iter().all(|o| o.name != d.name),
                "{} twice",
                d.name
            );
        }
    }

    /// The README documents every family, in its "Monitoring" tables.
    #[test]
    fn readme_documents_every_family() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Monitoring")
            .nth(1)
            .expect("README has a Monitoring section");
        let section = section.split("\n## ").next().unwrap_or(section);
        for d in FILE.iter().chain(MOUNT) {
            assert!(
                section.contains(&format!("`{}`", d.name)),
                "README's Monitoring section does not document {}",
                d.name
            );
        }
    }
}
