//! The command line: clap definitions, one small function per subcommand, human and `--json`
//! output. The only module that writes to stdout.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap), 3 completed with warnings, 4 damage found
//! (`check`, `repair`). `diff` exits like diff(1) instead: 0 no differences, 1 differences, 2 any
//! error.

/// `println!` for command output: a closed stdout is never a panic (see [`out`]).
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// `print!` for command output: a closed stdout is never a panic (see [`out`]).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::out(format_args!($($t)*))
    };
}

mod check;
mod lifecycle;
mod mount;
mod output;
mod query;
mod restore;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::backup::{self, BackupOptions};
use crate::entry::Kind;
use crate::layers::{join, View};
use crate::repo::{self, CreateOptions, Repo};
use crate::snapshot::{self, BackupKind};
use crate::{Error, Result};

/// Exit code when the command succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code for errors.
pub const EXIT_ERROR: i32 = 1;
/// Exit code when a backup completed but skipped or warned about some paths.
pub const EXIT_WARNINGS: i32 = 3;
/// `diff` only: differences were found (diff(1) convention).
pub const EXIT_DIFFERENCES: i32 = 1;
/// `diff` only: an error, kept distinct from "differences" (diff(1) convention).
pub const EXIT_TROUBLE: i32 = 2;
/// Exit code when `check` found damage, or `repair` could not recover everything.
pub const EXIT_DAMAGE: i32 = 4;

/// strata — backups as layers, every snapshot mountable as a read-only filesystem.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// Repository directory [default: $XDG_DATA_HOME/strata/repo, i.e. ~/.local/share/strata/repo]
    #[arg(long, global = true, env = "STRATA_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, empty repository
    Init(InitArgs),
    /// Back up a directory as a full, incremental or differential layer
    Backup(BackupArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List a directory (or show one entry) of a snapshot
    Ls(LsArgs),
    /// Write one file of a snapshot to standard output (verified)
    Cat(CatArgs),
    /// Mount every snapshot as a read-only filesystem (foreground; Ctrl-C unmounts)
    Mount(mount::MountArgs),
    /// Show what differs between two snapshots, or a snapshot and a directory (exit 0 same, 1 differ, 2 error)
    Diff(query::DiffArgs),
    /// Find paths matching a glob across snapshots, with size, mtime and content hash
    Find(query::FindArgs),
    /// Show the distinct versions of one path across the snapshots of its source
    Log(query::LogArgs),
    /// Verify the repository's structure (and with --read-data its data); list damaged files
    Check(check::CheckArgs),
    /// Rebuild the index database from the pack files (after index/ is lost or damaged)
    Repair(check::RepairArgs),
    /// Remove snapshots, by name or by a retention policy; kept snapshots stay identical
    Forget(lifecycle::ForgetArgs),
    /// Turn a snapshot into a self-contained full layer (metadata only)
    Consolidate(lifecycle::ConsolidateArgs),
    /// Delete pack data no snapshot needs any more
    Prune(lifecycle::PruneArgs),
    /// Restore a snapshot (or some of its paths) into a directory, with metadata, safely
    Restore(restore::RestoreArgs),
    /// Write the man pages into a directory (used to keep man/ in sync)
    #[command(hide = true)]
    GenerateMan {
        /// Output directory
        dir: PathBuf,
    },
}

/// `strata init`
#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level for new chunks (0 stores raw)
    #[arg(long, default_value_t = repo::DEFAULT_COMPRESSION, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compression: i32,
}

/// `strata backup`
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Directory to back up
    pub source: PathBuf,
    /// Layer kind [default: full when the source has no full snapshot yet, else incremental]
    #[arg(long, value_enum)]
    pub kind: Option<BackupKind>,
    /// Label the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Skip paths whose relative path or name matches this glob (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Name of the source [default: the absolute path of SOURCE]
    #[arg(long, value_name = "NAME")]
    pub source_name: Option<String>,
    /// Read every file, even those whose metadata is unchanged
    #[arg(long)]
    pub rehash: bool,
    /// Reader threads [default: four per CPU, at least 8]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// After the backup, consolidate the snapshot into a full when its chain is deeper than N layers
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_chain: Option<u32>,
}

/// `strata snapshots`
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// `strata ls`
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Path inside the snapshot [default: its root]
    pub path: Option<PathBuf>,
    /// Long listing: type, mode, owner, size, modification time
    #[arg(short = 'l', long)]
    pub long: bool,
    /// List subdirectories recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON lines, one object per entry
    #[arg(long)]
    pub json: bool,
}

/// `strata cat`
#[derive(Args, Debug)]
pub struct CatArgs {
    /// Snapshot: id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Path of a regular file inside the snapshot
    pub path: PathBuf,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
}

/// The clap command, for man page generation and tests.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Caps glibc's malloc arenas at 2. Backups and mounts move chunk-sized buffers (64 KiB–1 MiB)
/// between many threads; with one arena per thread, each keeps freed buffers resident and RSS
/// drifts far above what is in use (measured on a 2.3 GB backup: 207–211 MB uncapped, 171–197 MB
/// capped, same wall time; the mount: 404 → 320 MB). Must run before any thread exists.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called first thing in main, before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Fixes glibc's mmap threshold at 128 KiB. glibc otherwise raises it to the largest buffer freed
/// so far (up to 32 MiB), after which chunk buffers (64 KiB-1 MiB) come from the heap, fragment it
/// and stay resident after they are freed; fixed, they are mapped and unmapped, and memory returns
/// to the system. The mount (256 MiB chunk cache): peak RSS 410 -> 371 MiB. A full backup of the
/// benchmark data, this setting alone, three runs each: 128-139 MB peak at 1x and 138-162 MB at 2x
/// (1.02-1.17x run by run), against 136-160 and 174-182 MB without; it costs about 1-3 s more
/// system time per 2.4 GB (page faults on fresh mappings).
pub(crate) fn return_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it takes the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns freed heap pages to the kernel once a second. Buffers of assorted sizes (chunks of
/// 64 KiB-1 MiB, sled's pages) leave free holes inside the malloc heaps that glibc keeps resident,
/// so RSS drifts above what is live, further the longer the process runs: a backup of twice the
/// benchmark data peaked at 164 MB of live heap against 162 MB at 1x (heaptrack), but at 165-183
/// MB RSS against 153-157. With this: 143-149 MB at 1x, 158-183 at 2x (five runs each). The
/// mount's evicted chunk buffers leave the same holes. `malloc_trim` releases whole free pages
/// anywhere in the heaps (`MADV_DONTNEED`) and costs well under a millisecond per call here.
pub(crate) fn spawn_heap_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("strata-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if log::log_enabled!(log::Level::Debug) {
                // SAFETY: mallinfo2 only reads the allocator's counters.
                let mi = unsafe { libc::mallinfo2() };
                let rss = std::fs::read_to_string("/proc/self/statm")
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .map_or(0, |pages| pages * 4096);
                log::debug!(
                    "Memory: heap {} MB in use, {} MB free; {} MB mapped buffers; RSS {} MB",
                    mi.uordblks >> 20,
                    mi.fordblks >> 20,
                    mi.hblkhd >> 20,
                    rss >> 20
                );
            }
            // SAFETY: malloc_trim only returns free memory to the kernel; it is thread-safe.
            unsafe {
                libc::malloc_trim(0);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| log::debug!("No heap trimmer: {e}"));
}

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .format_target(false)
        .init();
    match run(cli) {
        Ok(EXIT_OK) if STDOUT_FAILED.load(Ordering::Relaxed) => EXIT_ERROR,
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e}");
            EXIT_ERROR
        }
    }
}

/// Standard output was closed by its reader (`strata backup | head`): later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Writing standard output failed for another reason (a full disk): the command exits 1.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes command output to stdout. A closed pipe is not an error: a backup that committed stays a
/// success (exit code unchanged) and the rest of the output is dropped, as ripgrep and coreutils
/// do. Any other write error is said once on stderr and turns a success into exit code 1, since
/// a script capturing `--json` to a file would otherwise read a truncated result.
pub(crate) fn out(args: std::fmt::Arguments) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        } else if !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
            eprintln!("strata: Writing standard output: {e}");
        }
    }
}

fn repo_path(cli_repo: &Option<PathBuf>) -> PathBuf {
    cli_repo.clone().unwrap_or_else(repo::default_repo_path)
}

fn run(cli: Cli) -> Result<i32> {
    let path = repo_path(&cli.repo);
    match cli.command {
        Command::Init(a) => {
            Repo::create(
                &path,
                &CreateOptions {
                    compression: a.compression,
                },
            )?;
            outln!("Created repository {}", path.display());
            Ok(EXIT_OK)
        }
        Command::Backup(a) => cmd_backup(&path, cli.repo.is_none(), a),
        Command::Snapshots(a) => read_only(&path, |repo| {
            output::snapshots(repo, a.source.as_deref(), a.json)?;
            Ok(EXIT_OK)
        }),
        Command::Ls(a) => read_only(&path, |repo| cmd_ls(repo, a)),
        Command::Cat(a) => cmd_cat(&path, a),
        Command::Mount(a) => mount::run(&path, a),
        Command::Diff(a) => Ok(query::diff(&path, a)),
        Command::Find(a) => read_only(&path, |repo| query::find(repo, a)),
        Command::Log(a) => read_only(&path, |repo| query::log(repo, a)),
        Command::Check(a) => check::run_check(&path, a),
        Command::Repair(a) => check::run_repair(&path, a),
        Command::Forget(a) => lifecycle::run_forget(&path, a),
        Command::Consolidate(a) => lifecycle::run_consolidate(&path, a),
        Command::Prune(a) => lifecycle::run_prune(&path, a),
        Command::Restore(a) => read_only(&path, |repo| restore::run(repo, a)),
        Command::GenerateMan { dir } => {
            write_man_pages(&dir)?;
            Ok(EXIT_OK)
        }
    }
}

/// Runs a command that only reads the repository. It has nothing to flush, so sled's shutdown flush
/// and fsync are skipped. It writes the lookup files before leaving (opening the index removed
/// them), so the next `cat` need not open the index.
fn read_only(path: &Path, f: impl FnOnce(&Arc<Repo>) -> Result<i32>) -> Result<i32> {
    let repo = Repo::open(path)?;
    let r = f(&repo);
    crate::lookup::publish_or_warn(&repo, crate::lookup::SMALL_LAYER, &[]);
    std::mem::forget(repo);
    r
}

/// Runs a command that changes the repository, then writes the lookup files (opening the index
/// removed them); the repository is closed normally (flushed).
fn with_repo(path: &Path, f: impl FnOnce(&Arc<Repo>) -> Result<i32>) -> Result<i32> {
    let repo = Repo::open(path)?;
    let r = f(&repo);
    crate::lookup::publish_or_warn(&repo, crate::lookup::SMALL_LAYER, &[]);
    r
}

fn cmd_backup(path: &Path, default_repo: bool, a: BackupArgs) -> Result<i32> {
    return_freed_buffers();
    spawn_heap_trimmer();
    // The default repository is created on first use; an explicit one must exist (a typo in --repo
    // should not silently start a new repository).
    let repo = if default_repo {
        Repo::open_or_create_with_cache(path, repo::BACKUP_INDEX_CACHE)?
    } else {
        Repo::open_with_cache(path, repo::BACKUP_INDEX_CACHE)?
    };
    let opts = BackupOptions {
        kind: a.kind,
        tags: a.tags,
        excludes: a.excludes,
        source_name: a.source_name,
        rehash: a.rehash,
        threads: a.threads,
        progress: Default::default(),
    };
    let status = status::StatusLine::start();
    let opts = BackupOptions {
        progress: status.progress(),
        ..opts
    };
    let out = backup::backup(&repo, &a.source, &opts);
    drop(status);
    let out = out.and_then(|mut out| {
        if let Some(n) = a.max_chain {
            lifecycle::enforce_max_chain(&repo, &mut out.snapshot, n)?;
        }
        Ok(out)
    });
    crate::lookup::publish_or_warn(&repo, crate::lookup::SMALL_LAYER, &[]);
    let out = out?;
    output::backup_result(&out, a.json);
    Ok(if out.warnings.is_empty() {
        EXIT_OK
    } else {
        EXIT_WARNINGS
    })
}

fn path_bytes(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

fn cmd_ls(repo: &Arc<Repo>, a: LsArgs) -> Result<i32> {
    let snap = snapshot::find(repo, &a.snapshot, a.source.as_deref())?;
    let view = View::open(repo, &snap.id)?;
    let comps = crate::layers::components(a.path.as_deref().map_or(&b""[..], path_bytes))?;
    let rel = comps.join(&b'/');
    let entry = view.lookup(&rel)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let fmt = output::LsFormat {
        long: a.long,
        json: a.json,
    };
    let res = (|| -> std::io::Result<Result<()>> {
        if entry.kind != Kind::Dir {
            output::ls_entry(&mut out, &rel, &entry, &fmt)?;
            return Ok(Ok(()));
        }
        let mut stack = vec![rel];
        while let Some(dir) = stack.pop() {
            let children: Vec<_> = match view.list(&dir).and_then(|it| it.collect::<Result<_>>()) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let mut subdirs = Vec::new();
            for (name, e) in children {
                let p = join(&dir, &name);
                output::ls_entry(&mut out, &p, &e, &fmt)?;
                if a.recursive && e.kind == Kind::Dir {
                    subdirs.push(p);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        out.flush()?;
        Ok(Ok(()))
    })();
    match res {
        Ok(r) => r.map(|_| EXIT_OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        Err(e) => Err(Error::Io {
            context: "Writing",
            path: "standard output".into(),
            source: e,
        }),
    }
}

/// `strata cat`: through the lookup files when they are current (no sled: a few reads), else
/// through the index (which then writes them for the next call).
fn cmd_cat(path: &Path, a: CatArgs) -> Result<i32> {
    match crate::lookup::Quick::open(path) {
        Ok(Some(q)) => {
            let q = Arc::new(q);
            match cat_entry(&q, q.snapshots(), &a, &mut Vec::new()) {
                Ok(entry) => {
                    let r = cat_write(&entry, &mut |id| q.read_chunk(id));
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
        Err(e) if e.is_user_error() => return Err(e),
        Err(e) => log::warn!("The lookup catalog is unusable ({e}); reading the index"),
    }
    // Through the index; then the lookup files, with the tables this chain lacked even if big
    // (the next `cat` of it needs them). Not flushed, as in `read_only`.
    let repo = Repo::open(path)?;
    let mut chain = Vec::new();
    let r = cat_entry(&repo, repo.snapshots()?, &a, &mut chain)
        .and_then(|entry| cat_write(&entry, &mut |id| repo.read_chunk(id)));
    crate::lookup::publish_or_warn(&repo, crate::lookup::SMALL_LAYER, &chain);
    std::mem::forget(repo);
    r
}

/// The regular file `cat` names, resolved in whichever store answers; `chain` receives the
/// layers of the snapshot's view.
fn cat_entry<S: crate::layers::LayerStore>(
    store: &Arc<S>,
    all: Vec<crate::snapshot::Snapshot>,
    a: &CatArgs,
    chain: &mut Vec<crate::id::SnapshotId>,
) -> Result<crate::entry::Entry> {
    let snap = snapshot::find_in(all, &a.snapshot, a.source.as_deref())?;
    let view = View::open(store, &snap.id)?;
    *chain = view.chain();
    let entry = view.lookup_once(path_bytes(&a.path))?;
    if entry.kind != Kind::File {
        return Err(Error::NotAFile {
            snapshot: snap.id.short(),
            path: a.path.display().to_string(),
        });
    }
    Ok(entry)
}

fn cat_write(
    entry: &crate::entry::Entry,
    read: &mut dyn FnMut(&crate::id::ChunkId) -> Result<Vec<u8>>,
) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    use crate::content::WriteError;
    match crate::content::write_all_with(entry, &mut out, read) {
        Ok(()) => Ok(EXIT_OK),
        Err(WriteError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        Err(WriteError::Output(e)) => Err(Error::Io {
            context: "Writing",
            path: "standard output".into(),
            source: e,
        }),
        Err(WriteError::Repo(e)) => Err(e),
    }
}

/// Renders `strata.1` and one `strata-<command>.1` per visible subcommand into `dir`.
pub fn write_man_pages(dir: &Path) -> Result<()> {
    use crate::error::IoContext;
    std::fs::create_dir_all(dir).ctx("Creating", dir)?;
    for (name, bytes) in man_pages() {
        let p = dir.join(&name);
        std::fs::write(&p, bytes).ctx("Writing", &p)?;
    }
    Ok(())
}

/// Every man page as (file name, roff bytes), generated from the clap definitions.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = command();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .expect("render to memory");
    out.push(("strata.1".to_string(), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("strata-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("strata {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub)
            .render(&mut buf)
            .expect("render to memory");
        out.push((format!("{name}.1"), buf));
    }
    out
}
