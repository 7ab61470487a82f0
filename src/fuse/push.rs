//! Directory readahead, the FUSE half: stores the small files [`Vfs::files_to_push`] names into
//! the kernel page cache with `FUSE_NOTIFY_STORE`, so a tree reader finds them there and makes no
//! round trip (see [`crate::vfs::dirahead`] for the policy and the measurements behind it).
//!
//! The bytes pushed are the ones a read would return: the same verified chunks, the same
//! reconstruction. A push that fails (the kernel forgot the inode, the mount is going away) is
//! dropped; the reader then simply asks.

use std::sync::{Arc, OnceLock};

use fuser::Notifier;

use crate::vfs::Vfs;

/// Batches waiting to be pushed; beyond this new batches are dropped (readers just ask).
const QUEUE: usize = 64;

/// The pushing thread and its queue.
pub struct Pusher {
    tx: crossbeam_channel::Sender<Vec<(u64, u64)>>,
    notifier: Arc<OnceLock<Notifier>>,
}

impl Pusher {
    /// Starts the pushing thread. Nothing is pushed until [`set_notifier`](Self::set_notifier).
    pub fn start(vfs: Arc<Vfs>) -> Pusher {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<(u64, u64)>>(QUEUE);
        let notifier = Arc::new(OnceLock::<Notifier>::new());
        let n = notifier.clone();
        std::thread::Builder::new()
            .name("strata-push".into())
            .spawn(move || {
                let (mut pushed, mut bytes) = (0u64, 0u64);
                for batch in rx {
                    let Some(n) = n.get() else { continue };
                    for (ino, size) in batch {
                        let Ok(len) = u32::try_from(size) else {
                            continue;
                        };
                        match vfs.read_with(ino, 0, len, |data| n.store(ino, 0, data)) {
                            Ok(Ok(())) => {
                                pushed += 1;
                                bytes += size;
                                vfs.stats().pushed(size);
                            }
                            // ENOENT: the kernel no longer knows the inode; nothing to do.
                            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => {}
                            Ok(Err(e)) => {
                                log::debug!("Push stopped after {pushed} files: {e}");
                                return;
                            }
                            // Already logged by the vfs; the reader will get the error itself.
                            Err(_) => {}
                        }
                    }
                    log::trace!("Pushed {pushed} files, {bytes} bytes so far");
                }
            })
            .expect("spawn push thread");
        Pusher { tx, notifier }
    }

    /// Hands over the session's notifier (it exists only once the session does).
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// `ino` was read from its start: queue its directory's next files.
    pub fn after_read(&self, vfs: &Vfs, ino: u64) {
        if self.notifier.get().is_none() {
            return;
        }
        let files = vfs.files_to_push(ino);
        if !files.is_empty() {
            let _ = self.tx.try_send(files);
        }
    }
}
