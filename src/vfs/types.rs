//! The plain types the vfs answers in (options, errors, attributes, directory items, xattr
//! replies), so the FUSE adapter and tests need nothing else from it.

use crate::error::Error;

/// Options for [`Vfs::open`]. The `strata mount` options are these fields (clap), so the CLI
/// fills them directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, clap::Args)]
pub struct VfsOptions {
    /// Upper bound, in bytes, of the decompressed-chunk cache.
    #[arg(
        long = "cache-size",
        default_value = "256M",
        value_parser = parse_size,
        value_name = "SIZE",
        help = "Memory for decompressed chunks, e.g. 256M, 1G, 512MiB or a byte count"
    )]
    pub cache_bytes: u64,
    /// Only show snapshots of these sources (empty: all).
    #[arg(
        long = "source",
        value_name = "NAME",
        help = "Only show snapshots of this source (repeatable)"
    )]
    pub sources: Vec<String>,
    /// Owner shown for the synthetic top-level directories and symlinks: by default the user
    /// the process runs as, who mounted it.
    #[arg(skip = rustix::process::getuid().as_raw())]
    pub uid: u32,
    /// Group shown for the synthetic top-level directories and symlinks: by default the
    /// process's group.
    #[arg(skip = rustix::process::getgid().as_raw())]
    pub gid: u32,
    /// Estimated memory of the inode table past which the kernel is asked to forget the
    /// entries it was given longest ago (see the `trim` module).
    #[arg(skip = TABLE_BYTES)]
    pub table_bytes: u64,
}

/// Default of [`VfsOptions::table_bytes`]: about 60,000 entries of small files.
pub const TABLE_BYTES: u64 = 64 << 20;

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            cache_bytes: 256 << 20,
            sources: Vec::new(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            table_bytes: TABLE_BYTES,
        }
    }
}

/// Parses a byte count: `123`, `64K`, `256M`, `1G`, `2T`, with an optional `iB`/`B` suffix
/// (powers of 1024), as `--cache-size` takes it.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        Some('t') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("Not a size: {s:?} (try 256M or 1G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("Size too large: {s:?}"))
}

/// What can go wrong in a filesystem operation. The FUSE adapter maps each variant to one errno.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// No such name or inode.
    #[error("No such file or directory")]
    NotFound,
    /// A directory operation on something else.
    #[error("Not a directory")]
    NotADirectory,
    /// A file operation on a directory.
    #[error("Is a directory")]
    IsADirectory,
    /// `readlink` of something that is not a symlink, or reading a non-regular file.
    #[error("Invalid argument for this kind of file")]
    InvalidKind,
    /// The extended attribute does not exist.
    #[error("No such extended attribute")]
    NoXattr,
    /// The caller's buffer is too small for the value.
    #[error("Buffer too small")]
    Range,
    /// Any modification: the mount is read-only.
    #[error("Read-only file system")]
    ReadOnly,
    /// Repository data failed verification (chunk hash, undecodable metadata).
    #[error("Corrupt data under {path}: {source}")]
    Corrupt {
        /// Path in the mount.
        path: String,
        /// The repository error, naming the chunk.
        source: Error,
    },
    /// Any other repository error (I/O, database).
    #[error("Repository error under {path}: {source}")]
    Repo {
        /// Path in the mount.
        path: String,
        /// The repository error.
        source: Error,
    },
}

/// Shorthand for vfs results.
pub type VfsResult<T> = std::result::Result<T, VfsError>;

pub(super) fn repo_err(path: impl FnOnce() -> String) -> impl FnOnce(Error) -> VfsError {
    move |e| match e {
        Error::PathNotFound { .. } | Error::SnapshotNotFound(_) => VfsError::NotFound,
        Error::NotADirectory { .. } => VfsError::NotADirectory,
        e if e.is_corruption() => VfsError::Corrupt {
            path: path(),
            source: e,
        },
        e => VfsError::Repo {
            path: path(),
            source: e,
        },
    }
}

/// Object types as the kernel sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Unix socket.
    Socket,
}

/// Attributes of one inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (stable for the life of the mount).
    pub ino: u64,
    /// Object type.
    pub kind: FileKind,
    /// Permission and special bits (`& 0o7777`).
    pub perm: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Apparent size in bytes.
    pub size: u64,
    /// 512-byte blocks actually stored (holes excluded).
    pub blocks: u64,
    /// Modification time (also shown as atime and ctime), ns since the epoch.
    pub mtime_ns: i64,
    /// Device number (Linux `dev_t` encoding) for devices.
    pub rdev: u64,
    /// True for snapshot content (never changes: long cache TTLs); false for the top-level lists.
    pub immutable: bool,
    /// True for the content of a forgotten snapshot that someone still holds (an open file, a
    /// working directory): the kernel is to keep no entry of it past its use (TTL zero), so
    /// that it lets go, and the lease ends, as soon as its last user does.
    pub fleeting: bool,
}

/// One directory entry as returned by [`Vfs::readdir`].
#[derive(Clone, Debug)]
pub struct DirItem {
    /// Name bytes (`.` and `..` included first).
    pub name: Vec<u8>,
    /// The child's attributes (for readdirplus).
    pub attr: Attr,
}

/// Answer to a size-probing xattr call (`size == 0` asks for the length only).
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The value's length.
    Size(u32),
    /// The value itself.
    Data(Vec<u8>),
}

/// Applies getxattr/listxattr size semantics: probe with 0, `Range` when the buffer is too small.
pub fn xattr_reply(value: Vec<u8>, size: u32) -> VfsResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(value.len() as u32))
    } else if (size as usize) < value.len() {
        Err(VfsError::Range)
    } else {
        Ok(XattrReply::Data(value))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2gb").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
