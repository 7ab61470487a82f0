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
mod json;
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
use crate::ops;
use crate::repo::{self, CreateOptions, Repo};
use crate::snapshot;
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
    #[arg(
        required_unless_present_any = ["stdin", "stdin_from_command"],
        conflicts_with_all = ["stdin", "stdin_from_command"]
    )]
    pub source: Option<PathBuf>,
    /// What to back up and how
    #[command(flatten)]
    pub options: BackupOptions,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    // Not a flattened `BackupOptions` field, so that help and man pages list it after `--json`,
    // where it has always been.
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

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    crate::memory::limit_malloc_arenas();
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
        Command::Snapshots(a) => ops::read_only(&path, |repo| {
            output::snapshots(repo, a.source.as_deref(), a.json)?;
            Ok(EXIT_OK)
        }),
        Command::Ls(a) => ops::read_only(&path, |repo| cmd_ls(repo, a)),
        Command::Cat(a) => cmd_cat(&path, a),
        Command::Mount(a) => mount::run(&path, a),
        Command::Diff(a) => Ok(query::diff(&path, a)),
        Command::Find(a) => ops::read_only(&path, |repo| query::find(repo, a)),
        Command::Log(a) => ops::read_only(&path, |repo| query::log(repo, a)),
        Command::Check(a) => check::run_check(&path, a),
        Command::Repair(a) => check::run_repair(&path, a),
        Command::Forget(a) => lifecycle::run_forget(&path, a),
        Command::Consolidate(a) => lifecycle::run_consolidate(&path, a),
        Command::Prune(a) => lifecycle::run_prune(&path, a),
        Command::Restore(a) => ops::read_only(&path, |repo| restore::run(repo, a)),
        Command::GenerateMan { dir } => {
            write_man_pages(&dir)?;
            Ok(EXIT_OK)
        }
    }
}

/// `strata backup`, between its pre- and post-command.
fn cmd_backup(path: &Path, default_repo: bool, a: BackupArgs) -> Result<i32> {
    let hooks = crate::hooks::Hooks {
        pre: a.options.pre_command.clone(),
        post: a.options.post_command.clone(),
    };
    let committed = |(code, id): &(i32, crate::id::SnapshotId)| crate::hooks::Committed {
        id: *id,
        warnings: *code == EXIT_WARNINGS,
    };
    let (code, _) = hooks.around(|| backup_and_report(path, default_repo, a), committed)?;
    Ok(code)
}

/// The backup itself; the repository is closed when it returns.
fn backup_and_report(
    path: &Path,
    default_repo: bool,
    a: BackupArgs,
) -> Result<(i32, crate::id::SnapshotId)> {
    crate::memory::tune_for_long_run();
    // The default repository is created on first use; an explicit one must exist (a typo in --repo
    // should not silently start a new repository).
    let repo = if default_repo {
        Repo::open_or_create_with_cache(path, repo::BACKUP_INDEX_CACHE)?
    } else {
        Repo::open_with_cache(path, repo::BACKUP_INDEX_CACHE)?
    };
    let status = status::StatusLine::backup();
    let opts = BackupOptions {
        max_chain: a.max_chain,
        progress: status.progress(),
        ..a.options
    };
    let out = backup::run(&repo, a.source.as_deref(), &opts);
    drop(status);
    ops::publish_lookups(&repo, &[]);
    let out = out?;
    output::backup_result(&out, a.json);
    let code = if out.warnings.is_empty() {
        EXIT_OK
    } else {
        EXIT_WARNINGS
    };
    Ok((code, out.snapshot.id))
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
    ops::publish_lookups(&repo, &chain);
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
