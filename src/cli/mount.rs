//! `strata mount`: checks the mount point, opens the repository, mounts it read-only in the
//! foreground, prints one line when ready, and unmounts on SIGINT/SIGTERM/SIGHUP or when the mount
//! is removed from outside (`fusermount3 -u`). On a signal it detaches the mount (lazy unmount)
//! and keeps serving the files already open for a bounded grace period, so that neither a busy
//! reader nor the process's exit can leave a dead mount behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::IoContext;
use crate::fuse::{spawn_mount, MountOptions};

use crate::open::Open;
use crate::repo::Repo;
use crate::vfs::{Vfs, VfsOptions};
use crate::{Error, Result};

/// `strata mount`
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Empty directory to mount the repository on
    pub mountpoint: PathBuf,
    /// Let other users access the mount (stored permissions and POSIX ACLs are then enforced by
    /// the kernel; non-root users need `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Memory for decompressed chunks, e.g. 256M, 1G, 512MiB or a byte count
    #[arg(long, default_value = "256M", value_parser = parse_size, value_name = "SIZE")]
    pub cache_size: u64,
    /// Only show snapshots of this source (repeatable)
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Worker threads serving reads [default: 2 per CPU, at least 4]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Run in the background once mounted (the ready line is still printed; unmount with
    /// `fusermount3 -u MOUNTPOINT` or by signalling the process)
    #[arg(long)]
    pub daemon: bool,
    /// Do not keep the CPUs awake while requests arrive. By default, during activity and for
    /// 2 ms after it, one lowest-priority (SCHED_IDLE) thread per CPU spins so that no CPU halts
    /// between requests: waking a halted CPU (a hypervisor exit on a VM) made each round trip
    /// ~4x slower here. Large (streaming) reads do not start it. It only takes CPU time nothing
    /// else wants; turn it off on battery or where idle CPU is billed
    #[arg(long)]
    pub no_busy_poll: bool,
    /// On SIGINT/SIGTERM/SIGHUP the mount is detached at once (the mount point is a plain
    /// directory again, nothing new can be opened through it) and files already open in it are
    /// served for up to this many seconds; readers still busy after that (or after a second
    /// signal) get errors, and the process exits
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub grace: u64,
    /// Do not push a directory's small files into the page cache ahead of readers. By default,
    /// when a file is read from its start, the next files of its directory (up to 1 MiB each,
    /// in a window that grows while the reader keeps going) are handed to the kernel, so that
    /// `diff -r`, `cp -r` or `grep -r` over many small files make no round trip per file
    #[arg(long)]
    pub no_dir_readahead: bool,
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

/// Parses `123`, `64K`, `256M`, `1G`, `2T`, with optional `iB`/`B` suffix (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        Some('t') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("Not a size: {s:?} (try 256M or 1G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("Size too large: {s:?}"))
}

fn unusable(path: &Path, reason: &str) -> Error {
    Error::Mountpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Refuses a missing, non-directory or non-empty mount point, and one inside the repository.
pub fn check_mountpoint(mountpoint: &Path, repo: &Path) -> Result<PathBuf> {
    let meta = match std::fs::metadata(mountpoint) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unusable(
                mountpoint,
                "it does not exist (create an empty directory)",
            ))
        }
        Err(e) => return Err(e).ctx("Checking mount point", mountpoint),
    };
    if !meta.is_dir() {
        return Err(unusable(mountpoint, "it is not a directory"));
    }
    let mp = mountpoint
        .canonicalize()
        .ctx("Checking mount point", mountpoint)?;
    if let Ok(r) = repo.canonicalize() {
        if mp.starts_with(&r) {
            return Err(unusable(mountpoint, "it is inside the repository"));
        }
    }
    let mut it = std::fs::read_dir(&mp).ctx("Checking mount point", mountpoint)?;
    if it.next().is_some() {
        return Err(unusable(mountpoint, "it is not empty"));
    }
    Ok(mp)
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
    let open = Open::new(repo_path)
        .cache_bytes(crate::repo::MOUNT_INDEX_CACHE)
        .seeded(true);
    // Opening the index removed the lookup files; written again when the mount ends.
    crate::ops::read_only_with(open, |repo| {
        serve(repo, repo_path, &a, &mp, set, started, ready_pipe)
    })
}

/// Mounts the open repository at `mp` and serves it until a signal in `set` or an external
/// unmount; a daemon child says when it is ready through `ready_pipe`.
fn serve(
    repo: &Arc<Repo>,
    repo_path: &Path,
    a: &MountArgs,
    mp: &Path,
    set: libc::sigset_t,
    started: Instant,
    mut ready_pipe: Option<std::fs::File>,
) -> Result<i32> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let vfs = Arc::new(Vfs::open(
        repo.clone(),
        VfsOptions {
            cache_bytes: a.cache_size,
            sources: a.sources.clone(),
            uid,
            gid,
        },
    )?);
    // Only now: sled's start-up allocates and frees hundreds of segment-sized buffers, which
    // with the fixed threshold would each be mapped and faulted in (measured: ready in 150 ms
    // instead of 40 on the benchmark repository, cold).
    crate::memory::return_freed_buffers();
    // `false`: the session ended (unmounted from outside); `true`: a signal asks us to unmount.
    let (tx, rx) = crossbeam_channel::bounded::<bool>(4);
    let (ended_tx, ended_rx) = crossbeam_channel::bounded::<()>(1);
    let fwd = tx.clone();
    std::thread::spawn(move || {
        if ended_rx.recv().is_ok() {
            let _ = fwd.send(false);
        }
    });
    let opts = MountOptions {
        allow_other: a.allow_other,
        threads: a.threads,
        busy_poll: !a.no_busy_poll,
        dir_readahead: !a.no_dir_readahead,
    };
    let session = spawn_mount(vfs.clone(), mp, &opts, Some(ended_tx))
        .ctx("Mounting (is fuse3 installed and /dev/fuse usable?)", mp)?;
    crate::memory::spawn_heap_trimmer();
    // Large kernel readahead: cold sequential reads measured ~2x faster with 4 MiB than 128 KiB.
    crate::fuse::tune_readahead(mp, 4096);
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
        vfs.snapshot_count(),
        repo_path.display(),
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
        // Already unmounted from outside: nothing left to unmount.
        std::mem::forget(session);
        log::info!("{} was unmounted", mp.display());
        return Ok(crate::cli::EXIT_OK);
    }
    // Detach first: the mount point is clean at once and no new open can reach the mount, while
    // readers that already have a file open keep being served. The kernel ends the session when
    // the last of them closes; until then, or until the grace period ends or a second signal
    // arrives, keep serving. Never drop the session's mount guard here: its unmount would
    // target whatever is at the mount point by now.
    match crate::fuse::detach(mp) {
        Ok(()) => {
            // `false`: the session ended (the last open file was closed); `true`: a second
            // signal; a timeout: the grace period is over.
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
        }
        Err(e) => {
            // Not detached: let the session's own unmount try, as a last resort.
            log::error!("Detaching {}: {e}", mp.display());
            drop(session);
            return Ok(crate::cli::EXIT_OK);
        }
    }
    std::mem::forget(session);
    let (hits, misses, _) = vfs.cache_stats();
    log::info!(
        "Unmounted {}; chunk cache hits {hits}, misses {misses}",
        mp.display()
    );
    Ok(crate::cli::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2gb").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn mountpoint_checks() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let msg = |r: Result<PathBuf>| r.unwrap_err().to_string();
        assert!(msg(check_mountpoint(&d.path().join("nope"), &repo)).contains("does not exist"));
        let inside = repo.join("mnt");
        std::fs::create_dir(&inside).unwrap();
        assert!(msg(check_mountpoint(&inside, &repo)).contains("inside the repository"));
        let full = d.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("x"), b"").unwrap();
        assert!(msg(check_mountpoint(&full, &repo)).contains("not empty"));
        let ok = d.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        assert!(check_mountpoint(&ok, &repo).is_ok());
    }
}
