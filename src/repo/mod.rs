//! The repository's storage: the directory layout, the process lock (`lock`), the index behind
//! [`store::MetaStore`] (keyspaces and key layouts in [`keys`]), pack files ([`pack`], written by
//! [`writer`]), the free-space reserve that keeps sled from meeting a full disk ([`space`]), the
//! commit marker that tells a truncated index from an older one (`commits`), and verified
//! record reads (`read`). Layout (see docs/FORMAT.md):
//!
//! ```text
//! REPO/STRATA       marker file: "strata repository\nformat N\n"
//! REPO/lock         flock()ed by the process using the repository; holds its pid
//! REPO/index/       the sled database (index and metadata)
//! REPO/index/commits  the commit marker: flushes this database completed (see `keys::TREE_COMMITS`)
//! REPO/packs/xx/    pack files
//! ```
//!
//! Storage only: this module imports nothing above it (only `error`, `id`, `compress`, `fsio`
//! and `time`). It knows bytes, keys and records, never snapshots, entries or layers; what is
//! derived from them in memory hangs off the handle through [`derived::Derived`], and what
//! happens when a repository is opened beyond the storage itself (the lookup catalog, an
//! interrupted rewrite) is the opener's (`crate::open`).

pub(crate) mod commits;
pub mod crypt;
pub mod derived;
pub mod keys;
mod lock;
mod open;
pub mod pack;
mod read;
pub mod remote;
pub mod scan;
pub mod space;
pub mod store;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use pack::PackBackend;
use store::{Batch, MetaStore, Space};

pub use lock::RepoLock;
pub use open::{open_sled, read_marker, Marker};
pub use read::read_record_append_from;

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

/// The repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The format of an encrypted repository: format 1 with every value sealed (docs/FORMAT.md,
/// "Encryption"). A strata that knows only format 1 refuses it.
pub const ENCRYPTED_FORMAT: u32 = 2;

/// The format version of a repository, encrypted or not.
pub fn format_version(encrypted: bool) -> u32 {
    if encrypted {
        ENCRYPTED_FORMAT
    } else {
        FORMAT_VERSION
    }
}
/// zstd level used when `init` is not told otherwise (see docs/FORMAT.md for the measurement).
pub const DEFAULT_COMPRESSION: i32 = 1;
/// The sled database's directory inside the repository.
pub const INDEX_DIR: &str = "index";

/// Options for creating a repository (`crate::open::Open::create`).
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// zstd level for new chunks (0 = store raw).
    pub compression: i32,
    /// Encrypt the repository, with a first key file for this passphrase.
    pub encryption: Option<NewKey>,
}

/// A key file to make: its passphrase and how that becomes a key.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// The passphrase.
    pub passphrase: crypt::keyfile::Passphrase,
    /// The argon2id parameters.
    pub kdf: crypt::keyfile::KdfParams,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            compression: DEFAULT_COMPRESSION,
            encryption: None,
        }
    }
}

/// An open repository. Holds the exclusive process lock for its lifetime.
pub struct Repo {
    path: PathBuf,
    /// The index, read and written only through [`Repo::index`].
    store: Box<dyn MetaStore>,
    /// The keys of an encrypted repository.
    crypt: Option<Arc<crypt::Crypt>>,
    packs: Arc<dyn PackBackend>,
    compression: i32,
    /// Bytes after which a pack is closed ([`writer::PACK_TARGET_SIZE`], smaller in a bucket).
    pack_target: u64,
    dictionary: OnceLock<Arc<crate::compress::Dictionary>>,
    /// What modules above derive from the index and keep for the handle's lifetime.
    derived: derived::Slots,
    /// The commit count this database has flushed, and where the marker file goes.
    commits: Mutex<commits::Commits>,
    /// Free space kept so that sled never meets a full disk.
    space: space::Space,
    _lock: RepoLock,
}

impl Repo {
    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes after which a new pack is closed.
    pub fn pack_target_size(&self) -> u64 {
        self.pack_target
    }

    /// Default zstd level recorded at `init`.
    pub fn compression(&self) -> i32 {
        self.compression
    }

    /// The index: every keyspace, read and written only through this interface.
    pub fn index(&self) -> &dyn store::MetaStore {
        self.store.as_ref()
    }

    /// The keys of an encrypted repository; `None` for a plain one.
    pub fn crypt(&self) -> Option<&Arc<crypt::Crypt>> {
        self.crypt.as_ref()
    }

    /// The id of plaintext `data` in this repository: blake3, keyed in an encrypted repository
    /// (so that ids do not reveal content). Every id of a new chunk or blob comes from here.
    pub fn chunk_id(&self, data: &[u8]) -> crate::id::ChunkId {
        crypt::chunk_id(self.crypt.as_deref(), data)
    }

    /// The pack storage.
    pub fn packs(&self) -> &Arc<dyn PackBackend> {
        &self.packs
    }

    /// Flushes sled to disk; the last step of every commit. Counts the commit in the database
    /// and then in the marker file (see `commits`), so the file never counts a commit the
    /// database has not made durable.
    pub fn flush(&self) -> Result<()> {
        let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        c.flush(self.store.as_ref())
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

    /// Allocates a fresh, never reused number (sled's persistent id generator).
    pub(crate) fn generate_id(&self) -> Result<u64> {
        self.store.generate_id()
    }

    /// Starts a new pack under a fresh number. Numbers come from sled's id generator, which can
    /// repeat one after a kill (it persists its counter lazily); a number whose pack (or unfinished
    /// pack) exists is skipped, so a finished pack is never overwritten. In a bucket, numbers come
    /// from the time instead ([`remote::journal::Journal::pack_id`]): machines sharing it have
    /// separate generators.
    pub(crate) fn create_pack(&self) -> Result<(crate::id::PackId, Box<dyn pack::PackSink>)> {
        let remote = remote::session(&self.path)?;
        for _ in 0..10_000 {
            let id = crate::id::PackId(match &remote {
                // Also for an index that is not the bucket's log (repair's rebuild).
                Some(s) => s.journal.pack_id()?,
                None => self.generate_id()?,
            });
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
}

/// The packs of the repository at `path`: its `packs/` directory, or its bucket when it is the
/// cache of a repository in object storage. For readers that work without a [`Repo`] handle
/// (the sled-free `cat`, `repair`).
pub fn pack_backend(path: &Path) -> Result<Arc<dyn PackBackend>> {
    Ok(match remote::session(path)? {
        Some(s) => Arc::new(s.packs.clone()),
        None => Arc::new(pack::DirBackend::open(&path.join("packs"))?),
    })
}

impl Repo {
    /// For a repository in a bucket: commits what is pending, then writes the whole index as a
    /// checkpoint and deletes the log before it (see [`remote::journal`]). Only under the
    /// bucket's exclusive lock (`prune`, `repair`). Nothing for a local repository.
    pub fn publish_checkpoint(&self) -> Result<()> {
        let Some(s) = remote::session(&self.path)? else {
            return Ok(());
        };
        self.flush()?;
        let db = self.store.raw_db().ok_or_else(|| {
            Error::CorruptMetadata("the index has no database to checkpoint".into())
        })?;
        remote::journal::checkpoint(&self.path, &s.client, &db)
    }
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

/// A repository created with the storage calls alone, for the tests inside `repo/` (which may not
/// use the opener above them).
#[cfg(test)]
pub(crate) fn create_for_tests(path: &Path) -> Arc<Repo> {
    let lock = Repo::lock_new(path).unwrap();
    Repo::create_locked(path, lock, &CreateOptions::default(), DEFAULT_INDEX_CACHE).unwrap()
}
