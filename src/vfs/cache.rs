//! The mount's bounded LRU of verified, decompressed chunks, with in-flight deduplication.
//! Bounded by bytes, not entries; a chunk larger than the whole cache is served but not kept.
//! The byte count is what the entries really hold: each buffer's allocated capacity plus a fixed
//! per-entry overhead (LRU node, `Arc` header, id), so `--cache-size` bounds the memory itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use lru::LruCache;

use super::ahead::Locations;
use super::lock;
use crate::id::ChunkId;
use crate::repo::Repo;

/// The repository handle chunk reads go to. A live mount replaces it when it takes a new copy of
/// the index: the packs are the same, only where the index says a chunk is can change (a prune
/// moved it), and the newest copy knows best.
pub struct Current(RwLock<Arc<Repo>>);

impl Current {
    /// Reads going to `repo`.
    pub fn new(repo: Arc<Repo>) -> Current {
        Current(RwLock::new(repo))
    }

    /// The handle now.
    pub fn get(&self) -> Arc<Repo> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the handle; returns the one it replaces.
    pub fn set(&self, repo: Arc<Repo>) -> Arc<Repo> {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|e| e.into_inner()),
            repo,
        )
    }
}

/// Bounded LRU of verified, decompressed chunks, with in-flight deduplication: concurrent readers
/// of one chunk wait for a single load.
pub struct ChunkCache {
    repo: Arc<Current>,
    cap_bytes: u64,
    inner: Mutex<CacheInner>,
    /// Buffers of evicted chunks, reused for the next misses: a streaming reader then decodes
    /// into memory that is already mapped instead of faulting in fresh pages for every chunk.
    spare: Mutex<Vec<Vec<u8>>>,
    inflight: Mutex<HashMap<ChunkId, Arc<Mutex<()>>>>,
    /// Locations looked up ahead of streaming readers (see the `ahead` module).
    locations: Arc<Locations>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Chunks read from the packs (verified) and their plaintext bytes, for the mount's stats.
    reads: AtomicU64,
    read_bytes: AtomicU64,
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
    /// Chunks loaded for a streaming read, newest last: at most [`STREAM_CHUNKS`], outside the
    /// LRU (see [`Keep::Briefly`]).
    stream: VecDeque<(ChunkId, Arc<Vec<u8>>)>,
    /// What `lru` and `stream` hold together, by [`cost`].
    bytes: u64,
}

impl CacheInner {
    fn find(&mut self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        if let Some(d) = self.lru.get(id) {
            return Some(d.clone());
        }
        self.stream
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, d)| d.clone())
    }

    /// Drops least recently used chunks until the cache is within `cap`; hands back their buffers.
    fn shrink_to(&mut self, cap: u64, evicted: &mut Vec<Arc<Vec<u8>>>) {
        while self.bytes > cap {
            let old = match self.lru.pop_lru() {
                Some((_, v)) => v,
                None => match self.stream.pop_front() {
                    Some((_, v)) => v,
                    None => break,
                },
            };
            self.bytes -= cost(&old);
            evicted.push(old);
        }
    }
}

/// How long a loaded chunk is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// In the LRU, for as long as it is used often enough: a chunk read in small pieces (a
    /// database page, a random `pread`) is likely read again.
    Lru,
    /// Among the last 16 chunks of streaming reads only. A chunk only partly
    /// inside a large (readahead) request is needed once more, by the neighbouring request,
    /// and then lives on in the kernel's page cache; kept in the LRU it would push out chunks
    /// worth keeping, and every one would need a fresh buffer until the LRU is full. The ring's
    /// buffers are recycled at once instead, so a stream decodes into memory already mapped.
    Briefly,
}

/// Chunks kept for streaming reads: the kernel has a few readahead requests in flight per
/// stream, each needing at most two chunks it only partly covers.
pub const STREAM_CHUNKS: usize = 16;

impl ChunkCache {
    /// An empty cache holding at most `cap_bytes` of chunk data.
    pub fn new(repo: Arc<Repo>, cap_bytes: u64) -> ChunkCache {
        ChunkCache {
            repo: Arc::new(Current::new(repo)),
            cap_bytes,
            inner: Mutex::new(CacheInner {
                lru: LruCache::unbounded(),
                stream: VecDeque::new(),
                bytes: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            spare: Mutex::new(Vec::new()),
            locations: Arc::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
        }
    }

    /// Where the cache finds locations looked up ahead; the lookup threads fill it.
    pub fn locations(&self) -> &Arc<Locations> {
        &self.locations
    }

    /// The repository handle reads go to (shared with the lookup threads).
    pub fn current(&self) -> &Arc<Current> {
        &self.repo
    }

    /// Sends reads to `repo` from now on (a newer copy of the index) and forgets the locations
    /// looked up in the old one. Cached chunks stay: they are verified content, wherever they
    /// were read from.
    pub fn set_repo(&self, repo: Arc<Repo>) {
        drop(self.repo.set(repo));
        self.locations.clear();
    }

    /// The pack location of `id`: looked up ahead, else from the index.
    fn location(&self, id: &ChunkId) -> crate::Result<crate::repo::keys::Location> {
        match self.locations.get(id) {
            Some(l) => Ok(l),
            None => self.repo.get().chunk_location(id),
        }
    }

    fn cached(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        lock(&self.inner).find(id)
    }

    /// Whether `id` is cached (does not touch recency).
    #[cfg(test)]
    pub fn contains(&self, id: &ChunkId) -> bool {
        let inner = lock(&self.inner);
        inner.lru.contains(id) || inner.stream.iter().any(|(k, _)| k == id)
    }

    /// (hits, misses, bytes held).
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            lock(&self.inner).bytes,
        )
    }

    /// Chunks read from the pack files and verified, and their plaintext bytes.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.read_bytes.load(Ordering::Relaxed),
        )
    }

    /// The bound on what the cache holds, in bytes (`--cache-size`).
    pub fn capacity(&self) -> u64 {
        self.cap_bytes
    }

    fn count_read(&self, bytes: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The verified plaintext of chunk `id`, from the cache or the repository; a loaded chunk
    /// is kept as `keep` says.
    pub fn get(&self, id: &ChunkId, keep: Keep) -> crate::Result<Arc<Vec<u8>>> {
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
        let res = self.load(id, keep).map(|mut d| {
            // What the LRU keeps should be what is counted. A spare buffer larger than needed
            // shrinks in place (glibc `mremap`s a mapped buffer: the pages kept stay mapped).
            // The ring's buffers keep their size, so that any of them fits the next chunk.
            if keep == Keep::Lru && d.capacity() > d.len() + d.len() / 4 {
                d.shrink_to_fit();
            }
            Arc::new(d)
        });
        if let Ok(d) = &res {
            self.count_read(d.len());
            self.insert(*id, d, keep);
        }
        drop(guard);
        let mut inflight = lock(&self.inflight);
        if inflight.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            inflight.remove(id);
        }
        res
    }

    fn insert(&self, id: ChunkId, d: &Arc<Vec<u8>>, keep: Keep) {
        let len = cost(d);
        if len > self.cap_bytes {
            return;
        }
        let mut evicted = Vec::new();
        let mut inner = lock(&self.inner);
        match keep {
            Keep::Lru => {
                if let Some(old) = inner.lru.put(id, d.clone()) {
                    inner.bytes -= cost(&old);
                }
            }
            Keep::Briefly => {
                if inner.stream.len() >= STREAM_CHUNKS {
                    let (_, old) = inner.stream.pop_front().expect("ring is not empty");
                    inner.bytes -= cost(&old);
                    evicted.push(old);
                }
                inner.stream.push_back((id, d.clone()));
            }
        }
        inner.bytes += len;
        let cap = self.cap_bytes;
        inner.shrink_to(cap, &mut evicted);
        drop(inner);
        self.keep_spares(evicted);
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
        let loc = self.location(id)?;
        let before = out.len();
        self.repo.get().read_record_append(id, &loc, out)?;
        self.count_read(out.len() - before);
        Ok(())
    }

    /// Reads chunk `id` into the smallest spare buffer it fits in, if any. A new buffer for the
    /// ring is made big enough for any chunk: its pages are faulted in once, by the chunks
    /// that need them, and it can be reused for any later one.
    fn load(&self, id: &ChunkId, keep: Keep) -> crate::Result<Vec<u8>> {
        let loc = self.location(id)?;
        let want = loc.raw_len as usize;
        let mut buf = {
            // The smallest spare that fits: a larger one is shrunk in place once filled.
            let mut spare = lock(&self.spare);
            match (0..spare.len())
                .filter(|&i| spare[i].capacity() >= want)
                .min_by_key(|&i| spare[i].capacity())
            {
                Some(i) => spare.swap_remove(i),
                None if keep == Keep::Briefly => {
                    Vec::with_capacity(want.max(crate::chunker::MAX_SIZE as usize))
                }
                None => Vec::new(),
            }
        };
        self.repo.get().read_record_into(id, &loc, &mut buf)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository holding one incompressible file of many chunks; returns it with the chunks.
    fn repo_with_chunks() -> (tempfile::TempDir, Arc<Repo>, Vec<ChunkId>) {
        let (t, repo, ids) = crate::testutil::repo_with_one_file(12 << 20, 7);
        assert!(ids.len() > STREAM_CHUNKS + 2, "{} chunks", ids.len());
        (t, repo, ids)
    }

    #[test]
    fn streamed_chunks_stay_few_and_leave_the_lru_alone() {
        let (_t, repo, ids) = repo_with_chunks();
        let cache = ChunkCache::new(repo.clone(), 1 << 30);
        let kept = cache.get(&ids[0], Keep::Lru).unwrap();
        for id in &ids[1..] {
            let d = cache.get(id, Keep::Briefly).unwrap();
            assert_eq!(ChunkId::of(&d), *id);
        }
        assert!(cache.contains(&ids[0]), "the LRU chunk is still there");
        let ring_start = ids.len() - STREAM_CHUNKS;
        for (i, id) in ids.iter().enumerate().skip(1) {
            assert_eq!(cache.contains(id), i >= ring_start, "chunk {i}");
        }
        let inner = lock(&cache.inner);
        let expected: u64 = cost(&kept) + inner.stream.iter().map(|(_, d)| cost(d)).sum::<u64>();
        assert_eq!(
            inner.bytes, expected,
            "the ring counts against the cache size"
        );
        drop(inner);
        // The buffers of chunks that left the ring are reused by the next loads.
        assert!(!lock(&cache.spare).is_empty());
        let (hits, misses, _) = cache.stats();
        assert_eq!((hits, misses), (0, ids.len() as u64));
        cache.get(&ids[ids.len() - 1], Keep::Lru).unwrap();
        assert_eq!(cache.stats().0, 1, "a ring chunk is a hit for any reader");
    }

    #[test]
    fn a_small_cache_evicts_from_the_ring_too() {
        let (_t, repo, ids) = repo_with_chunks();
        let one = cost(&Arc::new(vec![0u8; 1 << 20]));
        let cache = ChunkCache::new(repo, 2 * one);
        for id in &ids {
            cache.get(id, Keep::Briefly).unwrap();
            assert!(cache.stats().2 <= 2 * one);
        }
        for id in &ids {
            cache.get(id, Keep::Lru).unwrap();
            assert!(cache.stats().2 <= 2 * one);
        }
    }

    #[test]
    fn a_larger_spare_is_used_and_shrunk() {
        let (_t, repo, ids) = repo_with_chunks();
        let cache = ChunkCache::new(repo.clone(), 1 << 30);
        lock(&cache.spare).push(Vec::with_capacity(4 << 20));
        let d = cache.get(&ids[0], Keep::Lru).unwrap();
        assert_eq!(ChunkId::of(&d), ids[0]);
        assert!(lock(&cache.spare).is_empty(), "the spare was taken");
        assert!(
            d.capacity() <= d.len() + d.len() / 4,
            "and shrunk to what is counted"
        );
    }
}
