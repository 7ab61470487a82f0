//! How `check` reads: a private copy of the database (so the repository is not modified), record
//! headers at indexed offsets, and record payloads (verified; phase 7 for chunks) — the last two
//! on parallel threads, in pack order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::index::{Index, Indexed};
use super::{CheckOptions, CheckStats, ProblemKind, State};
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::progress::ProgressHandle;
use crate::repo::keys::Location;
use crate::repo::pack::{RecordHeader, RecordType, RECORD_HEADER_LEN};
use crate::repo::Repo;

/// A private copy of a repository's database, removed when dropped (see [`open_copy`]).
pub struct DbCopy(std::path::PathBuf);

impl Drop for DbCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the repository at `path` over a private copy of its database, so that checking changes
/// no byte of the repository: sled rewrites its recovery snapshot (and zeroes a segment tail) the
/// first time a database is opened after a write, even for reading. The copy lives in the system
/// temp directory and costs the size of `index/`. The repository lock is held throughout.
pub fn open_copy(path: &std::path::Path) -> Result<(Arc<Repo>, DbCopy)> {
    let lock = crate::open::Open::new(path).lock_without_index()?;
    let index = path.join(crate::repo::INDEX_DIR);
    if !index.is_dir() {
        return Err(crate::Error::IndexMissing(path.to_path_buf()));
    }
    let copy = copy_db(&index)?;
    let db = crate::repo::open_sled(
        sled::Config::new()
            .path(copy.path())
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput),
    )?;
    Ok((lock.open_over(db)?, copy))
}

/// Copies the database directory `index` into the system temp directory (removed when the
/// result is dropped), for reading it without writing to it.
pub fn copy_db(index: &std::path::Path) -> Result<DbCopy> {
    use crate::error::IoContext;
    let dest = std::env::temp_dir().join(format!(
        "strata-check-{}-{}",
        std::process::id(),
        crate::time::now_ns()
    ));
    let copy = DbCopy(dest.clone());
    std::fs::create_dir_all(&dest).ctx("Creating", &dest)?;
    copy_tree(index, &dest)?;
    Ok(copy)
}

impl DbCopy {
    /// Where the copy is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use crate::error::IoContext;
    for e in std::fs::read_dir(from).ctx("Reading", from)? {
        let e = e.ctx("Reading", from)?;
        let dest = to.join(e.file_name());
        if e.file_type().ctx("Reading", e.path())?.is_dir() {
            std::fs::create_dir_all(&dest).ctx("Creating", &dest)?;
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest).ctx("Copying", e.path())?;
        }
    }
    Ok(())
}

/// Checks one index entry against its pack and the record header there; returns the record type
/// when the header agrees, else the problem.
fn check_header(
    repo: &Repo,
    packs: &HashMap<PackId, u64>,
    id: ChunkId,
    loc: Location,
) -> std::result::Result<RecordType, (ProblemKind, String)> {
    let Some(&size) = packs.get(&loc.pack) else {
        return Err((
            ProblemKind::MissingPack,
            format!(
                "Chunk {id} is indexed in pack {}, which does not exist",
                loc.pack
            ),
        ));
    };
    let end = loc.offset + RECORD_HEADER_LEN as u64 + loc.stored_len as u64;
    if end > size {
        return Err((
            ProblemKind::RecordOutOfBounds,
            format!(
                "Chunk {id} is indexed at bytes {}..{end} of pack {}, which has {size} bytes",
                loc.offset, loc.pack
            ),
        ));
    }
    let h = repo
        .packs()
        .read_at(loc.pack, loc.offset, RECORD_HEADER_LEN)
        .map_err(|e| e.to_string())
        .and_then(|b| RecordHeader::decode(&b))
        .map_err(|err| {
            (
                ProblemKind::BadRecordHeader,
                format!(
                    "Chunk {id}: the record header at offset {} of pack {}: {err}",
                    loc.offset, loc.pack
                ),
            )
        })?;
    if h.id != id
        || h.stored_len != loc.stored_len
        || h.raw_len != loc.raw_len
        || h.compression != loc.compression
    {
        return Err((
            ProblemKind::HeaderMismatch,
            format!(
                "Chunk {id}: the record at offset {} of pack {} holds {} ({} of {} bytes, compression {}), the index says {} of {} bytes, compression {}",
                loc.offset, loc.pack, h.id, h.stored_len, h.raw_len, h.compression,
                loc.stored_len, loc.raw_len, loc.compression
            ),
        ));
    }
    Ok(h.rtype)
}

/// Runs [`check_header`] for every entry (sorted by location) on `threads` threads, each taking
/// runs of consecutive entries; on a cold cache the header reads dominate, and they parallelize.
pub(super) fn check_headers(
    repo: &Repo,
    packs: &HashMap<PackId, u64>,
    indexed: &[Indexed],
    threads: usize,
) -> Vec<std::result::Result<RecordType, (ProblemKind, String)>> {
    const BATCH: usize = 256;
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
    };
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(indexed.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.min(indexed.len().div_ceil(BATCH)).max(1) {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= indexed.len() {
                    break;
                }
                let to = (from + BATCH).min(indexed.len());
                let part: Vec<_> = indexed[from..to]
                    .iter()
                    .map(|e| check_header(repo, packs, e.id, e.loc))
                    .collect();
                done.lock().unwrap().push((from, part));
            });
        }
    });
    let mut parts = done.into_inner().unwrap();
    parts.sort_by_key(|(from, _)| *from);
    parts.into_iter().flat_map(|(_, p)| p).collect()
}

/// Phase 7: re-reads and re-hashes the chunk records of `index` not already known bad (a seeded
/// random `percent` of them) on `opts.threads` threads; a failure is a bad chunk.
pub(super) fn read_chunks(
    repo: &Repo,
    index: &Index,
    percent: f64,
    opts: &CheckOptions,
    st: &mut State,
    stats: &mut CheckStats,
) {
    let mut todo: Vec<(ChunkId, Location)> = index
        .of_type(RecordType::Chunk)
        .filter(|e| !st.bad.contains(&e.id))
        .map(|e| (e.id, e.loc))
        .collect();
    sample(&mut todo, percent, opts.seed);
    opts.progress
        .0
        .verify_total(todo.iter().map(|(_, l)| l.stored_len as u64).sum());
    stats.records_verified += todo.len() as u64;
    stats.bytes_verified += todo
        .iter()
        .map(|(_, l)| l.stored_len as u64 + RECORD_HEADER_LEN as u64)
        .sum::<u64>();
    let read = |id: &ChunkId, loc: &Location| repo.verify_record(id, loc);
    for (id, loc, err) in verify_with(&todo, read, opts.threads, &opts.progress) {
        st.bad_chunk(id, ProblemKind::CorruptRecord, err, Some(loc.pack));
    }
}

/// Keeps a random `percent` of `items` (at least one when `percent > 0` and there are any),
/// seeded, then sorts them by location so reads go through each pack in order.
fn sample(items: &mut Vec<(ChunkId, Location)>, percent: f64, seed: Option<u64>) {
    if percent < 100.0 {
        let mut x = seed.unwrap_or_else(|| crate::time::now_ns() as u64) | 1;
        let mut next = || {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        items.sort_by_key(|(id, _)| *id);
        for i in (1..items.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
        let keep = ((items.len() as f64 * percent / 100.0).ceil() as usize).min(items.len());
        items.truncate(if percent > 0.0 { keep.max(1) } else { 0 });
    }
    items.sort_by_key(|(_, l)| (l.pack, l.offset));
}

/// Verifies `items` with `verify` (which reads and re-hashes one record) on `threads` threads
/// (0: two per CPU), handing each thread runs of consecutive items so packs are read in order;
/// returns the failures, sorted by id.
pub fn verify_with<F>(
    items: &[(ChunkId, Location)],
    verify: F,
    threads: usize,
    progress: &ProgressHandle,
) -> Vec<(ChunkId, Location, String)>
where
    F: Fn(&ChunkId, &Location) -> Result<()> + Sync,
{
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
    };
    const BATCH: usize = 32;
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len().div_ceil(BATCH)).max(1) {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= items.len() {
                    break;
                }
                for (id, loc) in &items[from..(from + BATCH).min(items.len())] {
                    if let Err(e) = verify(id, loc) {
                        failed.lock().unwrap().push((*id, *loc, e.to_string()));
                    }
                    progress.0.data_checked(loc.stored_len as u64);
                }
            });
        }
    });
    let mut f = failed.into_inner().unwrap();
    f.sort_by_key(|(id, _, _)| *id);
    f
}
