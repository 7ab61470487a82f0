//! Unit tests of the fuser adapter: the errno table and attribute encoding.

use super::*;

#[test]
fn errno_table() {
    assert_eq!(errno(&VfsError::NotFound), libc::ENOENT);
    assert_eq!(errno(&VfsError::ReadOnly), libc::EROFS);
    assert_eq!(errno(&VfsError::Range), libc::ERANGE);
    assert_eq!(errno(&VfsError::NoXattr), libc::ENODATA);
    assert_eq!(errno(&VfsError::NotADirectory), libc::ENOTDIR);
    let corrupt = VfsError::Corrupt {
        path: "x".into(),
        source: crate::Error::MissingChunk(crate::id::ChunkId::of(b"")),
    };
    assert_eq!(errno(&corrupt), libc::EIO);
}

#[test]
fn rdev_encoding_matches_kernel() {
    assert_eq!(fuse_rdev(libc::makedev(1, 3)), 0x103);
    // Large minor numbers go to the high bits, as new_encode_dev does.
    assert_eq!(
        fuse_rdev(libc::makedev(8, 0x12345)),
        0x45 | (8 << 8) | (0x12300 << 12)
    );
}

#[test]
fn negative_times() {
    assert_eq!(
        system_time(-1_500_000_000),
        UNIX_EPOCH - Duration::from_millis(1500)
    );
}
