//! What a live view needs from the FUSE side: the invalidation notices that make the kernel
//! forget what went stale when the view moved to a newer copy of the index.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Tells the kernel what it may remember that is no longer so (see [`crate::vfs::Stale`]):
/// entries are dropped (the kernel keeps an entry in use until its last user lets go, then
/// forgets it), attributes and symlink targets read again. The kernel answers `ENOENT` for what
/// it does not have cached; that is no error.
pub fn invalidate(notifier: &fuser::Notifier, stale: &crate::vfs::Stale) {
    for (parent, name) in &stale.entries {
        if let Err(e) = notifier.inval_entry(*parent, OsStr::from_bytes(name)) {
            log::debug!(
                "Invalidating entry {parent}/{}: {e}",
                String::from_utf8_lossy(name)
            );
        }
    }
    for ino in &stale.attrs {
        if let Err(e) = notifier.inval_inode(*ino, -1, 0) {
            log::debug!("Invalidating the attributes of inode {ino}: {e}");
        }
    }
    for ino in &stale.links {
        if let Err(e) = notifier.inval_inode(*ino, 0, 0) {
            log::debug!("Invalidating the symlink {ino}: {e}");
        }
    }
}
