//! Small file-system calls the repository and the backup share: making a directory's entries
//! durable, asking the kernel to start reading a file range ahead of its reader, and asking how
//! much space is left.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Makes the entries of directory `dir` durable (a rename, creation or removal in it), so what
/// follows in a commit order cannot reach the disk before them.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("Syncing directory", dir)
}

/// Asks the kernel to bring `len` bytes at `offset` of `file` into the page cache now
/// (`POSIX_FADV_WILLNEED`), so a sequential reader finds them there. Advice only: failures are
/// ignored.
pub fn will_need(file: &File, offset: u64, len: u64) {
    // SAFETY: fadvise on a valid, open descriptor; it reads nothing from our memory.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// Bytes an unprivileged writer can still allocate on the file system holding `path`
/// (`statvfs`: available blocks times the fragment size).
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        crate::Error::InvalidArgument(format!("{} contains a NUL byte", path.display()))
    })?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).ctx("Asking the free space of", path);
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Replaces `path` with `data` atomically and durably (temporary name, fsync, rename, directory
/// fsync): a reader sees the old bytes or the new, never a mix.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = File::create(&tmp).ctx("Creating", &tmp)?;
        f.write_all(data).ctx("Writing", &tmp)?;
        f.sync_all().ctx("Syncing", &tmp)?;
    }
    std::fs::rename(&tmp, path).ctx("Renaming", &tmp)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
