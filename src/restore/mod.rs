//! `restore`: writes (part of) a snapshot into a target directory, with its metadata, safely,
//! resumably and in parallel. Library level: returns [`RestoreStats`], prints nothing.
//!
//! Order of work, each step relying on the one before:
//! 1. **plan** ([`plan`]): the snapshot entries to restore, unsafe names refused, hard-link groups;
//! 2. **directories**, top-down, created `0700` so their contents can be written;
//! 3. **files, symlinks, FIFOs, devices**, on a thread pool: each written under a temporary name
//!    (`.strata-tmp-…`) in its destination directory, given its metadata, then renamed into place,
//!    so an interrupted restore never leaves a half-written file under its real name;
//! 4. **hard links**, linked to the group's first path once that exists;
//! 5. **directory metadata**, bottom-up, so writing into a directory cannot disturb its mtime.
//!
//! Invariants: nothing is written outside the target (every operation goes through a directory
//! descriptor opened beneath it without following symlinks, see [`fsops`]); nothing in the
//! target with more than one name (a hard link, perhaps to a file outside it) is modified in
//! place — it is left exactly as it is or replaced by a new file renamed over it; a path whose
//! content differs from the snapshot is not touched unless `--overwrite` allows it; content comes
//! only from [`Repo::read_chunk`], which verifies blake3, and each chunk is read once per restore
//! even when many files share it. What "identical" means, and every other rule, is in
//! docs/SEMANTICS.md ("Restore").

mod data;
pub mod fsops;
pub mod plan;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{FileType, Mode, Stat};
use xattr::FileExt;

use crate::entry::{Entry, Kind};
use crate::error::{Error, IoContext, Result};
use crate::id::ChunkId;
use crate::layers::View;
use crate::progress::Progress;
use crate::repo::keys::Location;
use crate::repo::Repo;
use data::{Chunks, WriteFailure};
use plan::{Item, Role};

/// Prefix of the temporary names restore writes under; a rerun removes leftovers with it.
pub const TEMP_PREFIX: &[u8] = b".strata-tmp-";

/// Files at least this big are written first (see [`Run::leaves`]).
const BIG_FILE: u64 = 64 << 20;

/// Leaves of one directory handed to a worker at a time, at most (see [`Run::leaves`]).
const RUN_LEAVES: usize = 256;

/// Shared chunks kept in memory at most (see [`data::Chunks`]).
const SHARED_CHUNK_BUDGET: usize = 256 << 20;

/// The errno of a filesystem without extended attributes.
const ENOTSUP: i32 = rustix::io::Errno::NOTSUP.raw_os_error();

/// What to do with a path that already exists in the target and differs from the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Overwrite {
    /// Leave it alone and report a conflict (the restore then exits non-zero).
    #[default]
    Never,
    /// Replace it when it differs; leave identical paths alone.
    IfChanged,
    /// Replace every path, identical or not.
    Always,
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory the snapshot's paths are written under (created when missing).
    pub target: PathBuf,
    /// Restore only paths matching one of these globs (and what is under a matching directory).
    pub includes: Vec<String>,
    /// Skip paths matching one of these globs, with everything under them.
    pub excludes: Vec<String>,
    /// What to do with existing paths that differ.
    pub overwrite: Overwrite,
    /// Decide everything, write nothing; the decisions are in [`RestoreStats::actions`].
    pub dry_run: bool,
    /// Remove what the snapshot does not hold from restored directories.
    pub delete: bool,
    /// Read every written file back and compare it with the snapshot's chunk hashes.
    pub verify: bool,
    /// fsync every file before renaming it into place.
    pub fsync: bool,
    /// Worker threads; 0 = two per CPU, at least 4.
    pub threads: usize,
}

/// A path left alone because it exists and differs, with what restore would have done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Snapshot-relative path (= target-relative).
    pub path: Vec<u8>,
    /// Type of what is in the target (`file`, `dir`, `symlink`, …).
    pub existing: &'static str,
    /// Type the snapshot has there.
    pub snapshot: &'static str,
    /// What `--overwrite if-changed` would do: `replace`.
    pub would: &'static str,
}

/// Why a path was not restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The snapshot entry is unsafe to write (bad name, entries under a symlink): refused.
    Unsafe,
    /// Reading the repository or writing the target failed for this path.
    Error,
}

/// One path restore could not do, with a message naming the cause.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Snapshot-relative path, as stored.
    pub path: Vec<u8>,
    /// Refused or failed.
    pub kind: ProblemKind,
    /// One line.
    pub message: String,
}

/// One decision of a dry run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// Target-relative path.
    pub path: Vec<u8>,
    /// `create`, `replace`, `unchanged`, `conflict`, `link`, `delete` or `skip`.
    pub action: &'static str,
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct RestoreStats {
    /// Regular files written (new or replaced).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks written.
    pub symlinks: u64,
    /// Hard links made (beyond each group's first path).
    pub hardlinks: u64,
    /// FIFOs and device nodes made.
    pub specials: u64,
    /// Of the above, how many replaced something that differed.
    pub replaced: u64,
    /// Paths already identical to the snapshot, left in place (metadata re-applied).
    pub unchanged: u64,
    /// Paths removed by `--delete` (a removed directory counts with its contents).
    pub deleted: u64,
    /// Temporary files of an earlier, interrupted restore removed.
    pub stale_temp_removed: u64,
    /// File content bytes written (holes excluded).
    pub written_bytes: u64,
    /// Chunks read from the repository (each verified).
    pub chunks_read: u64,
    /// Files read back and found identical by `--verify`.
    pub verified_files: u64,
    /// Entries whose owner was not set because restore did not run as root.
    pub owners_skipped: u64,
    /// Device nodes and sockets not made (devices need root; sockets cannot be restored).
    pub specials_skipped: u64,
    /// Paths left alone because they differ (`--overwrite never`).
    pub conflicts: Vec<Conflict>,
    /// Paths refused or failed.
    pub problems: Vec<Problem>,
    /// Dry run only: every decision, in plan order.
    pub actions: Vec<Action>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl RestoreStats {
    /// True when some path failed with an error (not a conflict or a refusal).
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.kind == ProblemKind::Error)
    }
}

fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p.trim_matches('/'))
            .literal_separator(false)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("Bad glob {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| Error::InvalidArgument(format!("Bad glob set: {e}")))
}

/// Restores `paths` (snapshot-relative; empty = the whole snapshot) of `view` under
/// `opts.target`. Per-path failures, conflicts and refusals are collected in the result; an `Err`
/// means nothing could be started (bad glob, missing path, target not creatable).
pub fn restore(
    repo: &Arc<Repo>,
    view: &View,
    paths: &[Vec<u8>],
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let start = Instant::now();
    let includes = globs(&opts.includes)?;
    let excludes = globs(&opts.excludes)?;
    let plan = plan::build(view, paths, &includes, &excludes)?;
    let mut target_created = false;
    let root = if opts.target.is_dir() {
        Some(fsops::open_root(&opts.target).ctx("Opening restore target", &opts.target)?)
    } else if opts.dry_run {
        None
    } else {
        // The target itself with create_dir, which says whether this run made it (empty).
        if let Some(parent) = opts.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ctx("Creating restore target", &opts.target)?;
        }
        target_created = match std::fs::create_dir(&opts.target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
        .ctx("Creating restore target", &opts.target)?;
        Some(fsops::open_root(&opts.target).ctx("Opening restore target", &opts.target)?)
    };
    let mut uses: HashMap<ChunkId, u32> = HashMap::new();
    for it in &plan.items {
        if it.role == Role::Leaf && it.entry.kind == Kind::File {
            for c in &it.entry.chunks {
                *uses.entry(c.id).or_default() += 1;
            }
        }
    }
    let n = plan.items.len();
    let mut stats = RestoreStats::default();
    for r in &plan.refused {
        log::warn!("{}: {}", String::from_utf8_lossy(&r.rel), r.reason);
        stats.problems.push(Problem {
            path: r.rel.clone(),
            kind: ProblemKind::Unsafe,
            message: r.reason.clone(),
        });
    }
    // umask has no getter: it is set and put back at once, before any thread of this restore
    // runs (restore itself never changes it).
    let umask = {
        let m = rustix::process::umask(Mode::from_raw_mode(0o077));
        rustix::process::umask(m);
        m.as_raw_mode()
    };
    let euid = rustix::process::geteuid();
    let owner = (euid.as_raw(), rustix::process::getegid().as_raw());
    let root_clean = root
        .as_ref()
        .is_some_and(|r| inherits_nothing(r.as_fd(), owner.1));
    let run = Run {
        opts,
        root_clean,
        owner,
        umask,
        root,
        target_created,
        items: &plan.items,
        excludes,
        is_root: euid.is_root(),
        chunks: Chunks::new(repo.clone(), uses, SHARED_CHUNK_BUDGET),
        blocked: (0..n).map(|_| AtomicBool::new(false)).collect(),
        absent: (0..n)
            .map(|_| AtomicBool::new(root_is_missing(opts)))
            .collect(),
        created: (0..n).map(|_| AtomicBool::new(false)).collect(),
        clean: (0..n).map(|_| AtomicBool::new(false)).collect(),
        done: (0..n).map(|_| AtomicBool::new(false)).collect(),
        shared: (0..n).map(|_| AtomicU64::new(0)).collect(),
        stats: Mutex::new(stats),
        counts: Counts::default(),
        temp_counter: AtomicU64::new(0),
        pid: std::process::id(),
        progress,
    };
    log::info!("Planned {n} entries in {:?}", start.elapsed());
    run.directories();
    log::info!("Directories done at {:?}", start.elapsed());
    run.leaves();
    log::info!("Files done at {:?}", start.elapsed());
    run.links();
    run.directory_metadata();
    log::info!("Metadata done at {:?}", start.elapsed());
    let mut stats = run.stats.into_inner().unwrap();
    run.counts.add_to(&mut stats);
    stats.chunks_read = run.chunks.reads();
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(stats)
}

fn root_is_missing(opts: &RestoreOptions) -> bool {
    opts.dry_run && !opts.target.is_dir()
}

/// The state of one restore run, shared by its threads.
struct Run<'a> {
    opts: &'a RestoreOptions,
    /// `None` only in a dry run into a missing target.
    root: Option<OwnedFd>,
    /// The target did not exist: this run created it, empty.
    target_created: bool,
    items: &'a [Item],
    excludes: GlobSet,
    is_root: bool,
    chunks: Chunks,
    /// Directories (and what is under them) skipped because of a conflict or error.
    blocked: Vec<AtomicBool>,
    /// Directories that do not exist in the target (dry run: would be created).
    absent: Vec<AtomicBool>,
    /// Directories restore created (they get their metadata even when only on the way).
    created: Vec<AtomicBool>,
    /// Directories in which a new file gets nothing from its surroundings: no extended
    /// attribute but `security.*`, permission bits `mode & !umask`, owner `owner` (the target
    /// root when [`inherits_nothing`] says so; a directory this run created inside a clean one).
    /// Restore's own directories get their xattrs only in step 5, after every file is written.
    clean: Vec<AtomicBool>,
    /// Whether the target root is clean (see `clean`).
    root_clean: bool,
    /// Effective uid and gid: the owner of what restore creates.
    owner: (u32, u32),
    /// The process umask (restore does not change it).
    umask: u32,
    /// Leaves now identical to the snapshot (hard links may point at them).
    done: Vec<AtomicBool>,
    /// Leaves replaced because their identical inode had other names: that inode's number (0:
    /// none). The group's hard links still at it are re-linked to the new file ([`State::Relink`]).
    shared: Vec<AtomicU64>,
    stats: Mutex<RestoreStats>,
    /// The per-leaf counts, kept apart from `stats` so workers do not take its lock per file.
    counts: Counts,
    temp_counter: AtomicU64,
    /// This process's id, part of every temporary name.
    pid: u32,
    progress: &'a dyn Progress,
}

/// The [`RestoreStats`] counters workers add to for every leaf.
#[derive(Default)]
struct Counts {
    files: AtomicU64,
    symlinks: AtomicU64,
    hardlinks: AtomicU64,
    specials: AtomicU64,
    replaced: AtomicU64,
    unchanged: AtomicU64,
    written_bytes: AtomicU64,
    verified_files: AtomicU64,
    owners_skipped: AtomicU64,
}

impl Counts {
    fn add_to(&self, s: &mut RestoreStats) {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        s.files += get(&self.files);
        s.symlinks += get(&self.symlinks);
        s.hardlinks += get(&self.hardlinks);
        s.specials += get(&self.specials);
        s.replaced += get(&self.replaced);
        s.unchanged += get(&self.unchanged);
        s.written_bytes += get(&self.written_bytes);
        s.verified_files += get(&self.verified_files);
        s.owners_skipped += get(&self.owners_skipped);
    }
}

/// A leaf in the order files are written: sort key (class, pack, offset), item index, and where
/// its first chunk is (see [`Run::leaves`]).
type Ordered = ((u8, u64, u64), usize, Option<Location>);

/// One worker's open directory. Leaves are handed out in pack order, which mostly follows the
/// directories they were backed up from, so consecutive leaves usually share a directory and one
/// `openat2` serves them all. The descriptor was opened by [`fsops::open_beneath`], like every
/// other, and restore never replaces a planned directory while leaves are written, so it stays
/// the directory at that path.
#[derive(Default)]
struct DirCache {
    rel: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl DirCache {
    /// The directory `rel` (target-relative), opened beneath `root` unless it already is.
    fn open(&mut self, root: &OwnedFd, rel: &[u8]) -> std::io::Result<BorrowedFd<'_>> {
        if self.fd.is_none() || self.rel != rel {
            self.fd = None;
            self.fd = Some(fsops::open_beneath(root, rel)?);
            self.rel.clear();
            self.rel.extend_from_slice(rel);
        }
        Ok(self.fd.as_ref().unwrap().as_fd())
    }
}

/// What is at a path in the target compared with the snapshot.
enum State {
    Missing,
    Same(Stat),
    Differs(Stat),
    /// A hard link whose path still holds the inode its group's first path had before this run
    /// replaced it (see [`Run::shared`]): identical content, re-linked under every mode.
    Relink(Stat),
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl Run<'_> {
    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_ref().expect("target open").as_fd()
    }

    fn problem(&self, path: &[u8], message: String) {
        log::error!("{}: {message}", lossy(path));
        self.stats.lock().unwrap().problems.push(Problem {
            path: path.to_vec(),
            kind: ProblemKind::Error,
            message,
        });
    }

    fn action(&self, path: &[u8], action: &'static str) {
        if self.opts.dry_run {
            self.stats.lock().unwrap().actions.push(Action {
                path: path.to_vec(),
                action,
            });
        }
    }

    fn conflict(&self, it: &Item, st: &Stat) {
        log::warn!(
            "{}: exists and differs ({} in the target, {} in the snapshot); kept",
            lossy(&it.rel),
            fsops::type_name(st),
            it.entry.kind.name()
        );
        self.action(&it.rel, "conflict");
        self.stats.lock().unwrap().conflicts.push(Conflict {
            path: it.rel.clone(),
            existing: fsops::type_name(st),
            snapshot: it.entry.kind.name(),
            would: "replace",
        });
    }

    fn temp_name(&self) -> Vec<u8> {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let mut v = TEMP_PREFIX.to_vec();
        v.extend_from_slice(format!("{}-{n}", self.pid).as_bytes());
        v
    }

    /// Whether the parent of `it` is skipped, or absent (so `it` is too).
    fn parent_state(&self, it: &Item) -> (bool, bool) {
        match it.parent {
            Some(p) => (
                self.blocked[p].load(Ordering::Relaxed),
                self.absent[p].load(Ordering::Relaxed),
            ),
            None => (false, root_is_missing(self.opts)),
        }
    }

    /// Whether `it`'s directory was created (empty) by this run: then nothing can be at its name
    /// yet, and looking is not needed.
    fn in_fresh_dir(&self, it: &Item) -> bool {
        match it.parent {
            Some(p) => {
                self.created[p].load(Ordering::Relaxed)
                    || (self.items[p].rel.is_empty() && self.target_created)
            }
            None => self.target_created,
        }
    }

    /// Whether `it`'s directory is clean (see [`Run::clean`]).
    fn in_clean_dir(&self, it: &Item) -> bool {
        it.parent
            .is_some_and(|p| self.clean[p].load(Ordering::Relaxed))
    }

    /// Step 2: directories, top-down.
    fn directories(&self) {
        for (i, it) in self.items.iter().enumerate() {
            if it.role != Role::Dir {
                continue;
            }
            self.progress.entry_seen();
            if it.rel.is_empty() {
                if self.root.is_some() {
                    self.absent[i].store(false, Ordering::Relaxed);
                    self.clean[i].store(self.root_clean, Ordering::Relaxed);
                    self.sweep(i, self.root());
                }
                continue;
            }
            let (blocked, absent) = self.parent_state(it);
            if blocked {
                self.blocked[i].store(true, Ordering::Relaxed);
                continue;
            }
            if absent {
                self.absent[i].store(true, Ordering::Relaxed);
                self.action(&it.rel, "create");
                self.stats.lock().unwrap().dirs += 1;
                continue;
            }
            if let Err(e) = self.directory(i, it) {
                self.blocked[i].store(true, Ordering::Relaxed);
                self.problem(&it.rel, format!("Restoring directory: {e}"));
            }
        }
    }

    fn directory(&self, i: usize, it: &Item) -> std::io::Result<()> {
        let dir = fsops::open_beneath(self.root.as_ref().unwrap(), it.dir())?;
        let d = dir.as_fd();
        let name = it.name();
        let existing = if self.in_fresh_dir(it) {
            None
        } else {
            fsops::stat_at(d, name)?
        };
        let replace = match existing {
            Some(st) if fsops::file_type(&st) == FileType::Directory => {
                let sub = fsops::open_dir_at(d, name)?;
                self.sweep(i, sub.as_fd());
                return Ok(());
            }
            Some(st) if self.opts.overwrite == Overwrite::Never => {
                self.conflict(it, &st);
                self.blocked[i].store(true, Ordering::Relaxed);
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        self.action(&it.rel, if replace { "replace" } else { "create" });
        if self.opts.dry_run {
            self.absent[i].store(true, Ordering::Relaxed);
        } else {
            if replace {
                fsops::remove_all(d, name)?;
            }
            fsops::mkdir_at(d, name, 0o700)?;
            self.created[i].store(true, Ordering::Relaxed);
            self.clean[i].store(self.in_clean_dir(it), Ordering::Relaxed);
        }
        let mut s = self.stats.lock().unwrap();
        s.dirs += 1;
        s.replaced += replace as u64;
        Ok(())
    }

    /// In an existing directory: removes temporary files an interrupted restore left, and with
    /// `--delete` (and the directory wholly restored) what the snapshot does not hold there.
    fn sweep(&self, i: usize, dir: BorrowedFd<'_>) {
        let it = &self.items[i];
        let names = match fsops::read_names(dir) {
            Ok(n) => n,
            Err(e) => return self.problem(&it.rel, format!("Listing directory: {e}")),
        };
        let mut wanted: Option<std::collections::HashSet<&[u8]>> = None;
        for name in names {
            let path = crate::layers::join(&it.rel, &name);
            if name.starts_with(TEMP_PREFIX) {
                if !self.opts.dry_run {
                    match fsops::remove_all(dir, &name) {
                        Ok(_) => self.stats.lock().unwrap().stale_temp_removed += 1,
                        Err(e) => {
                            self.problem(&path, format!("Removing stale temporary file: {e}"))
                        }
                    }
                }
                continue;
            }
            if !(self.opts.delete && it.whole) {
                continue;
            }
            let wanted =
                wanted.get_or_insert_with(|| it.children.iter().map(|c| c.as_slice()).collect());
            if wanted.contains(name.as_slice()) || self.excludes.is_match(plan::lossy_path(&path)) {
                continue;
            }
            self.action(&path, "delete");
            if self.opts.dry_run {
                self.stats.lock().unwrap().deleted += 1;
                continue;
            }
            match fsops::remove_all(dir, &name) {
                Ok(n) => self.stats.lock().unwrap().deleted += n,
                Err(e) => self.problem(&path, format!("Deleting (--delete): {e}")),
            }
        }
    }

    /// Step 3: files, symlinks, FIFOs, devices, on a thread pool. Big files go first, so none
    /// runs alone at the end; the others in the order their first chunk sits in the packs, so
    /// a cold repository is read sequentially rather than at random, and files sharing a first
    /// chunk are handed out together while it is cached.
    fn leaves(&self) {
        let t0 = Instant::now();
        // Each leaf with where its first chunk is, kept so it is not looked up again to read it.
        let mut keyed: Vec<Ordered> = (0..self.items.len())
            .filter(|&i| self.items[i].role == Role::Leaf)
            .map(|i| {
                let e = &self.items[i].entry;
                let loc = match e.chunks.first() {
                    Some(c) if e.kind == Kind::File => self.chunks.location(&c.id),
                    _ => None,
                };
                let key = match loc {
                    _ if e.kind == Kind::File && e.size >= BIG_FILE => (0, u64::MAX - e.size, 0),
                    Some(l) => (1, l.pack.0, l.offset),
                    None => (2, 0, 0),
                };
                (key, i, loc)
            })
            .collect();
        keyed.sort_unstable_by_key(|&(key, i, _)| (key, i));
        // Handed out in runs of consecutive leaves of one directory (a big file alone), so
        // workers mostly write into different directories: two creating names in the same one
        // wait for each other on its lock. Capped, so one huge directory is still shared.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for (k, &((class, _, _), i, _)) in keyed.iter().enumerate() {
            let parent = self.items[i].parent;
            match runs.last_mut() {
                Some(r)
                    if class != 0
                        && r.len() < RUN_LEAVES
                        && self.items[keyed[r.start].1].parent == parent
                        && keyed[r.start].0 .0 != 0 =>
                {
                    r.end = k + 1
                }
                _ => runs.push(k..k + 1),
            }
        }
        let order: Vec<(usize, Option<Location>)> =
            keyed.into_iter().map(|(_, i, loc)| (i, loc)).collect();
        log::debug!(
            "Ordered {} leaves in {} runs in {:?}",
            order.len(),
            runs.len(),
            t0.elapsed()
        );
        let threads = match self.opts.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4)
                .max(4),
            n => n,
        };
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads.min(runs.len().max(1)) {
                s.spawn(|| {
                    let mut dirs = DirCache::default();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(run) = runs.get(k) else { break };
                        for &(i, first) in &order[run.clone()] {
                            self.leaf(i, first, &mut dirs);
                        }
                    }
                });
            }
        });
    }

    /// Step 4: hard links to each group's first path.
    fn links(&self) {
        let mut dirs = DirCache::default();
        for i in 0..self.items.len() {
            if let Role::Link(_) = self.items[i].role {
                self.leaf(i, None, &mut dirs);
            }
        }
    }

    /// Restores leaf `i`; `first` is where its first chunk is, when already looked up.
    fn leaf(&self, i: usize, first: Option<Location>, dirs: &mut DirCache) {
        let it = &self.items[i];
        self.progress.entry_seen();
        let r = self.leaf_inner(i, it, first, dirs);
        if it.role == Role::Leaf && it.entry.kind == Kind::File {
            self.chunks.release(&it.entry);
        }
        if let Err(msg) = r {
            self.problem(&it.rel, msg);
        }
    }

    fn leaf_inner(
        &self,
        i: usize,
        it: &Item,
        first: Option<Location>,
        dirs: &mut DirCache,
    ) -> Result<(), String> {
        let (blocked, absent) = self.parent_state(it);
        if blocked {
            return Ok(());
        }
        let e = &it.entry;
        if e.kind == Kind::Socket
            || (!self.is_root && matches!(e.kind, Kind::CharDev | Kind::BlockDev))
        {
            log::info!("{}: {} not restored", lossy(&it.rel), e.kind.name());
            self.action(&it.rel, "skip");
            self.stats.lock().unwrap().specials_skipped += 1;
            return Ok(());
        }
        if let Role::Link(l) = it.role {
            if !self.opts.dry_run && !self.done[l].load(Ordering::Relaxed) {
                return Err(format!(
                    "Not restored: hard link to {}, which was not restored",
                    lossy(&self.items[l].rel)
                ));
            }
        }
        let dir = if absent {
            None
        } else {
            Some(
                dirs.open(self.root.as_ref().unwrap(), it.dir())
                    .map_err(|e| format!("Opening its directory: {e}"))?,
            )
        };
        let name = it.name();
        let state = match dir {
            None => State::Missing,
            Some(_) if self.in_fresh_dir(it) => State::Missing,
            Some(d) => self
                .state(d, name, it)
                .map_err(|e| format!("Checking the existing path: {e}"))?,
        };
        let existing = match state {
            // An identical path stays when its metadata can be set through a descriptor that
            // proves it has one name (a regular file, see `refresh`), or is already right.
            // Otherwise — other names, perhaps outside the target, or a symlink or node whose
            // metadata could only be set by name — it is replaced under every mode (its content
            // is the snapshot's, nothing is lost), which leaves the old inode untouched.
            State::Same(st)
                if self.opts.overwrite != Overwrite::Always
                    && (refreshable(it, &st)
                        || self
                            .meta_matches(dir.unwrap(), name, it, &st)
                            .map_err(|e| format!("Checking the existing path: {e}"))?) =>
            {
                self.action(&it.rel, "unchanged");
                if !self.opts.dry_run {
                    if refreshable(it, &st) {
                        self.refresh(dir.unwrap(), name, &it.entry)
                            .map_err(|e| format!("Setting metadata: {e}"))?;
                    }
                    self.done[i].store(true, Ordering::Relaxed);
                }
                self.counts.unchanged.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            State::Differs(st) if self.opts.overwrite == Overwrite::Never => {
                self.conflict(it, &st);
                return Ok(());
            }
            State::Missing => None,
            State::Same(st) => {
                if st.st_nlink > 1 && it.role == Role::Leaf {
                    self.shared[i].store(st.st_ino, Ordering::Relaxed);
                }
                Some(st)
            }
            State::Differs(st) | State::Relink(st) => Some(st),
        };
        let verb = match (&it.role, existing.is_some()) {
            (_, true) => "replace",
            (Role::Link(_), false) => "link",
            _ => "create",
        };
        self.action(&it.rel, verb);
        if self.opts.dry_run {
            self.count(it, existing.is_some(), 0, false);
            return Ok(());
        }
        let d = dir.unwrap();
        let tmp = self.temp_name();
        let r = self
            .write_new(d, &tmp, it, first)
            .and_then(|(bytes, verified)| {
                if existing.is_some_and(|st| fsops::file_type(&st) == FileType::Directory) {
                    fsops::remove_all(d, name)
                        .map_err(|e| format!("Removing the directory in the way: {e}"))?;
                }
                fsops::rename_at(d, &tmp, name).map_err(|e| format!("Renaming into place: {e}"))?;
                Ok((bytes, verified))
            });
        match r {
            Ok((bytes, verified)) => {
                self.done[i].store(true, Ordering::Relaxed);
                self.count(it, existing.is_some(), bytes, verified);
                Ok(())
            }
            Err(msg) => {
                let _ = fsops::unlink_at(d, &tmp, false);
                Err(msg)
            }
        }
    }

    fn count(&self, it: &Item, replaced: bool, bytes: u64, verified: bool) {
        let c = &self.counts;
        let add = |n: &AtomicU64, v: u64| {
            if v > 0 {
                n.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(
            match (it.role, it.entry.kind) {
                (Role::Link(_), _) => &c.hardlinks,
                (_, Kind::File) => &c.files,
                (_, Kind::Symlink) => &c.symlinks,
                _ => &c.specials,
            },
            1,
        );
        add(&c.replaced, replaced as u64);
        add(&c.written_bytes, bytes);
        add(&c.verified_files, verified as u64);
        add(
            &c.owners_skipped,
            (!self.is_root && it.role == Role::Leaf) as u64,
        );
    }

    /// Compares what is at `name` with the snapshot entry (see docs/SEMANTICS.md).
    fn state(&self, dir: BorrowedFd<'_>, name: &[u8], it: &Item) -> std::io::Result<State> {
        let Some(st) = fsops::stat_at(dir, name)? else {
            return Ok(State::Missing);
        };
        let e = &it.entry;
        let fmt = fsops::file_type(&st);
        let same = match (it.role, e.kind) {
            (Role::Link(l), _) => {
                let leader = &self.items[l];
                fsops::open_beneath(self.root.as_ref().unwrap(), leader.dir())
                    .and_then(|ld| fsops::stat_at(ld.as_fd(), leader.name()))
                    .ok()
                    .flatten()
                    .is_some_and(|ls| ls.st_ino == st.st_ino && ls.st_dev == st.st_dev)
            }
            (_, Kind::File) => {
                fmt == FileType::RegularFile
                    && st.st_size as u64 == e.size
                    && fsops::mtime_ns(&st) == e.mtime_ns
                    && data::matches(&fsops::open_file(dir, name)?, e)?
            }
            (_, Kind::Symlink) => {
                fmt == FileType::Symlink && fsops::readlink_at(dir, name)? == e.target
            }
            (_, Kind::Fifo) => fmt == FileType::Fifo,
            (_, Kind::CharDev) => fmt == FileType::CharacterDevice && st.st_rdev == e.rdev,
            (_, Kind::BlockDev) => fmt == FileType::BlockDevice && st.st_rdev == e.rdev,
            _ => false,
        };
        // Checked first: in a dry run the group's first path was not really replaced, so the
        // link still shares its inode, and would be re-linked.
        let relink = match it.role {
            Role::Link(l) => self.shared[l].load(Ordering::Relaxed) == st.st_ino,
            _ => false,
        };
        Ok(if relink {
            State::Relink(st)
        } else if same {
            State::Same(st)
        } else {
            State::Differs(st)
        })
    }

    /// Creates the object for `it` at the temporary name `tmp` in `dir`, with its metadata.
    /// Returns the content bytes written and whether `--verify` checked them.
    fn write_new(
        &self,
        dir: BorrowedFd<'_>,
        tmp: &[u8],
        it: &Item,
        first: Option<Location>,
    ) -> Result<(u64, bool), String> {
        let e = &it.entry;
        let io = |what: &str| {
            let what = what.to_string();
            move |err: std::io::Error| format!("{what}: {err}")
        };
        match (it.role, e.kind) {
            (Role::Link(l), _) => {
                let leader = &self.items[l];
                let ld = fsops::open_beneath(self.root.as_ref().unwrap(), leader.dir())
                    .map_err(io("Opening the hard link's directory"))?;
                fsops::link_at(ld.as_fd(), leader.name(), dir, tmp)
                    .map_err(io("Making the hard link"))?;
                Ok((0, false))
            }
            (_, Kind::File) => {
                // A new file in a clean directory whose owner is already right is created with
                // its permission bits: only set-id/sticky bits, or bits the umask took, need a
                // chmod, and it can have no xattrs yet. Any other file is created 0600 and gets
                // chown, chmod and exactly the snapshot's xattrs (`meta_fd`).
                let fast = self.in_clean_dir(it) && (!self.is_root || (e.uid, e.gid) == self.owner);
                let mode = if fast { e.mode & 0o777 } else { 0o600 };
                let f =
                    fsops::create_file(dir, tmp, mode).map_err(io("Creating a temporary file"))?;
                let bytes =
                    data::write_content(&f, e, first, &self.chunks).map_err(|w| match w {
                        WriteFailure::Repo(err) => err.to_string(),
                        WriteFailure::Io(err) => format!("Writing: {err}"),
                    })?;
                let verified = if self.opts.verify {
                    if !data::matches(&f, e).map_err(io("Reading back (--verify)"))? {
                        return Err(
                            "Verification failed: the written file differs from the snapshot"
                                .into(),
                        );
                    }
                    true
                } else {
                    false
                };
                if fast {
                    self.meta_new_fd(&f, e).map_err(io("Setting metadata"))?;
                } else {
                    self.meta_fd(f.as_fd(), e, Some(&f))
                        .map_err(io("Setting metadata"))?;
                }
                if self.opts.fsync {
                    f.sync_all().map_err(io("fsync"))?;
                }
                Ok((bytes, verified))
            }
            (_, Kind::Symlink) => {
                fsops::symlink_at(&e.target, dir, tmp).map_err(io("Creating the symlink"))?;
                if !e.xattrs.is_empty() {
                    log::info!(
                        "{}: extended attributes of a symlink not restored",
                        lossy(&it.rel)
                    );
                }
                self.meta_at(dir, tmp, e, false)
                    .map_err(io("Setting metadata"))?;
                Ok((0, false))
            }
            (_, kind) => {
                let fmt = match kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::CharDev => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                fsops::mknod_at(dir, tmp, fmt, e.mode & 0o777, e.rdev)
                    .map_err(io("Creating the node"))?;
                self.meta_at(dir, tmp, e, true)
                    .map_err(io("Setting metadata"))?;
                Ok((0, false))
            }
        }
    }

    /// Re-applies metadata to an existing regular file found identical in content, through a
    /// descriptor on which it is checked again to have one name: a file swapped for a hard link
    /// since is not touched.
    fn refresh(&self, dir: BorrowedFd<'_>, name: &[u8], e: &Entry) -> std::io::Result<()> {
        let f = fsops::open_file(dir, name)?;
        let m = f.metadata()?;
        if !m.is_file() || std::os::unix::fs::MetadataExt::nlink(&m) > 1 {
            return Err(std::io::Error::other(
                "it changed while restoring (now a hard link or not a file); left alone",
            ));
        }
        self.meta_fd(f.as_fd(), e, Some(&f))
    }

    /// Whether the existing path `name` (stat `st`), identical in content, also has exactly the
    /// metadata [`Run::refresh`] would give it: mode, mtime, owner (as root), xattrs (files).
    fn meta_matches(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        it: &Item,
        st: &Stat,
    ) -> std::io::Result<bool> {
        let e = &it.entry;
        if let Role::Link(_) = it.role {
            return Ok(true); // same inode as its group's first path, which was handled
        }
        let mode_ok = e.kind == Kind::Symlink || st.st_mode & 0o7777 == e.mode & 0o7777;
        let owner_ok = !self.is_root || (st.st_uid, st.st_gid) == (e.uid, e.gid);
        if !(mode_ok && owner_ok && fsops::mtime_ns(st) == e.mtime_ns) {
            return Ok(false);
        }
        if e.kind != Kind::File {
            return Ok(true);
        }
        let f = fsops::open_file(dir, name)?;
        let have: Vec<_> = match f.list_xattr() {
            Ok(l) => l.collect(),
            Err(err) if err.raw_os_error() == Some(ENOTSUP) => Vec::new(),
            Err(err) => return Err(err),
        };
        use std::os::unix::ffi::OsStrExt;
        for n in &have {
            let b = n.as_bytes();
            if !b.starts_with(b"security.") && !e.xattrs.iter().any(|(w, _)| w == b) {
                return Ok(false);
            }
        }
        for (n, v) in &e.xattrs {
            if f.get_xattr(std::ffi::OsStr::from_bytes(n))?.as_deref() != Some(v.as_slice()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Mode, xattrs and mtime of a file this run just created with its permission bits in a
    /// clean directory, with the right owner already (the fast case of `write_new`).
    fn meta_new_fd(&self, f: &std::fs::File, e: &Entry) -> std::io::Result<()> {
        if e.mode & 0o7000 != 0 || e.mode & 0o777 & self.umask != 0 {
            fsops::chmod_fd(f.as_fd(), e.mode)?;
        }
        set_new_xattrs(f, &e.xattrs)?;
        fsops::set_mtime_fd(f.as_fd(), e.mtime_ns)
    }

    /// Owner (as root), mode, xattrs (exactly the snapshot's), mtime, on an open file or dir.
    fn meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        e: &Entry,
        file: Option<&std::fs::File>,
    ) -> std::io::Result<()> {
        if self.is_root {
            fsops::chown_fd(fd, e.uid, e.gid)?;
        }
        // After chown, which clears set-id bits.
        fsops::chmod_fd(fd, e.mode)?;
        if let Some(f) = file {
            set_xattrs(f, &e.xattrs)?;
        }
        fsops::set_mtime_fd(fd, e.mtime_ns)
    }

    /// Owner (as root), mode (`chmod`: not for symlinks), mtime, by name in `dir`.
    fn meta_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        chmod: bool,
    ) -> std::io::Result<()> {
        if self.is_root {
            fsops::chown_at(dir, name, e.uid, e.gid)?;
        }
        if chmod {
            fsops::chmod_at(dir, name, e.mode)?;
        }
        fsops::set_mtime_at(dir, name, e.mtime_ns)
    }

    /// Step 5: directories' metadata, deepest first: every restored directory, except
    /// pre-existing ones that are only on the way to a requested path (the target itself
    /// included, when paths were requested).
    fn directory_metadata(&self) {
        if self.opts.dry_run {
            return;
        }
        for (i, it) in self.items.iter().enumerate().rev() {
            if it.role != Role::Dir || self.blocked[i].load(Ordering::Relaxed) {
                continue;
            }
            if it.ancestor && !self.created[i].load(Ordering::Relaxed) {
                continue;
            }
            let r = fsops::open_beneath(self.root.as_ref().unwrap(), &it.rel).and_then(|fd| {
                let f = std::fs::File::from(fd);
                self.meta_fd(f.as_fd(), &it.entry, Some(&f))
            });
            match r {
                Ok(()) => {
                    if !self.is_root {
                        self.stats.lock().unwrap().owners_skipped += 1;
                    }
                }
                Err(e) => self.problem(&it.rel, format!("Setting directory metadata: {e}")),
            }
        }
    }
}

/// Whether an identical path `it` (stat `st`) may get its metadata in place: a regular file with
/// one name (see [`Run::refresh`]); anything else is left as it is or replaced.
fn refreshable(it: &Item, st: &Stat) -> bool {
    it.role == Role::Leaf
        && it.entry.kind == Kind::File
        && fsops::file_type(st) == FileType::RegularFile
        && st.st_nlink <= 1
}

/// Whether new entries in the target root `root`, or in directories restore creates beneath it,
/// inherit nothing: the root has no extended attribute other than `security.*` (a default ACL,
/// or a filesystem property such as btrfs compression, would be passed on to new files) and its
/// group is `gid` (a setgid root, or a `grpid` mount, gives new entries the directory's group).
fn inherits_nothing(root: BorrowedFd<'_>, gid: u32) -> bool {
    if fsops::stat_fd(root).map_or(true, |st| st.st_gid != gid) {
        return false;
    }
    match fsops::xattr_names_fd(root) {
        Ok(names) => names.iter().all(|n| n.starts_with(b"security.")),
        Err(e) => e.raw_os_error() == Some(ENOTSUP),
    }
}

/// Gives `f`, a file just created in a clean directory (so without xattrs but perhaps a
/// `security.*` label), the extended attributes `want`.
fn set_new_xattrs(f: &std::fs::File, want: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    for (name, value) in want {
        let name = OsStr::from_bytes(name);
        if name.as_bytes().starts_with(b"security.")
            && f.get_xattr(name)?.as_deref() == Some(value.as_slice())
        {
            continue;
        }
        f.set_xattr(name, value)?;
    }
    Ok(())
}

/// Makes `f`'s extended attributes exactly `want` (sorted by name).
fn set_xattrs(f: &std::fs::File, want: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let have: Vec<_> = match f.list_xattr() {
        Ok(l) => l.collect(),
        Err(e) if e.raw_os_error() == Some(ENOTSUP) && want.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for n in have {
        let keep = want.iter().any(|(w, _)| w.as_slice() == n.as_bytes());
        // Only names restore could have set; security.* (e.g. SELinux labels) stays.
        if !keep && !n.as_bytes().starts_with(b"security.") {
            f.remove_xattr(&n)?;
        }
    }
    for (name, value) in want {
        let name = OsStr::from_bytes(name);
        if f.get_xattr(name)?.as_deref() != Some(value.as_slice()) {
            f.set_xattr(name, value)?;
        }
    }
    Ok(())
}
