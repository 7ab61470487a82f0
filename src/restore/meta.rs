//! Metadata restore gives what it writes or keeps: owner (as root), mode, extended attributes
//! and mtime, set through a descriptor wherever one can be had, and the checks that decide
//! whether an existing path already has it.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::Stat;
use xattr::FileExt;

use super::plan::{Item, Role};
use super::{fsops, Run};
use crate::entry::{Entry, Kind};

/// The errno of a filesystem without extended attributes.
const ENOTSUP: i32 = rustix::io::Errno::NOTSUP.raw_os_error();

impl Run<'_> {
    /// Re-applies metadata to an existing regular file found identical in content, through a
    /// descriptor on which it is checked again to have one name: a file swapped for a hard link
    /// since is not touched.
    pub(super) fn refresh(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
    ) -> std::io::Result<()> {
        let f = fsops::open_file(dir, name)?;
        let m = f.metadata()?;
        if !m.is_file() || std::os::unix::fs::MetadataExt::nlink(&m) > 1 {
            return Err(std::io::Error::other(
                "it changed while restoring (now a hard link or not a file); left alone",
            ));
        }
        self.meta_fd(f.as_fd(), e, Some(&f))
    }

    /// Whether the existing path `name` (stat `st`), identical in content, also has exactly the
    /// metadata [`Run::refresh`] would give it: mode, mtime, owner (as root), xattrs (files).
    pub(super) fn meta_matches(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        it: &Item,
        st: &Stat,
    ) -> std::io::Result<bool> {
        let e = &it.entry;
        if let Role::Link(_) = it.role {
            return Ok(true); // same inode as its group's first path, which was handled
        }
        let mode_ok = e.kind == Kind::Symlink || st.st_mode & 0o7777 == e.mode & 0o7777;
        let owner_ok = !self.is_root || (st.st_uid, st.st_gid) == (e.uid, e.gid);
        if !(mode_ok && owner_ok && fsops::mtime_ns(st) == e.mtime_ns) {
            return Ok(false);
        }
        if e.kind != Kind::File {
            return Ok(true);
        }
        let f = fsops::open_file(dir, name)?;
        let have: Vec<_> = match f.list_xattr() {
            Ok(l) => l.collect(),
            Err(err) if err.raw_os_error() == Some(ENOTSUP) => Vec::new(),
            Err(err) => return Err(err),
        };
        use std::os::unix::ffi::OsStrExt;
        for n in &have {
            let b = n.as_bytes();
            if !b.starts_with(b"security.") && !e.xattrs.iter().any(|(w, _)| w == b) {
                return Ok(false);
            }
        }
        for (n, v) in &e.xattrs {
            if f.get_xattr(std::ffi::OsStr::from_bytes(n))?.as_deref() != Some(v.as_slice()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Mode, xattrs and mtime of a file this run just created with its permission bits in a
    /// clean directory, with the right owner already (the fast case of `write_new`).
    pub(super) fn meta_new_fd(&self, f: &std::fs::File, e: &Entry) -> std::io::Result<()> {
        if e.mode & 0o7000 != 0 || e.mode & 0o777 & self.umask != 0 {
            fsops::chmod_fd(f.as_fd(), e.mode)?;
        }
        set_new_xattrs(f, &e.xattrs)?;
        fsops::set_mtime_fd(f.as_fd(), e.mtime_ns)
    }

    /// Owner (as root), mode, xattrs (exactly the snapshot's), mtime, on an open file or dir.
    pub(super) fn meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        e: &Entry,
        file: Option<&std::fs::File>,
    ) -> std::io::Result<()> {
        if self.is_root {
            fsops::chown_fd(fd, e.uid, e.gid)?;
        }
        // After chown, which clears set-id bits.
        fsops::chmod_fd(fd, e.mode)?;
        if let Some(f) = file {
            set_xattrs(f, &e.xattrs)?;
        }
        fsops::set_mtime_fd(fd, e.mtime_ns)
    }

    /// Owner (as root), mode (`chmod`: not for symlinks), mtime, by name in `dir`.
    pub(super) fn meta_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        chmod: bool,
    ) -> std::io::Result<()> {
        if self.is_root {
            fsops::chown_at(dir, name, e.uid, e.gid)?;
        }
        if chmod {
            fsops::chmod_at(dir, name, e.mode)?;
        }
        fsops::set_mtime_at(dir, name, e.mtime_ns)
    }
}

/// Whether new entries in the target root `root`, or in directories restore creates beneath it,
/// inherit nothing: the root has no extended attribute other than `security.*` (a default ACL,
/// or a filesystem property such as btrfs compression, would be passed on to new files) and its
/// group is `gid` (a setgid root, or a `grpid` mount, gives new entries the directory's group).
pub(super) fn inherits_nothing(root: BorrowedFd<'_>, gid: u32) -> bool {
    if fsops::stat_fd(root).map_or(true, |st| st.st_gid != gid) {
        return false;
    }
    match fsops::xattr_names_fd(root) {
        Ok(names) => names.iter().all(|n| n.starts_with(b"security.")),
        Err(e) => e.raw_os_error() == Some(ENOTSUP),
    }
}

/// Gives `f`, a file just created in a clean directory (so without xattrs but perhaps a
/// `security.*` label), the extended attributes `want`.
fn set_new_xattrs(f: &std::fs::File, want: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    for (name, value) in want {
        let name = OsStr::from_bytes(name);
        if name.as_bytes().starts_with(b"security.")
            && f.get_xattr(name)?.as_deref() == Some(value.as_slice())
        {
            continue;
        }
        f.set_xattr(name, value)?;
    }
    Ok(())
}

/// Makes `f`'s extended attributes exactly `want` (sorted by name).
fn set_xattrs(f: &std::fs::File, want: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let have: Vec<_> = match f.list_xattr() {
        Ok(l) => l.collect(),
        Err(e) if e.raw_os_error() == Some(ENOTSUP) && want.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for n in have {
        let keep = want.iter().any(|(w, _)| w.as_slice() == n.as_bytes());
        // Only names restore could have set; security.* (e.g. SELinux labels) stays.
        if !keep && !n.as_bytes().starts_with(b"security.") {
            f.remove_xattr(&n)?;
        }
    }
    for (name, value) in want {
        let name = OsStr::from_bytes(name);
        if f.get_xattr(name)?.as_deref() != Some(value.as_slice()) {
            f.set_xattr(name, value)?;
        }
    }
    Ok(())
}
