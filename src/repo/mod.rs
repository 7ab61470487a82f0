//! Opening and creating a repository: the directory layout, the format-version check, the process
//! lock, the free-space reserve that keeps sled from meeting a full disk ([`space`]), the commit
//! marker that tells a truncated index from an older one, and verified chunk reads. Layout (see
//! docs/FORMAT.md):
//!
//! ```text
//! REPO/STRATA       marker file: "strata repository\nformat N\n"
//! REPO/lock         flock()ed by the process using the repository; holds its pid
//! REPO/index/       the sled database (index and metadata)
//! REPO/index/commits  the commit marker: flushes this database completed (see `keys::TREE_COMMITS`)
//! REPO/packs/xx/    pack files
//! ```

pub mod keys;
pub mod pack;
pub mod scan;
pub mod space;
pub mod store;
pub mod writer;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::snapshot::Snapshot;
use keys::Location;
use pack::{DirBackend, PackBackend, RECORD_HEADER_LEN};
use store::{Batch, MetaStore, Space};

/// sled page cache of commands that read metadata heavily (ls, diff, restore, check).
pub const DEFAULT_INDEX_CACHE: u64 = 64 << 20;
/// sled page cache of `backup`. Measured on the 2.3 GB benchmark data: same wall time as 64 MiB,
/// and peak RSS 160 → 190 MB from 1× to 2× the data (175 → 233 MB with 64 MiB).
pub const BACKUP_INDEX_CACHE: u64 = 8 << 20;

/// sled page cache of a mount. Its memory comes on top of the chunk cache (`--cache-size`) and the
/// inode table. Listing a whole 100k-file snapshot and `diff -r` of it measured the same times with
/// 16 MiB as with 64 MiB (12 MB less peak RSS); 8 MiB saved 2–4 MB more, 4 MiB another 9 MB
/// (`benches/mount_rss.sh`), `ls -lR` of the snapshot 8.8–11.4 s against 9.9–11.5 s with 8 MiB.
pub const MOUNT_INDEX_CACHE: u64 = 4 << 20;

thread_local! {
    // Compressed records are read here, then decompressed into their own buffer.
    static RECORD_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// zstd level used when `init` is not told otherwise (see docs/FORMAT.md for the measurement).
pub const DEFAULT_COMPRESSION: i32 = 1;
const MARKER: &str = "STRATA";
/// The sled database's directory inside the repository.
pub const INDEX_DIR: &str = "index";

/// Options for [`Repo::create`].
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// zstd level for new chunks (0 = store raw).
    pub compression: i32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            compression: DEFAULT_COMPRESSION,
        }
    }
}

/// Directories each layer touches, with the opaque flag; loaded once per layer and shared.
pub type LayerDirs = HashMap<Vec<u8>, bool>;

/// One non-full layer's entries in one directory, sorted by name (the root's own entry has the
/// empty name). Held in memory so that lookups deep in an incremental chain probe memory, not sled.
pub type DirLayer = Arc<Vec<(Vec<u8>, crate::entry::Entry)>>;

/// (layer, directory) → its entries, or `None` when too many to cache.
/// Two levels so that a probe with a borrowed `&[u8]` path allocates nothing.
type DirLayerCache = HashMap<SnapshotId, HashMap<Vec<u8>, Option<DirLayer>>>;

/// Layer directories with more entries than this are read from sled each time, not cached.
const MAX_CACHED_DIR_LAYER: usize = 4096;
/// (layer, directory) pairs kept in memory.
/// Beyond this many cached (layer, directory) pairs the cache is emptied and refills on demand.
const DIR_LAYER_CACHE: usize = 16 * 1024;

/// The exclusive process lock of a repository, held without its database (see
/// [`Repo::lock_only`]); released when dropped.
pub struct RepoLock(File);

/// An open repository. Holds the exclusive process lock for its lifetime.
pub struct Repo {
    path: PathBuf,
    /// The index. The tree fields below are its keyspaces, kept while callers move to
    /// [`Repo::index`].
    store: store::SledStore,
    pub(crate) meta: sled::Tree,
    pub(crate) chunks: sled::Tree,
    pub(crate) snapshots: sled::Tree,
    pub(crate) layers: sled::Tree,
    pub(crate) layerdirs: sled::Tree,
    packs: Arc<dyn PackBackend>,
    compression: i32,
    layer_dirs_cache: Mutex<HashMap<SnapshotId, Arc<LayerDirs>>>,
    dir_layer_cache: std::sync::RwLock<(DirLayerCache, usize)>,
    dictionary: std::sync::OnceLock<Arc<crate::compress::Dictionary>>,
    /// The snapshot records as the lookup catalog listed them when this process opened the index
    /// ([`Repo::open_seeded`]); dropped at any change to the records.
    seed: std::sync::RwLock<Option<Arc<SeededSnapshots>>>,
    /// The commit count this database has flushed, and where the marker file goes (see
    /// [`keys::TREE_COMMITS`]); `None` for a database opened with [`Repo::open_with_db`], which
    /// is not (or not yet) the repository's index.
    commits: Mutex<Commits>,
    /// Free space kept so that sled never meets a full disk.
    space: space::Space,
    /// Opening found an interrupted `forget`/`consolidate` (completed, or still pending).
    resumed: std::sync::atomic::AtomicBool,
    _lock: File,
}

/// The commit marker of an open database (see [`keys::TREE_COMMITS`]).
struct Commits {
    tree: sled::Tree,
    instance: Option<[u8; 16]>,
    count: u64,
    marker: Option<PathBuf>,
}

/// The commit marker file inside the index directory.
const COMMITS_FILE: &str = "commits";

/// Snapshot records taken from the lookup catalog instead of sled (see [`Repo::open_seeded`]).
struct SeededSnapshots {
    /// Oldest first, as [`Repo::snapshots`] returns them.
    list: Vec<Snapshot>,
    by_id: HashMap<SnapshotId, usize>,
    /// Non-full layers' touched directories, encoded ([`crate::lookup::Seed::layer_dirs`]).
    dirs: HashMap<SnapshotId, Vec<u8>>,
}

/// How long a busy repository lock is retried before the repository is reported in use.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// Takes the process lock and, since the taker may change the index, removes the lookup catalog
/// first thing (see [`crate::lookup`]): a catalog exists only while no process has the index open.
fn take_lock(path: &Path) -> Result<File> {
    let f = lock_file(path)?;
    crate::lookup::invalidate(path)?;
    Ok(f)
}

fn lock_file(path: &Path) -> Result<File> {
    let lock_path = path.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .ctx("Opening lock file", &lock_path)?;
    // A lock can outlive its holder by a moment: a process that forks (to run a hook, a test
    // harness starting the next command) shares the locked file description until its child
    // execs. So a busy lock is retried briefly before the repository is reported in use.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let failed = loop {
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let err = (rc != 0).then(std::io::Error::last_os_error);
        let busy = err
            .as_ref()
            .is_some_and(|e| e.raw_os_error() == Some(libc::EWOULDBLOCK));
        if !busy || std::time::Instant::now() >= deadline {
            break err;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    if let Some(err) = failed {
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            let holder = match s.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(Error::RepoLocked {
                path: path.to_path_buf(),
                holder,
            });
        }
        return Err(err).ctx("Locking", &lock_path);
    }
    f.set_len(0).ctx("Writing lock file", &lock_path)?;
    write!(f, "{}", std::process::id()).ctx("Writing lock file", &lock_path)?;
    Ok(f)
}

impl Repo {
    /// Creates a new repository at `path` (which must be missing or an empty directory).
    pub fn create(path: &Path, opts: &CreateOptions) -> Result<Arc<Repo>> {
        if path.join(MARKER).exists() {
            return Err(Error::RepoExists(path.to_path_buf()));
        }
        if path.exists() {
            let mut it = fs::read_dir(path).ctx("Reading", path)?;
            if it.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} exists and is not empty; a new repository needs an empty or missing directory",
                    path.display()
                )));
            }
        }
        fs::create_dir_all(path).ctx("Creating repository", path)?;
        let lock = take_lock(path)?;
        let db = Self::open_db(path, DEFAULT_INDEX_CACHE)?;
        let meta = db.open_tree(keys::TREE_META)?;
        meta.insert(keys::META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
        meta.insert(keys::META_COMPRESSION, &opts.compression.to_be_bytes())?;
        db.open_tree(keys::TREE_COMMITS)?
            .insert(keys::COMMITS_INSTANCE, &new_instance())?;
        db.flush()?;
        fs::create_dir_all(path.join("packs")).ctx("Creating repository", path)?;
        // The marker is written last: a repository without it was never completely created.
        let marker = path.join(MARKER);
        fs::write(
            &marker,
            format!("strata repository\nformat {FORMAT_VERSION}\n"),
        )
        .ctx("Creating repository", &marker)?;
        Self::finish_open(path, lock, db, true)
    }

    /// Opens an existing repository, checking its format and taking the process lock.
    pub fn open(path: &Path) -> Result<Arc<Repo>> {
        Self::open_with_cache(path, DEFAULT_INDEX_CACHE)
    }

    /// Like [`Repo::open`], with `cache_bytes` for sled's page cache instead of the default.
    /// Backups use [`BACKUP_INDEX_CACHE`]: their index accesses are mostly appends and one pass
    /// over the parent layer, so a small cache costs no time and keeps memory flat as data grows.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Arc<Repo>> {
        // open_locked removes the lookup catalog.
        let lock = Self::lock_existing(path)?;
        Self::open_locked(path, lock, cache_bytes)
    }

    /// Takes the process lock of an existing repository (marker present) without touching the
    /// lookup files: the caller opens the index next ([`Repo::open_locked`] removes them).
    fn lock_existing(path: &Path) -> Result<RepoLock> {
        if !path.exists() {
            return Err(Error::RepoNotFound(path.to_path_buf()));
        }
        if !path.join(MARKER).is_file() {
            return Err(Error::NotARepo(path.to_path_buf()));
        }
        Ok(RepoLock(lock_file(path)?))
    }

    /// [`Repo::open_with_cache`] for a process that only reads (the mount): before opening the
    /// index, under the lock, it reads the lookup catalog when there is one, and answers
    /// [`Repo::snapshots`], [`Repo::snapshot`] and [`Repo::layer_dirs`] from it. On a cold start
    /// those cost one sequential read of the catalog instead of a sled page read per record (on
    /// the benchmark repository with 503 snapshots the list took 7 ms), and the mount can pass
    /// layers that did not touch a directory without reading them (the newest snapshot's root:
    /// 18–24 ms down to 4–6). The catalog is exact while it exists (see [`crate::lookup`]); a
    /// missing or damaged one only means sled answers, as for every other command.
    pub fn open_seeded(path: &Path, cache_bytes: u64) -> Result<Arc<Repo>> {
        let lock = Self::lock_existing(path)?;
        let seed = crate::lookup::read_seed(path).unwrap_or_else(|e| {
            log::info!("Not using the lookup catalog ({e}); reading the index");
            None
        });
        let repo = Self::open_locked(path, lock, cache_bytes)?;
        // A catalog is never written while a rewrite is unfinished, but one written by a
        // command that could not complete it would describe the records before the completion.
        let seed = seed.filter(|_| !repo.resumed.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(seed) = seed {
            let by_id = seed
                .snapshots
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id, i))
                .collect();
            *repo.seed.write().unwrap() = Some(Arc::new(SeededSnapshots {
                list: seed.snapshots,
                by_id,
                dirs: seed.layer_dirs,
            }));
        }
        Ok(repo)
    }

    /// Takes the process lock to read the lookup files (which it leaves in place), for the
    /// sled-free `cat`. The marker must be there.
    pub(crate) fn lock_for_lookup(path: &Path) -> Result<RepoLock> {
        if !path.join(MARKER).is_file() {
            return Err(Error::NotARepo(path.to_path_buf()));
        }
        Ok(RepoLock(lock_file(path)?))
    }

    /// Opens the index under a lock already held (also by the sled-free `cat` falling back to the
    /// index mid-file); removes the lookup catalog first, as every opening of the index does.
    pub(crate) fn open_locked(path: &Path, lock: RepoLock, cache_bytes: u64) -> Result<Arc<Repo>> {
        crate::lookup::invalidate(path)?;
        let lock = lock.0;
        // sled would silently create an empty database here; a lost index is a case for `repair`.
        if !path.join(INDEX_DIR).exists() {
            return Err(Error::IndexMissing(path.to_path_buf()));
        }
        let db = match Self::open_db(path, cache_bytes) {
            Err(Error::Db(sled::Error::Io(e))) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // sled writes while it opens. Unfinished packs (left by a killed backup) are the
                // one thing that can go without asking: nothing refers to them, and the lock
                // says no backup is writing them now.
                let removed = DirBackend::open(&path.join("packs"))?.remove_unfinished()?;
                if removed == 0 {
                    return Err(no_space_to_open(path, Error::Db(sled::Error::Io(e))));
                }
                log::warn!(
                    "The disk is full: removed {removed} unfinished pack(s) to open the index"
                );
                Self::open_db(path, cache_bytes).map_err(|e| no_space_to_open(path, e))?
            }
            r => r?,
        };
        let repo = Self::finish_open(path, lock, db, true)?;
        let resumed = repo.resume_interrupted();
        repo.resumed
            .store(resumed, std::sync::atomic::Ordering::Relaxed);
        Ok(repo)
    }

    /// Completes a `forget` or `consolidate` that a kill or a full disk interrupted (see
    /// [`crate::forget::resume_interrupted`]): every command that opens the index is "the next
    /// command". Views are intact at every point of an interrupted run, so when completing fails
    /// (the disk is still full) the command goes on and a later one completes it. Returns
    /// whether snapshot records changed.
    fn resume_interrupted(self: &Arc<Self>) -> bool {
        match crate::forget::resume_interrupted(self) {
            Ok(done) => done,
            Err(e) => {
                log::warn!(
                    "Could not complete an interrupted forget/consolidate ({e}); the next command will try again"
                );
                self.clear_layer_caches();
                true
            }
        }
    }

    /// Takes the repository's process lock without opening its database: for `repair`, which must
    /// work when the database is missing or unreadable, and `check`, which opens a copy of it. The
    /// marker must be there: without it the directory is not known to be a repository, and
    /// nothing is touched.
    pub fn lock_only(path: &Path) -> Result<RepoLock> {
        if !path.exists() {
            return Err(Error::RepoNotFound(path.to_path_buf()));
        }
        if !path.join(MARKER).is_file() {
            return Err(Error::MarkerMissing(path.to_path_buf()));
        }
        Ok(RepoLock(take_lock(path)?))
    }

    /// Opens the repository at `path` over an already open database `db` (the one `repair` just
    /// rebuilt, possibly a temporary one for `--dry-run`; or `check`'s private copy), keeping the
    /// lock taken by [`Repo::lock_only`].
    pub fn open_with_db(path: &Path, lock: RepoLock, db: sled::Db) -> Result<Arc<Repo>> {
        Self::finish_open(path, lock.0, db, false)
    }

    /// Opens `path`, creating it first when it does not exist yet (the default repository).
    pub fn open_or_create(path: &Path) -> Result<Arc<Repo>> {
        Self::open_or_create_with_cache(path, DEFAULT_INDEX_CACHE)
    }

    /// [`Repo::open_or_create`] with a sled cache budget (see [`Repo::open_with_cache`]).
    pub fn open_or_create_with_cache(path: &Path, cache_bytes: u64) -> Result<Arc<Repo>> {
        if !path.join(MARKER).exists() && (!path.exists() || dir_is_empty(path)) {
            log::info!("Creating repository {}", path.display());
            return Self::create(path, &CreateOptions::default());
        }
        Self::open_with_cache(path, cache_bytes)
    }

    fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
        open_sled(
            sled::Config::new()
                .path(path.join(INDEX_DIR))
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput),
        )
    }

    /// `own_index`: `db` is `path`'s index directory, so its flushes update the commit marker.
    fn finish_open(path: &Path, lock: File, db: sled::Db, own_index: bool) -> Result<Arc<Repo>> {
        let store = store::SledStore::new(db.clone())?;
        let commits = check_commits(path, &db.open_tree(keys::TREE_COMMITS)?, own_index)?;
        let version = match store.get(Space::Meta, keys::META_FORMAT)? {
            Some(v) if v.len() == 4 => u32::from_be_bytes(v.as_ref().try_into().unwrap()),
            Some(_) => return Err(Error::CorruptMetadata("format record malformed".into())),
            None => return Err(Error::NotARepo(path.to_path_buf())),
        };
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let compression = store
            .get(Space::Meta, keys::META_COMPRESSION)?
            .and_then(|v| v.as_ref().try_into().ok().map(i32::from_be_bytes))
            .unwrap_or(DEFAULT_COMPRESSION);
        let dictionary = match store.get(Space::Meta, keys::META_DICTIONARY)? {
            Some(d) => std::sync::OnceLock::from(Arc::new(
                crate::compress::Dictionary::from_bytes(d.to_vec()),
            )),
            None => std::sync::OnceLock::new(),
        };
        Ok(Arc::new(Repo {
            path: path.to_path_buf(),
            store,
            meta: db.open_tree(keys::TREE_META)?,
            chunks: db.open_tree(keys::TREE_CHUNKS)?,
            snapshots: db.open_tree(keys::TREE_SNAPSHOTS)?,
            layers: db.open_tree(keys::TREE_LAYERS)?,
            layerdirs: db.open_tree(keys::TREE_LAYERDIRS)?,
            packs: Arc::new(DirBackend::open(&path.join("packs"))?),
            compression,
            layer_dirs_cache: Mutex::new(HashMap::new()),
            dictionary,
            dir_layer_cache: std::sync::RwLock::new((HashMap::new(), 0)),
            seed: std::sync::RwLock::new(None),
            commits: Mutex::new(commits),
            space: space::Space::new(path, &path.join(INDEX_DIR).join("db")),
            resumed: Default::default(),
            _lock: lock,
        }))
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Default zstd level recorded at `init`.
    pub fn compression(&self) -> i32 {
        self.compression
    }

    /// The index: every keyspace, read and written only through this interface.
    pub fn index(&self) -> &dyn store::MetaStore {
        &self.store
    }

    /// The pack storage.
    pub fn packs(&self) -> &Arc<dyn PackBackend> {
        &self.packs
    }

    /// Flushes sled to disk; the last step of every commit. Counts the commit in the database
    /// and then in the marker file (see [`keys::TREE_COMMITS`]), so the file never counts a
    /// commit the database has not made durable.
    pub fn flush(&self) -> Result<()> {
        let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(marker) = c.marker.clone() else {
            self.store.flush()?;
            return Ok(());
        };
        let instance = match c.instance {
            Some(i) => i,
            None => {
                let i = new_instance();
                c.tree.insert(keys::COMMITS_INSTANCE, &i)?;
                c.instance = Some(i);
                i
            }
        };
        c.tree
            .insert(keys::COMMITS_COUNT, &(c.count + 1).to_be_bytes())?;
        self.store.flush()?;
        c.count += 1;
        // A marker that is not written only weakens the next open's check.
        let text = format!("{} {}\n", hex16(&instance), c.count);
        let tmp = marker.with_extension("tmp");
        if let Err(e) = fs::write(&tmp, text).and_then(|_| fs::rename(&tmp, &marker)) {
            log::debug!(
                "Could not write the commit marker {}: {e}",
                marker.display()
            );
        }
        Ok(())
    }

    /// Takes `bytes` of free space for a write about to start, failing with
    /// [`Error::NoSpace`] (and writing nothing) when it would cut into the reserve kept for the
    /// index (see [`space`]).
    pub(crate) fn take_space(&self, what: &'static str, bytes: u64) -> Result<()> {
        self.space.take(what, bytes)
    }

    /// Fails with [`Error::NoSpace`] unless `bytes` can be written beside the index (the lookup
    /// files) without cutting into its reserve.
    pub(crate) fn ensure_room(&self, what: &'static str, bytes: u64) -> Result<()> {
        self.space.ensure(what, bytes)
    }

    /// Commits a snapshot record: after its layer, its layer blobs and the pack holding its
    /// snapshot blob, the one write that makes it visible. Asks for the space first, so a disk
    /// that filled up fails the commit before sled sees it.
    pub fn insert_snapshot_record(&self, snapshot: &Snapshot) -> Result<()> {
        let rec = snapshot.encode();
        self.space.ensure(
            "committing the snapshot",
            space::index_cost(1, 16 + rec.len()) + space::SLED_SEGMENT,
        )?;
        self.store.insert(Space::Records, &snapshot.id.0, &rec)?;
        self.snapshots_changed();
        Ok(())
    }

    /// Allocates a fresh, never reused number (sled's persistent id generator).
    pub(crate) fn generate_id(&self) -> Result<u64> {
        self.store.generate_id()
    }

    /// Starts a new pack under a fresh number. Numbers come from sled's id generator, which can
    /// repeat one after a kill (it persists its counter lazily); a number whose pack (or unfinished
    /// pack) exists is skipped, so a finished pack is never overwritten.
    pub(crate) fn create_pack(&self) -> Result<(crate::id::PackId, Box<dyn pack::PackSink>)> {
        for _ in 0..10_000 {
            let id = crate::id::PackId(self.generate_id()?);
            match self.packs.create(id) {
                Ok(sink) => return Ok((id, sink)),
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    log::warn!(
                        "Pack number {id} is taken (an earlier process was killed); skipping it"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::CorruptMetadata(
            "no free pack number found; the id generator keeps repeating".into(),
        ))
    }

    /// Whether the index knows `id`.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.store.contains(Space::Chunks, &id.0)
    }

    /// Index location of a chunk.
    pub fn chunk_location(&self, id: &ChunkId) -> Result<Location> {
        let v = self
            .store
            .get(Space::Chunks, &id.0)?
            .ok_or(Error::MissingChunk(*id))?;
        Location::decode(&v).ok_or_else(|| Error::CorruptMetadata(format!("index entry of {id}")))
    }

    /// Reads and verifies a chunk (or any record indexed by id). Never returns unverified bytes.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = self.chunk_location(id)?;
        self.read_record_at(id, &loc)
    }

    /// Reads and verifies the record at `loc`, which must hold `id`.
    pub fn read_record_at(&self, id: &ChunkId, loc: &Location) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_record_into(id, loc, &mut out)?;
        Ok(out)
    }

    /// [`Repo::read_record_at`] into `out` (replacing its content), so a reader can recycle
    /// buffers. On error `out` holds nothing usable.
    pub fn read_record_into(&self, id: &ChunkId, loc: &Location, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        self.read_record_append(id, loc, out)
    }

    /// [`Repo::read_record_at`] appended to `out`, so a reader can gather several chunks into
    /// one buffer with no copy. A record stored raw is read as header, then payload straight
    /// into `out`; a compressed one into a per-thread buffer reused from read to read, then
    /// decompressed into `out`. Nothing unverified stays: on error `out` is back to its
    /// previous length.
    pub fn read_record_append(
        &self,
        id: &ChunkId,
        loc: &Location,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let dict = self.dictionary().map(|d| d.as_ref());
        read_record_append_from(self.packs.as_ref(), dict, id, loc, out)
    }

    fn seeded(&self) -> Option<Arc<SeededSnapshots>> {
        self.seed.read().unwrap().clone()
    }

    /// Whether the snapshot records come from the lookup catalog ([`Repo::open_seeded`]); the
    /// mount logs it, and tests check the seed is used and dropped when it should be.
    pub fn is_seeded(&self) -> bool {
        self.seed.read().unwrap().is_some()
    }

    /// Every committed snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        if let Some(seed) = self.seeded() {
            return Ok(seed.list.clone());
        }
        let mut out = Vec::new();
        for kv in self.store.scan(Space::Records, b"") {
            let (_, v) = kv?;
            out.push(Snapshot::decode(&v)?);
        }
        out.sort_by_key(|s| (s.time_ns, s.id));
        Ok(out)
    }

    /// One committed snapshot.
    pub fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        if let Some(seed) = self.seeded() {
            if let Some(&i) = seed.by_id.get(id) {
                return Ok(Some(seed.list[i].clone()));
            }
        }
        self.store
            .get(Space::Records, &id.0)?
            .map(|v| Snapshot::decode(&v))
            .transpose()
    }

    /// Forgets the in-memory layer caches, and the lookup catalog's seed with them (its layer
    /// directories would refill the cache). Layers are immutable except under `forget` and
    /// `consolidate`, which call this after changing one, so that later views read sled afresh.
    pub fn clear_layer_caches(&self) {
        self.snapshots_changed();
        self.layer_dirs_cache.lock().unwrap().clear();
        *self.dir_layer_cache.write().unwrap() = (HashMap::new(), 0);
    }

    /// Drops the snapshot records taken from the lookup catalog ([`Repo::open_seeded`]): called
    /// by everything that writes a snapshot record, so that a seeded process reads its own
    /// changes from sled.
    pub(crate) fn snapshots_changed(&self) {
        *self.seed.write().unwrap() = None;
    }

    /// Inserts `(key, value)` pairs into `layers` sorted, in batches of 512: each batch covers a
    /// narrow key range, so sled rewrites few pages per batch. Empties `pending`.
    pub(crate) fn insert_layer_entries(&self, pending: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        pending.sort_unstable();
        for part in pending.chunks(512) {
            let bytes = part.iter().map(|(k, v)| k.len() + v.len()).sum();
            self.take_space("writing the index", space::index_cost(part.len(), bytes))?;
            let mut batch = Batch::default();
            for (k, v) in part {
                batch.insert(Space::Layers, k, v);
            }
            self.store.apply(batch)?;
        }
        pending.clear();
        Ok(())
    }

    /// A layer's touched directories if they are in memory (loaded before, or in the lookup
    /// catalog's seed), without reading sled; for callers that can do without them when absent.
    pub fn cached_layer_dirs(&self, id: &SnapshotId) -> Option<Arc<LayerDirs>> {
        if let Some(d) = self.layer_dirs_cache.lock().unwrap().get(id) {
            return Some(d.clone());
        }
        let seed = self.seeded()?;
        let d = match crate::lookup::decode_dirs(seed.dirs.get(id)?) {
            Ok(d) => d,
            Err(e) => {
                log::info!("Layer {id} in the lookup catalog: {e}; reading the index");
                return None;
            }
        };
        self.layer_dirs_cache.lock().unwrap().insert(*id, d.clone());
        Some(d)
    }

    /// Directories touched by a (non-full) layer, loaded once and cached for the process lifetime.
    pub fn layer_dirs(&self, id: &SnapshotId) -> Result<Arc<LayerDirs>> {
        if let Some(d) = self.cached_layer_dirs(id) {
            return Ok(d);
        }
        let mut dirs = LayerDirs::new();
        for kv in self.store.scan(Space::LayerDirs, &id.0) {
            let (k, v) = kv?;
            dirs.insert(k[16..].to_vec(), v.first() == Some(&1));
        }
        let dirs = Arc::new(dirs);
        self.layer_dirs_cache
            .lock()
            .unwrap()
            .insert(*id, dirs.clone());
        Ok(dirs)
    }
}

impl Repo {
    /// The repository's zstd dictionary for small chunks, once one has been trained.
    pub fn dictionary(&self) -> Option<&Arc<crate::compress::Dictionary>> {
        self.dictionary.get()
    }

    /// Stores a dictionary and makes it the repository's. Durable before it returns: its record is
    /// in a finished pack and its bytes in `meta`, so no chunk compressed with it can ever be
    /// indexed without it.
    pub fn install_dictionary(self: &Arc<Self>, dict: crate::compress::Dictionary) -> Result<()> {
        if self.dictionary().is_some() {
            return Ok(());
        }
        let mut w = writer::PackWriter::new(self.clone(), Default::default());
        w.add_blob(pack::RecordType::Dictionary, &dict.bytes)?;
        w.finish()?;
        self.store
            .insert(Space::Meta, keys::META_DICTIONARY, &dict.bytes)?;
        self.flush()?;
        log::info!("Trained a {}-byte compression dictionary", dict.bytes.len());
        let _ = self.dictionary.set(Arc::new(dict));
        Ok(())
    }

    /// The entries a non-full layer holds directly under `dir`, from memory after the first call;
    /// `None` when there are too many to keep (the caller then reads sled).
    pub fn dir_layer(&self, id: &SnapshotId, dir: &[u8]) -> Result<Option<DirLayer>> {
        if let Some(d) = self
            .dir_layer_cache
            .read()
            .unwrap()
            .0
            .get(id)
            .and_then(|m| m.get(dir))
        {
            return Ok(d.clone());
        }
        let prefix = keys::dir_prefix(id, dir);
        let mut entries = Vec::new();
        let mut too_big = false;
        for kv in self.store.scan(Space::Layers, &prefix) {
            let (k, v) = kv?;
            if entries.len() >= MAX_CACHED_DIR_LAYER {
                too_big = true;
                break;
            }
            entries.push((k[prefix.len()..].to_vec(), crate::entry::Entry::decode(&v)?));
        }
        let value = (!too_big).then(|| Arc::new(entries));
        let mut cache = self.dir_layer_cache.write().unwrap();
        if cache.1 >= DIR_LAYER_CACHE {
            *cache = (HashMap::new(), 0);
        }
        cache.1 += 1;
        cache
            .0
            .entry(*id)
            .or_default()
            .insert(dir.to_vec(), value.clone());
        Ok(value)
    }
}

/// Reads the record at `loc`, which must hold `id`, from `packs`, and appends its verified
/// plaintext to `out` ([`Repo::read_record_append`] without a repository: the sled-free `cat` path
/// reads this way). On error `out` is back to its previous length.
pub fn read_record_append_from(
    packs: &dyn PackBackend,
    dict: Option<&crate::compress::Dictionary>,
    id: &ChunkId,
    loc: &Location,
    out: &mut Vec<u8>,
) -> Result<()> {
    let read_err = |e: Error| Error::CorruptChunk {
        id: *id,
        pack: loc.pack,
        detail: e.to_string(),
    };
    let start = out.len();
    let res = (|| {
        if loc.compression == crate::compress::Compression::None as u8 {
            let head = packs
                .read_at(loc.pack, loc.offset, RECORD_HEADER_LEN)
                .map_err(read_err)?;
            let h = pack::open_header(loc.pack, &head, id)?;
            // The pack's header decides; should it disagree with the index, the general
            // path below decodes what the header says (and blake3 judges).
            if h.compression == loc.compression {
                let at = loc.offset + RECORD_HEADER_LEN as u64;
                packs
                    .read_into(loc.pack, at, loc.stored_len as usize, out)
                    .map_err(read_err)?;
                return pack::verify_plain(loc.pack, &h, &out[start..], id);
            }
        }
        let len = RECORD_HEADER_LEN + loc.stored_len as usize;
        RECORD_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            packs
                .read_into(loc.pack, loc.offset, len, &mut buf)
                .map_err(read_err)?;
            let h = pack::open_header(loc.pack, &buf, id)?;
            let r =
                pack::decode_payload_into(loc.pack, &h, &buf[RECORD_HEADER_LEN..], id, dict, out);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        })
    })();
    if res.is_err() {
        out.truncate(start);
    }
    res.inspect_err(|e| log::error!("{e}"))
}

/// sled writes when it opens (its recovery snapshot, the tail of its last segment): on a disk
/// that is full already (filled by something else), say so in strata's words.
fn no_space_to_open(path: &Path, e: Error) -> Error {
    match e {
        Error::Db(sled::Error::Io(io)) if io.raw_os_error() == Some(libc::ENOSPC) => {
            Error::NoSpace {
                path: path.to_path_buf(),
                what: "opening the index (sled writes when it opens)",
                free: crate::fsio::free_bytes(path).unwrap_or(0),
                needed: 2 * space::SLED_SEGMENT,
            }
        }
        e => e,
    }
}

/// Reads this database's commit count and compares it with the marker file in `path`'s index
/// directory: a database that has flushed fewer commits than the marker recorded for the same
/// instance has lost the end of its log, and is reported damaged rather than read as an older
/// state. A missing or unreadable marker, or one of another instance (a rebuilt index), proves
/// nothing and is ignored.
fn check_commits(path: &Path, tree: &sled::Tree, own_index: bool) -> Result<Commits> {
    let instance: Option<[u8; 16]> = tree
        .get(keys::COMMITS_INSTANCE)?
        .and_then(|v| v.as_ref().try_into().ok());
    let count = tree
        .get(keys::COMMITS_COUNT)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let marker = path.join(INDEX_DIR).join(COMMITS_FILE);
    if let (Some(inst), Ok(text)) = (instance, fs::read_to_string(&marker)) {
        let mut it = text.split_whitespace();
        let (m_inst, m_count) = (it.next(), it.next().and_then(|n| n.parse::<u64>().ok()));
        if m_inst == Some(hex16(&inst).as_str()) && m_count.is_some_and(|m| m > count) {
            return Err(Error::IndexDamaged {
                path: path.to_path_buf(),
                detail: format!(
                    "it has {count} of the {} commits flushed to it: the end of its log is lost",
                    m_count.unwrap()
                ),
            });
        }
    }
    Ok(Commits {
        tree: tree.clone(),
        instance,
        count,
        marker: own_index.then_some(marker),
    })
}

/// 16 bytes that differ between databases: a hash of the time, the process and a counter.
fn new_instance() -> [u8; 16] {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&crate::time::now_ns().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(
        &N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    h.finalize().as_bytes()[..16].try_into().unwrap()
}

fn hex16(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Opens a sled database, retrying briefly while its file lock is busy. sled locks its `db` file
/// with flock; a process that forks (a parallel test harness, a hook) shares the file description
/// until its child execs, so a database just closed can look locked for a moment. The repository
/// lock already excludes other strata processes, so a lock that stays busy is a real error.
///
/// A damaged database (sled 0.34 panics on a truncated `db` file, and reports other damage as
/// corruption) becomes [`Error::IndexDamaged`], which tells the user to run `strata repair`.
pub fn open_sled(config: sled::Config) -> Result<sled::Db> {
    let index = config.path.clone();
    remove_unfinished_snapshots(&index)?;
    let damaged = |detail: String| {
        // The repository is the index directory's parent; a copy elsewhere (check) names itself.
        let path = match index.file_name() {
            Some(n) if n == INDEX_DIR => index.parent().unwrap_or(&index).to_path_buf(),
            _ => index.clone(),
        };
        Error::IndexDamaged { path, detail }
    };
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match catch_panic(|| config.open()) {
            Err(panic) => return Err(damaged(format!("sled failed to open it: {panic}"))),
            Ok(Err(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Ok(Err(sled::Error::Corruption { .. })) => {
                return Err(damaged("sled found corrupt data in it".into()))
            }
            Ok(r) => return Ok(r?),
        }
    }
}

/// Removes `snap.*.generating` files from a sled directory. sled writes its recovery snapshot
/// under that name and renames it when complete; a write that failed (a full disk) or was killed
/// leaves it behind, and sled 0.34 then reads it as the newest snapshot on every later open and
/// reports the whole database corrupt. Without it sled recovers from the previous snapshot and
/// its log, as it would had the new snapshot never been started.
fn remove_unfinished_snapshots(index: &Path) -> Result<()> {
    let rd = match fs::read_dir(index) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("Listing", index),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            log::info!(
                "Removing the unfinished index snapshot {}",
                e.path().display()
            );
            fs::remove_file(e.path()).ctx("Removing", e.path())?;
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into its message. The panic is logged at debug level instead of
/// being printed: a damaged database is reported as one error line, not a backtrace.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| log::debug!("sled: {info}")));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// `$STRATA_REPO` is handled by clap; this is the fallback: `$XDG_DATA_HOME/strata/repo`, else
/// `~/.local/share/strata/repo`.
pub fn default_repo_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".local/share")
        });
    base.join("strata/repo")
}

impl Repo {
    /// Test support: commits a full snapshot whose layer holds exactly `entries` (dir, name,
    /// entry), written straight into sled without any of backup's checks, so that tests can build
    /// the hostile repositories (names like `..`, `a/b`, entries under a symlink) that restore
    /// and the mount must survive. Never used by strata itself.
    #[doc(hidden)]
    pub fn insert_raw_full_snapshot(
        &self,
        snapshot: &Snapshot,
        entries: &[(Vec<u8>, Vec<u8>, crate::entry::Entry)],
    ) -> Result<()> {
        for (dir, name, e) in entries {
            let key = keys::entry_key(&snapshot.id, dir, name);
            self.store.insert(Space::Layers, &key, &e.encode())?;
        }
        self.store
            .insert(Space::Records, &snapshot.id.0, &snapshot.encode())?;
        self.snapshots_changed();
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_that_lost_flushed_commits_is_reported_damaged() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("repo");
        let repo = Repo::create(&path, &CreateOptions::default()).unwrap();
        repo.flush().unwrap();
        repo.flush().unwrap();
        drop(repo);
        let marker = path.join(INDEX_DIR).join(COMMITS_FILE);
        let text = fs::read_to_string(&marker).unwrap();
        let (instance, count) = text.trim().split_once(' ').unwrap();
        assert_eq!(count, "2");
        // The marker saw a third flush the database does not hold: the end of its log is lost.
        fs::write(&marker, format!("{instance} 3\n")).unwrap();
        match Repo::open(&path) {
            Err(Error::IndexDamaged { detail, .. }) => assert!(detail.contains("2 of the 3")),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a database that lost a commit opened"),
        }
        // A marker of another database (one that repair replaced) proves nothing.
        fs::write(&marker, format!("{} 99\n", "0".repeat(32))).unwrap();
        let repo = Repo::open(&path).unwrap();
        // Behind the database (a crash between a flush and the marker): fine, and caught up.
        repo.flush().unwrap();
        drop(repo);
        let text = fs::read_to_string(&marker).unwrap();
        assert!(
            text.starts_with(instance) && text.trim().ends_with(" 3"),
            "{text}"
        );
    }

    #[test]
    fn an_unfinished_sled_snapshot_file_is_removed_before_opening() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("repo");
        drop(Repo::create(&path, &CreateOptions::default()).unwrap());
        let torn = path
            .join(INDEX_DIR)
            .join("snap.7FFFFFFFFFFFFFFF.generating");
        fs::write(&torn, b"torn by a full disk").unwrap();
        Repo::open(&path).unwrap();
        assert!(!torn.exists());
    }
}
