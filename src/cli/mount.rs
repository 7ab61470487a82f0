//! `strata mount`: checks the mount point, opens the repository, mounts it read-only in the
//! foreground, prints one line when ready, and unmounts on SIGINT/SIGTERM/SIGHUP or when the mount
//! is removed from outside (`fusermount3 -u`). On a signal it detaches the mount (lazy unmount)
//! and keeps serving the files already open for a bounded grace period, so that neither a busy
//! reader nor the process's exit can leave a dead mount behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use super::HelpOrder;
use crate::error::IoContext;
use crate::fuse::MountOptions;
use crate::mount::{check_mountpoint, Mounted};
use crate::open::Open;
use crate::vfs::VfsOptions;
use crate::Result;

/// `strata mount`
#[derive(Args, Debug)]
#[command(help_order = &[
    "allow_other", "cache_bytes", "sources", "threads", "daemon", "busy_poll", "grace",
    "dir_readahead",
])]
pub struct MountArgs {
    /// Empty directory to mount the repository on
    pub mountpoint: PathBuf,
    /// How the kernel mount is served
    #[command(flatten)]
    pub mount: MountOptions,
    /// What the mount shows
    #[command(flatten)]
    pub vfs: VfsOptions,
    /// Run in the background once mounted (the ready line is still printed; unmount with
    /// `fusermount3 -u MOUNTPOINT` or by signalling the process)
    #[arg(long)]
    pub daemon: bool,
    /// On SIGINT/SIGTERM/SIGHUP the mount is detached at once (the mount point is a plain
    /// directory again, nothing new can be opened through it) and files already open in it are
    /// served for up to this many seconds; readers still busy after that (or after a second
    /// signal) get errors, and the process exits
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub grace: u64,
}

/// Which side of the `--daemon` fork we are on.
enum Fork {
    /// The original process: exit with this code once the child reported.
    Parent(i32),
    /// The background process: write the ready line here.
    Child(std::fs::File),
}

/// Forks before any thread or the repository lock exists. The parent waits for the child's
/// ready line (or its failure) and returns; the child starts a new session.
fn daemonize() -> Result<Fork> {
    use std::io::Read;
    use std::os::unix::io::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid two-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx("Creating pipe", "--daemon");
    }
    // SAFETY: the process is still single-threaded here, so fork is sound.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).ctx("Forking", "--daemon"),
        0 => {
            // SAFETY: closing our copy of the read end; starting a new session.
            unsafe {
                libc::close(fds[0]);
                libc::setsid();
            }
            // SAFETY: fds[1] is an open descriptor we own from here on.
            Ok(Fork::Child(unsafe { std::fs::File::from_raw_fd(fds[1]) }))
        }
        _ => {
            // SAFETY: closing our copy of the write end; fds[0] is ours from here on.
            unsafe { libc::close(fds[1]) };
            let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
            let mut line = String::new();
            let _ = r.read_to_string(&mut line);
            if line.starts_with("Mounted ") {
                out!("{line}");
                Ok(Fork::Parent(crate::cli::EXIT_OK))
            } else {
                // The child already printed its error to our shared stderr.
                Ok(Fork::Parent(crate::cli::EXIT_ERROR))
            }
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null (the daemon's terminal may go away).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::unix::io::AsRawFd;
        for fd in 0..3 {
            // SAFETY: duplicating a valid descriptor onto the standard ones.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Runs `strata mount` until a signal or an external unmount; returns the exit code.
pub fn run(repo_path: &Path, a: MountArgs) -> Result<i32> {
    let mp = check_mountpoint(&a.mountpoint, repo_path)?;
    let mut ready_pipe = None;
    if a.daemon {
        match daemonize()? {
            Fork::Parent(code) => return Ok(code),
            Fork::Child(f) => ready_pipe = Some(f),
        }
    }
    // Block the termination signals before any thread exists (sled's, fuser's, ours), so every
    // thread inherits the mask and only the sigwait thread below receives them.
    let set = block_signals();
    let started = Instant::now();
    if crate::repo::remote::session(repo_path)?.is_some() {
        poll_bucket(repo_path.to_path_buf());
    }
    // The mount reads a copy of the index and never holds the repository (see crate::mount).
    serve(
        Open::new(repo_path),
        repo_path,
        &a,
        &mp,
        set,
        started,
        ready_pipe,
    )
}

/// For a repository in a bucket: every `STRATA_S3_POLL` seconds (default 30), brings the local
/// index up to the bucket's log (taking the lock does), so that snapshots other machines commit
/// appear in the mount like local ones (the mount's watcher sees the commit).
fn poll_bucket(path: std::path::PathBuf) {
    let every = std::env::var("STRATA_S3_POLL")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(30)
        .max(1);
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(every));
        match crate::repo::Repo::lock_existing(&path) {
            Ok(lock) => drop(lock),
            // Whoever holds it brings the index up to date itself.
            Err(crate::Error::RepoLocked { .. }) => {}
            Err(e) => log::warn!("Looking for new commits in the bucket: {e}"),
        }
    });
}

/// Mounts the open repository at `mp` and serves it until a signal in `set` or an external
/// unmount; a daemon child says when it is ready through `ready_pipe`.
fn serve(
    open: Open,
    repo_path: &Path,
    a: &MountArgs,
    mp: &Path,
    set: libc::sigset_t,
    started: Instant,
    mut ready_pipe: Option<std::fs::File>,
) -> Result<i32> {
    // `false`: the session ended (unmounted from outside); `true`: a signal asks us to unmount.
    let (tx, rx) = crossbeam_channel::bounded::<bool>(4);
    let (ended_tx, ended_rx) = crossbeam_channel::bounded::<()>(1);
    let fwd = tx.clone();
    std::thread::spawn(move || {
        if ended_rx.recv().is_ok() {
            let _ = fwd.send(false);
        }
    });
    let mounted = Mounted::start(open, mp, a.vfs.clone(), &a.mount, ended_tx)?;
    let sig_tx = tx;
    std::thread::spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialized signal set; `sig` is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            log::info!("Received signal {sig}, unmounting");
            let _ = sig_tx.send(true);
        }
    });
    let ready = format!(
        "Mounted {} snapshots of {} at {} (ready in {} ms)\n",
        mounted.vfs().snapshot_count(),
        crate::repo::remote::display_name(repo_path),
        mp.display(),
        started.elapsed().as_millis()
    );
    use std::io::Write;
    match ready_pipe.take() {
        Some(mut pipe) => {
            let _ = pipe.write_all(ready.as_bytes());
            drop(pipe);
            detach_stdio();
        }
        None => {
            out!("{ready}");
            let _ = std::io::stdout().flush();
        }
    }
    let signalled = rx.recv().unwrap_or(false);
    if !signalled {
        mounted.ended();
        log::info!("{} was unmounted", mp.display());
        return Ok(crate::cli::EXIT_OK);
    }
    // Detach first: the mount point is clean at once and no new open can reach the mount, while
    // readers that already have a file open keep being served. The kernel ends the session when
    // the last of them closes; until then, or until the grace period ends or a second signal
    // arrives, keep serving.
    let detached = match mounted.detach() {
        Ok(d) => d,
        Err(e) => {
            log::error!("Detaching {}: {e}", mp.display());
            return Ok(crate::cli::EXIT_OK);
        }
    };
    // `false`: the session ended (the last open file was closed); `true`: a second signal; a
    // timeout: the grace period is over.
    let ended = match rx.recv_timeout(Duration::from_secs(a.grace)) {
        Ok(false) => true,
        Ok(true) => {
            log::warn!("Second signal: no longer waiting for open files");
            false
        }
        Err(_) => false,
    };
    if !ended {
        log::warn!(
            "Ending with files still open in {} (grace period of {} s over, or a second \
             signal); their readers now get errors",
            mp.display(),
            a.grace
        );
    }
    let (hits, misses, _) = detached.vfs().cache_stats();
    log::info!(
        "Unmounted {}; chunk cache hits {hits}, misses {misses}",
        mp.display()
    );
    Ok(crate::cli::EXIT_OK)
}
