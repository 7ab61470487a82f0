//! Mounting a repository: what any program does around the FUSE session, so that a mount started
//! by another front end behaves as `strata mount`'s does. The mount point must be an existing,
//! empty directory outside the repository ([`check_mountpoint`]); [`Mounted::start`] registers a
//! reader of the repository and builds the view over its private copy of the index, tunes the
//! allocator for a long-running process and the kernel's readahead for cold sequential reads,
//! and serves from background threads; the session ends without ever unmounting whatever is at
//! the mount point by then ([`Mounted::ended`], [`Mounted::detach`]). Signals, daemonizing,
//! waiting and what is printed are the program's.
//!
//! **Live.** The mount never holds the repository: every other command runs beside it. A
//! watcher thread looks for commits every [`WATCH_INTERVAL`]; after one it takes a new copy of
//! the index (holding the lock for the moment of the copy), moves the view to it and tells the
//! kernel which cached entries are stale, so a new snapshot is listed within a fraction of a
//! second of the backup's end. What the kernel holds of a forgotten snapshot stays readable
//! (leases, see `crate::lease` and `crate::vfs::Keeper`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::fuse::{self, MountOptions};
use crate::id::SnapshotId;
use crate::lease::{Reader, Stamp};
use crate::open::Open;
use crate::repo::Repo;
use crate::vfs::{Keeper, Vfs, VfsOptions};

/// How often the watcher looks for commits (two small file reads each time).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

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

/// The mount's side of a live view: its reader of the repository, and the copy the view reads.
struct Live {
    reader: Arc<Reader>,
    /// How copies are opened: the repository, the mount's index cache, seeded.
    open: Open,
    /// The copy the view reads now, and the stamp it was taken at.
    current: Mutex<(u64, Stamp)>,
}

impl Live {
    fn now(&self, copy: u64) -> Option<(Stamp, Stamp)> {
        let c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (c.0 == copy).then(|| (c.1.clone(), self.reader.stamp()))
    }
}

impl Keeper for Live {
    fn lease(&self, ids: &std::collections::BTreeSet<SnapshotId>) -> Result<()> {
        self.reader.lease(ids)
    }

    fn committed_since(&self, copy: u64) -> bool {
        self.now(copy)
            .is_none_or(|(then, now)| then.commits_moved(&now))
    }

    fn removing_since(&self, copy: u64) -> bool {
        self.now(copy)
            .is_none_or(|(then, now)| then.epoch_moved(&now))
    }

    fn fresh(&self) -> Result<(u64, Arc<Repo>)> {
        let c = self.reader.copy(self.open.clone())?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = (c.number, c.stamp);
        Ok((c.number, c.repo))
    }
}

/// Registers a reader of the repository at `repo` and opens a live view over its first copy
/// of the index (waiting for the repository lock as `open` says).
pub(crate) fn open_live(open: Open, opts: VfsOptions) -> Result<(Arc<Vfs>, Arc<Reader>)> {
    let open = open
        .cache_bytes(crate::repo::MOUNT_INDEX_CACHE)
        .seeded(true);
    let (reader, first) = Reader::register(open.clone())?;
    let live = Arc::new(Live {
        reader: reader.clone(),
        open: open.quiet_wait().unlocked(first.repo.crypt().cloned()),
        current: Mutex::new((first.number, first.stamp)),
    });
    let vfs = Vfs::open_live(first.repo, first.number, live, opts)?;
    Ok((Arc::new(vfs), reader))
}

/// The thread that keeps a live view current: looks for changes every [`WATCH_INTERVAL`],
/// moves the view to a new copy when there are, tells the kernel what went stale, rewrites a
/// lease that shrank and removes copies no longer read. Stopped and joined when dropped.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(vfs: Arc<Vfs>, reader: Arc<Reader>, notifier: fuser::Notifier) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("strata-watch".into())
            .spawn(move || {
                let mut failing = false;
                while !flag.load(Ordering::Relaxed) {
                    if vfs.outdated() {
                        match vfs.refresh() {
                            Ok(()) => failing = false,
                            Err(e) if !failing => {
                                failing = true;
                                log::warn!(
                                    "Could not read the changed repository (trying again): {e}"
                                );
                            }
                            Err(e) => log::debug!("Still cannot read the changed repository: {e}"),
                        }
                    }
                    vfs.tick();
                    let stale = vfs.take_stale();
                    if !stale.is_empty() {
                        fuse::invalidate(&notifier, &stale);
                    }
                    reader.remove_unused_copies();
                    std::thread::sleep(WATCH_INTERVAL);
                }
            })
            .ok();
        if thread.is_none() {
            log::error!("No watcher thread: the mount will not show new snapshots");
        }
        Watcher { stop, thread }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A repository mounted read-only and served from background threads.
pub struct Mounted {
    vfs: Arc<Vfs>,
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
    watcher: Watcher,
    _reader: Arc<Reader>,
}

impl Mounted {
    /// Mounts the repository `open` names at `mountpoint` (checked by [`check_mountpoint`]), live.
    /// `on_end` is signalled when the session ends by itself: unmounted from outside, or, after
    /// [`Mounted::detach`], when the last file open in it is closed.
    pub fn start(
        open: Open,
        mountpoint: &Path,
        vfs: VfsOptions,
        opts: &MountOptions,
        on_end: crossbeam_channel::Sender<()>,
    ) -> Result<Mounted> {
        let (vfs, reader) = open_live(open, vfs)?;
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
        let watcher = Watcher::start(vfs.clone(), reader.clone(), session.notifier());
        Ok(Mounted {
            vfs,
            session,
            mountpoint: mountpoint.to_path_buf(),
            watcher,
            _reader: reader,
        })
    }

    /// The view being served.
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }

    /// Lets go of a session that ended by itself (unmounted from outside): there is nothing left
    /// to unmount, and the mount point may already hold something else.
    pub fn ended(self) {
        drop(self.watcher);
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
                _watcher: self.watcher,
                _reader: self._reader,
            }),
            Err(e) => {
                drop(self.watcher);
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
    _watcher: Watcher,
    _reader: Arc<Reader>,
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
