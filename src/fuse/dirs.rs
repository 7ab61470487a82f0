//! Open directories: each handle pages through its listing with a [`DirCursor`], so a reply
//! costs the entries it carries and a directory is never listed whole into memory. The kernel
//! asks for the entries after the last one it received (the offset is that entry's position plus
//! one); an entry that did not fit in a reply is kept for the next request instead of being
//! read again. `readdirplus` entries are references the kernel keeps: each is held
//! ([`Vfs::hold`]) before it is added, and given back when it did not fit.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use fuser::{ReplyDirectory, ReplyDirectoryPlus};

use super::{file_attr, file_type, ttl};
use crate::vfs::{DirCursor, DirItem, Vfs, VfsError};

/// One open directory.
pub(super) struct Handle {
    cursor: DirCursor,
    /// Entries read but not yet handed out, with their positions (those before `cursor.pos()`).
    pending: VecDeque<(u64, DirItem)>,
}

/// Entries `readdirplus` reads and holds at once: about what a reply fits, so that the snapshots
/// entered are leased once per batch and few entries are given back for lack of room.
const PLUS_BATCH: usize = 32;

/// The open directories, by handle.
pub(super) type Handles = Arc<Mutex<HashMap<u64, Arc<Mutex<Handle>>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers handle `fh` of directory `ino` (its listing starts on the first readdir).
pub(super) fn open(vfs: &Vfs, handles: &Handles, ino: u64, fh: u64) -> Result<(), VfsError> {
    let cursor = vfs.dir_cursor(ino)?;
    lock(handles).insert(
        fh,
        Arc::new(Mutex::new(Handle {
            cursor,
            pending: VecDeque::new(),
        })),
    );
    Ok(())
}

/// Forgets handle `fh`.
pub(super) fn release(handles: &Handles, fh: u64) {
    lock(handles).remove(&fh);
}

/// The handle `fh` of directory `ino`; one the kernel never opened with us (it cannot happen,
/// but costs nothing) gets a cursor of its own.
fn handle(vfs: &Vfs, handles: &Handles, ino: u64, fh: u64) -> Result<Arc<Mutex<Handle>>, VfsError> {
    if let Some(h) = lock(handles).get(&fh).cloned() {
        return Ok(h);
    }
    open(vfs, handles, ino, fh)?;
    Ok(lock(handles).get(&fh).cloned().expect("inserted above"))
}

impl Handle {
    /// The entry at position `pos` (and that position), moving the cursor there first when the
    /// kernel asks for another place than where the listing stands.
    fn next_at(&mut self, vfs: &Vfs, pos: u64) -> Result<Option<(u64, DirItem)>, VfsError> {
        if let Some((at, d)) = self.pending.pop_front() {
            if at == pos {
                return Ok(Some((at, d)));
            }
            self.pending.clear();
        }
        vfs.dir_seek(&mut self.cursor, pos)?;
        let at = self.cursor.pos();
        Ok(vfs.dir_next(&mut self.cursor)?.map(|d| (at, d)))
    }

    /// Up to `n` entries from position `pos` on.
    fn take(&mut self, vfs: &Vfs, pos: u64, n: usize) -> Result<Vec<(u64, DirItem)>, VfsError> {
        let mut out = Vec::with_capacity(n);
        let mut pos = pos;
        while out.len() < n {
            let Some((at, d)) = self.next_at(vfs, pos)? else {
                break;
            };
            pos = at + 1;
            out.push((at, d));
        }
        Ok(out)
    }
}

/// Fills a `readdir` reply from position `offset` of handle `fh`.
pub(super) fn fill(
    vfs: &Vfs,
    handles: &Handles,
    ino: u64,
    fh: u64,
    offset: u64,
    reply: &mut ReplyDirectory,
) -> Result<(), VfsError> {
    let h = handle(vfs, handles, ino, fh)?;
    let mut h = lock(&h);
    let mut pos = offset;
    while let Some((at, d)) = h.next_at(vfs, pos)? {
        let name = OsStr::from_bytes(&d.name);
        if reply.add(d.attr.ino, at as i64 + 1, file_type(d.attr.kind), name) {
            h.pending.push_front((at, d));
            break;
        }
        pos = at + 1;
    }
    Ok(())
}

/// Fills a `readdirplus` reply from position `offset` of handle `fh`. Every entry but `.` and
/// `..` is a reference the kernel keeps, so each is held first; one freed since it was listed
/// is looked up again, one whose snapshot was forgotten meanwhile is left out, and one that did
/// not fit is given back and kept for the next request.
pub(super) fn fill_plus(
    vfs: &Vfs,
    handles: &Handles,
    ino: u64,
    fh: u64,
    offset: u64,
    reply: &mut ReplyDirectoryPlus,
) -> Result<(), VfsError> {
    let h = handle(vfs, handles, ino, fh)?;
    let mut h = lock(&h);
    let mut pos = offset;
    loop {
        let batch = h.take(vfs, pos, PLUS_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        let counted = |d: &DirItem| d.name != b"." && d.name != b"..";
        let inos: Vec<u64> = batch
            .iter()
            .filter(|(_, d)| counted(d))
            .map(|(_, d)| d.attr.ino)
            .collect();
        let mut held = vfs.hold(&inos).into_iter();
        let mut rest = batch.into_iter();
        while let Some((at, d)) = rest.next() {
            pos = at + 1;
            let mut attr = d.attr.clone();
            if counted(&d) && held.next() != Some(true) {
                match vfs.lookup_held(ino, &d.name) {
                    Ok(a) => attr = a,
                    Err(_) => continue,
                }
            }
            let name = OsStr::from_bytes(&d.name);
            if reply.add(
                attr.ino,
                pos as i64,
                name,
                &ttl(&attr),
                &file_attr(&attr),
                0,
            ) {
                // Full: this entry and the rest of the batch go back, and wait for the next
                // request.
                if counted(&d) {
                    vfs.forget(attr.ino, 1);
                }
                let mut back = vec![(at, d)];
                for (at, d) in rest {
                    if counted(&d) && held.next() == Some(true) {
                        vfs.forget(d.attr.ino, 1);
                    }
                    back.push((at, d));
                }
                for e in back.into_iter().rev() {
                    h.pending.push_front(e);
                }
                return Ok(());
            }
        }
    }
}
