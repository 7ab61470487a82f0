//! Readers that do not hold the repository: what lets a mount stay up for months while backups,
//! `forget`, `prune` and `check` run beside it (docs/FORMAT.md, "Readers and leases").
//!
//! A reader (a mount) never keeps the repository lock. It reads a private copy of the index,
//! taken under the lock in a moment ([`crate::open::Locked::open_copy`]), and takes a new one
//! when the index has changed ([`Stamp`]). What it must be able to keep reading it names in a
//! **lease**: the snapshots whose files the kernel holds, with every layer their views read.
//! `forget` keeps the layers of a leased snapshot it removes (the record goes, the layer stays,
//! hidden), and `prune` keeps every chunk a leased layer references ([`retained`]); a prune after
//! the lease is gone reclaims them like any other orphan.
//!
//! ```text
//! REPO/readers/epoch              "<n>\n": bumped by forget, prune and repair before they
//!                                 read the leases
//! REPO/readers/<pid>-<16 hex>/
//!     lock                        flock(LOCK_EX) by the reader for its whole life; its pid
//!     lease                       the leased snapshot ids, 32 hex digits per line (by rename)
//!     <n>/lock, <n>/index/        copy n of the index; lock held while the copy is open
//! ```
//!
//! **Why a lease is never missed.** A reader about to use a snapshot writes its lease first,
//! then reads the epoch; `forget` and `prune` bump the epoch first, then read the leases (both
//! under the repository lock). Of two such sequences one sees the other's write: either the
//! remover sees the lease, or the reader sees the new epoch and takes a new copy (waiting for the
//! lock, so after the remover is done) before it trusts the snapshot to exist.
//!
//! **Failure cases.** A reader that dies (`kill -9`) leaves its directory with a free lock: the
//! next reader to start, and every `forget` and `prune`, delete it, so it blocks nothing and
//! retains nothing. Readers and removers create and delete reader directories only under the
//! repository lock, so a directory is never taken for stale while it is being set up.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{IoContext, Result};
use crate::id::SnapshotId;
use crate::open::Open;
use crate::repo::Repo;

/// The readers' directory inside the repository.
pub const READERS_DIR: &str = "readers";
const EPOCH: &str = "epoch";
const LOCK: &str = "lock";
const LEASE: &str = "lease";

/// What a reader compares to tell whether its copy of the index is out of date: the commit
/// marker (`index/commits`, rewritten by every flush of the index) and the epoch of removals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    commits: Option<Vec<u8>>,
    epoch: Option<Vec<u8>>,
}

impl Stamp {
    /// Reads both, without the lock (two small reads).
    pub fn read(repo: &Path) -> Stamp {
        Stamp {
            commits: fs::read(repo.join(crate::repo::INDEX_DIR).join("commits")).ok(),
            epoch: read_epoch(repo),
        }
    }

    /// Whether the index was committed to since `self`.
    pub fn commits_moved(&self, now: &Stamp) -> bool {
        self.commits != now.commits
    }

    /// Whether a `forget` or `prune` started since `self`.
    pub fn epoch_moved(&self, now: &Stamp) -> bool {
        self.epoch != now.epoch
    }
}

fn read_epoch(repo: &Path) -> Option<Vec<u8>> {
    fs::read(repo.join(READERS_DIR).join(EPOCH)).ok()
}

/// A registered reader: its directory, held by its lock for as long as this lives. Dropping it
/// removes the directory (a reader killed before that leaves it to [`retained`] and the next
/// reader).
pub struct Reader {
    repo: PathBuf,
    dir: PathBuf,
    _lock: File,
    next_copy: AtomicU64,
    /// The lease as last written.
    leased: Mutex<BTreeSet<SnapshotId>>,
    /// Serializes making and removing copies.
    copies: Mutex<()>,
}

/// A copy of the index a reader opened, with the stamp it was taken at.
pub struct Copy {
    /// Which copy: numbered from 1 for the reader's life.
    pub number: u64,
    /// The repository over the copy.
    pub repo: Arc<Repo>,
    /// The commit marker and epoch when it was taken.
    pub stamp: Stamp,
}

impl Reader {
    /// Registers a reader of the repository `open` names and takes its first copy of the
    /// index, both under the repository lock (waiting for it as `open` says); removes the
    /// directories of readers that died.
    pub fn register(open: Open) -> Result<(Arc<Reader>, Copy)> {
        let locked = open.lock()?;
        let repo = locked.path().to_path_buf();
        let readers = repo.join(READERS_DIR);
        private_dir(&readers, true)?;
        remove_stale(&readers);
        let dir = readers.join(format!(
            "{}-{:016x}",
            std::process::id(),
            crate::time::now_ns() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        ));
        private_dir(&dir, false)?;
        let lock = take_lock(&dir.join(LOCK))?;
        let reader = Arc::new(Reader {
            repo,
            dir,
            _lock: lock,
            next_copy: AtomicU64::new(1),
            leased: Mutex::new(BTreeSet::new()),
            copies: Mutex::new(()),
        });
        let copy = reader.copy_locked(locked)?;
        Ok((reader, copy))
    }

    /// The repository directory.
    pub fn repo_path(&self) -> &Path {
        &self.repo
    }

    /// A new copy of the index, taken under the repository lock (waiting as `open` says, which
    /// must name this reader's repository).
    pub fn copy(&self, open: Open) -> Result<Copy> {
        self.copy_locked(open.lock()?)
    }

    fn copy_locked(&self, locked: crate::open::Locked) -> Result<Copy> {
        let _one = lock(&self.copies);
        let number = self.next_copy.fetch_add(1, Ordering::Relaxed);
        let into = self.dir.join(number.to_string());
        let repo_path = self.repo.clone();
        let made = locked.open_copy(&into, || {
            let readers = repo_path.join(READERS_DIR);
            remove_stale(&readers);
            Ok(Stamp::read(&repo_path))
        });
        match made {
            Ok((repo, stamp)) => Ok(Copy {
                number,
                repo,
                stamp,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&into);
                Err(e)
            }
        }
    }

    /// The stamp now.
    pub fn stamp(&self) -> Stamp {
        Stamp::read(&self.repo)
    }

    /// Writes the lease: `ids` replace what was leased. Unchanged leases are not rewritten.
    pub fn lease(&self, ids: &BTreeSet<SnapshotId>) -> Result<()> {
        let mut leased = lock(&self.leased);
        if *leased == *ids {
            return Ok(());
        }
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let path = self.dir.join(LEASE);
        let tmp = self.dir.join("lease.tmp");
        fs::write(&tmp, text).ctx("Writing", &tmp)?;
        fs::rename(&tmp, &path).ctx("Writing", &path)?;
        *leased = ids.clone();
        Ok(())
    }

    /// Removes the copies no handle has open any more (their lock is free). Returns how many.
    pub fn remove_unused_copies(&self) -> usize {
        let _one = lock(&self.copies);
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if is_free(&p.join(LOCK)) {
                log::debug!("Removing the index copy {}", p.display());
                if fs::remove_dir_all(&p).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Creates a directory only its owner can enter (mode 0700 less the umask): readers' copies of
/// the index hold everything the index does.
fn private_dir(path: &Path, recursive: bool) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(path)
        .ctx("Creating", path)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates and locks a reader's lock file, writing the pid into it.
fn take_lock(path: &Path) -> Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx("Creating", path)?;
    f.try_lock()
        .map_err(|e| match e {
            TryLockError::WouldBlock => std::io::Error::from(std::io::ErrorKind::WouldBlock),
            TryLockError::Error(e) => e,
        })
        .ctx("Locking", path)?;
    write!(f, "{}", std::process::id()).ctx("Writing", path)?;
    Ok(f)
}

/// Whether the lock file at `path` is free (or missing): its holder is gone.
fn is_free(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => match f.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(_)) => false,
        },
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Deletes the directories of readers whose lock is free. Call under the repository lock.
fn remove_stale(readers: &Path) {
    let Ok(rd) = fs::read_dir(readers) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && is_free(&p.join(LOCK)) {
            log::info!("Removing {}, left by a reader that is gone", p.display());
            if let Err(err) = fs::remove_dir_all(&p) {
                log::warn!("Could not remove {}: {err}", p.display());
            }
        }
    }
}

/// For `forget`, `prune` and `repair`, under the repository lock, before they remove anything:
/// starts a new epoch, then returns every snapshot a live reader leases (removing the
/// directories of readers that are gone). Empty, and nothing written, when no reader was ever registered: one
/// cannot register while the caller holds the lock.
pub fn retained(repo: &Path) -> Result<HashSet<SnapshotId>> {
    let readers = repo.join(READERS_DIR);
    if !readers.is_dir() {
        return Ok(HashSet::new());
    }
    bump_epoch(&readers)?;
    remove_stale(&readers);
    let out = read_leases(&readers)?;
    if !out.is_empty() {
        log::info!(
            "{} snapshot layer(s) are leased by running mounts",
            out.len()
        );
    }
    Ok(out)
}

/// Every lease in `readers`, of live readers and (when not removed first) dead ones.
fn read_leases(readers: &Path) -> Result<HashSet<SnapshotId>> {
    let mut out = HashSet::new();
    for e in fs::read_dir(readers).ctx("Reading", readers)?.flatten() {
        let p = e.path();
        if !p.is_dir() || is_free(&p.join(LOCK)) {
            continue;
        }
        let lease = p.join(LEASE);
        let text = match fs::read_to_string(&lease) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx("Reading", &lease),
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            match line.parse::<SnapshotId>() {
                Ok(id) => {
                    out.insert(id);
                }
                Err(e) => log::warn!("Ignoring a line of {}: {e}", lease.display()),
            }
        }
    }
    Ok(out)
}

/// The snapshots live readers lease, read without starting an epoch or removing anything: for
/// a dry run, which removes nothing either.
pub fn leased(repo: &Path) -> Result<HashSet<SnapshotId>> {
    let readers = repo.join(READERS_DIR);
    if !readers.is_dir() {
        return Ok(HashSet::new());
    }
    read_leases(&readers)
}

fn bump_epoch(readers: &Path) -> Result<()> {
    let path = readers.join(EPOCH);
    let n: u64 = fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let tmp = readers.join("epoch.tmp");
    fs::write(&tmp, format!("{}\n", n.wrapping_add(1))).ctx("Writing", &tmp)?;
    fs::rename(&tmp, &path).ctx("Writing", &path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::CreateOptions;

    #[test]
    fn leases_are_seen_by_removers_and_die_with_their_reader() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("repo");
        drop(Open::new(&path).create(&CreateOptions::default()).unwrap());
        assert!(retained(&path).unwrap().is_empty(), "no readers, no leases");

        let (reader, copy) = Reader::register(Open::new(&path)).unwrap();
        assert_eq!(copy.number, 1);
        assert!(copy.repo.snapshots().unwrap().is_empty());
        // The repository is free while the reader reads its copy.
        drop(
            Open::new(&path)
                .lock_wait(std::time::Duration::ZERO)
                .open()
                .unwrap(),
        );

        let id = SnapshotId([7; 16]);
        reader.lease(&BTreeSet::from([id])).unwrap();
        let before = reader.stamp();
        assert_eq!(retained(&path).unwrap(), HashSet::from([id]));
        let after = reader.stamp();
        assert!(before.epoch_moved(&after), "a remover starts a new epoch");
        assert!(!before.commits_moved(&after));

        // A second copy; the first is removed once its handle is closed.
        let second = reader.copy(Open::new(&path)).unwrap();
        assert_eq!(second.number, 2);
        assert_eq!(reader.remove_unused_copies(), 0, "both copies are open");
        drop(copy);
        assert_eq!(reader.remove_unused_copies(), 1);

        // A reader that is done leases nothing and leaves nothing behind.
        drop(second);
        let dir = reader.dir.clone();
        drop(reader);
        assert!(!dir.exists());
        assert!(retained(&path).unwrap().is_empty());
    }

    #[test]
    fn a_dead_readers_directory_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("repo");
        drop(Open::new(&path).create(&CreateOptions::default()).unwrap());
        let dead = path.join(READERS_DIR).join("1-dead");
        fs::create_dir_all(dead.join("3/index")).unwrap();
        fs::write(dead.join(LOCK), b"1").unwrap();
        fs::write(dead.join(LEASE), format!("{}\n", SnapshotId([1; 16]))).unwrap();
        assert!(retained(&path).unwrap().is_empty());
        assert!(!dead.exists());
    }
}
