//! Filesystem operations relative to directory descriptors, none of which follows a symlink: the
//! mechanism behind restore's rule that nothing is ever written outside the target.
//!
//! Every directory restore writes into is opened beneath the target's descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or, on kernels without it, one
//! `openat(O_NOFOLLOW | O_DIRECTORY)` per component), and every object is then created, renamed or
//! removed by a single name relative to that descriptor. A symlink anywhere on the way, planted
//! by the snapshot or already present in the target, makes the open fail instead of being
//! followed. Callers must pass single, validated names (no `/`, not `.` or `..`).
//!
//! The system calls are rustix's safe wrappers; a name with a NUL byte fails with `EINVAL`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;

/// Opens the target directory itself (a user-given path: symlinks in it are followed).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Opens directory `rel` (relative, `/`-separated, empty = `root` itself) beneath `root`, refusing
/// to pass through any symlink or to leave `root`.
pub fn open_beneath(root: &OwnedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        return Ok(rustix::io::fcntl_dupfd_cloexec(root, 0)?);
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOSYS | Errno::PERM) => open_beneath_walk(root, rel),
        Err(e) => Err(e.into()),
    }
}

/// [`open_beneath`] without `openat2` (old kernels, seccomp): one component at a time, never
/// following a link, refusing `..`.
fn open_beneath_walk(root: &OwnedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    let mut cur = open_beneath(root, b"")?;
    for comp in rel.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(Errno::XDEV.into());
        }
        cur = open_dir_at(cur.as_fd(), comp)?;
    }
    Ok(cur)
}

/// Opens the directory `name` inside `dir`, failing on a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// `lstat` of `name` inside `dir`; `None` when it does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat` of an open file or directory.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// Creates a new regular file `name` in `dir` with permission bits `mode` (less the umask, or as
/// a default ACL says) for reading and writing; fails if anything exists.
pub fn create_file(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode & 0o777))?;
    Ok(File::from(fd))
}

/// Opens the existing regular file `name` in `dir` for reading, failing on a symlink. Reading
/// it does not update its atime where the kernel allows (`O_NOATIME`: owner or root), so
/// comparing a file, perhaps a hard link to one outside the target, changes nothing.
pub fn open_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    // O_NONBLOCK: a FIFO swapped in never blocks us.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty())?,
        r => r?,
    };
    Ok(File::from(fd))
}

/// Creates directory `name` in `dir` with `mode`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// Renames `from` to `to`, both in `dir`, replacing `to` unless it is a non-empty directory.
pub fn rename_at(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

/// Removes the non-directory `name` from `dir` (or an empty directory with `is_dir`).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &[u8], is_dir: bool) -> io::Result<()> {
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    Ok(rustix::fs::unlinkat(dir, name, flags)?)
}

/// Removes `name` from `dir`, a directory with everything in it; never follows a symlink.
/// Returns the number of paths removed.
pub fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<u64> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(0);
    };
    if file_type(&st) != FileType::Directory {
        unlink_at(dir, name, false)?;
        return Ok(1);
    }
    let sub = open_dir_at(dir, name)?;
    let mut n = 0;
    for child in read_names(sub.as_fd())? {
        n += remove_all(sub.as_fd(), &child)?;
    }
    drop(sub);
    unlink_at(dir, name, true)?;
    Ok(n + 1)
}

/// Creates symlink `name` in `dir` pointing at `target` (verbatim).
pub fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// Target of symlink `name` in `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Creates a FIFO or device node `name` in `dir`; `kind` is its file type, `mode` its
/// permission bits.
pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    kind: FileType,
    mode: u32,
    dev: u64,
) -> io::Result<()> {
    Ok(rustix::fs::mknodat(
        dir,
        name,
        kind,
        Mode::from_raw_mode(mode),
        dev,
    )?)
}

/// Hard-links `from` in `from_dir` as `to` in `to_dir`; does not follow a symlink at `from`.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &[u8],
    to_dir: BorrowedFd<'_>,
    to: &[u8],
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        from_dir,
        from,
        to_dir,
        to,
        AtFlags::empty(),
    )?)
}

/// Owner and group as rustix takes them: `u32::MAX` (-1) means "leave unchanged", as for
/// `chown(2)` itself.
fn ids(uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
    (
        (uid != u32::MAX).then(|| Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| Gid::from_raw(gid)),
    )
}

/// `lchown` of `name` in `dir`.
pub fn chown_at(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = ids(uid, gid);
    Ok(rustix::fs::chownat(
        dir,
        name,
        u,
        g,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `chmod` of `name` in `dir`; only for objects restore itself just created (not symlinks).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?)
}

fn times(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    }
}

/// Sets the mtime (ns) of `name` in `dir` itself (a symlink, not its target); atime untouched.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &[u8], mtime_ns: i64) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        dir,
        name,
        &times(mtime_ns),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Sets the mtime (ns) of an open file or directory; atime untouched.
pub fn set_mtime_fd(fd: BorrowedFd<'_>, mtime_ns: i64) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &times(mtime_ns))?)
}

/// `fchown` of an open file or directory.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = ids(uid, gid);
    Ok(rustix::fs::fchown(fd, u, g)?)
}

/// `fchmod` of an open file or directory.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// Names of the extended attributes of the open file or directory `fd`.
pub fn xattr_names_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    loop {
        let mut buf = vec![0u8; rustix::fs::flistxattr_query(fd)?];
        let m = match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(m) => m,
            Err(Errno::RANGE) => continue, // grew in between
            Err(e) => return Err(e.into()),
        };
        buf.truncate(m);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_vec())
            .collect());
    }
}

/// Names in the open directory `dir` (without `.` and `..`), unsorted.
pub fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // The stream owns a duplicate, not a new open of "." (which would need search permission),
    // and reads from the start whatever `dir`'s position.
    let mut stream = rustix::fs::Dir::new(rustix::io::fcntl_dupfd_cloexec(dir, 0)?)?;
    stream.rewind();
    let mut out = Vec::new();
    for ent in stream {
        let name = ent?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(name);
        }
    }
    Ok(out)
}

/// The file type of a stat result.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The mtime of a stat result in ns since the epoch.
pub fn mtime_ns(st: &Stat) -> i64 {
    st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64
}

/// The file type bits of a stat result, as a short word for messages.
pub fn type_name(st: &Stat) -> &'static str {
    match file_type(st) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "chardev",
        FileType::BlockDevice => "blockdev",
        FileType::Socket => "socket",
        FileType::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_beneath_refuses_symlinks_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(t.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("a", root.join("rel-link")).unwrap();
        let fd = open_root(&root).unwrap();
        assert!(open_beneath(&fd, b"a/b").is_ok());
        assert!(open_beneath(&fd, b"").is_ok());
        assert!(open_beneath(&fd, b"link").is_err());
        assert!(open_beneath(&fd, b"rel-link/b").is_err());
        assert!(open_beneath(&fd, b"../outside").is_err());
        assert!(open_beneath(&fd, b"/tmp").is_err());
        // The same answers without openat2.
        assert!(open_beneath_walk(&fd, b"a/b").is_ok());
        assert!(open_beneath_walk(&fd, b"link").is_err());
        assert!(open_beneath_walk(&fd, b"rel-link/b").is_err());
        assert!(open_beneath_walk(&fd, b"../outside").is_err());
        assert!(open_beneath_walk(&fd, b"/tmp").is_err());
        let mut names = read_names(fd.as_fd()).unwrap();
        names.sort();
        assert_eq!(names, [&b"a"[..], b"link", b"rel-link"]);
        // The descriptor's position, moved by the first listing, does not shorten the next.
        assert_eq!(read_names(fd.as_fd()).unwrap().len(), 3);
        // remove_all removes a symlink, never what it points at.
        std::fs::write(t.path().join("outside/keep"), b"x").unwrap();
        assert_eq!(remove_all(fd.as_fd(), b"link").unwrap(), 1);
        assert!(t.path().join("outside/keep").exists());
        assert_eq!(remove_all(fd.as_fd(), b"a").unwrap(), 2);
    }
}
