//! Mounting a repository: what any program does around the FUSE session, so that a mount started
//! by another front end behaves as `strata mount`'s does. The mount point must be an existing,
//! empty directory outside the repository ([`check_mountpoint`]); [`Mounted::start`] builds the
//! view, tunes the allocator for a long-running process and the kernel's readahead for cold
//! sequential reads, and serves from background threads; the session ends without ever
//! unmounting whatever is at the mount point by then ([`Mounted::ended`], [`Mounted::detach`]).
//! Signals, daemonizing, waiting and what is printed are the program's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::fuse::{self, MountOptions};
use crate::repo::Repo;
use crate::vfs::{Vfs, VfsOptions};

/// Readahead the kernel is told to use on the mount, in KiB: cold sequential reads measured ~2x
/// faster with 4 MiB than with the default 128 KiB.
const READAHEAD_KB: u32 = 4096;

fn unusable(path: &Path, reason: &str) -> Error {
    Error::Mountpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Refuses a missing, non-directory or non-empty mount point, and one inside the repository at
/// `repo`; returns the mount point's canonical path.
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

/// A repository mounted read-only and served from background threads.
pub struct Mounted {
    vfs: Arc<Vfs>,
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Mounts `repo` at `mountpoint` (checked by [`check_mountpoint`]). `on_end` is signalled when
    /// the session ends by itself: unmounted from outside, or, after [`Mounted::detach`], when the
    /// last file open in it is closed.
    pub fn start(
        repo: Arc<Repo>,
        mountpoint: &Path,
        vfs: VfsOptions,
        opts: &MountOptions,
        on_end: crossbeam_channel::Sender<()>,
    ) -> Result<Mounted> {
        let vfs = Arc::new(Vfs::open(repo, vfs)?);
        // Only now: sled's start-up allocates and frees hundreds of segment-sized buffers, which
        // with the fixed threshold would each be mapped and faulted in (measured: ready in 150 ms
        // instead of 40 on the benchmark repository, cold).
        crate::memory::return_freed_buffers();
        let session = fuse::spawn_mount(vfs.clone(), mountpoint, opts, Some(on_end)).ctx(
            "Mounting (is fuse3 installed and /dev/fuse usable?)",
            mountpoint,
        )?;
        crate::memory::spawn_heap_trimmer();
        fuse::tune_readahead(mountpoint, READAHEAD_KB);
        Ok(Mounted {
            vfs,
            session,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// The view being served.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }

    /// Lets go of a session that ended by itself (unmounted from outside): there is nothing left
    /// to unmount, and the mount point may already hold something else.
    pub fn ended(self) {
        std::mem::forget(self.session);
    }

    /// Detaches the mount (a lazy unmount, [`fuse::detach`]): the mount point is clean at once and
    /// nothing new can be opened through it, while files already open keep being served until
    /// the [`Detached`] is dropped or the last of them is closed (`on_end`). When detaching fails
    /// the session is dropped, so that its own unmount tries, and the error returned.
    pub fn detach(self) -> std::io::Result<Detached> {
        match fuse::detach(&self.mountpoint) {
            Ok(()) => Ok(Detached {
                vfs: self.vfs,
                session: Some(self.session),
            }),
            Err(e) => {
                drop(self.session);
                Err(e)
            }
        }
    }
}

/// A detached mount still serving the files open in it. Dropping it stops serving without
/// unmounting: once detached, the mount point may hold something else.
pub struct Detached {
    vfs: Arc<Vfs>,
    session: Option<fuser::BackgroundSession>,
}

impl Detached {
    /// The view being served.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // The session's guard would unmount the mount point, whatever is there by now.
        std::mem::forget(self.session.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
