//! `versions/`: per-path history in the mounted tree (layout in docs/SEMANTICS.md).
//!
//! ```text
//! versions/<source>/                     one directory per source (encoded as in sources/)
//! versions/<source>/<path>/              every path that exists in any snapshot of the source
//! versions/<source>/<file path>/<time>   one regular file per distinct version of that path
//! ```
//!
//! A directory here is the union of the names any layer of the source holds under that path, so
//! `versions/` mirrors the union of all snapshots' trees. For a path that was ever a non-directory
//! (file, symlink, …), its directory also lists each distinct version (consecutive identical
//! entries collapsed, as `strata log` does), named by the time of the snapshot where it was first
//! seen (`2026-11-20T02:00:00Z`; `-2`, `-3`… appended to repeated times). A version is the stored
//! entry itself: a regular file reads its verified content exactly like `snapshots/<name>/<path>`
//! (it is that inode), a symlink returns its target.
//!
//! Built lazily: a listing scans only the layers' entries under that one directory and resolves
//! the path once per snapshot. Memory: inodes for what was visited (as everywhere in the mount)
//! and a bounded cache of recent histories ([`HistoryCache`]); nothing grows with the number of
//! files or snapshots otherwise.

use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{
    lock, lossy, repo_err, DirItem, Key, Node, SnapList, Vfs, VfsError, VfsResult, VERSIONS_INO,
};
use crate::entry::{Entry, Kind};
use crate::history::{self, Step};
use crate::id::SnapshotId;
use crate::layers::{join, Delta, LayerChanges};
use crate::snapshot::Snapshot;

/// Histories kept; beyond this the least recently used is dropped.
const MAX_HISTORIES: NonZeroUsize = NonZeroUsize::new(256).expect("nonzero");

/// Recent `(source, path, newest snapshot)` → the path's versions. Bounded, least recently used
/// out first. The newest snapshot id in the key makes a refresh that adds snapshots miss instead
/// of going stale.
pub(super) struct HistoryCache(Mutex<LruCache<HistoryKey, Arc<Vec<Version>>>>);

impl HistoryCache {
    /// Forgets every history (the snapshot list changed).
    pub(super) fn clear(&self) {
        lock(&self.0).clear();
    }
}

impl Default for HistoryCache {
    fn default() -> HistoryCache {
        HistoryCache(Mutex::new(LruCache::new(MAX_HISTORIES)))
    }
}

/// (encoded source, path, newest snapshot of the source).
type HistoryKey = (String, Vec<u8>, SnapshotId);

/// One listed version.
#[derive(Clone)]
pub(super) struct Version {
    name: Vec<u8>,
    snap: SnapshotId,
    entry: Entry,
}

impl Vfs {
    /// The snapshots of an (encoded) source, oldest first.
    fn source_snaps(list: &SnapList, source: &str) -> VfsResult<Vec<Snapshot>> {
        let idx = list.sources.get(source).ok_or(VfsError::NotFound)?;
        Ok(idx.iter().map(|&i| list.list[i].snap.clone()).collect())
    }

    fn versions_path(source: &str, path: &[u8]) -> String {
        let mut s = format!("versions/{source}");
        if !path.is_empty() {
            s.push('/');
            s.push_str(&lossy(path));
        }
        s
    }

    /// Every layer of the source's snapshots' chains, each once.
    fn source_layers(&self, snaps: &[Snapshot]) -> VfsResult<Vec<SnapshotId>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for s in snaps {
            for l in self.view(&s.id)?.chain() {
                if seen.insert(l) {
                    out.push(l);
                }
            }
        }
        Ok(out)
    }

    /// `versions/<source>`.
    pub(super) fn versions_source(&self, list: &SnapList, source: &str) -> VfsResult<u64> {
        if !list.sources.contains_key(source) {
            return Err(VfsError::NotFound);
        }
        Ok(self.intern_versions(source, Vec::new(), VERSIONS_INO))
    }

    fn intern_versions(&self, source: &str, path: Vec<u8>, parent: u64) -> u64 {
        let key = Key::Versions(source.to_string(), path.clone());
        self.intern(key, || Node::Versions {
            source: source.to_string(),
            path,
            parent,
        })
    }

    /// Names held (not as whiteouts) under `path` by any layer of the source.
    fn union_children(&self, source: &str, path: &[u8]) -> VfsResult<BTreeSet<Vec<u8>>> {
        let snaps = Self::source_snaps(&self.snap_list(), source)?;
        let err = || Self::versions_path(source, path);
        let mut names = BTreeSet::new();
        let repo = self.gen().repo.clone();
        for layer in self.source_layers(&snaps)? {
            for kv in LayerChanges::of(&repo, &layer).under(path) {
                let (name, d) = kv.map_err(repo_err(err))?;
                if d != Delta::Deleted {
                    names.insert(name);
                }
            }
        }
        Ok(names)
    }

    /// Whether some layer of the source holds `path` (not as a whiteout), and whether as something
    /// other than a directory.
    fn layer_state(&self, snaps: &[Snapshot], path: &[u8]) -> VfsResult<(bool, bool)> {
        if path.is_empty() {
            return Ok((true, false));
        }
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let err = || lossy(path);
        let (mut exists, mut non_dir) = (false, false);
        let repo = self.gen().repo.clone();
        for layer in self.source_layers(snaps)? {
            let d = LayerChanges::of(&repo, &layer)
                .at(dir, name)
                .map_err(repo_err(err))?;
            if let Some(Delta::Set(e)) = d {
                exists = true;
                non_dir |= e.kind != Kind::Dir;
            }
        }
        Ok((exists, non_dir))
    }

    /// The distinct non-directory versions of `path`, named, from the bounded cache when recent.
    fn versions_of(&self, source: &str, path: &[u8]) -> VfsResult<Arc<Vec<Version>>> {
        let snaps = Self::source_snaps(&self.snap_list(), source)?;
        let Some(newest) = snaps.last().map(|s| s.id) else {
            return Ok(Arc::default());
        };
        let key = (source.to_string(), path.to_vec(), newest);
        if let Some(v) = lock(&self.histories.0).get(&key) {
            return Ok(v.clone());
        }
        let (_, non_dir) = self.layer_state(&snaps, path)?;
        let mut out = Vec::new();
        if non_dir {
            let err = || Self::versions_path(source, path);
            let steps: Vec<Step> = history::log_with(&snaps, path, |s| {
                self.view(&s.id).map_err(|e| match e {
                    VfsError::Corrupt { source, .. } | VfsError::Repo { source, .. } => source,
                    other => crate::Error::CorruptMetadata(other.to_string()),
                })
            })
            .map_err(repo_err(err))?;
            let mut last_time = String::new();
            let mut repeat = 0;
            for s in steps {
                let Some(entry) = s.entry else { continue };
                if entry.kind == Kind::Dir {
                    continue;
                }
                let time = s.first.time_rfc3339();
                if time == last_time {
                    repeat += 1;
                } else {
                    repeat = 1;
                    last_time = time.clone();
                }
                let name = if repeat == 1 {
                    time
                } else {
                    format!("{time}-{repeat}")
                };
                out.push(Version {
                    name: name.into_bytes(),
                    snap: s.first.id,
                    entry,
                });
            }
        }
        let out = Arc::new(out);
        lock(&self.histories.0).put(key, out.clone());
        Ok(out)
    }

    fn intern_version(&self, path: &[u8], v: &Version, parent: u64) -> u64 {
        self.intern_content(v.snap, false, path.to_vec(), v.entry.clone(), parent)
    }

    /// Lookup inside `versions/<source>/<path>`: a child path, else a version.
    pub(super) fn versions_lookup(
        &self,
        ino: u64,
        source: &str,
        path: &[u8],
        name: &[u8],
    ) -> VfsResult<u64> {
        let child = join(path, name);
        let snaps = Self::source_snaps(&self.snap_list(), source)?;
        if self.layer_state(&snaps, &child)?.0 {
            return Ok(self.intern_versions(source, child, ino));
        }
        let versions = self.versions_of(source, path)?;
        let v = versions
            .iter()
            .find(|v| v.name == name)
            .ok_or(VfsError::NotFound)?;
        Ok(self.intern_version(path, v, ino))
    }

    /// Listing of `versions/<source>/<path>`: child paths (directories), then versions (files).
    pub(super) fn versions_readdir(
        &self,
        ino: u64,
        mut out: Vec<DirItem>,
        source: &str,
        path: &[u8],
    ) -> VfsResult<Vec<DirItem>> {
        let children = self.union_children(source, path)?;
        let versions = self.versions_of(source, path)?;
        for name in children {
            let cino = self.intern_versions(source, join(path, &name), ino);
            out.push(DirItem {
                attr: self.getattr(cino)?,
                name,
            });
        }
        for v in versions.iter() {
            if out.iter().any(|d| d.name == v.name) {
                continue; // a child of the same name hides the version (see docs/SEMANTICS.md)
            }
            let cino = self.intern_version(path, v, ino);
            let mut attr = self.getattr(cino)?;
            attr.immutable = false; // as `Vfs::lookup` says for names under versions/
            out.push(DirItem {
                attr,
                name: v.name.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::repo::CreateOptions;
    use crate::snapshot::BackupKind;
    use crate::testutil::snap;
    use crate::vfs::{encode_component, FileKind, Vfs, VfsError, VfsOptions, ROOT_INO};

    fn ino_of(vfs: &Vfs, path: &[&[u8]]) -> Result<u64, VfsError> {
        let mut ino = ROOT_INO;
        for c in path {
            ino = vfs.lookup(ino, c)?.ino;
        }
        Ok(ino)
    }

    fn names(vfs: &Vfs, ino: u64) -> Vec<String> {
        vfs.readdir(ino).unwrap()[2..]
            .iter()
            .map(|d| String::from_utf8(d.name.clone()).unwrap())
            .collect()
    }

    #[test]
    fn versions_are_named_collapsed_readable_and_follow_refresh() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"one").unwrap();
        let repo = crate::open::Open::new(t.path().join("repo"))
            .create(&CreateOptions::default())
            .unwrap();
        let s1 = snap(&repo, &src, BackupKind::Full);
        let _s2 = snap(&repo, &src, BackupKind::Incremental); // unchanged: collapses into s1's
        fs::write(src.join("d/f"), b"two!").unwrap();
        let s3 = snap(&repo, &src, BackupKind::Incremental);
        let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
        let source = encode_component(&s1.source);
        let f = ino_of(&vfs, &[b"versions", source.as_bytes(), b"d", b"f"]).unwrap();
        assert_eq!(vfs.getattr(f).unwrap().kind, FileKind::Dir);
        // Names: the first-seen time; a repeated second gets "-2".
        let (t1, t3) = (s1.time_rfc3339(), s3.time_rfc3339());
        let want = if t1 == t3 {
            vec![t1.clone(), format!("{t1}-2")]
        } else {
            vec![t1.clone(), t3.clone()]
        };
        assert_eq!(names(&vfs, f), want);
        let v1 = vfs.lookup(f, want[0].as_bytes()).unwrap();
        let v2 = vfs.lookup(f, want[1].as_bytes()).unwrap();
        assert_eq!((v1.kind, v1.size, v2.size), (FileKind::File, 3, 4));
        assert_eq!(vfs.read(v1.ino, 0, 100).unwrap(), b"one");
        assert_eq!(vfs.read(v2.ino, 0, 100).unwrap(), b"two!");
        assert!(matches!(
            vfs.lookup(f, b"2000-01-01T00:00:00Z"),
            Err(VfsError::NotFound)
        ));
        assert!(matches!(
            vfs.open_file(f, false),
            Err(VfsError::IsADirectory)
        ));
        // `..` of a history directory is its parent path under versions/.
        let d = ino_of(&vfs, &[b"versions", source.as_bytes(), b"d"]).unwrap();
        assert_eq!(vfs.lookup(f, b"..").unwrap().ino, d);
        assert_eq!(names(&vfs, d), ["f"]);

        // A new snapshot after refresh: the cached history is not reused.
        drop(vfs);
        let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
        let f = ino_of(&vfs, &[b"versions", source.as_bytes(), b"d", b"f"]).unwrap();
        assert_eq!(names(&vfs, f).len(), 2);
        fs::remove_file(src.join("d/f")).unwrap();
        let _s4 = snap(&repo, &src, BackupKind::Incremental);
        fs::write(src.join("d/f"), b"three").unwrap();
        let s5 = snap(&repo, &src, BackupKind::Incremental);
        vfs.refresh().unwrap();
        let listed = names(&vfs, f);
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(listed[2].starts_with(&s5.time_rfc3339()));
        let v3 = vfs.lookup(f, listed[2].as_bytes()).unwrap();
        assert_eq!(vfs.read(v3.ino, 0, 100).unwrap(), b"three");
    }
}
