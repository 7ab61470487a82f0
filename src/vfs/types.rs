//! The plain types the vfs answers in (options, errors, attributes, directory items, xattr
//! replies), so the FUSE adapter and tests need nothing else from it.

use crate::error::Error;

/// Options for [`Vfs::open`].
#[derive(Clone, Debug)]
pub struct VfsOptions {
    /// Upper bound, in bytes, of the decompressed-chunk cache.
    pub cache_bytes: u64,
    /// Only show snapshots of these sources (empty: all).
    pub sources: Vec<String>,
    /// Owner shown for the synthetic top-level directories and symlinks.
    pub uid: u32,
    /// Group shown for the synthetic top-level directories and symlinks.
    pub gid: u32,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            cache_bytes: 256 << 20,
            sources: Vec::new(),
            uid: 0,
            gid: 0,
        }
    }
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
