//! The repository's process lock: `REPO/lock`, locked exclusively (`flock`, through
//! [`File::try_lock`]) by the one process using the repository, and holding its pid so that a
//! second process can say who has it. Taking the lock is all this does; what the taker must do
//! next (remove the lookup catalog, open the index) is the opener's business (`crate::open`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How long a busy lock is retried before the repository is reported in use.
pub(super) const LOCK_WAIT: Duration = Duration::from_millis(1000);

/// The exclusive process lock of a repository; released when dropped.
pub struct RepoLock {
    /// The lock of a repository in a bucket, taken after the local one (and released before
    /// it: fields drop in order).
    _bucket: Option<super::remote::BucketLock>,
    /// The locked lock file: the lock lasts as long as this open file description.
    _file: File,
}

impl RepoLock {
    /// Takes the lock of the repository at `path`, writing this process's pid into the lock
    /// file. A lock held by another process is [`Error::RepoLocked`], naming its pid.
    pub(crate) fn take(path: &Path) -> Result<RepoLock> {
        let lock_path = path.join("lock");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .ctx("Opening lock file", &lock_path)?;
        // A lock can outlive its holder by a moment: a process that forks (to run a hook, a test
        // harness starting the next command) shares the locked file description until its child
        // execs. So a busy lock is retried briefly before the repository is reported in use.
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match f.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(TryLockError::WouldBlock) => {
                    let mut s = String::new();
                    let _ = f.read_to_string(&mut s);
                    let holder = match s.trim() {
                        "" => String::new(),
                        pid => format!(" (pid {pid})"),
                    };
                    return Err(Error::RepoLocked {
                        path: path.to_path_buf(),
                        holder,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(e).ctx("Locking", &lock_path),
            }
        }
        f.set_len(0).ctx("Writing lock file", &lock_path)?;
        write!(f, "{}", std::process::id()).ctx("Writing lock file", &lock_path)?;
        // For a repository in a bucket: the bucket's lock, and the local index brought up to it.
        let bucket = super::remote::on_lock(path)?;
        Ok(RepoLock {
            _bucket: bucket,
            _file: f,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder() {
        let t = tempfile::tempdir().unwrap();
        let held = RepoLock::take(t.path()).unwrap();
        let started = Instant::now();
        match RepoLock::take(t.path()) {
            Err(Error::RepoLocked { holder, .. }) => {
                assert_eq!(holder, format!(" (pid {})", std::process::id()));
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a held lock was taken twice"),
        }
        assert!(
            started.elapsed() >= LOCK_WAIT,
            "a busy lock is retried first"
        );
        drop(held);
        RepoLock::take(t.path()).unwrap();
    }
}
