//! The walk of a backup: several threads take directories from a shared queue, list them, lstat
//! each entry and compare it with the parent snapshot's view. Unchanged entries are skipped,
//! changed metadata goes straight to the layer writer, changed file content goes to the readers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crossbeam_channel::Sender;

use super::pipeline::{Batcher, LayerMsg, LAYER_BATCH};
use super::reader::{Companion, FileJob};
use super::{is_excluded, sqlite, Shared};
use crate::entry::{Entry, Kind};
use crate::error::{Error, IoContext, Result};
use crate::fsmeta::{self, entry_from_meta};
use crate::layers::{join, View};
use crate::snapshot::BackupStats;

/// One directory to walk: (relative path, absolute path, whether the parent view has it).
type DirWork = (Vec<u8>, PathBuf, bool);

/// Directories waiting to be walked, shared by the walker threads. `pending` counts directories
/// queued or being walked, so the walk is over when it reaches zero.
#[derive(Default)]
struct DirQueue {
    state: Mutex<QueueState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct QueueState {
    dirs: Vec<DirWork>,
    pending: usize,
    aborted: bool,
}

impl DirQueue {
    fn push(&self, items: Vec<DirWork>) {
        if items.is_empty() {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.pending += items.len();
        s.dirs.extend(items);
        self.cv.notify_all();
    }

    /// The next directory, or `None` when the walk is complete or aborted.
    fn take(&self) -> Option<DirWork> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.aborted {
                return None;
            }
            if let Some(w) = s.dirs.pop() {
                return Some(w);
            }
            if s.pending == 0 {
                return None;
            }
            s = self.cv.wait(s).unwrap();
        }
    }

    fn done(&self) {
        let mut s = self.state.lock().unwrap();
        s.pending -= 1;
        if s.pending == 0 {
            self.cv.notify_all();
        }
    }

    fn abort(&self) {
        self.state.lock().unwrap().aborted = true;
        self.cv.notify_all();
    }
}

/// What one walker thread found, merged after the walk.
/// A hard link after the first of its group: (dir, name, entry, whether the parent view has it).
pub(super) type Deferred = (Vec<u8>, Vec<u8>, Entry, bool);

#[derive(Default)]
pub(super) struct WalkResult {
    /// Directories this layer changed, and whether each is new (opaque).
    pub(super) touched: HashMap<Vec<u8>, bool>,
    pub(super) deferred: Vec<Deferred>,
    /// Files, directories, bytes and whiteouts as walked (readers correct them later).
    pub(super) stats: BackupStats,
}

impl WalkResult {
    fn merge(&mut self, part: WalkResult) {
        for (dir, opaque) in part.touched {
            *self.touched.entry(dir).or_insert(false) |= opaque;
        }
        self.deferred.extend(part.deferred);
        self.stats.files += part.stats.files;
        self.stats.dirs += part.stats.dirs;
        self.stats.total_bytes += part.stats.total_bytes;
        self.stats.deleted += part.stats.deleted;
    }
}

/// Files handed to a reader at once.
const JOB_BATCH: usize = 64;

/// What the walk compares the source with, and what it leaves out.
pub(super) struct WalkPlan<'a> {
    pub(super) source: &'a Path,
    pub(super) parent: Option<&'a View>,
    /// A full backup stores every entry and records no changed directories.
    pub(super) full: bool,
    pub(super) rehash: bool,
    pub(super) excludes: &'a globset::GlobSet,
    /// (device, inode) of the repository directory: never backed up into itself.
    pub(super) repo_dir: Option<(u64, u64)>,
    /// Which SQLite databases are copied.
    pub(super) sqlite: &'a sqlite::Policy,
    /// (device, inode) of the directory the SQLite copies are made in: never backed up.
    pub(super) copy_dir: Option<(u64, u64)>,
}

/// Walks the source: the root on the calling thread, then its tree on several threads, which on
/// a cold cache are bound by the kernel's inode lookups, which parallelize. Returns what all
/// walkers found and the walk's first real error (not a walker that stopped because another one
/// failed). `jobs` is dropped on return, so the readers finish once they have read everything.
pub(super) fn walk(
    shared: &Shared,
    plan: &WalkPlan,
    jobs: Sender<Vec<FileJob>>,
    layer: &Sender<Vec<LayerMsg>>,
) -> (Result<()>, WalkResult) {
    let walk_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4);
    let queue = DirQueue::default();
    let link_seen = Mutex::new(HashSet::new());
    let make_walker = || Walker {
        shared,
        parent: plan.parent,
        full: plan.full,
        rehash: plan.rehash,
        excludes: plan.excludes,
        repo_dir: plan.repo_dir,
        sqlite: plan.sqlite,
        copy_dir: plan.copy_dir,
        link_seen: &link_seen,
        jobs: Batcher::new(jobs.clone(), JOB_BATCH, 8 << 20),
        layer: Batcher::new(layer.clone(), LAYER_BATCH, usize::MAX),
        touched: HashMap::new(),
        deferred: Vec::new(),
        stats: BackupStats::default(),
    };
    let mut root_walker = make_walker();
    let mut walked = root_walker
        .walk_root(plan.source, &queue)
        .and_then(|_| root_walker.flush());
    let mut found = root_walker.finish();
    if walked.is_ok() {
        let results: Vec<Result<WalkResult>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..walk_threads)
                .map(|_| {
                    let mut w = make_walker();
                    let q = &queue;
                    s.spawn(move || {
                        let r = w.run(q).and_then(|_| w.flush());
                        if r.is_err() {
                            q.abort();
                        }
                        r.map(|_| w.finish())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("walker thread panicked"))
                .collect()
        });
        for r in results {
            match r {
                Ok(part) => found.merge(part),
                Err(e) if walked.is_ok() || matches!(walked, Err(Error::Aborted)) => {
                    walked = Err(e)
                }
                Err(_) => {}
            }
        }
    }
    (walked, found)
}

struct Walker<'a> {
    shared: &'a Shared,
    parent: Option<&'a View>,
    full: bool,
    rehash: bool,
    excludes: &'a globset::GlobSet,
    repo_dir: Option<(u64, u64)>,
    sqlite: &'a sqlite::Policy,
    copy_dir: Option<(u64, u64)>,
    /// Inodes of hard-linked files already sent to a reader (shared by the walker threads).
    link_seen: &'a Mutex<HashSet<u64>>,
    jobs: Batcher<FileJob>,
    layer: Batcher<LayerMsg>,
    touched: HashMap<Vec<u8>, bool>,
    deferred: Vec<Deferred>,
    stats: BackupStats,
}

impl Walker<'_> {
    fn emit(&mut self, dir: &[u8], name: &[u8], entry: Entry) -> Result<()> {
        if entry.kind == Kind::Whiteout {
            self.stats.deleted += 1;
        }
        self.touch(dir, false);
        self.shared
            .counters
            .layer_entries
            .fetch_add(1, Ordering::Relaxed);
        self.layer.push(
            LayerMsg {
                dir: dir.to_vec(),
                name: name.to_vec(),
                entry,
            },
            0,
        )
    }

    fn touch(&mut self, dir: &[u8], opaque: bool) {
        if self.full {
            return;
        }
        let flag = self.touched.entry(dir.to_vec()).or_insert(false);
        *flag |= opaque;
    }

    fn warn(&self, msg: String) {
        self.shared.warn(msg);
    }

    fn flush(&mut self) -> Result<()> {
        self.jobs.flush()?;
        self.layer.flush()
    }

    /// Drops the channels and hands back what this walker collected.
    fn finish(self) -> WalkResult {
        WalkResult {
            touched: self.touched,
            deferred: self.deferred,
            stats: self.stats,
        }
    }

    /// The root directory's own entry; queues the root for walking.
    fn walk_root(&mut self, source: &Path, queue: &DirQueue) -> Result<()> {
        let root_meta = fs::symlink_metadata(source).ctx("Reading source", source)?;
        let mut root = entry_from_meta(&root_meta);
        let old_root = self.parent.map(|p| p.root()).transpose()?;
        self.stats.dirs += 1;
        if old_root
            .as_ref()
            .is_none_or(|o| !fsmeta::unchanged(o, &root))
        {
            root.xattrs = fsmeta::read_xattrs(source).unwrap_or_default();
            root.opaque = old_root.is_none();
            self.emit(b"", b"", root)?;
        }
        queue.push(vec![(
            Vec::new(),
            source.to_path_buf(),
            self.parent.is_some(),
        )]);
        Ok(())
    }

    /// Walks directories from the queue until the walk is complete.
    fn run(&mut self, queue: &DirQueue) -> Result<()> {
        while let Some((dir, abs, in_parent)) = queue.take() {
            let mut subdirs = Vec::new();
            let r = self.walk_dir(&dir, &abs, in_parent, &mut subdirs);
            // Queue the children before marking this one done, so the count never drops to zero
            // while work remains.
            queue.push(subdirs);
            queue.done();
            r?;
        }
        Ok(())
    }

    fn walk_dir(
        &mut self,
        dir: &[u8],
        abs: &Path,
        in_parent: bool,
        stack: &mut Vec<(Vec<u8>, PathBuf, bool)>,
    ) -> Result<()> {
        let mut old: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        if in_parent {
            for kv in self.parent.unwrap().children(dir)? {
                let (n, e) = kv?;
                old.insert(n, e);
            }
        }
        let rd = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) => {
                self.warn(format!("Skipped directory {}: {e}", abs.display()));
                // Shown empty, as read: the parent's children of it must not show through as if
                // they were current.
                for name in old.into_keys() {
                    self.emit(dir, &name, Entry::whiteout())?;
                }
                return Ok(());
            }
        };
        let mut names = Vec::new();
        for ent in rd {
            match ent {
                Ok(ent) => names.push(ent.file_name()),
                Err(e) => self.warn(format!("Error listing {}: {e}", abs.display())),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        // Companions of databases, handled with their database (which sorts before them).
        let mut claimed = HashSet::new();
        for os_name in &names {
            let name = os_name.as_bytes().to_vec();
            let rel = join(dir, &name);
            if is_excluded(self.excludes, &rel, &name) {
                continue;
            }
            if !claimed.is_empty() && claimed.remove(&name) {
                self.pass_by(dir, &name, &mut old)?;
                continue;
            }
            let path = abs.join(os_name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Left in `old`: a whiteout hides the parent's version below.
                    self.warn(format!("Skipped {}: {e}", path.display()));
                    continue;
                }
            };
            if meta.is_dir() && self.repo_dir == Some((meta.dev(), meta.ino())) {
                log::info!("Skipping {}: it is the repository", path.display());
                continue;
            }
            if meta.is_dir() && self.copy_dir == Some((meta.dev(), meta.ino())) {
                continue;
            }
            self.shared.progress.0.entry_seen();
            let old_e = old.remove(&name);
            let mut e = entry_from_meta(&meta);
            match e.kind {
                Kind::Dir => {
                    self.stats.dirs += 1;
                    let was_dir = old_e.as_ref().is_some_and(|o| o.kind == Kind::Dir);
                    e.opaque = !was_dir;
                    if old_e.as_ref().is_none_or(|o| !fsmeta::unchanged(o, &e)) {
                        e.xattrs = self.xattrs(&path);
                        self.emit(dir, &name, e)?;
                    }
                    if !was_dir {
                        self.touch(&rel, true);
                    }
                    stack.push((rel, path, was_dir));
                }
                Kind::File => {
                    self.stats.files += 1;
                    self.stats.total_bytes += e.size;
                    let copyable = e.nlink == 1 && self.sqlite.allows(&rel);
                    if let Some(o) = old_e.as_ref().filter(|_| !self.rehash) {
                        if fsmeta::unchanged(o, &e)
                            || (copyable && unchanged_copy(o, &e, &path, &name, &mut claimed))
                        {
                            continue;
                        }
                    }
                    let sqlite = copyable
                        .then(|| self.companions(dir, abs, &name, &names, &mut old, &mut claimed));
                    e.xattrs = self.xattrs(&path);
                    if e.nlink > 1 && !self.link_seen.lock().unwrap().insert(e.ino) {
                        self.touch(dir, false);
                        self.shared
                            .counters
                            .layer_entries
                            .fetch_add(1, Ordering::Relaxed);
                        self.deferred.push((dir.to_vec(), name, e, old_e.is_some()));
                        continue;
                    }
                    self.touch(dir, false);
                    let size = e.size as usize;
                    self.jobs.push(
                        FileJob {
                            dir: dir.to_vec(),
                            name,
                            path,
                            entry: e,
                            existed: old_e.is_some(),
                            was_file: old_e.is_some_and(|o| o.kind == Kind::File),
                            sqlite,
                        },
                        size,
                    )?;
                }
                Kind::Symlink => {
                    if old_e.as_ref().is_some_and(|o| fsmeta::unchanged(o, &e)) {
                        continue;
                    }
                    match fs::read_link(&path) {
                        Ok(t) => e.target = t.as_os_str().as_bytes().to_vec(),
                        Err(err) => {
                            self.warn(format!("Skipped {}: {err}", path.display()));
                            if old_e.is_some() {
                                self.emit(dir, &name, Entry::whiteout())?;
                            }
                            continue;
                        }
                    }
                    e.xattrs = self.xattrs(&path);
                    self.emit(dir, &name, e)?;
                }
                _ => {
                    if old_e.as_ref().is_some_and(|o| fsmeta::unchanged(o, &e)) {
                        continue;
                    }
                    e.xattrs = self.xattrs(&path);
                    self.emit(dir, &name, e)?;
                }
            }
        }
        for name in old.into_keys() {
            self.emit(dir, &name, Entry::whiteout())?;
        }
        Ok(())
    }

    /// A name the walk passes by (a companion of a database stored as a copy): absent from the
    /// new snapshot, so the parent's version of it is hidden.
    fn pass_by(
        &mut self,
        dir: &[u8],
        name: &[u8],
        old: &mut BTreeMap<Vec<u8>, Entry>,
    ) -> Result<()> {
        if old.remove(name).is_some() {
            self.emit(dir, name, Entry::whiteout())?;
        }
        Ok(())
    }

    /// The `-journal`, `-shm` and `-wal` files beside `name` in this directory (sorted `names`),
    /// which go to the reader with it: stored only if it turns out not to be a database that
    /// can be copied. Each is taken out of `old` and marked `claimed` so the walk passes it by.
    fn companions(
        &mut self,
        dir: &[u8],
        abs: &Path,
        name: &[u8],
        names: &[std::ffi::OsString],
        old: &mut BTreeMap<Vec<u8>, Entry>,
        claimed: &mut HashSet<Vec<u8>>,
    ) -> Vec<Companion> {
        let mut out = Vec::new();
        for suffix in sqlite::COMPANIONS {
            let cname = [name, suffix].concat();
            let rel = join(dir, &cname);
            if names
                .binary_search_by(|n| n.as_bytes().cmp(&cname))
                .is_err()
                || is_excluded(self.excludes, &rel, &cname)
            {
                continue;
            }
            let path = abs.join(std::ffi::OsStr::from_bytes(&cname));
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let mut e = entry_from_meta(&meta);
            if e.kind != Kind::File || e.nlink != 1 {
                continue;
            }
            let old_e = old.remove(&cname);
            let unchanged =
                !self.rehash && old_e.as_ref().is_some_and(|o| fsmeta::unchanged(o, &e));
            if !unchanged {
                e.xattrs = self.xattrs(&path);
            }
            self.stats.files += 1;
            self.stats.total_bytes += e.size;
            claimed.insert(cname.clone());
            out.push(Companion {
                job: FileJob {
                    dir: dir.to_vec(),
                    name: cname,
                    path,
                    entry: e,
                    existed: old_e.is_some(),
                    was_file: old_e.is_some_and(|o| o.kind == Kind::File),
                    sqlite: None,
                },
                unchanged,
            });
        }
        out
    }

    fn xattrs(&self, path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        match fsmeta::read_xattrs(path) {
            Ok(x) => x,
            Err(e) => {
                self.warn(format!(
                    "Extended attributes of {} not stored: {e}",
                    path.display()
                ));
                Vec::new()
            }
        }
    }
}

/// Whether a file the parent stored as a SQLite copy (`old`) is unchanged (see
/// `sqlite::copy_unchanged`); its companions are then `claimed`, to be passed by like it.
fn unchanged_copy(
    old: &Entry,
    new: &Entry,
    path: &Path,
    name: &[u8],
    claimed: &mut HashSet<Vec<u8>>,
) -> bool {
    if !sqlite::copy_unchanged(old, new, path) {
        return false;
    }
    for suffix in sqlite::COMPANIONS {
        claimed.insert([name, suffix].concat());
    }
    true
}
