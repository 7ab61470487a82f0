//! Reading filesystem metadata into entries: lstat fields, xattrs, symlink targets, and the data
//! segments of sparse files. Nothing here follows symlinks.

use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::entry::{Entry, Kind};

/// Builds an entry (without content, xattrs or target) from `lstat` metadata.
pub fn entry_from_meta(m: &Metadata) -> Entry {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        Kind::Socket
    };
    let mut e = Entry::whiteout();
    e.kind = kind;
    e.mode = m.mode() & 0o7777;
    e.uid = m.uid();
    e.gid = m.gid();
    e.size = if matches!(kind, Kind::File | Kind::Symlink) {
        m.size()
    } else {
        0
    };
    e.mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    e.ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
    e.ino = m.ino();
    e.nlink = m.nlink() as u32;
    e.rdev = if matches!(kind, Kind::CharDev | Kind::BlockDev) {
        m.rdev()
    } else {
        0
    };
    e
}

/// True when nothing change detection looks at differs: the file need not be read again.
///
/// Size, mtime, ctime and inode must all be equal. Any other change (mode, owner, xattrs, or
/// content rewritten in place with the old mtime put back) moves the ctime, and the file is read
/// again: tools such as `touch -r`, `cp --preserve=timestamps`, `rsync --inplace -t` and tar
/// restore mtimes, so an mtime alone never proves the content is the same. Dedup keeps the reread
/// cheap.
pub fn unchanged(old: &Entry, new: &Entry) -> bool {
    old.kind == new.kind
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.ino == new.ino
        && old.mode == new.mode
        && old.uid == new.uid
        && old.gid == new.gid
        && old.rdev == new.rdev
        && old.nlink == new.nlink
}

/// How far a file timestamp may lag the real clock: the filesystem's timestamp granularity. A
/// file whose nanoseconds are both zero is taken to be on a filesystem that keeps whole seconds
/// (FAT keeps two); elsewhere timestamps come from the kernel's coarse clock, one tick behind at
/// most (1-10 ms), and 20 ms covers every tick rate.
pub fn racy_window_ns(e: &Entry) -> i64 {
    if e.ctime_ns % 1_000_000_000 == 0 && e.mtime_ns % 1_000_000_000 == 0 {
        2_000_000_000
    } else {
        20_000_000
    }
}

/// True when `e`'s last change is so close to `started_ns` (the clock when its read began) that
/// another write in the same timestamp tick could follow the read without moving size, mtime
/// or ctime. Such a read does not prove the content for that ctime (git's "racily clean").
pub fn racy(e: &Entry, started_ns: i64) -> bool {
    e.ctime_ns + racy_window_ns(e) > started_ns
}

/// Extended attributes of `path` itself (not a symlink's target), sorted by name. Filesystems
/// without xattr support yield an empty list.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        if let Some(v) = xattr::get(path, &n)? {
            out.push((n.as_bytes().to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Byte ranges of `file` (of `size` bytes) that hold data; holes between them read as zeros.
/// Filesystems without SEEK_DATA report one range covering the file.
pub fn data_segments(file: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(_) => return vec![(0, size)],
        };
        if data >= size {
            break;
        }
        let end = seek(file, SeekFrom::Hole(data)).map_or(size, |hole| hole.min(size));
        out.push((data, end));
        pos = end;
    }
    out
}

/// This machine's host name.
pub fn hostname() -> String {
    String::from_utf8_lossy(rustix::system::uname().nodename().to_bytes()).into_owned()
}
