//! The one way to open a repository: [`Open`], a builder in the manner of
//! [`std::fs::OpenOptions`], and [`Locked`], a repository whose lock is held but whose index is not
//! open yet (what the sled-free `cat` reads the lookup files under, [`Open::lookup`]).
//!
//! ```no_run
//! # fn main() -> strata::Result<()> {
//! use strata::open::Open;
//! use strata::repo::CreateOptions;
//! let repo = Open::new("/srv/backup").create(&CreateOptions::default())?;
//! # drop(repo);
//! let repo = Open::new("/srv/backup").cache_bytes(8 << 20).open()?;
//! # Ok(()) }
//! ```
//!
//! Opening composes storage steps (`crate::repo`) with what every opening of the index must do
//! above storage, always in this order:
//!
//! 0. unlock an encrypted repository (its marker says so): the passphrase comes from
//!    [`Open::passphrase`], else from [`crate::passphrase`]'s sources; before the lock, so that
//!    a wrong passphrase writes nothing and a prompt holds no lock;
//! 1. take the process lock (an existing repository must have its marker);
//! 2. for a seeded open, read the lookup catalog while it is still valid;
//! 3. remove the catalog, durably (`crate::lookup`: a catalog exists only while no process has
//!    the index open);
//! 4. open the index (format check, commit marker, a full disk);
//! 5. complete a `forget` or `consolidate` that a kill or a full disk interrupted
//!    (`crate::forget::resume_interrupted`): every command that opens the index is "the next
//!    command";
//! 6. seed the handle with the catalog's records and layer directories, unless step 5 changed
//!    records.
//!
//! Writing the lookup files again when the command is done is the caller's last step; the
//! operations in `crate::ops` do it.
//!
//! **Waiting for the lock.** A repository held by another process (a backup, a prune) is waited
//! for, up to [`Open::lock_wait`] (by default [`default_lock_wait`], five minutes unless the
//! program set another with [`set_lock_wait`]), instead of failing at once: two backups started by
//! two timers both succeed, one after the other. Whoever waits is told once, through the notice
//! the program installed ([`set_lock_wait`]); the library itself prints nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lookup::Quick;
use crate::repo::crypt::keyfile::Passphrase;
use crate::repo::crypt::Crypt;
use crate::repo::{CreateOptions, Repo, RepoLock, DEFAULT_INDEX_CACHE};

/// How long opening waits for a repository another process holds, unless told otherwise.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(300);

/// The process-wide default wait, in milliseconds (see [`set_lock_wait`]).
static LOCK_WAIT_MS: AtomicU64 = AtomicU64::new(DEFAULT_LOCK_WAIT.as_millis() as u64);
/// Told once per wait that the repository is held: the repository and the holder's pid, when
/// its lock file names one.
static WAIT_NOTICE: OnceLock<fn(&Path, Option<&str>)> = OnceLock::new();

/// Sets, for this process, how long [`Open`] waits for a repository another process holds
/// (`--lock-wait`), and what it calls once when it starts waiting (the CLI says so on stderr).
/// The notice can be installed once; later calls only change the wait.
pub fn set_lock_wait(wait: Duration, notice: Option<fn(&Path, Option<&str>)>) {
    LOCK_WAIT_MS.store(
        wait.as_millis().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
    crate::repo::remote::set_lock_wait(wait);
    if let Some(f) = notice {
        let _ = WAIT_NOTICE.set(f);
    }
}

/// The wait a new [`Open`] starts with: [`DEFAULT_LOCK_WAIT`] unless [`set_lock_wait`] changed it.
pub fn default_lock_wait() -> Duration {
    Duration::from_millis(LOCK_WAIT_MS.load(Ordering::Relaxed))
}

/// Parses a duration as `--lock-wait` takes it: a number of seconds, or a number with a unit
/// `ms`, `s`, `m`, `h` (`90`, `500ms`, `30s`, `5m`, `1h`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("Not a duration: {s:?} (try 30s, 5m or 1h)"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("Not a duration: {s:?} (try 30s, 5m or 1h)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("Duration too large: {s:?}"))
}

/// Takes a repository's lock with `take`, waiting up to `wait` while another process holds it
/// and telling the installed notice once. [`RepoLock`] itself retries a busy lock for about a
/// second (a forked child can hold it for a moment); only a lock still busy after that is
/// waited for, and reported.
fn take_waiting(
    path: &Path,
    wait: Duration,
    quiet: bool,
    take: impl Fn(&Path) -> Result<RepoLock>,
) -> Result<RepoLock> {
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        match take(path) {
            Err(Error::RepoLocked { holder, .. }) if Instant::now() < deadline => {
                if !told {
                    told = true;
                    log::info!(
                        "Waiting for the lock of repository {}, held by another strata process{holder}",
                        path.display()
                    );
                    if let Some(f) = WAIT_NOTICE.get().filter(|_| !quiet) {
                        let pid = holder
                            .trim()
                            .strip_prefix("(pid ")
                            .and_then(|p| p.strip_suffix(')'));
                        f(path, pid);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// How to open a repository (see the module documentation).
#[derive(Clone, Debug)]
pub struct Open {
    path: PathBuf,
    cache_bytes: u64,
    create_if_missing: bool,
    seeded: bool,
    lock_wait: Duration,
    quiet_wait: bool,
    passphrase: Option<Passphrase>,
    /// The key of an encrypted repository this process already unlocked ([`Open::unlocked`]).
    unlocked: Option<Arc<Crypt>>,
}

impl Open {
    /// Opening the repository at `path`, with the default index cache, not creating it, not
    /// seeded.
    pub fn new(path: impl AsRef<Path>) -> Open {
        Open {
            path: path.as_ref().to_path_buf(),
            cache_bytes: DEFAULT_INDEX_CACHE,
            create_if_missing: false,
            seeded: false,
            lock_wait: default_lock_wait(),
            quiet_wait: false,
            passphrase: None,
            unlocked: None,
        }
    }

    /// Waits without telling the notice installed by [`set_lock_wait`] (it is logged): for a
    /// background task such as a mount taking a new copy of the index, whose waits are routine.
    pub fn quiet_wait(mut self) -> Open {
        self.quiet_wait = true;
        self
    }

    /// How long to wait while another process holds the repository, instead of
    /// [`default_lock_wait`]; zero fails at once (after the brief retry every lock gets). A wait
    /// that runs out is [`Error::RepoLocked`], naming the holder.
    pub fn lock_wait(mut self, wait: Duration) -> Open {
        self.lock_wait = wait;
        self
    }

    /// The passphrase of an encrypted repository, instead of asking [`crate::passphrase`]'s
    /// sources (asked only when the repository is encrypted).
    pub fn passphrase(mut self, p: Passphrase) -> Open {
        self.passphrase = Some(p);
        self
    }

    /// Opens with the key `crypt` of an encrypted repository this process already unlocked
    /// (`None`: the repository is not encrypted), instead of unlocking it again: for a mount,
    /// which takes a new copy of the index after every commit and must not ask for the
    /// passphrase (or pay the key derivation) each time.
    pub fn unlocked(mut self, crypt: Option<Arc<Crypt>>) -> Open {
        self.unlocked = crypt;
        self
    }

    /// Unlocks the repository when it is encrypted (step 0 of the module documentation).
    fn unlock(&self) -> Result<Option<Arc<Crypt>>> {
        if let Some(c) = &self.unlocked {
            return Ok(Some(c.clone()));
        }
        Repo::unlock(&self.path, &mut || match &self.passphrase {
            Some(p) => Ok(p.clone()),
            None => crate::passphrase::current(&self.path),
        })
    }

    /// sled's page cache, instead of [`DEFAULT_INDEX_CACHE`]. Backups use
    /// [`crate::repo::BACKUP_INDEX_CACHE`]: their index accesses are mostly appends and one pass
    /// over the parent layer, so a small cache costs no time and keeps memory flat as data grows.
    pub fn cache_bytes(mut self, bytes: u64) -> Open {
        self.cache_bytes = bytes;
        self
    }

    /// Whether [`Open::open`] creates the repository (with default [`CreateOptions`]) when the
    /// directory is missing or empty: for the default repository, which is created on first use.
    /// An explicit one must exist (a typo in a path should not silently start a new repository).
    pub fn create_if_missing(mut self, yes: bool) -> Open {
        self.create_if_missing = yes;
        self
    }

    /// For a process that only reads (the mount): before opening the index, under the lock, read
    /// the lookup catalog when there is one, and answer [`Repo::snapshots`], [`Repo::snapshot`]
    /// and [`Repo::layer_dirs`] from it until a record changes. On a cold start those cost one
    /// sequential read of the catalog instead of a sled page read per record (on the benchmark
    /// repository with 503 snapshots the list took 7 ms), and the mount can pass layers that did
    /// not touch a directory without reading them (the newest snapshot's root: 18–24 ms down to
    /// 4–6). The catalog is exact while it exists (see [`crate::lookup`]); a missing or damaged
    /// one only means sled answers, as for every other command.
    pub fn seeded(mut self, yes: bool) -> Open {
        self.seeded = yes;
        self
    }

    /// Creates a new repository (the directory must be missing or empty) and opens it.
    pub fn create(self, opts: &CreateOptions) -> Result<Arc<Repo>> {
        let lock = Repo::lock_new(&self.path)?;
        crate::lookup::invalidate(&self.path)?;
        Repo::create_locked(&self.path, lock, opts, self.cache_bytes)
    }

    /// Opens the repository: takes its lock, then opens its index ([`Locked::open`]).
    pub fn open(self) -> Result<Arc<Repo>> {
        if self.create_if_missing && Repo::is_vacant(&self.path) {
            log::info!("Creating repository {}", self.path.display());
            return self.create(&CreateOptions::default());
        }
        self.lock()?.open()
    }

    /// Takes the lock of an existing repository and nothing more: the lookup files stay valid
    /// and can be read under it, and the index can be opened later under the same lock.
    pub fn lock(self) -> Result<Locked> {
        let (crypt, lock) = self.unlock_and_take(Repo::lock_existing)?;
        Ok(Locked {
            open: self,
            lock,
            crypt,
        })
    }

    /// Takes the lock without opening the index (see [`Unindexed`]). The marker must be there:
    /// without it the directory is not known to be a repository, and nothing is touched. Removes
    /// the lookup catalog, since the taker may change the index.
    pub fn lock_without_index(self) -> Result<Unindexed> {
        let (crypt, lock) = self.unlock_and_take(Repo::lock_marked)?;
        crate::lookup::invalidate(&self.path)?;
        Ok(Unindexed {
            path: self.path,
            lock,
            crypt,
        })
    }

    /// Unlocks the repository (when encrypted), then takes its lock with `take`, waiting as this
    /// builder says: unlocking first, so that a wrong passphrase never holds anyone up.
    fn unlock_and_take(
        &self,
        take: impl Fn(&Path) -> Result<RepoLock>,
    ) -> Result<(Option<Arc<Crypt>>, RepoLock)> {
        let crypt = self.unlock()?;
        let lock = take_waiting(&self.path, self.lock_wait, self.quiet_wait, take)?;
        Ok((crypt, lock))
    }

    /// Takes the lock and reads the lookup files under it, without sled; `Ok(None)` when there
    /// is no current catalog (the lock is then released). The reader opens the index as this
    /// builder says, under the same lock, when the lookup files cannot answer.
    pub fn lookup(self) -> Result<Option<Quick>> {
        let locked = self.lock()?;
        let path = locked.path().to_path_buf();
        let crypt = locked.crypt.clone();
        Quick::open(&path, crypt, Box::new(move || locked.open()))
    }
}

/// An existing repository whose lock this process holds, its index not open yet.
pub struct Locked {
    open: Open,
    lock: RepoLock,
    crypt: Option<Arc<Crypt>>,
}

impl Locked {
    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.open.path
    }

    /// The keys of an encrypted repository, unlocked before the lock was taken.
    pub fn crypt(&self) -> Option<&Arc<Crypt>> {
        self.crypt.as_ref()
    }

    /// Opens the index under the lock held (steps 2–6 of the module documentation).
    pub fn open(self) -> Result<Arc<Repo>> {
        let Locked { open, lock, crypt } = self;
        let path = &open.path;
        let catalog = read_catalog(path, open.seeded);
        crate::lookup::invalidate(path)?;
        let (seed, repo) = beside_seed(catalog, crypt.as_ref(), || {
            Repo::open_index(path, lock, open.cache_bytes, crypt.clone())
        });
        let repo = repo?;
        let resumed = resume_interrupted(&repo);
        if open.seeded {
            // A catalog is never written while a rewrite is unfinished, but one written by a
            // command that could not complete it would describe the records before the
            // completion.
            let seed = seed.filter(|_| !resumed);
            log::debug!(
                "Snapshot list from the lookup catalog: {}",
                if seed.is_some() {
                    "yes"
                } else {
                    "no, from the index"
                }
            );
            if let Some(seed) = seed {
                crate::lookup::install_seed(&repo, seed);
            }
        }
        Ok(repo)
    }
}

impl Locked {
    /// Copies the index into `into/index` (`into`: an empty directory private to this process)
    /// under the lock held, runs `under_lock` (still under it), lets go of the lock and opens the
    /// repository over the copy, seeded from the lookup catalog when the builder says so: a
    /// handle for a long-running reader (the mount, see `crate::lease`) that never keeps other
    /// commands waiting. Nothing of the repository is written (the catalog stays valid), and
    /// nothing of the opening of its own index runs (no commit marker, no resumed `forget`: every
    /// view is intact at every point of an unfinished rewrite). The handle holds `into/lock`
    /// while it is open, so a copy in use can be told from one whose reader is gone.
    pub fn open_copy<T>(
        self,
        into: &Path,
        under_lock: impl FnOnce() -> Result<T>,
    ) -> Result<(Arc<Repo>, T)> {
        let Locked { open, lock, crypt } = self;
        let path = &open.path;
        let index = path.join(crate::repo::INDEX_DIR);
        if !index.is_dir() {
            return Err(Error::IndexMissing(path.clone()));
        }
        let catalog = read_catalog(path, open.seeded);
        let copy = into.join(crate::repo::INDEX_DIR);
        copy_dir(&index, &copy)?;
        let held = under_lock()?;
        drop(lock);
        let own = RepoLock::take(into)?;
        let (seed, db) = beside_seed(catalog, crypt.as_ref(), || {
            crate::repo::open_sled(
                sled::Config::new()
                    .path(&copy)
                    .cache_capacity(open.cache_bytes)
                    .mode(sled::Mode::HighThroughput),
            )
        });
        let db = db.map_err(|e| match e {
            // The copy is the repository's index as it is: say which repository to repair.
            Error::IndexDamaged { detail, .. } => Error::IndexDamaged {
                path: path.clone(),
                detail,
            },
            e => e,
        })?;
        let repo = Repo::open_with_db(path, own, db, crypt)?;
        if let Some(seed) = seed {
            crate::lookup::install_seed(&repo, seed);
        }
        Ok((repo, held))
    }
}

/// The catalog's bytes for a seeded open, read under the lock; `None` (logged) when there is
/// none or it cannot be read: the index is read instead.
fn read_catalog(path: &Path, seeded: bool) -> Option<Vec<u8>> {
    if !seeded {
        return None;
    }
    crate::lookup::read_catalog(path)
        .map_err(catalog_unused)
        .ok()
        .flatten()
}

fn catalog_unused(e: Error) {
    log::info!("Not using the lookup catalog ({e}); reading the index");
}

/// Runs `open` (opening sled: tens of ms at thousands of snapshots) while another thread makes
/// the seed of `catalog`, which takes about as long; a catalog that does not parse is logged
/// and left out, as one that cannot be read.
fn beside_seed<R>(
    catalog: Option<Vec<u8>>,
    crypt: Option<&Arc<Crypt>>,
    open: impl FnOnce() -> R,
) -> (Option<crate::lookup::Seed>, R) {
    let Some(bytes) = catalog else {
        return (None, open());
    };
    std::thread::scope(|s| {
        let parsing = std::thread::Builder::new()
            .name("strata-seed".into())
            .spawn_scoped(s, || crate::lookup::parse_seed(&bytes, crypt));
        let opened = open();
        let parsed = match parsing {
            Ok(h) => h.join().unwrap_or_else(|_| {
                Err(Error::CorruptMetadata(
                    "lookup catalog: its reader panicked".into(),
                ))
            }),
            // No thread to spare: parse here.
            Err(_) => crate::lookup::parse_seed(&bytes, crypt),
        };
        let seed = parsed.map_err(catalog_unused).ok();
        (seed, opened)
    })
}

/// Copies the directory `from` (a sled database: flat but for sled's `blobs/`) to `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    use crate::error::IoContext;
    std::fs::create_dir_all(to).ctx("Creating", to)?;
    for e in std::fs::read_dir(from).ctx("Reading", from)? {
        let e = e.ctx("Reading", from)?;
        let dest = to.join(e.file_name());
        if e.file_type().ctx("Reading", e.path())?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest).ctx("Copying", e.path())?;
        }
    }
    Ok(())
}

/// Completes a `forget` or `consolidate` that a kill or a full disk interrupted. Views are
/// intact at every point of an interrupted run, so when completing fails (the disk is still full)
/// the command goes on and a later one completes it. Returns whether snapshot records changed.
fn resume_interrupted(repo: &Arc<Repo>) -> bool {
    match crate::forget::resume_interrupted(repo) {
        Ok(done) => done,
        Err(e) => {
            log::warn!(
                "Could not complete an interrupted forget/consolidate ({e}); the next command will try again"
            );
            repo.clear_layer_caches();
            true
        }
    }
}

/// A repository whose lock this process holds while its own index is not to be opened: `repair`
/// rebuilds the index (which may be missing or unreadable), `check` reads a private copy of it.
pub struct Unindexed {
    path: PathBuf,
    lock: RepoLock,
    crypt: Option<Arc<Crypt>>,
}

impl Unindexed {
    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the repository over `db` instead of its own index: the database `repair` just
    /// rebuilt (or a temporary one for `--dry-run`), or `check`'s private copy. Nothing of the
    /// opening of a repository's own index runs (no commit marker, no resumed `forget`).
    pub fn open_over(self, db: sled::Db) -> Result<Arc<Repo>> {
        Repo::open_with_db(&self.path, self.lock, db, self.crypt)
    }

    /// The keys of an encrypted repository (`repair` reads and writes packs and an index with
    /// them before it opens the repository).
    pub fn crypt(&self) -> Option<&Arc<Crypt>> {
        self.crypt.as_ref()
    }
}
