//! The repository `copy` reads from, opened the way a mount reads a live repository
//! (docs/FORMAT.md, "Readers and leases"): a private copy of its index, taken under its lock in a
//! moment, so that backups, `forget` and `prune` of the source go on while a long copy runs. What
//! the copy reads it leases: `forget` keeps those layers and `prune` every chunk they reference.
//!
//! **Prune may still move chunks** (a repacked pack). A chunk read then fails at its old place (the
//! record there is not the one asked for, or the pack is gone: every read is verified against the
//! id asked for, so it never yields other bytes); when the source's index changed since the copy
//! being read, the read is retried once on a new copy of it. Layers and records are always read
//! from the first copy, the one the plan was made from.
//!
//! Must not: write to the source beyond what every reader writes (its reader directory and
//! lease; completing an interrupted `forget` first, as every command that opens an index does).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::lease::{Reader, Stamp};
use crate::open::Open;
use crate::passphrase::Sources;
use crate::repo::Repo;

/// The source repository of a copy, read through private copies of its index.
pub struct Source {
    path: PathBuf,
    /// How new copies are opened (unlocked already, never asking again).
    open: Open,
    /// The copy the plan, the layers and the views are read from, and when it was taken.
    repo: Arc<Repo>,
    stamp: Stamp,
    /// The copy chunk reads go to: the first, or a newer one after a prune moved chunks.
    chunks: Mutex<(Arc<Repo>, Stamp)>,
    /// Last, so that it is dropped (and its directory removed) after the copies are closed.
    reader: Arc<Reader>,
}

impl Source {
    /// Opens the repository at `path` for reading: unlocks it when encrypted (passphrase from
    /// `pass`, asked only then), completes an interrupted `forget` it holds, and registers a
    /// reader with a first copy of its index.
    pub fn open(path: &Path, pass: &Sources) -> Result<Source> {
        if crate::repo::read_marker(path)?.is_none() {
            return Err(Error::InvalidArgument(format!(
                "--from-repo {}: no strata repository there",
                path.display()
            )));
        }
        let crypt = Repo::unlock(path, &mut || pass.current(path))?;
        let open = Open::new(path).unlocked(crypt);
        let (reader, first) = Reader::register(open.clone())?;
        let (reader, first) = if crate::forget::interrupted(&first.repo)?.is_some() {
            // Its layers disagree with their blobs until the rewrite is complete; completing it
            // is what any command that opens the index does first.
            drop(first);
            drop(reader);
            crate::ops::read_only_with(open.clone(), |_| Ok(()))?;
            Reader::register(open.clone())?
        } else {
            (reader, first)
        };
        Ok(Source {
            path: path.to_path_buf(),
            reader,
            open,
            chunks: Mutex::new((first.repo.clone(), first.stamp.clone())),
            repo: first.repo,
            stamp: first.stamp,
        })
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The copy of the index the plan, layers and views are read from.
    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Leases `ids` (every layer the copy will read); `false` when a `forget` or `prune` started
    /// since the copy was taken, which may not have seen the lease: the caller takes a new copy
    /// ([`Source::refresh`]) and plans again.
    pub fn lease(&self, ids: &std::collections::BTreeSet<SnapshotId>) -> Result<bool> {
        self.reader.lease(ids)?;
        Ok(!self.stamp.epoch_moved(&self.reader.stamp()))
    }

    /// Takes a new copy of the index (waiting for the source's lock) for a new plan.
    pub fn refresh(&mut self) -> Result<()> {
        let c = self.reader.copy(self.open.clone())?;
        *lock(&self.chunks) = (c.repo.clone(), c.stamp.clone());
        self.repo = c.repo;
        self.stamp = c.stamp;
        self.reader.remove_unused_copies();
        Ok(())
    }

    /// Reads and verifies chunk `id`; retried once on a new copy of the index when the source
    /// changed since the copy read (a prune may have moved the chunk).
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (repo, stamp) = lock(&self.chunks).clone();
        let first = match repo.read_chunk(id) {
            Ok(plain) => return Ok(plain),
            Err(e) => e,
        };
        let now = self.reader.stamp();
        if !stamp.commits_moved(&now) && !stamp.epoch_moved(&now) {
            return Err(first);
        }
        log::info!("Chunk {id} was not where the source's index said ({first}); reading a new copy of the index");
        let c = self.reader.copy(self.open.clone())?;
        *lock(&self.chunks) = (c.repo.clone(), c.stamp);
        drop(repo);
        self.reader.remove_unused_copies();
        c.repo.read_chunk(id)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses a copy from a repository into itself: the same directory (by device and inode, so
/// also through a symlink or another path), or the same name when it is no directory here.
pub fn check_distinct(source: &Path, target: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let same = match (std::fs::metadata(source), std::fs::metadata(target)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => trimmed(source) == trimmed(target),
    };
    if same {
        let shown = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        return Err(Error::InvalidArgument(format!(
            "--from-repo and --repo are the same repository ({}); copy needs two repositories",
            shown.display()
        )));
    }
    Ok(())
}

/// `path` without trailing slashes.
fn trimmed(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    let b = path.as_os_str().as_bytes();
    let end = b
        .iter()
        .rposition(|&c| c != b'/')
        .map_or(b.len().min(1), |i| i + 1);
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_repository_is_refused_by_any_path_or_name() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::os::unix::fs::symlink(&a, t.path().join("alias")).unwrap();
        assert!(check_distinct(&a, &b).is_ok());
        assert!(check_distinct(&a, &t.path().join("alias")).is_err());
        assert!(check_distinct(&a, &t.path().join("b/../a")).is_err());
        // Names that are no directory here (a bucket) are compared as names.
        let (x, y) = (
            Path::new("s3://bucket/prefix/"),
            Path::new("s3://bucket/prefix"),
        );
        assert!(check_distinct(x, y).is_err());
        assert!(check_distinct(x, Path::new("s3://bucket/other")).is_ok());
        assert_eq!(trimmed(Path::new("/")), b"/");
    }
}
