//! Finding a chunk's record in the pack files, for damage tests that must work on both kinds of
//! repository: in an encrypted one the content cannot be searched for, but a record's header
//! (in the clear in both formats, docs/FORMAT.md "Pack files") holds the chunk id, which the
//! library computes with the repository's key.

use std::path::{Path, PathBuf};

use strata::entry::ChunkRef;
use strata::layers::View;

/// Length of a pack record's header.
const HEADER_LEN: usize = 56;

/// The chunks of `path` in the newest snapshot of `repo` (opened through the library, and closed
/// again, with the repository's passphrase when it has one).
pub fn chunks_of(repo: &Path, path: &str) -> Vec<ChunkRef> {
    let latest = super::snapshot_ids(repo);
    let latest = latest.last().expect("a snapshot");
    let r = super::open(repo).open().unwrap();
    let view = View::open(&r, &latest.parse().unwrap()).unwrap();
    view.lookup(path.as_bytes()).unwrap().chunks
}

/// Every pack file of `repo`.
fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo.join("packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    out.sort();
    out
}

/// The pack holding the record of `chunk`, and the offset of the record's header there.
pub fn record_of(repo: &Path, chunk: &ChunkRef) -> (PathBuf, usize) {
    for p in packs(repo) {
        let data = std::fs::read(&p).unwrap();
        let found = data.windows(32).enumerate().find_map(|(i, w)| {
            let header = i.checked_sub(16)?;
            (w == chunk.id.0 && data[header..].starts_with(b"SREC")).then_some(header)
        });
        if let Some(header) = found {
            return (p, header);
        }
    }
    panic!("no record of chunk {} in any pack", chunk.id);
}

/// A byte in the middle of the stored payload of the first chunk of `path` (newest snapshot):
/// its pack and its offset there.
pub fn payload_byte(repo: &Path, path: &str) -> (PathBuf, usize) {
    let first = chunks_of(repo, path)[0];
    let (pack, header) = record_of(repo, &first);
    let data = std::fs::read(&pack).unwrap();
    let stored = u32::from_le_bytes(data[header + 12..header + 16].try_into().unwrap()) as usize;
    (pack, header + HEADER_LEN + stored / 2)
}

/// Flips one bit of byte `pos` of `pack` (twice restores it).
pub fn flip(pack: &Path, pos: usize) {
    let mut d = std::fs::read(pack).unwrap();
    d[pos] ^= 0x40;
    std::fs::write(pack, d).unwrap();
}
