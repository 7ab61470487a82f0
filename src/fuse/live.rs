//! What a live view needs from the FUSE side: `readdirplus` entries held for the kernel before
//! they are handed out, and the invalidation notices that make the kernel forget what went stale
//! when the view moved to a newer copy of the index.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::ReplyDirectoryPlus;

use super::{file_attr, ttl};
use crate::vfs::{DirItem, Vfs};

/// Entries `readdirplus` holds for the kernel at once: about what one reply fits, so that few are
/// given back for lack of room, while the snapshots entered are leased once per batch.
const PLUS_BATCH: usize = 32;

/// Adds `items` of directory `dir` from position `from` to a `readdirplus` reply until it is
/// full. Every entry but `.` and `..` is a reference the kernel keeps, so each is held first
/// ([`Vfs::hold`]); one freed since the listing was made is looked up again, one whose snapshot
/// was forgotten meanwhile is left out, and the held ones that did not fit are given back.
pub(super) fn fill_plus(
    vfs: &Vfs,
    dir: u64,
    items: &[DirItem],
    from: usize,
    reply: &mut ReplyDirectoryPlus,
) {
    let mut i = from;
    while i < items.len() {
        let batch = &items[i..(i + PLUS_BATCH).min(items.len())];
        let counted = |d: &DirItem| d.name != b"." && d.name != b"..";
        let inos: Vec<u64> = batch
            .iter()
            .filter(|d| counted(d))
            .map(|d| d.attr.ino)
            .collect();
        let mut held = vfs.hold(&inos).into_iter();
        let mut pending: Vec<u64> = Vec::new();
        let mut full = false;
        for (k, d) in batch.iter().enumerate() {
            let pos = i + k;
            let mut attr = d.attr.clone();
            if counted(d) {
                if full {
                    if held.next() == Some(true) {
                        pending.push(attr.ino);
                    }
                    continue;
                }
                if held.next() != Some(true) {
                    match vfs.lookup_held(dir, &d.name) {
                        Ok(a) => attr = a,
                        Err(_) => continue,
                    }
                }
            } else if full {
                continue;
            }
            let name = OsStr::from_bytes(&d.name);
            if reply.add(
                attr.ino,
                pos as i64 + 1,
                name,
                &ttl(&attr),
                &file_attr(&attr),
                0,
            ) {
                full = true;
                if counted(d) {
                    pending.push(attr.ino);
                }
            }
        }
        for ino in pending {
            vfs.forget(ino, 1);
        }
        if full {
            return;
        }
        i += batch.len();
    }
}

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
