//! The backup command: walk a source tree, compare it with the parent snapshot's view, read what
//! changed, and commit a new layer.
//!
//! Threads: the calling thread walks (readdir + lstat + comparison with the parent view) and hands
//! files that must be read to a pool of workers, which read, chunk, hash and compress; one writer
//! thread appends to packs; one layer thread stores entries. Every channel is bounded, so memory
//! does not grow with the data.
//!
//! Commit order: packs fsynced → their index entries → layer entries → snapshot record (one sled
//! insert, the commit point) → flush. A backup killed at any moment leaves no visible snapshot;
//! packs already finished stay indexed and are reused by the next backup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::budget::{Budget, CloseOnDrop};
use crate::chunker::{ChunkError, Chunker};
use crate::compress::{self, Compression};
use crate::entry::{ChunkRef, Entry, Kind};
use crate::error::{Error, IoContext, Result};
use crate::fsmeta::{self, entry_from_meta};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::{join, View};
use crate::progress::ProgressHandle;
use crate::repo::keys;
use crate::repo::pack::RecordType;
use crate::repo::writer::PackWriter;
use crate::repo::Repo;
use crate::snapshot::{BackupKind, BackupStats, Snapshot};

/// What to back up and how.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Backup kind; `None` = full when the source has no full yet, else incremental.
    pub kind: Option<BackupKind>,
    /// Labels stored with the snapshot.
    pub tags: Vec<String>,
    /// Glob patterns; a path is skipped when its relative path or its name matches.
    pub excludes: Vec<String>,
    /// Source name to use instead of the absolute path.
    pub source_name: Option<String>,
    /// Read every file even when its metadata says it is unchanged.
    pub rehash: bool,
    /// Reader/compressor threads; 0 = four per CPU (at least 8), so that the many small, cold reads
    /// of a tree of documents overlap while the CPUs compress.
    pub threads: usize,
    /// Where to report progress.
    pub progress: ProgressHandle,
}

/// A committed backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's record.
    pub snapshot: Snapshot,
    /// Human-readable warnings (unreadable, vanished, or changing files).
    pub warnings: Vec<String>,
}

/// Layer blobs are cut at this size; they exist so the index can be rebuilt from packs.
const LAYER_BLOB_SIZE: usize = 1 << 20;
/// Layer entries sorted together before they go to sled.
const LAYER_SORT_BUFFER: usize = 8192;
/// Files handed to a reader at once.
const JOB_BATCH: usize = 64;
/// Layer entries sent to the layer writer at once.
const LAYER_BATCH: usize = 256;
/// How often a file that changes while read is read again before it is stored as read.
const HOT_RETRIES: usize = 3;

enum PackMsg {
    Chunk {
        id: ChunkId,
        raw_len: u32,
        compression: Compression,
        payload: Vec<u8>,
    },
    Blob(Vec<u8>),
}

impl PackMsg {
    /// Bytes counted against [`Shared::payloads`].
    fn payload_len(&self) -> u64 {
        match self {
            PackMsg::Chunk { payload, .. } => payload.len() as u64,
            PackMsg::Blob(_) => 0,
        }
    }
}

/// Items sent through a channel in batches: one wake-up per batch instead of per file or chunk,
/// which on 100k small files is the difference between context switching and working.
struct Batcher<T> {
    tx: Sender<Vec<T>>,
    buf: Vec<T>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<T> Batcher<T> {
    fn new(tx: Sender<Vec<T>>, max_items: usize, max_bytes: usize) -> Batcher<T> {
        Batcher {
            tx,
            buf: Vec::new(),
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    fn push(&mut self, item: T, bytes: usize) -> Result<()> {
        self.buf.push(item);
        self.bytes += bytes;
        if self.buf.len() >= self.max_items || self.bytes >= self.max_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.tx
            .send(std::mem::take(&mut self.buf))
            .map_err(|_| Error::Aborted)
    }
}

struct LayerMsg {
    dir: Vec<u8>,
    name: Vec<u8>,
    entry: Entry,
}

struct FileJob {
    dir: Vec<u8>,
    name: Vec<u8>,
    path: PathBuf,
    entry: Entry,
    existed: bool,
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
}

impl Counters {
    fn skipped(&self, walked_size: u64) {
        self.skipped_files.fetch_add(1, Ordering::Relaxed);
        self.skipped_bytes.fetch_add(walked_size, Ordering::Relaxed);
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

/// Backs up `source` into `repo` and commits a snapshot.
pub fn backup(repo: &Arc<Repo>, source: &Path, opts: &BackupOptions) -> Result<BackupOutcome> {
    let start = Instant::now();
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
    let source = fs::canonicalize(source).ctx("Resolving source", source)?;
    let source_name = opts
        .source_name
        .clone()
        .unwrap_or_else(|| source.to_string_lossy().into_owned());
    let excludes = build_excludes(&opts.excludes)?;

    let history: Vec<Snapshot> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| s.source == source_name)
        .collect();
    let last_full = history.iter().rev().find(|s| s.kind == BackupKind::Full);
    let mut kind = opts.kind.unwrap_or(if last_full.is_some() {
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
        kind = BackupKind::Full;
    }
    let parent_view = parent.map(|p| View::open(repo, &p.id)).transpose()?;

    let removed = repo.packs().remove_unfinished()?;
    if removed > 0 {
        log::info!("Removed {removed} unfinished pack(s) of an interrupted backup");
    }

    if repo.dictionary().is_none() && repo.compression() > 0 {
        if let Some(dict) = sample_dictionary(&source, &excludes) {
            repo.install_dictionary(dict)?;
        }
    }

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
    });

    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2)
            * 4
    };
    let (pack_tx, pack_rx) = bounded::<Vec<PackMsg>>(8);
    let (layer_tx, layer_rx) = bounded::<Vec<LayerMsg>>(16);
    let (job_tx, job_rx) = bounded::<Vec<FileJob>>(threads * 2);

    let writer = {
        let w = PackWriter::new(repo.clone(), shared.in_flight.clone());
        std::thread::Builder::new()
            .name("strata-pack".into())
            .spawn({
                let shared = shared.clone();
                move || pack_thread(w, &shared, pack_rx)
            })
            .expect("spawn pack writer")
    };
    let layer_thread = {
        let repo = repo.clone();
        let pack_tx = pack_tx.clone();
        std::thread::Builder::new()
            .name("strata-layer".into())
            .spawn(move || layer_thread(repo, id, layer_rx, pack_tx))
            .expect("spawn layer writer")
    };
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (shared, rx, ptx, ltx) = (
                shared.clone(),
                job_rx.clone(),
                pack_tx.clone(),
                layer_tx.clone(),
            );
            std::thread::Builder::new()
                .name(format!("strata-read-{i}"))
                .spawn(move || worker(&shared, rx, ptx, ltx))
                .expect("spawn reader")
        })
        .collect();
    drop(job_rx);

    // The walk runs on several threads: on a cold cache it is bound by the kernel's inode lookups,
    // which parallelize.
    let walk_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4);
    let queue = DirQueue::default();
    let link_seen = Mutex::new(HashSet::new());
    let repo_dir = fs::metadata(repo.path()).map(|m| (m.dev(), m.ino())).ok();
    let make_walker = || Walker {
        shared: &shared,
        parent: parent_view.as_ref(),
        full: kind == BackupKind::Full,
        rehash: opts.rehash,
        excludes: &excludes,
        repo_dir,
        link_seen: &link_seen,
        jobs: Batcher::new(job_tx.clone(), JOB_BATCH, 8 << 20),
        layer: Batcher::new(layer_tx.clone(), LAYER_BATCH, usize::MAX),
        touched: HashMap::new(),
        deferred: Vec::new(),
        stats: BackupStats::default(),
    };
    let mut root_walker = make_walker();
    let mut walked = root_walker
        .walk_root(&source, &queue)
        .and_then(|_| root_walker.flush());
    let mut parts = vec![root_walker.finish()];
    if walked.is_ok() {
        let results: Vec<Result<WalkResult>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..walk_threads)
                .map(|_| {
                    let mut w = make_walker();
                    let q = &queue;
                    s.spawn(move || {
                        let r = w.run(q).and_then(|_| w.flush());
                        if r.is_err() {
                            q.abort();
                        }
                        r.map(|_| w.finish())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("walker thread panicked"))
                .collect()
        });
        for r in results {
            match r {
                Ok(part) => parts.push(part),
                Err(e) if walked.is_ok() || matches!(walked, Err(Error::Aborted)) => {
                    walked = Err(e)
                }
                Err(_) => {}
            }
        }
    }
    drop(job_tx);
    let mut touched: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut deferred = Vec::new();
    let mut stats = BackupStats::default();
    for part in parts {
        for (dir, opaque) in part.touched {
            *touched.entry(dir).or_insert(false) |= opaque;
        }
        deferred.extend(part.deferred);
        stats.files += part.stats.files;
        stats.dirs += part.stats.dirs;
        stats.total_bytes += part.stats.total_bytes;
        stats.deleted += part.stats.deleted;
    }
    let mut first_err = None;
    for w in workers {
        if let Err(e) = w.join().expect("reader thread panicked") {
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = walked {
        first_err.get_or_insert(e);
    }
    if first_err.is_none() {
        // Hard links after the first of their group: copy the content the first one got.
        let links = shared.links.lock().unwrap();
        for (dir, name, mut entry, existed) in deferred {
            match links.get(&entry.ino) {
                Some(first) => {
                    shared
                        .counters
                        .size_delta
                        .fetch_add(first.size as i64 - entry.size as i64, Ordering::Relaxed);
                    // One inode: the same content, and the same stat as read with it (a ctime
                    // marked for rereading marks every link).
                    entry.chunks = first.chunks.clone();
                    entry.size = first.size;
                    entry.mtime_ns = first.mtime_ns;
                    entry.ctime_ns = first.ctime_ns;
                    entry.mode = first.mode;
                    entry.uid = first.uid;
                    entry.gid = first.gid;
                    let _ = layer_tx.send(vec![LayerMsg { dir, name, entry }]);
                }
                None => {
                    shared.warn(format!(
                        "Skipped hard link {}: its first link could not be read",
                        String::from_utf8_lossy(&join(&dir, &name))
                    ));
                    shared.counters.skipped(entry.size);
                    if existed {
                        // The parent's version must not show through as if it were current.
                        shared
                            .counters
                            .reader_whiteouts
                            .fetch_add(1, Ordering::Relaxed);
                        let entry = Entry::whiteout();
                        let _ = layer_tx.send(vec![LayerMsg { dir, name, entry }]);
                    }
                }
            }
        }
    }
    drop(layer_tx);
    let layer_result = layer_thread.join().expect("layer thread panicked");
    drop(pack_tx);
    let writer_result = writer.join().expect("pack thread panicked");
    let (blobs, mut writer) = match (first_err, layer_result, writer_result) {
        (None, Ok(blobs), Ok(w)) => (blobs, w),
        (walk, layer, write) => {
            discard_layer(repo, &id);
            // The root cause is whichever failure is not just another thread noticing it.
            let errs = [write.err(), layer.err(), walk];
            let mut errs = errs.into_iter().flatten();
            let first = errs.next().expect("some part failed");
            let root = std::iter::once(first).chain(errs).reduce(|a, b| {
                if matches!(a, Error::Aborted) {
                    b
                } else {
                    a
                }
            });
            return Err(root.expect("some part failed"));
        }
    };

    if kind != BackupKind::Full {
        let mut batch = sled::Batch::default();
        for (dir, opaque) in &touched {
            batch.insert(keys::layerdir_key(&id, dir), &[*opaque as u8]);
        }
        repo.layerdirs.apply_batch(batch)?;
    }

    let c = &shared.counters;
    stats.files = stats
        .files
        .saturating_sub(c.skipped_files.load(Ordering::Relaxed));
    stats.total_bytes = stats
        .total_bytes
        .saturating_sub(c.skipped_bytes.load(Ordering::Relaxed))
        .saturating_add_signed(c.size_delta.load(Ordering::Relaxed));
    stats.deleted += c.reader_whiteouts.load(Ordering::Relaxed);
    stats.files_read = c.files_read.load(Ordering::Relaxed);
    stats.read_bytes = c.read_bytes.load(Ordering::Relaxed);
    stats.layer_entries = c.layer_entries.load(Ordering::Relaxed);
    let warnings = std::mem::take(&mut *shared.warnings.lock().unwrap());
    stats.warnings = warnings.len() as u64;
    let mut snapshot = Snapshot {
        id,
        time_ns,
        host,
        source: source_name,
        kind,
        parent: parent.map(|p| p.id),
        depth: parent.map_or(1, |p| p.depth + 1),
        tags: opts.tags.clone(),
        stats,
        layer_blobs: blobs,
    };
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
        id,
        snapshot.stats.layer_entries
    );
    Ok(BackupOutcome { snapshot, warnings })
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

/// Best-effort removal of an uncommitted layer's entries after a failed backup (they are invisible
/// anyway: no snapshot record points at them, and `prune` removes what is left). Stops at the
/// first error: after a full disk, sled's iterator can yield the same error forever.
fn discard_layer(repo: &Repo, id: &SnapshotId) {
    if let Err(e) = crate::forget::delete_layer(repo, id) {
        log::info!("Left the failed backup's layer entries for prune: {e}");
    }
}

fn pack_thread(
    mut w: PackWriter,
    shared: &Shared,
    rx: Receiver<Vec<PackMsg>>,
) -> Result<PackWriter> {
    let _close = CloseOnDrop(&shared.payloads);
    for batch in rx {
        // Given back once per batch: one wake-up of waiting readers, not one per chunk.
        let bytes = batch.iter().map(PackMsg::payload_len).sum();
        for msg in batch {
            match msg {
                PackMsg::Chunk {
                    id,
                    raw_len,
                    compression,
                    payload,
                } => w.add_prepared(RecordType::Chunk, id, raw_len, compression, &payload)?,
                PackMsg::Blob(plain) => {
                    w.add_blob(RecordType::Layer, &plain)?;
                }
            }
        }
        shared.payloads.give(bytes);
    }
    Ok(w)
}

fn layer_thread(
    repo: Arc<Repo>,
    id: SnapshotId,
    rx: Receiver<Vec<LayerMsg>>,
    pack_tx: Sender<Vec<PackMsg>>,
) -> Result<Vec<ChunkId>> {
    let mut blob = Vec::with_capacity(LAYER_BLOB_SIZE + 4096);
    let mut blobs = Vec::new();
    let flush_blob = |blob: &mut Vec<u8>, blobs: &mut Vec<ChunkId>| -> Result<()> {
        if blob.is_empty() {
            return Ok(());
        }
        blobs.push(ChunkId::of(blob));
        pack_tx
            .send(vec![PackMsg::Blob(std::mem::take(blob))])
            .map_err(|_| Error::Aborted)
    };
    // Entries arrive interleaved from several threads; they are buffered, sorted and applied in
    // small batches that each cover a narrow key range (sled then rewrites few pages per batch).
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(LAYER_SORT_BUFFER);
    let apply = |pending: &mut Vec<(Vec<u8>, Vec<u8>)>| repo.insert_layer_entries(pending);
    for m in rx.into_iter().flatten() {
        let key = keys::entry_key(&id, &m.dir, &m.name);
        let val = m.entry.encode();
        // Layer blob record: u32 LE key length ‖ key without snapshot id ‖ u32 LE value length ‖ value.
        blob.extend_from_slice(&((key.len() - 16) as u32).to_le_bytes());
        blob.extend_from_slice(&key[16..]);
        blob.extend_from_slice(&(val.len() as u32).to_le_bytes());
        blob.extend_from_slice(&val);
        pending.push((key, val));
        if pending.len() >= LAYER_SORT_BUFFER {
            apply(&mut pending)?;
        }
        if blob.len() >= LAYER_BLOB_SIZE {
            flush_blob(&mut blob, &mut blobs)?;
        }
    }
    apply(&mut pending)?;
    flush_blob(&mut blob, &mut blobs)?;
    Ok(blobs)
}

/// Sends a chunk to the writer unless the repository or another worker already has it.
fn store_chunk(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    id: ChunkId,
    data: &[u8],
) -> Result<()> {
    if shared.repo.has_chunk(&id)? || !shared.in_flight.lock().unwrap().insert(id) {
        return Ok(());
    }
    let raw_len = data.len() as u32;
    let msg = match compress::compress(
        data,
        shared.level,
        shared.repo.dictionary().map(|d| d.as_ref()),
    ) {
        Some((compression, c)) => PackMsg::Chunk {
            id,
            raw_len,
            compression,
            payload: c,
        },
        None => PackMsg::Chunk {
            id,
            raw_len,
            compression: Compression::None,
            payload: data.to_vec(),
        },
    };
    let len = data.len();
    shared.progress.0.new_data(len as u64);
    shared.payloads.take(msg.payload_len(), || pack.flush())?;
    pack.push(msg, len)
}

enum ReadOutcome {
    Done,
    Vanished,
}

fn open_noatime(path: &Path) -> std::io::Result<File> {
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | flags)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}

/// How far ahead of the chunker a big file is asked into the page cache, and in what steps.
const PREFETCH_AHEAD: u64 = 32 << 20;
const PREFETCH_STEP: u64 = 8 << 20;

/// A file reader that keeps asking the kernel (`POSIX_FADV_WILLNEED`) for the next
/// [`PREFETCH_AHEAD`] bytes, so the disk keeps reading while the chunker hashes: a big file is
/// otherwise read by one thread whose reads wait for the disk, then its hashing for the CPU.
struct Prefetch<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    advised: u64,
}

impl<'a> Prefetch<'a> {
    /// Reads `file` from `start` (where it must be positioned) to `end`. A range of at most one
    /// step is left to the kernel's own readahead: no extra call per small file.
    fn new(file: &'a File, start: u64, end: u64) -> Prefetch<'a> {
        let big = end - start > PREFETCH_STEP;
        Prefetch {
            file,
            pos: start,
            end,
            advised: if big { start } else { end },
        }
    }

    fn advise(&mut self) {
        while self.advised < self.end && self.advised < self.pos + PREFETCH_AHEAD {
            let len = PREFETCH_STEP.min(self.end - self.advised);
            crate::fsio::will_need(self.file, self.advised, len);
            self.advised += len;
        }
    }
}

impl Read for Prefetch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.advise();
        let n = (&mut &*self.file).read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads one file into `job.entry.chunks`, retrying while it changes under us.
fn read_file(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    chunker: &mut Chunker,
    job: &mut FileJob,
) -> Result<ReadOutcome> {
    let mut waited_racy = false;
    let mut attempt = 0;
    loop {
        let started_ns = crate::time::clock_ns();
        let mut f = match open_noatime(&job.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadOutcome::Vanished),
            Err(e) => return Err(e).ctx("Opening", &job.path),
        };
        let before = f.metadata().ctx("Reading metadata of", &job.path)?;
        let mut chunks = Vec::new();
        let mut read = 0u64;
        for (start, end) in fsmeta::data_segments(&f, before.len()) {
            f.seek(SeekFrom::Start(start))
                .ctx("Seeking in", &job.path)?;
            let reader = Prefetch::new(&f, start, end);
            let r = chunker.for_each(reader.take(end - start), |off, data| {
                let id = ChunkId::of(data);
                chunks.push(ChunkRef {
                    id,
                    offset: start + off,
                    len: data.len() as u32,
                });
                read += data.len() as u64;
                store_chunk(shared, pack, id, data)
            });
            match r {
                Ok(()) => {}
                Err(ChunkError::Read(e)) => return Err(e).ctx("Reading", &job.path),
                Err(ChunkError::Sink(e)) => return Err(e),
            }
        }
        let after = f.metadata().ctx("Reading metadata of", &job.path)?;
        // ctime too: an in-place rewrite during the read that puts the mtime back moves it.
        let stable = before.len() == after.len()
            && before.mtime() == after.mtime()
            && before.mtime_nsec() == after.mtime_nsec()
            && before.ctime() == after.ctime()
            && before.ctime_nsec() == after.ctime_nsec()
            && read <= after.len();
        shared
            .counters
            .read_bytes
            .fetch_add(read, Ordering::Relaxed);
        let fresh = entry_from_meta(&before);
        let racy = fsmeta::racy(&fresh, started_ns);
        if stable && racy && !waited_racy {
            // A write in the same timestamp tick as the last change, after this read began,
            // would leave size, mtime and ctime as they are: wait the tick out and read again,
            // so what is stored is the content for this ctime.
            waited_racy = true;
            let wait_ns = (fresh.ctime_ns + fsmeta::racy_window_ns(&fresh))
                .saturating_sub(crate::time::clock_ns())
                .clamp(0, fsmeta::racy_window_ns(&fresh));
            std::thread::sleep(std::time::Duration::from_nanos(wait_ns as u64));
            log::debug!(
                "{} changed just before it was read; reading again",
                job.path.display()
            );
            continue;
        }
        if stable || attempt == HOT_RETRIES {
            if !stable {
                shared.warn(format!(
                    "File {} changed while it was read ({} attempts); stored as last read",
                    job.path.display(),
                    HOT_RETRIES + 1
                ));
            }
            let e = &mut job.entry;
            e.size = before.len();
            e.mtime_ns = fresh.mtime_ns;
            // Content that may not be the content of this ctime (read while the file changed,
            // or in its last timestamp tick) records a ctime no file has: the next backup reads
            // it again. ctime is used for nothing else.
            e.ctime_ns = if stable && !racy {
                fresh.ctime_ns
            } else {
                fresh.ctime_ns - 1
            };
            e.mode = fresh.mode;
            e.uid = fresh.uid;
            e.gid = fresh.gid;
            e.chunks = chunks;
            return Ok(ReadOutcome::Done);
        }
        attempt += 1;
        log::debug!("{} changed while read; reading again", job.path.display());
    }
}

fn worker(
    shared: &Shared,
    jobs: Receiver<Vec<FileJob>>,
    pack_tx: Sender<Vec<PackMsg>>,
    layer_tx: Sender<Vec<LayerMsg>>,
) -> Result<()> {
    let mut chunker = Chunker::new();
    let mut pack = Batcher::new(pack_tx, 256, 2 << 20);
    let mut layer = Batcher::new(layer_tx, LAYER_BATCH, usize::MAX);
    let r = (|| {
        for batch in jobs {
            for job in batch {
                work_one(shared, &mut pack, &mut layer, &mut chunker, job)?;
            }
            // Entries may wait in a batch, chunks must not wait longer than their job batch: the
            // writer's dedup works on what it has received.
            pack.flush()?;
            layer.flush()?;
        }
        Ok(())
    })();
    // Payloads that will never reach the writer give their bytes back.
    shared
        .payloads
        .give(pack.buf.iter().map(PackMsg::payload_len).sum());
    r
}

fn work_one(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    layer: &mut Batcher<LayerMsg>,
    chunker: &mut Chunker,
    mut job: FileJob,
) -> Result<()> {
    let walked_size = job.entry.size;
    let outcome = match read_file(shared, pack, chunker, &mut job) {
        Ok(o) => Some(o),
        Err(Error::Io {
            context,
            path,
            source,
        }) if !is_repo_path(shared, &path) => {
            shared.warn(format!("Skipped {}: {context}: {source}", path.display()));
            None
        }
        Err(e) => return Err(e),
    };
    let entry = match outcome {
        Some(ReadOutcome::Done) => {
            shared.counters.files_read.fetch_add(1, Ordering::Relaxed);
            shared.progress.0.file_read(job.entry.size);
            shared.counters.size_delta.fetch_add(
                job.entry.size as i64 - walked_size as i64,
                Ordering::Relaxed,
            );
            if job.entry.nlink > 1 {
                shared
                    .links
                    .lock()
                    .unwrap()
                    .insert(job.entry.ino, job.entry.clone());
            }
            job.entry
        }
        skipped => {
            if skipped.is_some() {
                shared.counters.files_read.fetch_add(1, Ordering::Relaxed);
                shared.progress.0.file_read(job.entry.size);
                if !job.existed {
                    shared.warn(format!(
                        "Skipped {}: vanished during backup",
                        job.path.display()
                    ));
                }
            }
            shared.counters.skipped(walked_size);
            if !job.existed {
                return Ok(());
            }
            // Not in this snapshot: the parent's version must not show through as if current.
            shared
                .counters
                .reader_whiteouts
                .fetch_add(1, Ordering::Relaxed);
            Entry::whiteout()
        }
    };
    shared
        .counters
        .layer_entries
        .fetch_add(1, Ordering::Relaxed);
    layer.push(
        LayerMsg {
            dir: job.dir,
            name: job.name,
            entry,
        },
        0,
    )
}

/// Errors on paths inside the repository are repository failures (disk full, ...), never skips.
fn is_repo_path(shared: &Shared, path: &Path) -> bool {
    path.starts_with(shared.repo.path())
}

/// One directory to walk: (relative path, absolute path, whether the parent view has it).
type DirWork = (Vec<u8>, PathBuf, bool);

/// Directories waiting to be walked, shared by the walker threads. `pending` counts directories
/// queued or being walked, so the walk is over when it reaches zero.
#[derive(Default)]
struct DirQueue {
    state: Mutex<QueueState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct QueueState {
    dirs: Vec<DirWork>,
    pending: usize,
    aborted: bool,
}

impl DirQueue {
    fn push(&self, items: Vec<DirWork>) {
        if items.is_empty() {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.pending += items.len();
        s.dirs.extend(items);
        self.cv.notify_all();
    }

    /// The next directory, or `None` when the walk is complete or aborted.
    fn take(&self) -> Option<DirWork> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.aborted {
                return None;
            }
            if let Some(w) = s.dirs.pop() {
                return Some(w);
            }
            if s.pending == 0 {
                return None;
            }
            s = self.cv.wait(s).unwrap();
        }
    }

    fn done(&self) {
        let mut s = self.state.lock().unwrap();
        s.pending -= 1;
        if s.pending == 0 {
            self.cv.notify_all();
        }
    }

    fn abort(&self) {
        self.state.lock().unwrap().aborted = true;
        self.cv.notify_all();
    }
}

/// What one walker thread found, merged after the walk.
/// A hard link after the first of its group: (dir, name, entry, whether the parent view has it).
type Deferred = (Vec<u8>, Vec<u8>, Entry, bool);

struct WalkResult {
    touched: HashMap<Vec<u8>, bool>,
    deferred: Vec<Deferred>,
    stats: BackupStats,
}

struct Walker<'a> {
    shared: &'a Shared,
    parent: Option<&'a View>,
    full: bool,
    rehash: bool,
    excludes: &'a globset::GlobSet,
    /// (device, inode) of the repository directory: never backed up into itself.
    repo_dir: Option<(u64, u64)>,
    /// Inodes of hard-linked files already sent to a reader (shared by the walker threads).
    link_seen: &'a Mutex<HashSet<u64>>,
    jobs: Batcher<FileJob>,
    layer: Batcher<LayerMsg>,
    touched: HashMap<Vec<u8>, bool>,
    deferred: Vec<Deferred>,
    stats: BackupStats,
}

impl Walker<'_> {
    fn emit(&mut self, dir: &[u8], name: &[u8], entry: Entry) -> Result<()> {
        if entry.kind == Kind::Whiteout {
            self.stats.deleted += 1;
        }
        self.touch(dir, false);
        self.shared
            .counters
            .layer_entries
            .fetch_add(1, Ordering::Relaxed);
        self.layer.push(
            LayerMsg {
                dir: dir.to_vec(),
                name: name.to_vec(),
                entry,
            },
            0,
        )
    }

    fn touch(&mut self, dir: &[u8], opaque: bool) {
        if self.full {
            return;
        }
        let flag = self.touched.entry(dir.to_vec()).or_insert(false);
        *flag |= opaque;
    }

    fn warn(&self, msg: String) {
        self.shared.warn(msg);
    }

    fn flush(&mut self) -> Result<()> {
        self.jobs.flush()?;
        self.layer.flush()
    }

    /// Drops the channels and hands back what this walker collected.
    fn finish(self) -> WalkResult {
        WalkResult {
            touched: self.touched,
            deferred: self.deferred,
            stats: self.stats,
        }
    }

    /// The root directory's own entry; queues the root for walking.
    fn walk_root(&mut self, source: &Path, queue: &DirQueue) -> Result<()> {
        let root_meta = fs::symlink_metadata(source).ctx("Reading source", source)?;
        let mut root = entry_from_meta(&root_meta);
        let old_root = self.parent.map(|p| p.root()).transpose()?;
        self.stats.dirs += 1;
        if old_root
            .as_ref()
            .is_none_or(|o| !fsmeta::unchanged(o, &root))
        {
            root.xattrs = fsmeta::read_xattrs(source).unwrap_or_default();
            root.opaque = old_root.is_none();
            self.emit(b"", b"", root)?;
        }
        queue.push(vec![(
            Vec::new(),
            source.to_path_buf(),
            self.parent.is_some(),
        )]);
        Ok(())
    }

    /// Walks directories from the queue until the walk is complete.
    fn run(&mut self, queue: &DirQueue) -> Result<()> {
        while let Some((dir, abs, in_parent)) = queue.take() {
            let mut subdirs = Vec::new();
            let r = self.walk_dir(&dir, &abs, in_parent, &mut subdirs);
            // Queue the children before marking this one done, so the count never drops to zero
            // while work remains.
            queue.push(subdirs);
            queue.done();
            r?;
        }
        Ok(())
    }

    fn walk_dir(
        &mut self,
        dir: &[u8],
        abs: &Path,
        in_parent: bool,
        stack: &mut Vec<(Vec<u8>, PathBuf, bool)>,
    ) -> Result<()> {
        let mut old: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        if in_parent {
            for kv in self.parent.unwrap().list(dir)? {
                let (n, e) = kv?;
                old.insert(n, e);
            }
        }
        let rd = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) => {
                self.warn(format!("Skipped directory {}: {e}", abs.display()));
                // Shown empty, as read: the parent's children of it must not show through as if
                // they were current.
                for name in old.into_keys() {
                    self.emit(dir, &name, Entry::whiteout())?;
                }
                return Ok(());
            }
        };
        let mut names = Vec::new();
        for ent in rd {
            match ent {
                Ok(ent) => names.push(ent.file_name()),
                Err(e) => self.warn(format!("Error listing {}: {e}", abs.display())),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for os_name in names {
            let name = os_name.as_bytes().to_vec();
            let rel = join(dir, &name);
            if is_excluded(self.excludes, &rel, &name) {
                continue;
            }
            let path = abs.join(&os_name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Left in `old`: a whiteout hides the parent's version below.
                    self.warn(format!("Skipped {}: {e}", path.display()));
                    continue;
                }
            };
            if meta.is_dir() && self.repo_dir == Some((meta.dev(), meta.ino())) {
                log::info!("Skipping {}: it is the repository", path.display());
                continue;
            }
            self.shared.progress.0.entry_seen();
            let old_e = old.remove(&name);
            let mut e = entry_from_meta(&meta);
            match e.kind {
                Kind::Dir => {
                    self.stats.dirs += 1;
                    let was_dir = old_e.as_ref().is_some_and(|o| o.kind == Kind::Dir);
                    e.opaque = !was_dir;
                    if old_e.as_ref().is_none_or(|o| !fsmeta::unchanged(o, &e)) {
                        e.xattrs = self.xattrs(&path);
                        self.emit(dir, &name, e)?;
                    }
                    if !was_dir {
                        self.touch(&rel, true);
                    }
                    stack.push((rel, path, was_dir));
                }
                Kind::File => {
                    self.stats.files += 1;
                    self.stats.total_bytes += e.size;
                    if let Some(o) = old_e.as_ref().filter(|_| !self.rehash) {
                        if fsmeta::unchanged(o, &e) {
                            continue;
                        }
                    }
                    e.xattrs = self.xattrs(&path);
                    if e.nlink > 1 && !self.link_seen.lock().unwrap().insert(e.ino) {
                        self.touch(dir, false);
                        self.shared
                            .counters
                            .layer_entries
                            .fetch_add(1, Ordering::Relaxed);
                        self.deferred.push((dir.to_vec(), name, e, old_e.is_some()));
                        continue;
                    }
                    self.touch(dir, false);
                    let size = e.size as usize;
                    self.jobs.push(
                        FileJob {
                            dir: dir.to_vec(),
                            name,
                            path,
                            entry: e,
                            existed: old_e.is_some(),
                        },
                        size,
                    )?;
                }
                Kind::Symlink => {
                    if old_e.as_ref().is_some_and(|o| fsmeta::unchanged(o, &e)) {
                        continue;
                    }
                    match fs::read_link(&path) {
                        Ok(t) => e.target = t.as_os_str().as_bytes().to_vec(),
                        Err(err) => {
                            self.warn(format!("Skipped {}: {err}", path.display()));
                            if old_e.is_some() {
                                self.emit(dir, &name, Entry::whiteout())?;
                            }
                            continue;
                        }
                    }
                    e.xattrs = self.xattrs(&path);
                    self.emit(dir, &name, e)?;
                }
                _ => {
                    if old_e.as_ref().is_some_and(|o| fsmeta::unchanged(o, &e)) {
                        continue;
                    }
                    e.xattrs = self.xattrs(&path);
                    self.emit(dir, &name, e)?;
                }
            }
        }
        for name in old.into_keys() {
            self.emit(dir, &name, Entry::whiteout())?;
        }
        Ok(())
    }

    fn xattrs(&self, path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        match fsmeta::read_xattrs(path) {
            Ok(x) => x,
            Err(e) => {
                self.warn(format!(
                    "Extended attributes of {} not stored: {e}",
                    path.display()
                ));
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_reader_yields_exactly_the_file_and_advises_it_all() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        let data =
            crate::testutil::pseudo_random((PREFETCH_AHEAD + 3 * PREFETCH_STEP + 5) as usize, 3);
        fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let start = 1000u64;
        let end = data.len() as u64 - 7;
        (&f).seek(SeekFrom::Start(start)).unwrap();
        let mut r = Prefetch::new(&f, start, end);
        assert_eq!(r.advised, start, "a big range is advised");
        let mut got = Vec::new();
        (&mut r).take(end - start).read_to_end(&mut got).unwrap();
        assert_eq!(got, &data[start as usize..end as usize]);
        assert_eq!(
            r.advised, end,
            "advice covered the whole range, and no further"
        );
        assert_eq!(r.pos, end);
    }
}
