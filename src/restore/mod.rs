//! `restore`: writes (part of) a snapshot into a target directory, with its metadata, safely,
//! resumably and in parallel. Library level: returns [`RestoreStats`], prints nothing.
//!
//! Order of work, each step relying on the one before:
//! 1. **plan** ([`plan`]): the snapshot entries to restore, unsafe names refused, hard-link groups;
//! 2. **directories** ([`dirs`]), top-down, created `0700` so their contents can be written;
//! 3. **files, symlinks, FIFOs, devices** ([`leaves`]), on a thread pool: each written under a
//!    temporary name (`.strata-tmp-…`) in its destination directory, given its metadata
//!    ([`meta`]), then renamed into place, so an interrupted restore never leaves a half-written
//!    file under its real name;
//! 4. **hard links** ([`leaves`]), linked to the group's first path once that exists;
//! 5. **directory metadata** ([`dirs`]), bottom-up, so writing into a directory cannot disturb
//!    its mtime.
//!
//! This module holds the public types, the entry point and the state the steps share ([`Run`]).
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
mod dirs;
pub mod fsops;
mod leaves;
mod meta;
pub mod plan;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{Mode, Stat};

use crate::entry::Kind;
use crate::error::{Error, IoContext, Result};
use crate::id::ChunkId;
use crate::layers::View;
use crate::progress::Progress;
use crate::repo::Repo;
use data::Chunks;
use plan::{Item, Role};

/// Prefix of the temporary names restore writes under; a rerun removes leftovers with it.
pub const TEMP_PREFIX: &[u8] = b".strata-tmp-";

/// Files at least this big are written first (see [`Run::leaves`]).
const BIG_FILE: u64 = 64 << 20;

/// Leaves of one directory handed to a worker at a time, at most (see [`Run::leaves`]).
const RUN_LEAVES: usize = 256;

/// Shared chunks kept in memory at most (see [`data::Chunks`]).
const SHARED_CHUNK_BUDGET: usize = 256 << 20;

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

/// How to restore. The `strata restore` options are these fields (clap), so the CLI fills them
/// directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RestoreOptions {
    /// Directory the snapshot's paths are written under (created when missing).
    #[arg(
        long,
        value_name = "DIR",
        help = "Directory to restore into (created when missing); paths keep their place under it"
    )]
    pub target: PathBuf,
    /// Restore only paths matching one of these globs (and what is under a matching directory).
    #[arg(
        long = "include",
        value_name = "GLOB",
        help = "Restore only paths matching this glob, and what is under a matching directory \
                (repeatable)"
    )]
    pub includes: Vec<String>,
    /// Skip paths matching one of these globs, with everything under them.
    #[arg(
        long = "exclude",
        value_name = "GLOB",
        help = "Skip paths matching this glob, and what is under them (repeatable)"
    )]
    pub excludes: Vec<String>,
    /// What to do with existing paths that differ.
    #[arg(
        long,
        value_enum,
        default_value_t = Overwrite::Never,
        help = "Existing paths that differ from the snapshot: never touch them (report a \
                conflict), replace them if-changed, or replace always"
    )]
    pub overwrite: Overwrite,
    /// Decide everything, write nothing; the decisions are in [`RestoreStats::actions`].
    #[arg(long, help = "Print what would be done; write nothing")]
    pub dry_run: bool,
    /// Remove what the snapshot does not hold from restored directories.
    #[arg(
        long,
        help = "Remove files the snapshot does not hold from the restored directories"
    )]
    pub delete: bool,
    /// Read every written file back and compare it with the snapshot's chunk hashes.
    #[arg(
        long,
        help = "Read every written file back and check it against the snapshot's chunk hashes"
    )]
    pub verify: bool,
    /// fsync every file before renaming it into place.
    #[arg(
        long,
        help = "fsync each file before renaming it into place (slower; see docs/PERFORMANCE.md)"
    )]
    pub fsync: bool,
    /// Worker threads; 0 = two per CPU, at least 4.
    #[arg(
        long,
        default_value_t = 0,
        hide_default_value = true,
        help = "Worker threads [default: two per CPU, at least 4]"
    )]
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
    let mut file_bytes = 0u64;
    for it in &plan.items {
        if it.role == Role::Leaf && it.entry.kind == Kind::File {
            file_bytes += it.entry.size;
            for c in &it.entry.chunks {
                *uses.entry(c.id).or_default() += 1;
            }
        }
    }
    let n = plan.items.len();
    progress.restore_total(n as u64, file_bytes);
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
        .is_some_and(|r| meta::inherits_nothing(r.as_fd(), owner.1));
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
}
