//! The mount's bounded LRU of verified, decompressed chunks, with in-flight deduplication.
//! Bounded by bytes, not entries; a chunk larger than the whole cache is served but not kept.
//! The byte count is what the entries really hold: each buffer's allocated capacity plus a fixed
//! per-entry overhead (LRU node, `Arc` header, id), so `--cache-size` bounds the memory itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::lock;
use crate::id::ChunkId;
use crate::repo::Repo;

/// Bounded LRU of verified, decompressed chunks, with in-flight deduplication: concurrent readers
/// of one chunk wait for a single load.
pub struct ChunkCache {
    repo: Arc<Repo>,
    cap_bytes: u64,
    inner: Mutex<CacheInner>,
    /// Buffers of evicted chunks, reused for the next misses: a streaming reader then decodes
    /// into memory that is already mapped instead of faulting in fresh pages for every chunk.
    spare: Mutex<Vec<Vec<u8>>>,
    inflight: Mutex<HashMap<ChunkId, Arc<Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Memory of one cached entry besides its buffer, as malloc hands it out: the LRU node (key,
/// value pointer, links: 64 bytes), its hash-table slot (up to 32 at the table's worst load),
/// the `Arc` with its `Vec` header (48) and the buffer's own malloc header and rounding (up to
/// 32). Counting 128 undercounted small chunks (a 2 KB order document) by about 2%.
const ENTRY_OVERHEAD: u64 = 176;

/// Bytes one cached chunk costs.
fn cost(d: &Arc<Vec<u8>>) -> u64 {
    d.capacity() as u64 + ENTRY_OVERHEAD
}

struct CacheInner {
    lru: LruCache<ChunkId, Arc<Vec<u8>>>,
    bytes: u64,
}

impl ChunkCache {
    /// An empty cache holding at most `cap_bytes` of chunk data.
    pub fn new(repo: Arc<Repo>, cap_bytes: u64) -> ChunkCache {
        ChunkCache {
            repo,
            cap_bytes,
            inner: Mutex::new(CacheInner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            spare: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn cached(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        lock(&self.inner).lru.get(id).cloned()
    }

    /// Whether `id` is cached (does not touch recency).
    pub fn contains(&self, id: &ChunkId) -> bool {
        lock(&self.inner).lru.contains(id)
    }

    /// (hits, misses, bytes held).
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            lock(&self.inner).bytes,
        )
    }

    /// The verified plaintext of chunk `id`, from the cache or the repository.
    pub fn get(&self, id: &ChunkId) -> crate::Result<Arc<Vec<u8>>> {
        if let Some(d) = self.cached(id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        let slot = lock(&self.inflight).entry(*id).or_default().clone();
        let guard = lock(&slot);
        if let Some(d) = self.cached(id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let res = self.load(id).map(|mut d| {
            // What is kept should be what is counted.
            if d.capacity() > d.len() + d.len() / 4 {
                d.shrink_to_fit();
            }
            Arc::new(d)
        });
        if let Ok(d) = &res {
            let len = cost(d);
            if len <= self.cap_bytes {
                let mut evicted = Vec::new();
                let mut inner = lock(&self.inner);
                if let Some(old) = inner.lru.put(*id, d.clone()) {
                    inner.bytes -= cost(&old);
                }
                inner.bytes += len;
                while inner.bytes > self.cap_bytes {
                    match inner.lru.pop_lru() {
                        Some((_, v)) => {
                            inner.bytes -= cost(&v);
                            evicted.push(v);
                        }
                        None => break,
                    }
                }
                drop(inner);
                self.keep_spares(evicted);
            }
        }
        drop(guard);
        let mut inflight = lock(&self.inflight);
        if inflight.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            inflight.remove(id);
        }
        res
    }

    /// Appends chunk `id`'s verified plaintext to `out` without keeping it: for a chunk a
    /// large read consumes whole, which the kernel page cache will hold from now on. Streaming
    /// through the cache instead cost a fresh buffer (page faults), an insertion and a copy per
    /// chunk, and pushed out chunks worth keeping. A cached copy is used when there is one.
    pub fn append(&self, id: &ChunkId, out: &mut Vec<u8>) -> crate::Result<()> {
        if let Some(d) = self.cached(id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(&d);
            return Ok(());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let loc = self.repo.chunk_location(id)?;
        self.repo.read_record_append(id, &loc, out)
    }

    /// Reads chunk `id` into a spare buffer of about its size when there is one.
    fn load(&self, id: &ChunkId) -> crate::Result<Vec<u8>> {
        let loc = self.repo.chunk_location(id)?;
        let want = loc.raw_len as usize;
        let mut buf = {
            let mut spare = lock(&self.spare);
            match spare
                .iter()
                .position(|b| b.capacity() >= want && b.capacity() <= want + want / 4)
            {
                Some(i) => spare.swap_remove(i),
                None => Vec::new(),
            }
        };
        self.repo.read_record_into(id, &loc, &mut buf)?;
        Ok(buf)
    }

    /// Keeps the buffers of evicted chunks no reader holds any more, up to [`SPARE_BUFFERS`].
    fn keep_spares(&self, evicted: Vec<Arc<Vec<u8>>>) {
        let mut spare = lock(&self.spare);
        for v in evicted {
            if spare.len() >= SPARE_BUFFERS {
                break;
            }
            if let Ok(b) = Arc::try_unwrap(v) {
                spare.push(b);
            }
        }
    }
}

/// Evicted chunk buffers kept for reuse. Every miss takes one and every insertion into a full
/// cache gives at least one back, so a few suffice for streaming; they are memory outside
/// `--cache-size` (at most 5 MiB with 1 MiB chunks).
const SPARE_BUFFERS: usize = 4;
