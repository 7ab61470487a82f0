//! Whole operations: what must happen around a command's core for the repository to stay as
//! strata's other commands expect it. Opening the index removes the lookup files `cat` reads
//! without sled, so every command that opened it writes them again before it ends; `cat` reads
//! through those files when they are current; `forget` with prune deletes pack data only after
//! the snapshots are gone. Anything that drives strata (the CLI, a program embedding it) goes
//! through these, so the library is correct on its own.

use std::path::Path;
use std::sync::Arc;

use crate::entry::{Entry, Kind};
use crate::error::Error;
use crate::forget::{self, Decision, ForgetOptions, RewriteStats};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::{LayerStore, View};
use crate::lookup;
use crate::open::Open;
use crate::prune::{self, PruneOptions, PruneStats};
use crate::repo::Repo;
use crate::snapshot::{self, Snapshot};
use crate::Result;

/// Writes the lookup files after a command that opened the index (which removed them): tables
/// of small layers always, of big ones only those in `needed` (the chain a `cat` just read). A
/// failure is logged, not returned: the files only make `cat` faster.
pub fn publish_lookups(repo: &Repo, needed: &[SnapshotId]) {
    lookup::publish_or_warn(repo, lookup::SMALL_LAYER, needed);
}

/// Runs `f` on the repository at `path` opened for reading, then writes the lookup files. It has
/// nothing to flush, so sled's shutdown flush and fsync are skipped. Every opening is seeded from
/// the lookup catalog when there is one (records and touched directories from one file read
/// instead of the index), and writing the catalog again reuses what it said.
pub fn read_only<T>(path: &Path, f: impl FnOnce(&Arc<Repo>) -> Result<T>) -> Result<T> {
    read_only_with(Open::new(path), f)
}

/// [`read_only`] with the repository opened as `open` says (the mount's smaller cache, seeded
/// from the lookup catalog).
pub fn read_only_with<T>(open: Open, f: impl FnOnce(&Arc<Repo>) -> Result<T>) -> Result<T> {
    let repo = open.seeded(true).open()?;
    let r = f(&repo);
    publish_lookups(&repo, &[]);
    std::mem::forget(repo);
    r
}

/// Runs `f`, which changes the repository at `path`, then writes the lookup files; the
/// repository is closed normally (flushed).
pub fn writing<T>(path: &Path, f: impl FnOnce(&Arc<Repo>) -> Result<T>) -> Result<T> {
    writing_with(Open::new(path), f)
}

/// [`writing`] with the repository opened as `open` says (a backup's cache, the default
/// repository created on first use).
pub fn writing_with<T>(open: Open, f: impl FnOnce(&Arc<Repo>) -> Result<T>) -> Result<T> {
    let repo = open.seeded(true).open()?;
    let r = f(&repo);
    publish_lookups(&repo, &[]);
    r
}

/// One file of one snapshot, as a user names it.
#[derive(Clone, Copy, Debug)]
pub struct FileRef<'a> {
    /// `latest`, an id or a unique prefix of one (see [`snapshot::find_in`]).
    pub snapshot: &'a str,
    /// Only snapshots of this source.
    pub source: Option<&'a str>,
    /// The path inside the snapshot.
    pub path: &'a Path,
}

/// Reads one regular file of a snapshot (`strata cat`): resolves it through the lookup files
/// when they are current (no sled: a few reads), else through the index, which then writes
/// them for the next call, with the tables this chain lacked even if big. `write` gets the entry
/// and a reader of its verified chunks; its result is returned.
pub fn cat<T>(
    path: &Path,
    file: &FileRef<'_>,
    write: impl FnOnce(&Entry, &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>) -> Result<T>,
) -> Result<T> {
    match Open::new(path).lookup() {
        Ok(Some(q)) => {
            let q = Arc::new(q);
            let found = q.find(file.snapshot, file.source);
            match found.and_then(|snap| cat_entry(&q, snap, file, &mut Vec::new())) {
                Ok(entry) => {
                    let r = write(&entry, &mut |id| q.read_chunk(id));
                    if let Ok(q) = Arc::try_unwrap(q) {
                        q.finish();
                    }
                    return r;
                }
                Err(e) if e.is_user_error() => return Err(e),
                Err(e @ Error::LookupIncomplete(_)) => log::debug!("{e}; reading the index"),
                Err(e) => {
                    log::warn!("The lookup files could not answer ({e}); reading the index");
                    if let Ok(q) = Arc::try_unwrap(q) {
                        q.discard();
                    }
                }
            }
        }
        Ok(None) => log::debug!("No current lookup catalog; reading the index"),
        Err(e) if e.is_user_error() || is_denied(&e) => return Err(e),
        Err(e) => log::warn!("The lookup catalog is unusable ({e}); reading the index"),
    }
    // Not flushed, as in `read_only`.
    let repo = Open::new(path).open()?;
    let mut chain = Vec::new();
    let r = snapshot::find(&repo, file.snapshot, file.source)
        .and_then(|snap| cat_entry(&repo, snap, file, &mut chain))
        .and_then(|entry| write(&entry, &mut |id| repo.read_chunk(id)));
    publish_lookups(&repo, &chain);
    std::mem::forget(repo);
    r
}

/// Every snapshot of the repository at `path`, oldest first: from the lookup catalog when it is
/// current (one file read, no index), else from the index (which then writes the lookup files).
pub fn snapshot_list(path: &Path) -> Result<Vec<Snapshot>> {
    match Open::new(path).lookup() {
        Ok(Some(q)) => return q.snapshots(),
        Ok(None) => log::debug!("No current lookup catalog; reading the index"),
        Err(e) if e.is_user_error() || is_denied(&e) => return Err(e),
        Err(e) => log::warn!("The lookup catalog is unusable ({e}); reading the index"),
    }
    read_only(path, |repo| repo.snapshots())
}

/// Whether `e` is the system refusing access (a repository of another user): reading it
/// another way would be refused too.
fn is_denied(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
}

/// The regular file `file` names, resolved in whichever store answers; `chain` receives the
/// layers of the snapshot's view.
fn cat_entry<S: LayerStore>(
    store: &Arc<S>,
    snap: Snapshot,
    file: &FileRef<'_>,
    chain: &mut Vec<SnapshotId>,
) -> Result<Entry> {
    use std::os::unix::ffi::OsStrExt;
    let view = View::open(store, &snap.id)?;
    *chain = view.chain();
    let entry = view.lookup_once(file.path.as_os_str().as_bytes())?;
    if entry.kind != Kind::File {
        return Err(Error::NotAFile {
            snapshot: snap.id.short(),
            path: file.path.display().to_string(),
        });
    }
    Ok(entry)
}

/// How `forget` runs, beyond which snapshots it chooses ([`ForgetOptions`]). The `strata forget`
/// options are these fields (clap); `help` is the CLI's wording.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ForgetRunOptions {
    /// Decide and report only; change nothing (and prune nothing).
    #[arg(
        long,
        short = 'n',
        help = "Show what would be kept and removed, and why; change nothing"
    )]
    pub dry_run: bool,
    /// Prune afterwards, with default [`PruneOptions`].
    #[arg(long, help = "Run `prune` afterwards")]
    pub prune: bool,
}

/// What `forget` decided and did.
#[derive(Debug)]
pub struct ForgetOutcome {
    /// Every snapshot in scope, with whether it is kept and why.
    pub decisions: Vec<Decision>,
    /// The snapshots removed (or, in a dry run, that would be).
    pub removed: Vec<SnapshotId>,
    /// The rewrite; `None` in a dry run.
    pub stats: Option<RewriteStats>,
    /// The prune; `None` unless asked for and not a dry run.
    pub pruned: Option<PruneStats>,
}

/// Forgets the `explicit` snapshots and those `opts`' policy does not keep, then prunes when
/// asked: pack data is deleted only once no remaining snapshot can need it.
pub fn forget_then_prune(
    repo: &Arc<Repo>,
    explicit: &[SnapshotId],
    opts: &ForgetOptions,
    run: &ForgetRunOptions,
) -> Result<ForgetOutcome> {
    let decisions = forget::plan(repo, explicit, opts)?;
    let removed: Vec<_> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.snapshot.id)
        .collect();
    let stats = if run.dry_run {
        None
    } else {
        Some(forget::rewrite(repo, &removed, &[])?)
    };
    let pruned = if run.prune && !run.dry_run {
        Some(prune::prune(repo, &PruneOptions::default())?)
    } else {
        None
    };
    Ok(ForgetOutcome {
        decisions,
        removed,
        stats,
        pruned,
    })
}
