//! A layer entry: one path's metadata and content, or a whiteout that hides the path in older layers.
//! Entries are what layers store and what every reader (ls, cat, the mount, restore) gets back.

use serde::{Deserialize, Serialize};

use crate::id::ChunkId;

/// What kind of filesystem object an entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Regular file, content in `chunks`.
    File,
    /// Directory; its children are keyed under its path.
    Dir,
    /// Symbolic link; target verbatim in `target`, never followed.
    Symlink,
    /// Named pipe (metadata only).
    Fifo,
    /// Character device (metadata and `rdev`).
    CharDev,
    /// Block device (metadata and `rdev`).
    BlockDev,
    /// Unix socket (metadata only).
    Socket,
    /// The path was deleted relative to the parent snapshot; hides older layers' entries.
    Whiteout,
}

impl Kind {
    /// One-letter type as in `ls -l`.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Fifo => 'p',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
            Kind::Socket => 's',
            Kind::Whiteout => 'w',
        }
    }

    /// Lowercase name used in `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
            Kind::Socket => "socket",
            Kind::Whiteout => "whiteout",
        }
    }
}

/// A run of file content stored as one chunk, placed at a logical offset. Gaps between runs are holes
/// (sparse regions) and read as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's content address.
    pub id: ChunkId,
    /// Offset of the chunk's first byte within the file.
    pub offset: u64,
    /// Plaintext length of the chunk.
    pub len: u32,
}

/// One path in one layer. Fields that do not apply to a kind are zero/empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Object type, or `Whiteout`.
    pub kind: Kind,
    /// Permission and special bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Apparent size in bytes (files: content length including holes; symlinks: target length).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time at backup, nanoseconds; used only for change detection.
    pub ctime_ns: i64,
    /// Source inode number; used for change detection and as the hard-link group key.
    pub ino: u64,
    /// Link count at backup time; > 1 means `ino` groups hard links.
    pub nlink: u32,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// A directory that is new in this layer: older layers' children of this path are hidden.
    pub opaque: bool,
    /// Symlink target, verbatim bytes.
    pub target: Vec<u8>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// File content, sorted by offset, non-overlapping.
    pub chunks: Vec<ChunkRef>,
}

impl Entry {
    /// A whiteout: the path no longer exists.
    pub fn whiteout() -> Entry {
        Entry {
            kind: Kind::Whiteout,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            nlink: 0,
            rdev: 0,
            opaque: false,
            target: Vec::new(),
            xattrs: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// Bytes of content actually stored (holes excluded); what `st_blocks` reflects.
    pub fn stored_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.len as u64).sum()
    }

    /// Index of the chunk containing `offset`, or of the first chunk after it when `offset` is in a
    /// hole. Binary search: reads never scan the chunk list.
    pub fn chunk_at(&self, offset: u64) -> usize {
        self.chunks
            .partition_point(|c| c.offset + c.len as u64 <= offset)
    }

    /// Serialized form stored in sled and in layer pack records.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("entry serializes")
    }

    /// Parses [`Entry::encode`] output.
    pub fn decode(bytes: &[u8]) -> crate::Result<Entry> {
        postcard::from_bytes(bytes)
            .map_err(|e| crate::Error::CorruptMetadata(format!("undecodable entry: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_at_binary_search_with_holes() {
        let id = ChunkId::of(b"x");
        let mut e = Entry::whiteout();
        e.kind = Kind::File;
        e.chunks = vec![
            ChunkRef {
                id,
                offset: 0,
                len: 100,
            },
            ChunkRef {
                id,
                offset: 1000,
                len: 100,
            },
            ChunkRef {
                id,
                offset: 1100,
                len: 50,
            },
        ];
        assert_eq!(e.chunk_at(0), 0);
        assert_eq!(e.chunk_at(99), 0);
        assert_eq!(e.chunk_at(100), 1); // in the hole: next chunk
        assert_eq!(e.chunk_at(1099), 1);
        assert_eq!(e.chunk_at(1100), 2);
        assert_eq!(e.chunk_at(1150), 3);
        assert_eq!(e.stored_size(), 250);
    }

    #[test]
    fn encode_round_trip() {
        let mut e = Entry::whiteout();
        e.kind = Kind::Symlink;
        e.target = b"../\xffweird\nname".to_vec();
        e.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert!(Entry::decode(&[0xff, 0xff]).is_err());
    }
}
