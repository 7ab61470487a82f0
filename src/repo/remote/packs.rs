//! Packs in a bucket: `packs/XX/NNNNNNNNNNNNNNNN.pack` objects, written once and read with
//! ranged GETs through an on-disk block cache.
//!
//! **Writing.** A new pack is spooled to `CACHE/uploads/` and handed to uploader threads when it
//! is finished, so the backup goes on while the pack travels; until its upload completes, reads
//! of it are served from the spool file. Nothing that names a pack reaches the bucket before the
//! pack does: the commit ([`super::journal`]) waits for every upload first ([`RemotePacks::barrier`]).
//!
//! **Reading.** Packs are read in aligned blocks of [`BLOCK`] bytes, each fetched once with a
//! ranged GET and kept in `CACHE/blocks/` (bounded: the oldest blocks go first once the cache
//! passes its limit) and in a small in-memory cache. A cached block carries a blake3 hash of its
//! bytes and is fetched again when it does not match, so a damaged cache costs a request, never a
//! wrong byte; above this, every record is verified against its id as for a local pack.
//! [`PackBackend::will_need`] (the mount's read-ahead for sequential readers) fetches blocks in the
//! background.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use bytes::Bytes;

use super::client::Client;
use crate::error::{Error, IoContext, Result};
use crate::id::PackId;
use crate::repo::pack::{PackBackend, PackSink};

/// Bytes fetched per ranged GET and kept per cache file.
pub const BLOCK: u64 = 256 << 10;

/// Blocks kept in memory (verified), per process: what the read-ahead has in flight
/// ([`FETCHERS`] runs of [`RUN_BLOCKS`]) and 16 MiB more, so that blocks fetched ahead are still
/// there when their reader comes (80 MiB).
const MEMORY_BLOCKS: usize = FETCHERS * RUN_BLOCKS as usize + 64;

/// Uploads in progress at once; a finished pack waits for a free uploader beyond this many
/// queued, which bounds the spool to a few packs.
const UPLOADERS: usize = 2;

/// Background block fetchers for read-ahead: ranged GETs in flight at once.
const FETCHERS: usize = 8;

/// The on-disk block cache's default limit (`STRATA_S3_CACHE_MB`).
const DEFAULT_CACHE_MB: u64 = 2048;

/// The object name of a pack.
pub fn pack_key(id: PackId) -> String {
    format!("packs/{:02x}/{id}.pack", id.0 & 0xff)
}

/// A pack name from the bucket's `packs/` listing (`XX/NNNN.pack`).
fn parse_pack_key(name: &str) -> Option<PackId> {
    let file = name.rsplit('/').next()?;
    let hex = file.strip_suffix(".pack")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok().map(PackId))
        .flatten()
}

type BlockKey = (PackId, u64);

/// Blocks `first .. first + count` of a pack.
type Run = (PackId, u64, u64);

/// Blocks one read-ahead GET asks for at most (8 MiB).
const RUN_BLOCKS: u64 = 32;

/// The packs of a repository kept in object storage.
pub struct RemotePacks {
    client: Arc<Client>,
    spool: PathBuf,
    blocks: PathBuf,
    /// Finished packs whose upload is not complete yet, with their spool files.
    pending: Mutex<HashMap<PackId, PathBuf>>,
    uploaded: Condvar,
    /// The first upload that failed since the last barrier.
    failed: Mutex<Option<Error>>,
    upload_tx: OnceLock<crossbeam_channel::Sender<(PackId, PathBuf)>>,
    fetch_tx: OnceLock<crossbeam_channel::Sender<Run>>,
    inflight: Mutex<HashSet<BlockKey>>,
    fetched: Condvar,
    memory: Mutex<lru::LruCache<BlockKey, Arc<Bytes>>>,
    cache_used: AtomicU64,
    cache_limit: u64,
    cache_scanned: AtomicBool,
    /// Read every block from the bucket once before using it (`check`): cached copies are not
    /// trusted to be what the bucket holds.
    bypass: AtomicBool,
    /// Blocks fetched again since `bypass` was set.
    refreshed: Mutex<HashSet<BlockKey>>,
    /// Per pack recently fetched from by a reader, the block where that fetch ended.
    last_fetch: Mutex<lru::LruCache<PackId, u64>>,
    /// Sizes of packs read recently (every ranged GET says it): read-ahead stops at the end.
    sizes: Mutex<lru::LruCache<PackId, u64>>,
}

impl RemotePacks {
    /// Packs of the bucket behind `client`, with their spool and block cache in `cache` (the
    /// repository's cache directory).
    pub fn new(client: Arc<Client>, cache: &Path) -> Result<Arc<RemotePacks>> {
        // Both directories are made when first needed: a repository being created needs its
        // directory empty until then.
        let spool = cache.join("uploads");
        let blocks = cache.join("blocks");
        let limit_mb = std::env::var("STRATA_S3_CACHE_MB")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_CACHE_MB);
        Ok(Arc::new(RemotePacks {
            client,
            spool,
            blocks,
            pending: Default::default(),
            uploaded: Condvar::new(),
            failed: Mutex::new(None),
            upload_tx: OnceLock::new(),
            fetch_tx: OnceLock::new(),
            inflight: Default::default(),
            fetched: Condvar::new(),
            memory: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(MEMORY_BLOCKS).expect("nonzero"),
            )),
            cache_used: AtomicU64::new(0),
            cache_limit: limit_mb.saturating_mul(1 << 20),
            cache_scanned: AtomicBool::new(false),
            bypass: AtomicBool::new(false),
            refreshed: Default::default(),
            last_fetch: Mutex::new(lru::LruCache::new(NonZeroUsize::new(64).expect("nonzero"))),
            sizes: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(1024).expect("nonzero"),
            )),
        }))
    }

    /// Waits until every finished pack is in the bucket; the first upload that failed since the
    /// last barrier is the error.
    pub fn barrier(&self) -> Result<()> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while !p.is_empty() {
            p = self.uploaded.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        drop(p);
        match self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn uploader(self: &Arc<Self>) -> &crossbeam_channel::Sender<(PackId, PathBuf)> {
        self.upload_tx.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded::<(PackId, PathBuf)>(UPLOADERS);
            for _ in 0..UPLOADERS {
                let rx = rx.clone();
                let me = Arc::downgrade(self);
                std::thread::spawn(move || {
                    for (id, file) in rx {
                        let Some(me) = me.upgrade() else { return };
                        me.upload(id, &file);
                    }
                });
            }
            tx
        })
    }

    fn upload(&self, id: PackId, file: &Path) {
        let r = self.client.put_file(&pack_key(id), file);
        match r {
            Ok(()) => {
                let _ = fs::remove_file(file);
            }
            Err(e) => {
                log::error!("Uploading pack {id}: {e}");
                let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                f.get_or_insert(e);
            }
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(&id);
        self.uploaded.notify_all();
    }

    fn fetcher(self: &Arc<Self>) -> &crossbeam_channel::Sender<Run> {
        self.fetch_tx.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::unbounded::<Run>();
            for _ in 0..FETCHERS {
                let rx = rx.clone();
                let me = Arc::downgrade(self);
                std::thread::spawn(move || {
                    for run in rx {
                        let Some(me) = me.upgrade() else { return };
                        if let Err(e) = me.fetch_claimed(run) {
                            log::debug!(
                                "Read-ahead of pack {} blocks {}+{}: {e}",
                                run.0,
                                run.1,
                                run.2
                            );
                        }
                    }
                });
            }
            tx
        })
    }

    fn block_path(&self, (pack, n): BlockKey) -> PathBuf {
        self.blocks.join(format!("{pack}")).join(format!("{n}"))
    }

    fn remembered(&self, key: &BlockKey) -> Option<Arc<Bytes>> {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// How many blocks pack `pack` has, when a read of it said its size (else no limit).
    fn blocks_in(&self, pack: PackId) -> u64 {
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pack)
            .map_or(u64::MAX, |&size| size.div_ceil(BLOCK))
    }

    /// How many blocks to fetch for a reader that misses block `n` of `pack`: a whole run when
    /// it goes on where the last fetch from that pack ended (or just before: several threads
    /// reading one pack in order, as `restore` and `check` do), else the one block. Remembers the
    /// fetch.
    fn miss_run(&self, pack: PackId, n: u64) -> u64 {
        let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
        let sequential = last
            .get(&pack)
            .is_some_and(|&end| n + 2 * RUN_BLOCKS >= end && n <= end + 1);
        let count = if sequential { RUN_BLOCKS } else { 1 };
        let end = last.get(&pack).copied().unwrap_or(0).max(n + count);
        last.put(pack, end);
        count
    }

    /// Block `key` of a pack: from memory, else from the disk cache (verified), else fetched.
    /// A reader that misses block after block of one pack gets whole runs, and the next run
    /// fetched in the background ([`RemotePacks::miss_run`]).
    fn block(self: &Arc<Self>, key: BlockKey) -> Result<Arc<Bytes>> {
        if self.bypass.load(Ordering::Relaxed)
            && self
                .refreshed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key)
        {
            self.memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop(&key);
            let _ = fs::remove_file(self.block_path(key));
        }
        loop {
            if let Some(b) = self.remembered(&key) {
                return Ok(b);
            }
            // One fetch per block: a reader that finds it in flight (read ahead) waits for it.
            {
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                if inflight.contains(&key) {
                    while inflight.contains(&key) {
                        inflight = self
                            .fetched
                            .wait(inflight)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    // Fetched (or failed: then this reader fetches it itself).
                    continue;
                }
                inflight.insert(key);
            }
            let blocks_in = self.blocks_in(key.0);
            let want = self
                .miss_run(key.0, key.1)
                .min(blocks_in.saturating_sub(key.1).max(1));
            let mut count = 1;
            if want > 1 {
                // The blocks after it that nobody has or is fetching, up to the run's end.
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                while count < want {
                    let next = (key.0, key.1 + count);
                    if memory.contains(&next) || inflight.contains(&next) {
                        break;
                    }
                    inflight.insert(next);
                    count += 1;
                }
            }
            if want > 1 && key.1 + count < blocks_in {
                self.will_need(key.0, (key.1 + count) * BLOCK, RUN_BLOCKS * BLOCK);
            }
            let r = self.fetch_claimed((key.0, key.1, count));
            return r.and_then(|()| {
                self.remembered(&key).ok_or_else(|| Error::Remote {
                    url: self.client.url().to_string(),
                    detail: format!("block {} of pack {} was not kept", key.1, key.0),
                })
            });
        }
    }

    /// Loads or fetches the blocks of `run`, which the caller claimed in `inflight`, and
    /// releases them: from the disk cache when every block is there, else with one ranged GET
    /// for the whole run (the read-ahead of a sequential reader asks for up to [`RUN_BLOCKS`]).
    /// Fetched blocks are handed to waiting readers first and written to the disk cache after,
    /// so that a reader never waits for the cache.
    fn fetch_claimed(&self, (pack, first, count): Run) -> Result<()> {
        let keys: Vec<BlockKey> = (first..first + count).map(|n| (pack, n)).collect();
        // `check` trusts the disk cache only with what it fetched itself.
        let bypass = self.bypass.load(Ordering::Relaxed);
        let r = (|| -> Result<(Vec<Arc<Bytes>>, bool)> {
            let trusted = !bypass || {
                let refreshed = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
                keys.iter().all(|k| refreshed.contains(k))
            };
            let cached: Option<Vec<Bytes>> = if trusted {
                keys.iter().map(|k| self.load(*k)).collect()
            } else {
                None
            };
            let (blocks, fetched) = match cached {
                Some(b) => (b, false),
                None => {
                    let start = first * BLOCK;
                    let (data, size) = self
                        .client
                        .get_range(&pack_key(pack), start..start + count * BLOCK)?;
                    self.sizes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .put(pack, size);
                    let mut out = Vec::new();
                    let mut at = 0;
                    while at < data.len() {
                        let end = (at + BLOCK as usize).min(data.len());
                        out.push(data.slice(at..end));
                        at = end;
                    }
                    if bypass {
                        self.refreshed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(&keys[..out.len()]);
                    }
                    (out, true)
                }
            };
            let blocks: Vec<Arc<Bytes>> = blocks.into_iter().map(Arc::new).collect();
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            for (k, b) in keys.iter().zip(&blocks) {
                memory.put(*k, b.clone());
            }
            Ok((blocks, fetched))
        })();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            for k in &keys {
                inflight.remove(k);
            }
            self.fetched.notify_all();
        }
        let (blocks, fetched) = r?;
        if fetched {
            for (k, b) in keys.iter().zip(&blocks) {
                self.store_block(&self.block_path(*k), b);
            }
        }
        Ok(())
    }

    /// Block `key` from the disk cache when it is there and matches its hash.
    fn load(&self, key: BlockKey) -> Option<Bytes> {
        let path = self.block_path(key);
        let mut data = fs::read(&path).ok()?;
        if data.len() >= 32 {
            let body = data.len() - 32;
            if blake3::hash(&data[..body]).as_bytes() == &data[body..] {
                data.truncate(body);
                return Some(Bytes::from(data));
            }
        }
        log::warn!(
            "Cached block {} does not match its hash; fetching it again",
            path.display()
        );
        let _ = fs::remove_file(&path);
        None
    }

    /// Keeps a fetched block on disk; a cache that cannot be written only costs requests later.
    fn store_block(&self, path: &Path, data: &[u8]) {
        let write = || -> std::io::Result<()> {
            let dir = path.parent().expect("block files have a directory");
            fs::create_dir_all(dir)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.write_all(blake3::hash(data).as_bytes())?;
            drop(f);
            fs::rename(&tmp, path)
        };
        match write() {
            Ok(()) => {
                let used = self
                    .cache_used
                    .fetch_add(data.len() as u64 + 32, Ordering::Relaxed);
                if used > self.cache_limit || !self.cache_scanned.load(Ordering::Relaxed) {
                    self.trim_cache();
                }
            }
            Err(e) => log::debug!("Not caching block {}: {e}", path.display()),
        }
    }

    /// Measures the disk cache (once per process) and removes its oldest blocks while it is
    /// over its limit, down to 90% of it.
    fn trim_cache(&self) {
        let mut files = Vec::new();
        let Ok(dirs) = fs::read_dir(&self.blocks) else {
            return;
        };
        for d in dirs.flatten() {
            let Ok(rd) = fs::read_dir(d.path()) else {
                continue;
            };
            for f in rd.flatten() {
                if let Ok(m) = f.metadata() {
                    let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                    files.push((t, m.len(), f.path()));
                }
            }
        }
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        self.cache_scanned.store(true, Ordering::Relaxed);
        if used > self.cache_limit {
            files.sort();
            let goal = self.cache_limit / 10 * 9;
            for (_, len, p) in files {
                if used <= goal {
                    break;
                }
                if fs::remove_file(&p).is_ok() {
                    used -= len;
                }
            }
        }
        self.cache_used.store(used, Ordering::Relaxed);
    }

    /// A read served from the spool of a pack whose upload is not complete; `None` when the pack
    /// is not (or no longer) spooled.
    fn read_spooled(&self, id: PackId, offset: u64, len: usize) -> Option<Result<Vec<u8>>> {
        let file = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()?;
        let f = File::open(&file).ok()?;
        let mut buf = vec![0u8; len];
        Some(
            f.read_exact_at(&mut buf, offset)
                .map(|_| buf)
                .ctx("Reading spooled pack", &file),
        )
    }
}

/// A pack being spooled; handed to the uploaders when finished, removed when abandoned.
struct RemoteSink {
    packs: Arc<RemotePacks>,
    id: PackId,
    file: PathBuf,
    out: Option<BufWriter<File>>,
}

impl PackSink for RemoteSink {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.out
            .as_mut()
            .expect("sink not finished")
            .write_all(buf)
            .ctx("Writing pack", &self.file)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let out = self.out.take().expect("sink not finished");
        out.into_inner()
            .map_err(|e| e.into_error())
            .ctx("Writing pack", &self.file)?;
        self.packs
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.id, self.file.clone());
        let tx = self.packs.uploader().clone();
        tx.send((self.id, self.file.clone()))
            .map_err(|_| Error::Remote {
                url: self.packs.client.url().to_string(),
                detail: "the uploader stopped".into(),
            })
    }
}

impl Drop for RemoteSink {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.file);
        }
    }
}

impl PackBackend for Arc<RemotePacks> {
    fn create(&self, id: PackId) -> Result<Box<dyn PackSink>> {
        fs::create_dir_all(&self.spool).ctx("Creating cache directory", &self.spool)?;
        let file = self.spool.join(format!("{id}.pack"));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .ctx("Creating pack", &file)?;
        Ok(Box::new(RemoteSink {
            packs: self.clone(),
            id,
            file,
            out: Some(BufWriter::with_capacity(1 << 20, f)),
        }))
    }

    fn read_at(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        self.read_into(id, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&self, id: PackId, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if let Some(r) = self.read_spooled(id, offset, len) {
            buf.extend_from_slice(&r?);
            return Ok(());
        }
        let short = || {
            Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)).ctx(
                "Reading pack",
                format!("{}/{}", self.client.url(), pack_key(id)),
            )
        };
        let end = offset + len as u64;
        let mut at = offset;
        while at < end {
            let n = at / BLOCK;
            let block = self.block((id, n))?;
            let from = (at - n * BLOCK) as usize;
            let to = ((end - n * BLOCK).min(BLOCK)) as usize;
            if block.len() < to {
                return short();
            }
            buf.extend_from_slice(&block[from..to]);
            at = n * BLOCK + to as u64;
        }
        Ok(())
    }

    fn will_need(&self, id: PackId, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        // Blocks neither remembered nor in flight are claimed here and fetched in runs of up to
        // RUN_BLOCKS, one GET each: large requests are what object storage streams fast.
        let tx = self.fetcher().clone();
        let mut runs: Vec<Run> = Vec::new();
        let last = ((offset + len - 1) / BLOCK).min(self.blocks_in(id).saturating_sub(1));
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            for n in offset / BLOCK..=last {
                let key = (id, n);
                if memory.contains(&key) || inflight.contains(&key) {
                    continue;
                }
                inflight.insert(key);
                match runs.last_mut() {
                    Some(r) if r.1 + r.2 == n && r.2 < RUN_BLOCKS => r.2 += 1,
                    _ => runs.push((id, n, 1)),
                }
            }
        }
        for r in runs {
            if tx.send(r).is_err() {
                // No fetcher: give the claims back so readers fetch for themselves.
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                for n in r.1..r.1 + r.2 {
                    inflight.remove(&(r.0, n));
                }
                self.fetched.notify_all();
            }
        }
    }

    /// Object storage answers each request after a round trip and streams one response at a
    /// fraction of what it serves in all: [`FETCHERS`] runs of up to 8 MiB in flight.
    fn read_ahead(&self) -> u64 {
        FETCHERS as u64 * RUN_BLOCKS * BLOCK
    }

    fn verify_at_source(&self, yes: bool) {
        self.bypass.store(yes, Ordering::Relaxed);
        self.refreshed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out: Vec<_> = self
            .client
            .list("packs")?
            .into_iter()
            .filter_map(|o| parse_pack_key(&o.name).map(|id| (id, o.size)))
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, id: PackId) -> Result<()> {
        self.client.delete(&pack_key(id))?;
        let dir = self.blocks.join(format!("{id}"));
        let _ = fs::remove_dir_all(dir);
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<BlockKey> = memory
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.0 == id)
            .collect();
        for k in gone {
            memory.pop(&k);
        }
        Ok(())
    }

    fn remove_unfinished(&self) -> Result<usize> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        let Ok(spooled) = fs::read_dir(&self.spool) else {
            return Ok(0);
        };
        for f in spooled.flatten() {
            let p = f.path();
            if !pending.values().any(|q| q == &p) {
                log::info!("Removing unfinished pack {}", p.display());
                fs::remove_file(&p).ctx("Removing unfinished pack", &p)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keys_round_trip() {
        let id = PackId(0x0123_4567_89ab_cdef);
        let key = pack_key(id);
        assert_eq!(key, "packs/ef/0123456789abcdef.pack");
        assert_eq!(
            parse_pack_key(key.strip_prefix("packs/").unwrap()),
            Some(id)
        );
        assert_eq!(parse_pack_key("ef/0123.pack"), None);
        assert_eq!(parse_pack_key("ef/0123456789abcdef.pack.tmp"), None);
    }
}
