//! Filesystem operations relative to directory descriptors, none of which follows a symlink: the
//! mechanism behind restore's rule that nothing is ever written outside the target.
//!
//! Every directory restore writes into is opened beneath the target's descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or, on kernels without it, one
//! `openat(O_NOFOLLOW | O_DIRECTORY)` per component), and every object is then created, renamed or
//! removed by a single name relative to that descriptor. A symlink anywhere on the way, planted
//! by the snapshot or already present in the target, makes the open fail instead of being
//! followed. Callers must pass single, validated names (no `/`, not `.` or `..`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    check(fd)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the target directory itself (a user-given path: symlinks in it are followed).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens directory `rel` (relative, `/`-separated, empty = `root` itself) beneath `root`, refusing
/// to pass through any symlink or to leave `root`.
pub fn open_beneath(root: &OwnedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        // SAFETY: duplicating a valid descriptor.
        return owned(unsafe { libc::fcntl(root.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) });
    }
    let c = cstr(rel)?;
    // SAFETY: open_how is plain data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid descriptor, C string and open_how of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if rc >= 0 {
        return owned(rc as libc::c_int);
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
        return Err(err);
    }
    open_beneath_walk(root, rel)
}

/// [`open_beneath`] without `openat2` (old kernels, seccomp): one component at a time, never
/// following a link, refusing `..`.
fn open_beneath_walk(root: &OwnedFd, rel: &[u8]) -> io::Result<OwnedFd> {
    let mut cur = open_beneath(root, b"")?;
    for comp in rel.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        cur = open_dir_at(cur.as_raw_fd(), comp)?;
    }
    Ok(cur)
}

/// Opens the directory `name` inside `dir`, failing on a symlink.
pub fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    owned(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// `lstat` of `name` inside `dir`; `None` when it does not exist.
pub fn stat_at(dir: RawFd, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and stat buffer.
    let rc = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        return Ok(Some(st));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Creates a new regular file `name` in `dir` with permission bits `mode` (less the umask, or as
/// a default ACL says) for reading and writing; fails if anything exists.
pub fn create_file(dir: RawFd, name: &[u8], mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    let fd = owned(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            (mode & 0o777) as libc::c_uint,
        )
    })?;
    Ok(File::from(fd))
}

/// Opens the existing regular file `name` in `dir` for reading, failing on a symlink. Reading
/// it does not update its atime where the kernel allows (`O_NOATIME`: owner or root), so
/// comparing a file, perhaps a hard link to one outside the target, changes nothing.
pub fn open_file(dir: RawFd, name: &[u8]) -> io::Result<File> {
    let c = cstr(name)?;
    // O_NONBLOCK: a FIFO swapped in never blocks us.
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: valid descriptor and C string.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_NOATIME) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        // SAFETY: as above.
        return Ok(File::from(owned(unsafe {
            libc::openat(dir, c.as_ptr(), flags)
        })?));
    }
    Ok(File::from(owned(fd)?))
}

/// Creates directory `name` in `dir` with `mode`.
pub fn mkdir_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// Renames `from` to `to`, both in `dir`, replacing `to` unless it is a non-empty directory.
pub fn rename_at(dir: RawFd, from: &[u8], to: &[u8]) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::renameat(dir, f.as_ptr(), dir, t.as_ptr()) }).map(drop)
}

/// Removes the non-directory `name` from `dir` (or an empty directory with `dir_flag`).
pub fn unlink_at(dir: RawFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(drop)
}

/// Removes `name` from `dir`, a directory with everything in it; never follows a symlink.
/// Returns the number of paths removed.
pub fn remove_all(dir: RawFd, name: &[u8]) -> io::Result<u64> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(0);
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        unlink_at(dir, name, false)?;
        return Ok(1);
    }
    let sub = open_dir_at(dir, name)?;
    let mut n = 0;
    for child in read_names(sub.as_raw_fd())? {
        n += remove_all(sub.as_raw_fd(), &child)?;
    }
    drop(sub);
    unlink_at(dir, name, true)?;
    Ok(n + 1)
}

/// Creates symlink `name` in `dir` pointing at `target` (verbatim).
pub fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(drop)
}

/// Target of symlink `name` in `dir`.
pub fn readlink_at(dir: RawFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid descriptor, C string and buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            dir,
            c.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Creates a FIFO or device node `name` in `dir`; `mode` includes the file type bits.
pub fn mknod_at(dir: RawFd, name: &[u8], mode: u32, dev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) })
        .map(drop)
}

/// Hard-links `from` in `from_dir` as `to` in `to_dir`; does not follow a symlink at `from`.
pub fn link_at(from_dir: RawFd, from: &[u8], to_dir: RawFd, to: &[u8]) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid descriptors and C strings.
    check(unsafe { libc::linkat(from_dir, f.as_ptr(), to_dir, t.as_ptr(), 0) }).map(drop)
}

/// `lchown` of `name` in `dir`.
pub fn chown_at(dir: RawFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// `chmod` of `name` in `dir`; only for objects restore itself just created (not symlinks).
pub fn chmod_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::fchmodat(dir, c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

fn times(mtime_ns: i64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    ]
}

/// Sets the mtime (ns) of `name` in `dir` itself (a symlink, not its target); atime untouched.
pub fn set_mtime_at(dir: RawFd, name: &[u8], mtime_ns: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = times(mtime_ns);
    // SAFETY: valid descriptor, C string and timespec array.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// Sets the mtime (ns) of an open file or directory; atime untouched.
pub fn set_mtime_fd(fd: RawFd, mtime_ns: i64) -> io::Result<()> {
    let ts = times(mtime_ns);
    // SAFETY: valid descriptor and timespec array.
    check(unsafe { libc::futimens(fd, ts.as_ptr()) }).map(drop)
}

/// `fchown` of an open file or directory.
pub fn chown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchown(fd, uid, gid) }).map(drop)
}

/// `fchmod` of an open file or directory.
pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) }).map(drop)
}

/// Names of the extended attributes of the open file or directory `fd`.
pub fn xattr_names_fd(fd: RawFd) -> io::Result<Vec<Vec<u8>>> {
    loop {
        // SAFETY: valid descriptor; a null buffer of size 0 asks for the size.
        let n = unsafe { libc::flistxattr(fd, std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: valid descriptor and buffer of the given length.
        let m = unsafe { libc::flistxattr(fd, buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_vec())
            .collect());
    }
}

/// Names in the open directory `dir` (without `.` and `..`), unsorted.
pub fn read_names(dir: RawFd) -> io::Result<Vec<Vec<u8>>> {
    // fdopendir takes ownership of its descriptor: give it a duplicate.
    // SAFETY: duplicating a valid descriptor.
    let dup = check(unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `dup` is a valid directory descriptor we own; on success DIR owns it.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own `dup`.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // SAFETY: rewind so a descriptor read before starts from the beginning.
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is a valid DIR stream.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated string inside the dirent.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            out.push(name.to_vec());
        }
    }
    // SAFETY: closes the stream and `dup`.
    unsafe { libc::closedir(d) };
    Ok(out)
}

/// The file type bits of a stat result, as a short word for messages.
pub fn type_name(st: &libc::stat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
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
        let mut names = read_names(fd.as_raw_fd()).unwrap();
        names.sort();
        assert_eq!(names, [&b"a"[..], b"link", b"rel-link"]);
        // remove_all removes a symlink, never what it points at.
        std::fs::write(t.path().join("outside/keep"), b"x").unwrap();
        assert_eq!(remove_all(fd.as_raw_fd(), b"link").unwrap(), 1);
        assert!(t.path().join("outside/keep").exists());
        assert_eq!(remove_all(fd.as_raw_fd(), b"a").unwrap(), 2);
    }
}
