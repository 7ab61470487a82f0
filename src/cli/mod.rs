//! The command line: clap definitions, one small function per subcommand, human and `--json`
//! output. The only module that writes to stdout.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap, or the configuration file), 3 completed
//! with warnings, 4 damage found (`check`, `repair`), 5 an encrypted repository could not be
//! unlocked (wrong passphrase, no usable key file, no passphrase). `diff` exits like diff(1)
//! instead: 0 no differences, 1 differences, 2 any error.

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

mod backup;
mod cat;
mod check;
mod completions;
mod config;
mod consolidate;
mod copy;
mod diff;
mod find;
mod forget;
mod init;
mod json;
mod key;
mod log;
mod ls;
mod man;
mod metrics;
mod mount;
mod output;
mod prune;
mod restore;
mod snapshots;
mod status;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{FromArgMatches, Parser, Subcommand};

use crate::ops;
use crate::repo;
use crate::Result;

pub use man::{man_pages, write_man_pages};

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
/// Exit code when an encrypted repository could not be unlocked: wrong passphrase, no usable
/// key file, or no passphrase given.
pub const EXIT_LOCKED: i32 = 5;

/// strata — backups as layers, every snapshot mountable as a read-only filesystem.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// Repository: a directory, or s3://BUCKET/PREFIX for object storage [default:
    /// $XDG_DATA_HOME/strata/repo, i.e. ~/.local/share/strata/repo]
    #[arg(long, global = true, env = "STRATA_REPO", value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    // The options below are listed after each command's own (display_order).
    /// Configuration file [default: $XDG_CONFIG_HOME/strata/config.toml, i.e. ~/.config/strata/config.toml]
    #[arg(
        long,
        global = true,
        env = "STRATA_CONFIG",
        value_name = "FILE",
        display_order = 100
    )]
    pub config: Option<PathBuf>,
    /// Progress display of backup, restore, check, repair, prune and copy (auto: a bar on a terminal)
    #[arg(
        long,
        long_help = "Progress display of backup, restore, check, repair, prune and copy: a bar when \
                     stderr is a terminal (auto); always (off a terminal, a plain line a second); \
                     never; or json (JSON lines on stderr, at most four a second, and a last one \
                     with \"done\": true). --progress alone means always",
        global = true,
        display_order = 101,
        value_enum,
        value_name = "WHEN",
        num_args = 0..=1,
        require_equals = true,
        default_value = "auto",
        default_missing_value = "always"
    )]
    pub progress: status::ProgressMode,
    /// No progress display (overrides --progress)
    #[arg(short, long, global = true, display_order = 102)]
    pub quiet: bool,
    /// How long to wait while another strata process holds the repository (e.g. 30s, 5m, 1h; 0 fails at once)
    #[arg(long, global = true, value_name = "DURATION", default_value = "5m", value_parser = crate::open::parse_duration, display_order = 103)]
    pub lock_wait: std::time::Duration,
    /// Read the passphrase of an encrypted repository from FILE
    #[arg(long, global = true, value_name = "FILE", display_order = 104)]
    pub password_file: Option<PathBuf>,
    /// Keep the unlocked key of an encrypted repository in the kernel keyring for DURATION (e.g. 15m), so that the next commands need no passphrase; 0 or off: never
    #[arg(long, global = true, value_name = "DURATION", default_value = "0", value_parser = crate::passphrase::parse_key_cache, display_order = 105)]
    pub key_cache: std::time::Duration,
    /// The command
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, empty repository
    Init(init::InitArgs),
    /// Back up a directory as a full, incremental or differential layer
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// List a directory (or show one entry) of a snapshot
    Ls(ls::LsArgs),
    /// Write one file of a snapshot to standard output (verified)
    Cat(cat::CatArgs),
    /// Mount every snapshot as a read-only filesystem (foreground; Ctrl-C unmounts)
    Mount(mount::MountArgs),
    /// Show what differs between two snapshots, or a snapshot and a directory (exit 0 same, 1 differ, 2 error)
    Diff(diff::DiffArgs),
    /// Find paths matching a glob across snapshots, with size, mtime and content hash
    Find(find::FindArgs),
    /// Show the distinct versions of one path across the snapshots of its source
    Log(log::LogArgs),
    /// Verify the repository's structure (and with --read-data its data); list damaged files
    Check(check::CheckArgs),
    /// Rebuild the index database from the pack files (after index/ is lost or damaged)
    Repair(check::RepairArgs),
    /// Remove snapshots, by name or by a retention policy; kept snapshots stay identical
    Forget(forget::ForgetArgs),
    /// Turn a snapshot into a self-contained full layer (metadata only)
    Consolidate(consolidate::ConsolidateArgs),
    /// Delete pack data no snapshot needs any more
    Prune(prune::PruneArgs),
    /// Restore a snapshot (or some of its paths) into a directory, with metadata, safely
    Restore(restore::RestoreArgs),
    /// Copy snapshots from another repository (--from-repo) into this one, verified
    Copy(copy::CopyArgs),
    /// Show the effective configuration (file, environment, flags) and where each value comes from
    Config(config::ConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output
    Completions(completions::CompletionsArgs),
    /// Manage the key files of an encrypted repository
    Key(key::KeyArgs),
    /// Write the man pages into a directory (used to keep man/ in sync)
    #[command(hide = true)]
    GenerateMan {
        /// Output directory
        dir: PathBuf,
    },
}

/// Places a command's options in `--help` and the man page: clap numbers them in the order they
/// are declared, and options that come from a flattened library struct would otherwise all follow
/// the struct's place. `#[command(help_order = &[...])]` numbers the named options (argument ids)
/// from 0 in the order given, which is how clap numbers one struct's fields; an unknown id panics
/// when the command is built (the man page test builds every command).
pub(crate) trait HelpOrder {
    /// See [`HelpOrder`].
    fn help_order(self, ids: &[&str]) -> Self;
}

impl HelpOrder for clap::Command {
    fn help_order(self, ids: &[&str]) -> Self {
        ids.iter()
            .enumerate()
            .fold(self, |cmd, (i, id)| cmd.mut_arg(id, |a| a.display_order(i)))
    }
}

/// The clap command, every option with its environment variable ([`crate::config::with_env`]),
/// for parsing, man page generation and tests; the configuration file is applied on top.
pub fn command() -> clap::Command {
    crate::config::with_env(<Cli as clap::CommandFactory>::command())
}

/// Exit code for a usage error: a bad command line or configuration file.
pub const EXIT_USAGE: i32 = 2;

/// Parses `args` with the configuration file applied.
fn parse(args: &[OsString]) -> Result<crate::config::Parsed, i32> {
    use crate::config::ParseError;
    match crate::config::parse(command(), args, config::backup_source_name) {
        Ok(p) => Ok(p),
        Err(ParseError::Clap(e)) if e.use_stderr() && args.iter().any(|a| a == "--nagios") => {
            Err(check::nagios_usage_error(&e))
        }
        Err(ParseError::Clap(e)) => {
            let _ = e.print();
            Err(e.exit_code())
        }
        Err(ParseError::Config(e)) => {
            eprintln!("strata: {e}");
            Err(EXIT_USAGE)
        }
    }
}

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    crate::memory::limit_malloc_arenas();
    let args: Vec<OsString> = std::env::args_os().collect();
    let parsed = match parse(&args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let cli = match Cli::from_arg_matches(&parsed.matches) {
        Ok(c) => c,
        Err(e) if e.use_stderr() && std::env::args().any(|a| a == "--nagios") => {
            return check::nagios_usage_error(&e);
        }
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let command = parsed.matches.subcommand_name().unwrap_or_default();
    let mode = if cli.quiet {
        status::ProgressMode::Never
    } else {
        cli.progress
    };
    status::configure(mode, command);
    init_logging(cli.verbose);
    crate::open::set_lock_wait(cli.lock_wait, Some(lock_wait_notice));
    let result = run(cli, &parsed);
    // Handles that skip their drop (a read-only command's) still give back a bucket's lock.
    repo::remote::release_locks();
    match result {
        Ok(EXIT_OK) if STDOUT_FAILED.load(Ordering::Relaxed) => EXIT_ERROR,
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {}", shown(&e));
            if e.is_locked_out() {
                EXIT_LOCKED
            } else {
                EXIT_ERROR
            }
        }
    }
}

/// Sets up `log` output on stderr: `-v` for more, `RUST_LOG` overrides. Messages go through
/// [`status::LogWriter`] when a progress bar may be drawn, so that they do not tear it.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let mut b = env_logger::Builder::new();
    if status::may_draw() {
        // A pipe target gets no colour by default; stderr is a terminal here, as env_logger's
        // own stderr target would have seen.
        let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        b.target(env_logger::Target::Pipe(Box::new(status::LogWriter)))
            .write_style(if plain {
                env_logger::WriteStyle::Never
            } else {
                env_logger::WriteStyle::Always
            });
    }
    b.parse_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .format_target(false)
        .init();
}

/// Said once when a command starts waiting for a repository another process holds.
fn lock_wait_notice(repo: &Path, pid: Option<&str>) {
    match pid {
        Some(pid) => eprintln!(
            "strata: waiting for the repository lock held by pid {pid} ({})",
            repo.display()
        ),
        None => eprintln!(
            "strata: waiting for the repository lock ({})",
            repo.display()
        ),
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

/// The repository directory the command works on: the one given, the default one, or for an
/// `s3://` address the local cache of that bucket's repository, made ready
/// ([`repo::remote::attach`]; `init` makes a new one). Commands that use no repository never
/// reach the bucket.
fn repo_path(cli_repo: &Option<PathBuf>, command: &Command) -> Result<PathBuf> {
    let Some(p) = cli_repo else {
        return Ok(repo::default_repo_path());
    };
    let Some(addr) = p.to_str().and_then(repo::remote::parse) else {
        return Ok(p.clone());
    };
    if matches!(
        command,
        Command::Config(_) | Command::Completions(_) | Command::GenerateMan { .. }
    ) {
        return Ok(p.clone());
    }
    // Commands that rewrite the index or delete packs take the bucket's lock alone.
    let exclusive = match command {
        Command::Forget(_) | Command::Consolidate(_) | Command::Prune(_) => true,
        Command::Repair(a) => !a.opts.dry_run,
        _ => false,
    };
    if exclusive {
        repo::remote::set_lock_mode(repo::remote::LockMode::Exclusive);
    }
    let cache = repo::remote::attach(&addr?, matches!(command, Command::Init(_)))?;
    let _ = CACHE_NAMES.set((cache.display().to_string(), p.display().to_string()));
    Ok(cache)
}

/// The cache directory of the bucket this command uses, and the bucket's address: messages name
/// the bucket, not the cache.
static CACHE_NAMES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// An error as the user reads it.
fn shown(e: &crate::Error) -> String {
    let text = e.to_string();
    match CACHE_NAMES.get() {
        Some((cache, url)) => text.replace(cache.as_str(), url),
        None => text,
    }
}

fn run(cli: Cli, parsed: &crate::config::Parsed) -> Result<i32> {
    let path = repo_path(&cli.repo, &cli.command)?;
    if let Some(f) = &cli.password_file {
        crate::passphrase::set_password_file(f.clone());
    }
    crate::passphrase::set_key_cache(cli.key_cache);
    match cli.command {
        Command::Init(a) => init::run(&path, a),
        Command::Backup(a) => metrics::backup(&path, cli.repo.is_none(), a),
        Command::Snapshots(a) => {
            snapshots::run(&path, a.source.as_deref(), a.json).map(|()| EXIT_OK)
        }
        Command::Ls(a) => ops::read_only(&path, |repo| ls::run(repo, a)),
        Command::Cat(a) => cat::run(&path, a),
        Command::Mount(a) => mount::run(&path, a),
        Command::Diff(a) => Ok(diff::run(&path, a)),
        Command::Find(a) => ops::read_only(&path, |repo| find::run(repo, a)),
        Command::Log(a) => ops::read_only(&path, |repo| log::run(repo, a)),
        Command::Check(a) => check::run_check(&path, a),
        Command::Repair(a) => check::run_repair(&path, a),
        Command::Forget(a) => forget::run(&path, a),
        Command::Consolidate(a) => consolidate::run(&path, a),
        Command::Prune(a) => prune::run(&path, a),
        Command::Restore(a) => restore::run(&path, a),
        Command::Copy(a) => copy::run(&path, a),
        Command::Config(a) => config::run(parsed, a),
        Command::Completions(a) => completions::run(a),
        Command::Key(a) => key::run(&path, a),
        Command::GenerateMan { dir } => {
            write_man_pages(&dir)?;
            Ok(EXIT_OK)
        }
    }
}

fn path_bytes(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}
