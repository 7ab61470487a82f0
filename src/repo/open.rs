//! Opening the storage of a repository: the marker and format-version checks, the sled database
//! (with its recovery quirks: a torn recovery snapshot, a full disk, a busy file lock, a panic on
//! damage) and the handle over it. Each step takes the process lock it needs as a [`RepoLock`]
//! from the caller, who decides what else happens under it: the opener (`crate::open`) removes
//! the lookup catalog, seeds records and completes an interrupted rewrite; nothing here does.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use super::commits::{self, Commits};
use super::crypt::keyfile::{self, Passphrase};
use super::crypt::{self, Crypt, REPO_ID_LEN};
use super::lock::{RepoLock, LOCK_WAIT};
use super::pack::{DirBackend, PackBackend};
use super::store::{self as meta_store, MetaStore, SledStore, Space};
use super::{
    keys, space, CreateOptions, Repo, DEFAULT_COMPRESSION, ENCRYPTED_FORMAT, FORMAT_VERSION,
    INDEX_DIR,
};
use crate::error::{Error, IoContext, Result};

/// The marker file whose presence makes a directory a repository.
const MARKER: &str = "STRATA";

/// What the marker file says: `strata repository`, `format N`, and for an encrypted repository
/// `repository <32 hex digits>`, the id its key files are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The format line's number (1 when the marker has none: any marker made a repository
    /// before encryption existed).
    pub format: u32,
    /// The repository id, for an encrypted repository (and every repository in a bucket).
    pub repo_id: Option<[u8; REPO_ID_LEN]>,
    /// The bucket of a repository in object storage, when this directory is its cache.
    pub remote: Option<String>,
}

impl Marker {
    fn text(&self) -> String {
        let mut t = format!("strata repository\nformat {}\n", self.format);
        if let Some(id) = &self.repo_id {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            t.push_str(&format!("repository {hex}\n"));
        }
        if let Some(url) = &self.remote {
            t.push_str(&format!("remote {url}\n"));
        }
        t
    }
}

/// Reads the marker of the repository at `path`; `Ok(None)` when there is none.
pub fn read_marker(path: &Path) -> Result<Option<Marker>> {
    let file = path.join(MARKER);
    let text = match fs::read(&file) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(e).ctx("Reading", &file),
    };
    let mut m = Marker {
        format: FORMAT_VERSION,
        repo_id: None,
        remote: None,
    };
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("format ") {
            m.format = n.trim().parse().unwrap_or(FORMAT_VERSION);
        } else if let Some(h) = line.strip_prefix("repository ") {
            m.repo_id = crate::id::hex_decode(h.trim()).and_then(|b| b.try_into().ok());
        } else if let Some(u) = line.strip_prefix("remote ") {
            m.remote = Some(u.trim().to_string());
        }
    }
    Ok(Some(m))
}

impl Repo {
    /// Checks that `path` can hold a new repository (missing or an empty directory), creates the
    /// directory and takes its lock, for [`Repo::create_locked`].
    pub(crate) fn lock_new(path: &Path) -> Result<RepoLock> {
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
        let created = !path.exists();
        fs::create_dir_all(path).ctx("Creating repository", path)?;
        if created {
            // Only its owner (and root) may use a repository: there is no other access control.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .ctx("Creating repository", path)?;
        }
        RepoLock::take(path)
    }

    /// The keys of the repository at `path` when it is encrypted (its marker says so), unlocked
    /// with the passphrase `pass` gives (asked only then); `None` for a plain repository or a
    /// directory without a marker (the lock that follows reports it). Touches nothing: a wrong
    /// passphrase or an unusable key file leaves the repository as it was.
    pub fn unlock(
        path: &Path,
        pass: &mut dyn FnMut() -> Result<Passphrase>,
    ) -> Result<Option<Arc<Crypt>>> {
        let Some(marker) = read_marker(path)? else {
            return Ok(None);
        };
        if marker.format != ENCRYPTED_FORMAT {
            return Ok(None);
        }
        let id = marker.repo_id.ok_or_else(|| Error::KeyUnusable {
            path: path.to_path_buf(),
            detail: format!("its {MARKER} file names no repository id"),
        })?;
        let (master, key) = keyfile::unlock(path, &id, pass)?;
        log::debug!("Unlocked with key {key}");
        Ok(Some(Arc::new(
            Crypt::from_master(&master, id).unlocked_by(key),
        )))
    }

    /// Writes a new repository's index, pack directory and marker under `lock` (from
    /// [`Repo::lock_new`]) and opens it.
    pub(crate) fn create_locked(
        path: &Path,
        lock: RepoLock,
        opts: &CreateOptions,
        cache_bytes: u64,
    ) -> Result<Arc<Repo>> {
        let remote = super::remote::created(path);
        let mut marker = Marker {
            format: FORMAT_VERSION,
            repo_id: remote.as_ref().map(|r| r.1),
            remote: remote.as_ref().map(|r| r.0.clone()),
        };
        let crypt = match &opts.encryption {
            None => None,
            Some(new) => {
                let master = zeroize::Zeroizing::new(crypt::random::<{ crypt::MASTER_LEN }>()?);
                let id = match &remote {
                    Some(r) => r.1,
                    None => crypt::random::<REPO_ID_LEN>()?,
                };
                let key = keyfile::KeyFile::seal(&master, id, &new.passphrase, new.kdf)?;
                let key_id = keyfile::write(path, &key)?;
                marker.format = ENCRYPTED_FORMAT;
                marker.repo_id = Some(id);
                Some(Arc::new(
                    Crypt::from_master(&master, id).unlocked_by(key_id),
                ))
            }
        };
        let db = open_db(path, cache_bytes)?;
        let session = super::remote::session(path)?;
        let journal = session.as_ref().map(|s| s.journal.clone());
        let meta = meta_store::over(db.clone(), crypt.as_ref(), journal)?;
        meta.insert(Space::Meta, keys::META_FORMAT, &marker.format.to_be_bytes())?;
        meta.insert(
            Space::Meta,
            keys::META_COMPRESSION,
            &opts.compression.to_be_bytes(),
        )?;
        db.open_tree(keys::TREE_COMMITS)?
            .insert(keys::COMMITS_INSTANCE, &commits::new_instance())?;
        // In a bucket, this flush is the repository's first log entry.
        meta.flush()?;
        if session.is_none() {
            fs::create_dir_all(path.join("packs")).ctx("Creating repository", path)?;
        }
        // The marker is written last: a repository without it was never completely created.
        let file = path.join(MARKER);
        fs::write(&file, marker.text()).ctx("Creating repository", &file)?;
        super::remote::publish_config(path, &marker.text())?;
        Self::finish_open(path, lock, db, true, crypt)
    }

    /// Whether `path` is a place for a new repository: no marker, and missing or empty.
    pub(crate) fn is_vacant(path: &Path) -> bool {
        !path.join(MARKER).exists() && (!path.exists() || dir_is_empty(path))
    }

    /// Takes the process lock of an existing repository (marker present), touching nothing else.
    pub(crate) fn lock_existing(path: &Path) -> Result<RepoLock> {
        if !path.exists() {
            return Err(Error::RepoNotFound(path.to_path_buf()));
        }
        if !path.join(MARKER).is_file() {
            return Err(Error::NotARepo(path.to_path_buf()));
        }
        RepoLock::take(path)
    }

    /// The lock for `repair` and `check`, which work on a repository whose index may be missing
    /// or unreadable: the marker must be there (without it the directory is not known to be a
    /// repository, and nothing is touched), the index need not.
    pub(crate) fn lock_marked(path: &Path) -> Result<RepoLock> {
        if !path.exists() {
            return Err(Error::RepoNotFound(path.to_path_buf()));
        }
        if !path.join(MARKER).is_file() {
            // Key files name the repository they belong to: enough to say what the marker was.
            let id = keyfile::list(path)?
                .into_iter()
                .find_map(|f| f.key.ok().map(|k| k.repo_id));
            return Err(match id {
                Some(id) => Error::EncryptedMarkerMissing {
                    path: path.to_path_buf(),
                    id: id.iter().map(|b| format!("{b:02x}")).collect(),
                },
                None => Error::MarkerMissing(path.to_path_buf()),
            });
        }
        RepoLock::take(path)
    }

    /// Opens the index of the repository at `path` under `lock`, with `cache_bytes` of sled page
    /// cache. A missing index is [`Error::IndexMissing`] (sled would silently create an empty
    /// one; a lost index is a case for `repair`). On a full disk, unfinished packs are removed to
    /// let sled open (it writes while it opens).
    pub(crate) fn open_index(
        path: &Path,
        lock: RepoLock,
        cache_bytes: u64,
        crypt: Option<Arc<Crypt>>,
    ) -> Result<Arc<Repo>> {
        if !path.join(INDEX_DIR).exists() {
            return Err(Error::IndexMissing(path.to_path_buf()));
        }
        let db = match open_db(path, cache_bytes) {
            Err(Error::Db(sled::Error::Io(e))) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // Unfinished packs (left by a killed backup) are the one thing that can go
                // without asking: nothing refers to them, and the lock says no backup is writing
                // them now.
                let removed = DirBackend::open(&path.join("packs"))?.remove_unfinished()?;
                if removed == 0 {
                    return Err(no_space_to_open(path, Error::Db(sled::Error::Io(e))));
                }
                log::warn!(
                    "The disk is full: removed {removed} unfinished pack(s) to open the index"
                );
                open_db(path, cache_bytes).map_err(|e| no_space_to_open(path, e))?
            }
            r => r?,
        };
        Self::finish_open(path, lock, db, true, crypt)
    }

    /// Opens the repository at `path` over an already open database `db` (the one `repair` just
    /// rebuilt, possibly a temporary one for `--dry-run`; or `check`'s private copy), keeping the
    /// lock taken by `open::Open::lock_without_index`.
    pub(crate) fn open_with_db(
        path: &Path,
        lock: RepoLock,
        db: sled::Db,
        crypt: Option<Arc<Crypt>>,
    ) -> Result<Arc<Repo>> {
        Self::finish_open(path, lock, db, false, crypt)
    }

    /// `own_index`: `db` is `path`'s index directory, so its flushes update the commit marker.
    fn finish_open(
        path: &Path,
        lock: RepoLock,
        db: sled::Db,
        own_index: bool,
        crypt: Option<Arc<Crypt>>,
    ) -> Result<Arc<Repo>> {
        let commits = Commits::check(path, db.open_tree(keys::TREE_COMMITS)?, own_index)?;
        // The format record is in the clear in both formats.
        let version = match SledStore::new(db.clone())?.get(Space::Meta, keys::META_FORMAT)? {
            Some(v) => match <[u8; 4]>::try_from(v.as_ref()) {
                Ok(b) => u32::from_be_bytes(b),
                Err(_) => return Err(Error::CorruptMetadata("format record malformed".into())),
            },
            None => return Err(Error::NotARepo(path.to_path_buf())),
        };
        check_format(path, version, crypt.is_some())?;
        let session = super::remote::session(path)?;
        // A private copy (check's) or a rebuilt index (repair's) is not the bucket's log: its
        // writes are not journaled; repair publishes what it rebuilt as a checkpoint.
        let journal = session
            .as_ref()
            .filter(|_| own_index)
            .map(|s| s.journal.clone());
        let store = meta_store::over(db, crypt.as_ref(), journal)?;
        let compression = store
            .get(Space::Meta, keys::META_COMPRESSION)?
            .and_then(|v| v.as_ref().try_into().ok().map(i32::from_be_bytes))
            .unwrap_or(DEFAULT_COMPRESSION);
        let dictionary = match store.get(Space::Meta, keys::META_DICTIONARY)? {
            Some(d) => OnceLock::from(Arc::new(crate::compress::Dictionary::from_bytes(
                d.to_vec(),
            ))),
            None => OnceLock::new(),
        };
        Ok(Arc::new(Repo {
            path: path.to_path_buf(),
            store,
            crypt,
            packs: match &session {
                Some(s) => Arc::new(s.packs.clone()),
                None => Arc::new(DirBackend::open(&path.join("packs"))?),
            },
            compression,
            pack_target: if session.is_some() {
                super::writer::REMOTE_PACK_TARGET_SIZE
            } else {
                super::writer::PACK_TARGET_SIZE
            },
            dictionary,
            derived: Default::default(),
            commits: Mutex::new(commits),
            space: space::Space::new(path, &path.join(INDEX_DIR).join("db")),
            _lock: lock,
        }))
    }
}

/// Refuses an index whose format this build does not know, and one that disagrees with the
/// marker about encryption: an index in the clear where the marker says encrypted could have
/// been put there to make strata write in the clear.
fn check_format(path: &Path, version: u32, unlocked: bool) -> Result<()> {
    match (version, unlocked) {
        (FORMAT_VERSION, false) | (ENCRYPTED_FORMAT, true) => Ok(()),
        (FORMAT_VERSION, true) => Err(Error::CorruptMetadata(format!(
            "repository {}: its marker says it is encrypted, but its index is not; refusing to use it",
            path.display()
        ))),
        (ENCRYPTED_FORMAT, false) => Err(Error::KeyUnusable {
            path: path.to_path_buf(),
            detail: format!("its {MARKER} file does not say so (it should name format {ENCRYPTED_FORMAT} and the repository id)"),
        }),
        (found, _) => Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
            supported: ENCRYPTED_FORMAT,
        }),
    }
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    open_sled(
        sled::Config::new()
            .path(path.join(INDEX_DIR))
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput),
    )
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
fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
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

#[cfg(test)]
mod tests {
    use super::super::commits::COMMITS_FILE;
    use super::super::DEFAULT_INDEX_CACHE;
    use super::*;

    /// A repository created with the storage calls alone (no lookup files, no rewrite to resume).
    fn create(path: &Path) -> Arc<Repo> {
        let lock = Repo::lock_new(path).unwrap();
        Repo::create_locked(path, lock, &CreateOptions::default(), DEFAULT_INDEX_CACHE).unwrap()
    }

    fn open(path: &Path) -> Result<Arc<Repo>> {
        Repo::open_index(path, Repo::lock_existing(path)?, DEFAULT_INDEX_CACHE, None)
    }

    #[test]
    fn an_index_that_lost_flushed_commits_is_reported_damaged() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("repo");
        let repo = create(&path);
        repo.flush().unwrap();
        repo.flush().unwrap();
        drop(repo);
        let marker = path.join(INDEX_DIR).join(COMMITS_FILE);
        let text = fs::read_to_string(&marker).unwrap();
        let (instance, count) = text.trim().split_once(' ').unwrap();
        assert_eq!(count, "2");
        // The marker saw a third flush the database does not hold: the end of its log is lost.
        fs::write(&marker, format!("{instance} 3\n")).unwrap();
        match open(&path) {
            Err(Error::IndexDamaged { detail, .. }) => assert!(detail.contains("2 of the 3")),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a database that lost a commit opened"),
        }
        // A marker of another database (one that repair replaced) proves nothing.
        fs::write(&marker, format!("{} 99\n", "0".repeat(32))).unwrap();
        let repo = open(&path).unwrap();
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
        drop(create(&path));
        let torn = path
            .join(INDEX_DIR)
            .join("snap.7FFFFFFFFFFFFFFF.generating");
        fs::write(&torn, b"torn by a full disk").unwrap();
        open(&path).unwrap();
        assert!(!torn.exists());
    }
}
