//! The backup command: walk a source tree, compare it with the parent snapshot's view, read what
//! changed, and commit a new layer.
//!
//! Threads: walker threads (`walker`) list the source and compare it with the parent view, and hand
//! files that must be read to a pool of readers (`reader`), which read, chunk, hash and compress;
//! one writer thread appends to packs and one layer thread stores entries (`pipeline`). Every
//! channel is bounded, so memory does not grow with the data.
//!
//! Commit order: packs fsynced → their index entries → layer entries → snapshot record (one sled
//! insert, the commit point) → flush. A backup killed at any moment leaves no visible snapshot;
//! packs already finished stay indexed and are reused by the next backup.
//!
//! Once every file is stored and before the commit, the layer is judged against the source's
//! history (`anomaly`); an anomalous snapshot is committed all the same, with a tag.
//!
//! Besides a directory, a backup can store one stream (standard input, or a command's output
//! such as a database dump) as a source's only file (`stream`); SQLite databases found in a
//! directory are stored as transaction-consistent copies (`sqlite`).

pub mod anomaly;
mod pipeline;
mod reader;
mod sqlite;
mod stream;
mod walker;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::budget::Budget;
use crate::compress;
use crate::entry::Entry;
use crate::error::{Error, IoContext, Result};
use crate::fsmeta;
use crate::id::{ChunkId, SnapshotId};
use crate::layers::View;
use crate::progress::ProgressHandle;
use crate::repo::keys;
use crate::repo::pack::RecordType;
use crate::repo::writer::PackWriter;
use crate::repo::Repo;
use crate::snapshot::{BackupKind, BackupStats, Snapshot};
use pipeline::Threads;
pub use stream::StreamSource;
use walker::WalkPlan;

/// What to back up and how. The `strata backup` options are these fields (clap), so the CLI
/// fills them directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BackupOptions {
    /// Backup kind; `None` = full when the source has no full yet, else incremental.
    #[arg(
        long,
        value_enum,
        help = "Layer kind [default: full when the source has no full snapshot yet, else incremental]"
    )]
    pub kind: Option<BackupKind>,
    /// Labels stored with the snapshot.
    #[arg(
        long = "tag",
        value_name = "TAG",
        help = "Label the snapshot (repeatable)"
    )]
    pub tags: Vec<String>,
    /// Glob patterns; a path is skipped when its relative path or its name matches.
    #[arg(
        long = "exclude",
        value_name = "GLOB",
        help = "Skip paths whose relative path or name matches this glob (repeatable)"
    )]
    pub excludes: Vec<String>,
    /// Source name to use instead of the absolute path.
    #[arg(
        long,
        value_name = "NAME",
        help = "Name of the source [default: the absolute path of SOURCE]"
    )]
    pub source_name: Option<String>,
    /// Read every file even when its metadata says it is unchanged.
    #[arg(long, help = "Read every file, even those whose metadata is unchanged")]
    pub rehash: bool,
    /// Reader/compressor threads; 0 = four per CPU (at least 8), so that the many small, cold reads
    /// of a tree of documents overlap while the CPUs compress.
    #[arg(
        long,
        default_value_t = 0,
        hide_default_value = true,
        help = "Reader threads [default: four per CPU, at least 8]"
    )]
    pub threads: usize,
    /// Once committed, consolidate the snapshot into a full when its chain is deeper than this
    /// many layers, so that reads of it never walk more.
    #[arg(skip)]
    pub max_chain: Option<u32>,
    /// Where to report progress.
    #[arg(skip)]
    pub progress: ProgressHandle,
    /// Globs (matched like `excludes`; a matching directory covers everything under it) of
    /// SQLite databases to read as plain files instead of copying them with SQLite's backup API.
    #[arg(
        long = "no-sqlite-copy",
        value_name = "GLOB",
        help = "Read SQLite databases matching this glob (relative path or name, or a directory above them) as plain files instead of copying them consistently (repeatable; '*' for all)"
    )]
    pub no_sqlite_copy: Vec<String>,
    /// Back up standard input as the file `stdin_filename` (see [`run`]).
    #[arg(
        long,
        conflicts_with = "stdin_from_command",
        requires_all = ["stdin_filename", "source_name"],
        help = "Back up standard input as one file, named by --stdin-filename, of source --source-name"
    )]
    pub stdin: bool,
    /// Back up the standard output of `command` as the file `stdin_filename` (see [`run`]).
    #[arg(
        long,
        requires_all = ["stdin_filename", "source_name", "command"],
        help = "Back up the standard output of COMMAND (given after --, run without a shell) as one file; no snapshot when COMMAND fails"
    )]
    pub stdin_from_command: bool,
    /// The name of the stream's file in the snapshot (one path component).
    #[arg(
        long,
        value_name = "NAME",
        help = "File name of the --stdin or --stdin-from-command data in the snapshot"
    )]
    pub stdin_filename: Option<String>,
    /// Run with `sh -c` before anything is backed up; its failure aborts the backup.
    #[arg(
        long,
        value_name = "CMD",
        help = "Run CMD with sh -c before the backup; if it fails, nothing is backed up"
    )]
    pub pre_command: Option<String>,
    /// Run with `sh -c` after the backup, whether it succeeded or not (see `crate::hooks`).
    #[arg(
        long,
        value_name = "CMD",
        help = "Run CMD with sh -c after the backup, also when it failed (environment: STRATA_BACKUP_STATUS, STRATA_SNAPSHOT_ID, STRATA_BACKUP_ERROR)"
    )]
    pub post_command: Option<String>,
    /// The program and arguments of `stdin_from_command`, run without a shell.
    #[arg(
        last = true,
        value_name = "COMMAND",
        requires = "stdin_from_command",
        help = "With --stdin-from-command: the program and its arguments"
    )]
    pub command: Vec<OsString>,
    /// The anomaly check's thresholds.
    #[command(flatten)]
    pub anomaly: anomaly::AnomalyOptions,
}

/// A committed backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's record.
    pub snapshot: Snapshot,
    /// Human-readable warnings (unreadable, vanished, or changing files).
    pub warnings: Vec<String>,
    /// SQLite databases stored as consistent copies made with SQLite's backup API, by path
    /// relative to the source, sorted.
    pub sqlite_copies: Vec<Vec<u8>>,
    /// The anomaly check's verdict (`None`: the check was turned off).
    pub anomaly: Option<anomaly::Assessment>,
}

#[derive(Default)]
struct Counters {
    files_read: AtomicU64,
    read_bytes: AtomicU64,
    layer_entries: AtomicU64,
    /// Files the walk counted that did not make it into the layer (unreadable, vanished): the
    /// snapshot's figures describe what it holds, so these come off them.
    skipped_files: AtomicU64,
    skipped_bytes: AtomicU64,
    /// Size changes between the walk's lstat and the reader's final read (a file that grew or
    /// shrank while it was read is stored as last read).
    size_delta: AtomicI64,
    /// Whiteouts readers wrote for files of the parent that are gone or could not be read.
    reader_whiteouts: AtomicU64,
    /// What the anomaly check needs to know about the stored files.
    changes: anomaly::ChangeCounters,
}

impl Counters {
    fn skipped(&self, walked_size: u64) {
        self.skipped_files.fetch_add(1, Ordering::Relaxed);
        self.skipped_bytes.fetch_add(walked_size, Ordering::Relaxed);
    }

    /// The snapshot's figures: the walk's, corrected by what the readers found, plus their own.
    fn correct(&self, walked: BackupStats, warnings: u64) -> BackupStats {
        let mut stats = walked;
        stats.files = stats
            .files
            .saturating_sub(self.skipped_files.load(Ordering::Relaxed));
        stats.total_bytes = stats
            .total_bytes
            .saturating_sub(self.skipped_bytes.load(Ordering::Relaxed))
            .saturating_add_signed(self.size_delta.load(Ordering::Relaxed));
        stats.deleted += self.reader_whiteouts.load(Ordering::Relaxed);
        stats.files_read = self.files_read.load(Ordering::Relaxed);
        stats.read_bytes = self.read_bytes.load(Ordering::Relaxed);
        stats.layer_entries = self.layer_entries.load(Ordering::Relaxed);
        stats.warnings = warnings;
        stats
    }
}

struct Shared {
    repo: Arc<Repo>,
    level: i32,
    in_flight: Arc<Mutex<HashSet<ChunkId>>>,
    warnings: Mutex<Vec<String>>,
    counters: Counters,
    /// Entries of hard-linked files already read, by source inode.
    links: Mutex<HashMap<u64, Entry>>,
    progress: ProgressHandle,
    /// Chunk payloads between the readers and the pack writer, by bytes.
    payloads: Budget,
    /// Makes the SQLite copies (a directory backup's).
    sqlite: Option<sqlite::Copier>,
    /// The databases stored as copies, relative to the source.
    sqlite_copies: Mutex<Vec<Vec<u8>>>,
}

/// Bytes of chunk payloads (compressed or raw) that may wait for the pack writer: enough to keep
/// it busy through a pack's fsync, small next to the fixed part of a backup's memory.
const PAYLOAD_BUDGET: u64 = 16 << 20;

impl Shared {
    fn warn(&self, msg: String) {
        log::warn!("{msg}");
        self.warnings.lock().unwrap().push(msg);
    }
}

fn new_snapshot_id(time_ns: i64, host: &str, source: &str) -> Result<SnapshotId> {
    let mut rnd = [0u8; 16];
    getrandom::fill(&mut rnd).map_err(|e| Error::Io {
        context: "Reading random bytes for a snapshot id from",
        path: "the system's random source".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut h = blake3::Hasher::new();
    h.update(&time_ns.to_le_bytes());
    h.update(host.as_bytes());
    h.update(source.as_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&rnd);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    Ok(SnapshotId(id))
}

/// The matcher for `--exclude` patterns, shared with `diff --live` so both skip the same paths.
/// A pattern matches a path relative to the source or a single name (see [`is_excluded`]).
pub(crate) fn build_excludes(patterns: &[String]) -> Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let g = globset::Glob::new(p.trim_end_matches('/'))
            .map_err(|e| Error::InvalidArgument(format!("Bad --exclude pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| Error::InvalidArgument(format!("Bad --exclude patterns: {e}")))
}

/// Whether `rel` (relative to the source root; its last component is `name`) is excluded.
pub(crate) fn is_excluded(excludes: &globset::GlobSet, rel: &[u8], name: &[u8]) -> bool {
    !excludes.is_empty()
        && (excludes.is_match(std::ffi::OsStr::from_bytes(rel))
            || excludes.is_match(std::ffi::OsStr::from_bytes(name)))
}

/// What `strata backup` backs up: with `opts.stdin` standard input, with
/// `opts.stdin_from_command` the output of `opts.command`, each as the one file
/// `opts.stdin_filename` of source `opts.source_name`; otherwise the directory `source`.
pub fn run(repo: &Arc<Repo>, source: Option<&Path>, opts: &BackupOptions) -> Result<BackupOutcome> {
    let stream = if opts.stdin {
        StreamSource::Stdin
    } else if opts.stdin_from_command {
        StreamSource::Command(&opts.command)
    } else {
        let source = source.ok_or_else(|| {
            Error::InvalidArgument("Nothing to back up: give a SOURCE directory".into())
        })?;
        return backup(repo, source, opts);
    };
    let name = opts.stdin_filename.as_deref().ok_or_else(|| {
        Error::InvalidArgument("--stdin and --stdin-from-command need --stdin-filename".into())
    })?;
    backup_stream(repo, name, stream, opts)
}

/// Backs up `source` into `repo` and commits a snapshot.
pub fn backup(repo: &Arc<Repo>, source: &Path, opts: &BackupOptions) -> Result<BackupOutcome> {
    backup_input(repo, Input::Dir(resolve_source(source)?), opts)
}

/// Backs up one stream as the only file, `file_name`, of the source `opts.source_name` (which
/// is required), and commits a snapshot — unless the stream fails (a command that exits
/// non-zero or is killed), which commits nothing. See [`StreamSource`].
pub fn backup_stream<'a>(
    repo: &Arc<Repo>,
    file_name: &'a str,
    stream: StreamSource<'a>,
    opts: &BackupOptions,
) -> Result<BackupOutcome> {
    let name = stream::check_name(file_name)?;
    backup_input(repo, Input::Stream(name, stream), opts)
}

/// What one backup reads.
enum Input<'a> {
    /// A directory tree (absolute, symlinks resolved).
    Dir(PathBuf),
    /// One stream, stored as the file of this name.
    Stream(&'a [u8], StreamSource<'a>),
}

fn backup_input(repo: &Arc<Repo>, input: Input, opts: &BackupOptions) -> Result<BackupOutcome> {
    let start = Instant::now();
    let source = match &input {
        Input::Dir(dir) => Some(dir.as_path()),
        Input::Stream(..) => None,
    };
    let source_name = match (&opts.source_name, source) {
        (Some(name), _) => name.clone(),
        (None, Some(dir)) => dir.to_string_lossy().into_owned(),
        (None, None) => {
            return Err(Error::InvalidArgument(
                "--stdin and --stdin-from-command need --source-name".into(),
            ))
        }
    };
    let excludes = build_excludes(&opts.excludes)?;
    let sqlite_policy = sqlite::Policy::new(&opts.no_sqlite_copy)?;
    let history: Vec<Snapshot> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| s.source == source_name)
        .collect();
    let (kind, parent) = choose_parent(&history, &source_name, opts.kind);
    let parent_view = parent
        .as_ref()
        .map(|p| View::open(repo, &p.id))
        .transpose()?;

    let removed = repo.packs().remove_unfinished()?;
    if removed > 0 {
        log::info!("Removed {removed} unfinished pack(s) of an interrupted backup");
    }
    if let Some(source) = source.filter(|_| repo.compression() > 0) {
        if repo.dictionary().is_none() {
            if let Some(dict) = sample_dictionary(source, &excludes) {
                repo.install_dictionary(dict)?;
            }
        }
    }
    let copier = source.map(sqlite::Copier::new);

    let time_ns = crate::time::now_ns();
    let host = fsmeta::hostname();
    let id = new_snapshot_id(time_ns, &host, &source_name)?;
    let shared = Arc::new(Shared {
        repo: repo.clone(),
        level: repo.compression(),
        in_flight: Arc::new(Mutex::new(HashSet::new())),
        warnings: Mutex::new(Vec::new()),
        counters: Counters::default(),
        links: Mutex::new(HashMap::new()),
        progress: opts.progress.clone(),
        payloads: Budget::new(PAYLOAD_BUDGET),
        sqlite: copier,
        sqlite_copies: Mutex::new(Vec::new()),
    });
    let full = kind == BackupKind::Full;
    let (threads, walked, found) = match input {
        Input::Dir(source) => {
            let threads = Threads::start(&shared, id, reader_threads(opts.threads));
            let plan = WalkPlan {
                source: &source,
                parent: parent_view.as_ref(),
                full,
                rehash: opts.rehash,
                excludes: &excludes,
                repo_dir: fs::metadata(repo.path()).map(|m| (m.dev(), m.ino())).ok(),
                sqlite: &sqlite_policy,
                copy_dir: shared.sqlite.as_ref().and_then(|c| c.dir_id()),
            };
            let jobs = threads.job_tx.clone();
            let (walked, found) = walker::walk(&shared, &plan, jobs, &threads.layer_tx);
            (threads, walked, found)
        }
        Input::Stream(name, stream) => {
            let threads = Threads::start(&shared, id, 0);
            let plan = stream::StreamPlan {
                name,
                parent: parent_view.as_ref(),
                full,
            };
            let (walked, found) = stream::store(&shared, &plan, stream, &threads);
            (threads, walked, found)
        }
    };
    let (blobs, writer) = match threads.finish(&shared, walked, found.deferred) {
        Ok(done) => done,
        Err(e) => {
            pipeline::discard_layer(repo, &id);
            return Err(e);
        }
    };

    if kind != BackupKind::Full {
        let mut batch = crate::repo::store::Batch::default();
        for (dir, opaque) in &found.touched {
            let key = keys::layerdir_key(&id, dir);
            batch.insert(crate::repo::store::Space::LayerDirs, key, [*opaque as u8]);
        }
        repo.index().apply(batch)?;
    }
    let warnings = std::mem::take(&mut *shared.warnings.lock().unwrap());
    let stats = shared.counters.correct(found.stats, warnings.len() as u64);
    let verdict = (!opts.anomaly.disabled).then(|| {
        // A full is judged against the source's newest snapshot: what the last backup saw.
        let reference = parent.as_ref().or(history.last());
        let changes = shared.counters.changes.layer(kind, &stats);
        anomaly::assess(&changes, reference, &history, &opts.anomaly)
    });
    let mut tags = opts.tags.clone();
    if verdict.as_ref().is_some_and(|v| v.anomalous) && !tags.iter().any(|t| t == anomaly::TAG) {
        tags.push(anomaly::TAG.to_string());
    }
    let snapshot = Snapshot {
        id,
        time_ns,
        host,
        source: source_name,
        kind,
        parent: parent.as_ref().map(|p| p.id),
        depth: parent.as_ref().map_or(1, |p| p.depth + 1),
        tags,
        stats,
        layer_blobs: blobs,
    };
    let mut snapshot = commit(repo, writer, snapshot, start)?;
    if let Some(n) = opts.max_chain {
        enforce_max_chain(repo, &mut snapshot, n)?;
    }
    let mut sqlite_copies = std::mem::take(&mut *shared.sqlite_copies.lock().unwrap());
    sqlite_copies.sort();
    Ok(BackupOutcome {
        snapshot,
        warnings,
        sqlite_copies,
        anomaly: verdict,
    })
}

/// Consolidates the committed snapshot `snap` when its chain is deeper than `max_chain`; `snap`
/// then carries its record as rewritten.
fn enforce_max_chain(repo: &Arc<Repo>, snap: &mut Snapshot, max_chain: u32) -> Result<()> {
    if snap.depth <= max_chain {
        return Ok(());
    }
    log::info!(
        "Snapshot {} has depth {} > --max-chain {max_chain}; consolidating",
        snap.id.short(),
        snap.depth
    );
    crate::consolidate::consolidate(repo, &snap.id)?;
    if let Some(s) = repo.snapshot(&snap.id)? {
        *snap = s;
    }
    Ok(())
}

/// The source directory, absolute and with symlinks resolved.
fn resolve_source(source: &Path) -> Result<PathBuf> {
    let meta = match fs::metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::SourceMissing(source.to_path_buf()))
        }
        Err(e) => return Err(e).ctx("Reading source", source),
    };
    if !meta.is_dir() {
        return Err(Error::SourceNotDir(source.to_path_buf()));
    }
    // A source this user cannot list is an error, not an empty snapshot (or, against a parent,
    // one that shows every file deleted). Unreadable directories below it are warnings.
    fs::read_dir(source).ctx("Reading source", source)?;
    fs::canonicalize(source).ctx("Resolving source", source)
}

/// The backup's kind and the snapshot it is taken against, from the source's `history` (oldest
/// first): an incremental's parent is the source's latest snapshot, a differential's its latest
/// full. Without a full, a full is made.
fn choose_parent(
    history: &[Snapshot],
    source_name: &str,
    asked: Option<BackupKind>,
) -> (BackupKind, Option<Snapshot>) {
    let last_full = history.iter().rev().find(|s| s.kind == BackupKind::Full);
    let kind = asked.unwrap_or(if last_full.is_some() {
        BackupKind::Incremental
    } else {
        BackupKind::Full
    });
    let parent = match kind {
        BackupKind::Full => None,
        BackupKind::Incremental => history.last(),
        BackupKind::Differential => last_full,
    };
    if kind != BackupKind::Full && parent.is_none() {
        log::warn!("Source {source_name} has no full snapshot yet; making a full backup");
        return (BackupKind::Full, None);
    }
    (kind, parent.cloned())
}

/// Reader/compressor threads for `asked` (0 = the default of [`BackupOptions::threads`]).
fn reader_threads(asked: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
        * 4
}

/// The commit point: the snapshot record goes into the last pack, the pack is finished, and the
/// record with the final figures goes into sled, then everything is flushed.
fn commit(
    repo: &Repo,
    mut writer: PackWriter,
    mut snapshot: Snapshot,
    start: Instant,
) -> Result<Snapshot> {
    // The pack copy of the record is written before the figures of the last pack are known; the
    // sled record below carries the final ones.
    writer.add_blob(RecordType::Snapshot, &snapshot.encode())?;
    let ws = writer.finish()?;
    snapshot.stats.new_chunks = ws.new_chunks;
    snapshot.stats.new_bytes = ws.new_bytes;
    snapshot.stats.stored_bytes = ws.stored_bytes;
    snapshot.stats.elapsed_ms = start.elapsed().as_millis() as u64;
    repo.insert_snapshot_record(&snapshot)?;
    repo.flush()?;
    log::info!(
        "Committed snapshot {} ({} entries in layer)",
        snapshot.id,
        snapshot.stats.layer_entries
    );
    Ok(snapshot)
}

/// Trains the repository's compression dictionary from up to `DICT_SAMPLES` small files of the
/// source, found breadth-first (a bounded pre-pass: at most `DICT_SCAN_DIRS` directories).
fn sample_dictionary(source: &Path, excludes: &globset::GlobSet) -> Option<compress::Dictionary> {
    const DICT_SAMPLES: usize = 2000;
    const DICT_SCAN_DIRS: usize = 2000;
    let mut samples = Vec::new();
    let mut queue = std::collections::VecDeque::from([source.to_path_buf()]);
    let mut dirs = 0;
    while let Some(dir) = queue.pop_front() {
        dirs += 1;
        if dirs > DICT_SCAN_DIRS || samples.len() >= DICT_SAMPLES {
            break;
        }
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            if samples.len() >= DICT_SAMPLES {
                break;
            }
            if excludes.is_match(&name) {
                continue;
            }
            let path = dir.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                queue.push_back(path);
            } else if meta.is_file() && (64..=16 * 1024).contains(&meta.len()) {
                if let Ok(data) = fs::read(&path) {
                    samples.push(data);
                }
            }
        }
    }
    let dict = compress::Dictionary::train(&samples);
    log::debug!(
        "Dictionary from {} samples: {:?} bytes",
        samples.len(),
        dict.as_ref().map(|d| d.bytes.len())
    );
    dict
}
