//! File content for restore: a chunk source that reads and verifies every chunk once per restore
//! even when many files share it, writing a file with its holes left as holes, and comparing a
//! file on disk with an entry's chunk hashes (for "already identical" and `--verify`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::entry::Entry;
use crate::error::Result;
use crate::id::ChunkId;
use crate::repo::keys::Location;
use crate::repo::Repo;

/// One shared chunk: how many planned uses remain, and its bytes once the first user read them
/// (`None` inside when over budget or failed: users then read it themselves).
struct Slot {
    remaining: u32,
    cell: Arc<OnceLock<Option<Arc<Vec<u8>>>>>,
}

/// Hands out verified chunk bytes. Chunks used more than once in the restore are kept from their
/// first read until their last planned use (bounded by `budget` bytes); the others are read,
/// used and dropped. Concurrent first users of a chunk wait for one read instead of each reading.
pub struct Chunks {
    repo: Arc<Repo>,
    /// The chunks used more than once (fixed): the others never take the `shared` lock.
    shared_ids: HashSet<ChunkId>,
    shared: Mutex<HashMap<ChunkId, Slot>>,
    held_bytes: AtomicUsize,
    budget: usize,
    reads: AtomicU64,
}

impl Chunks {
    /// The repository read from.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// `uses` counts, per chunk, how many times the planned files refer to it.
    pub fn new(repo: Arc<Repo>, uses: HashMap<ChunkId, u32>, budget: usize) -> Chunks {
        let shared: HashMap<ChunkId, Slot> = uses
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, n)| {
                (
                    id,
                    Slot {
                        remaining: n,
                        cell: Arc::new(OnceLock::new()),
                    },
                )
            })
            .collect();
        Chunks {
            repo,
            shared_ids: shared.keys().copied().collect(),
            shared: Mutex::new(shared),
            held_bytes: AtomicUsize::new(0),
            budget,
            reads: AtomicU64::new(0),
        }
    }

    /// Where chunk `id` is stored, when the index knows it (used to order reads).
    pub fn location(&self, id: &ChunkId) -> Option<Location> {
        self.repo.chunk_location(id).ok()
    }

    /// Chunks read from the repository so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn read(&self, id: &ChunkId, loc: Option<&Location>) -> Result<Arc<Vec<u8>>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(match loc {
            Some(l) => self.repo.read_record_at(id, l)?,
            None => self.repo.read_chunk(id)?,
        }))
    }

    /// The verified bytes of chunk `id` (of plaintext length `len`), read from `loc` when the
    /// caller already looked it up.
    pub fn get(&self, id: &ChunkId, len: u32, loc: Option<&Location>) -> Result<Arc<Vec<u8>>> {
        if !self.shared_ids.contains(id) {
            return self.read(id, loc);
        }
        let cell = match self.shared.lock().unwrap().get(id) {
            Some(slot) => slot.cell.clone(),
            None => return self.read(id, loc),
        };
        let held = cell.get_or_init(|| {
            let len = len as usize;
            if self.held_bytes.fetch_add(len, Ordering::Relaxed) + len > self.budget {
                self.held_bytes.fetch_sub(len, Ordering::Relaxed);
                return None;
            }
            match self.read(id, loc) {
                Ok(d) => Some(d),
                Err(_) => {
                    self.held_bytes.fetch_sub(len, Ordering::Relaxed);
                    None // each user re-reads and gets the typed error itself
                }
            }
        });
        match held {
            Some(d) => Ok(d.clone()),
            None => self.read(id, loc),
        }
    }

    /// Marks one planned use of each of `entry`'s chunks as done (written, skipped or failed);
    /// a shared chunk is dropped after its last use.
    pub fn release(&self, entry: &Entry) {
        if !entry.chunks.iter().any(|c| self.shared_ids.contains(&c.id)) {
            return;
        }
        let mut shared = self.shared.lock().unwrap();
        for c in &entry.chunks {
            if let Some(slot) = shared.get_mut(&c.id) {
                slot.remaining -= 1;
                if slot.remaining == 0 {
                    let slot = shared.remove(&c.id).unwrap();
                    if let Some(Some(d)) = slot.cell.get() {
                        self.held_bytes.fetch_sub(d.len(), Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Writes `entry`'s content into the empty file `f`: each chunk at its offset, nothing in the
/// gaps (they stay holes), then, when the last chunk does not end the file (a trailing hole), the
/// length set. `first` is where the first chunk is, when the caller already looked it up.
/// Returns the bytes written.
pub fn write_content(
    f: &File,
    entry: &Entry,
    first: Option<Location>,
    chunks: &Chunks,
) -> Result<u64, WriteFailure> {
    let mut written = 0;
    let mut end = 0;
    for (k, c) in entry.chunks.iter().enumerate() {
        let loc = if k == 0 { first.as_ref() } else { None };
        let data = chunks.get(&c.id, c.len, loc).map_err(WriteFailure::Repo)?;
        f.write_all_at(&data, c.offset).map_err(WriteFailure::Io)?;
        written += data.len() as u64;
        end = end.max(c.offset + data.len() as u64);
    }
    if end != entry.size {
        f.set_len(entry.size).map_err(WriteFailure::Io)?;
    }
    Ok(written)
}

/// Why a file's content could not be written.
#[derive(Debug)]
pub enum WriteFailure {
    /// The repository failed (missing or corrupt chunk).
    Repo(crate::Error),
    /// The target failed.
    Io(std::io::Error),
}

/// Whether the open file `f` holds exactly `entry`'s content: same size, every chunk's range
/// hashing to its id (as `repo` computes ids), every gap zero. Reads the file, never the
/// repository's data.
pub fn matches(f: &File, entry: &Entry, repo: &Repo) -> std::io::Result<bool> {
    if f.metadata()?.len() != entry.size {
        return Ok(false);
    }
    let mut buf = Vec::new();
    let mut pos = 0u64;
    for c in &entry.chunks {
        if c.offset > pos && !zeros(f, pos, c.offset, &mut buf)? {
            return Ok(false);
        }
        buf.resize(c.len as usize, 0);
        f.read_exact_at(&mut buf, c.offset)?;
        if repo.chunk_id(&buf) != c.id {
            return Ok(false);
        }
        pos = c.offset + c.len as u64;
    }
    if entry.size > pos && !zeros(f, pos, entry.size, &mut buf)? {
        return Ok(false);
    }
    Ok(true)
}

/// Whether bytes `from..to` of `f` are all zero; skips what the filesystem reports as holes.
fn zeros(f: &File, from: u64, to: u64, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    for (start, end) in crate::fsmeta::data_segments(f, to) {
        let (s, e) = (start.max(from), end.min(to));
        let mut p = s;
        while p < e {
            let n = ((e - p) as usize).min(1 << 20);
            buf.resize(n, 0);
            f.read_exact_at(buf, p)?;
            if buf.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            p += n as u64;
        }
    }
    Ok(true)
}
