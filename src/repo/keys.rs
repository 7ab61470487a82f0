//! The sled trees and their key layouts — the one place that knows them (documented in
//! docs/FORMAT.md, which must change when this file does). Integers in keys are big-endian so range
//! scans iterate in numeric order.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | ASCII name | per key, see `META_*` |
//! | `chunks` | chunk id (32) | [`Location`] (25 bytes) |
//! | `snapshots` | snapshot id (16) | postcard `Snapshot` |
//! | `layers` | snapshot id (16) ‖ dir path ‖ 0x00 ‖ name | postcard `Entry` |
//! | `layerdirs` | snapshot id (16) ‖ dir path | flags u8 (bit 0: opaque) |
//! | `commits` | ASCII name | see [`TREE_COMMITS`] |

use crate::id::{PackId, SnapshotId};

/// Tree names.
pub const TREE_META: &str = "meta";
/// Chunk id → location in a pack.
pub const TREE_CHUNKS: &str = "chunks";
/// Snapshot id → snapshot record.
pub const TREE_SNAPSHOTS: &str = "snapshots";
/// Layer entries, keyed by snapshot, directory and name.
pub const TREE_LAYERS: &str = "layers";
/// Directories each layer touches.
pub const TREE_LAYERDIRS: &str = "layerdirs";

/// `meta` key: format version, u32 big-endian.
pub const META_FORMAT: &[u8] = b"format";
/// `meta` key: default zstd level for new chunks, i32 big-endian.
pub const META_COMPRESSION: &[u8] = b"compression";
/// `meta` key: the zstd dictionary for small chunks (raw bytes), once trained.
pub const META_DICTIONARY: &[u8] = b"dictionary";

/// Tree of the commit marker: [`COMMITS_INSTANCE`] and [`COMMITS_COUNT`]. Kept apart from
/// `meta` because it describes this database file, not the repository: `repair` builds a new
/// database without it.
pub const TREE_COMMITS: &str = "commits";
/// `commits` key: 16 random bytes naming this database.
pub const COMMITS_INSTANCE: &[u8] = b"instance";
/// `commits` key: flushes completed in this database, u64 big-endian. The file `index/commits`
/// holds the instance and the count as of the last completed flush; a database whose count is
/// lower than the file's, for the same instance, lost flushed writes (a truncated log, which sled
/// alone reads as an older state).
pub const COMMITS_COUNT: &[u8] = b"count";
/// `meta` key: an unfinished `forget`/`consolidate` (see `crate::forget`), postcard.
pub const META_PENDING_REWRITE: &[u8] = b"pending_rewrite";

/// Separator between directory path and name. Paths never contain NUL, so a prefix scan of
/// `snapshot ‖ dir ‖ 0x00` yields exactly the direct children of `dir`, sorted by name bytes.
pub const SEP: u8 = 0;

/// Key of `name` inside directory `dir` (both relative, `/`-separated, root = empty) in a layer.
pub fn entry_key(snap: &SnapshotId, dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = dir_prefix(snap, dir);
    k.extend_from_slice(name);
    k
}

/// Prefix of every child key of `dir` in a layer.
pub fn dir_prefix(snap: &SnapshotId, dir: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + dir.len() + 1 + 32);
    k.extend_from_slice(&snap.0);
    k.extend_from_slice(dir);
    k.push(SEP);
    k
}

/// Splits a `layers` key back into (dir, name), given its snapshot prefix is already stripped.
pub fn split_entry_key(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let sep = rest.iter().rposition(|&b| b == SEP)?;
    Some((&rest[..sep], &rest[sep + 1..]))
}

/// Key of a directory in `layerdirs`.
pub fn layerdir_key(snap: &SnapshotId, dir: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + dir.len());
    k.extend_from_slice(&snap.0);
    k.extend_from_slice(dir);
    k
}

/// Where a chunk's record lives: pack, byte offset of its record header, and the lengths needed to
/// read it in one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Pack file holding the record.
    pub pack: PackId,
    /// Offset of the record header within the pack.
    pub offset: u64,
    /// Payload length as stored (after compression).
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Compression byte as in the record header.
    pub compression: u8,
}

impl Location {
    /// Encoded size in bytes.
    pub const LEN: usize = 25;

    /// `pack u64 BE ‖ offset u64 BE ‖ stored_len u32 BE ‖ raw_len u32 BE ‖ compression u8`.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.pack.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.stored_len.to_be_bytes());
        b[20..24].copy_from_slice(&self.raw_len.to_be_bytes());
        b[24] = self.compression;
        b
    }

    /// Parses [`Location::encode`] output; `None` when the length is wrong.
    pub fn decode(b: &[u8]) -> Option<Location> {
        if b.len() != Self::LEN {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        Some(Location {
            pack: PackId(u64_at(0)),
            offset: u64_at(8),
            stored_len: u32_at(16),
            raw_len: u32_at(20),
            compression: b[24],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_round_trip() {
        let l = Location {
            pack: PackId(7),
            offset: 1 << 40,
            stored_len: 12,
            raw_len: 99,
            compression: 1,
        };
        assert_eq!(Location::decode(&l.encode()), Some(l));
        assert_eq!(Location::decode(&[0; 3]), None);
    }

    #[test]
    fn children_prefix_is_exact() {
        let s = SnapshotId([1; 16]);
        let child = entry_key(&s, b"a", b"x");
        let grandchild = entry_key(&s, b"a/x", b"y");
        let sibling_dir = entry_key(&s, b"ab", b"z");
        let p = dir_prefix(&s, b"a");
        assert!(child.starts_with(&p));
        assert!(!grandchild.starts_with(&p));
        assert!(!sibling_dir.starts_with(&p));
        assert_eq!(split_entry_key(&child[16..]), Some((&b"a"[..], &b"x"[..])));
        assert_eq!(
            split_entry_key(&grandchild[16..]),
            Some((&b"a/x"[..], &b"y"[..]))
        );
    }
}
