//! Checking what a copy wrote. Before a snapshot is committed, everything written for it is read
//! back from the target's packs and verified as `check --read-data` verifies it (header, tag or
//! blake3, and in an encrypted target the keyed id); its layer blobs must hold its layer and its
//! snapshot blob its record. Once committed, its view in the target is compared with its view
//! in the source, path by path: the same entries, with the same metadata and the same content
//! (the same chunks, translated to the target's ids by [`super::chunks::Chunks::identify`]).

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::View;
use crate::progress::ProgressHandle;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// What was read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Records read back and verified: chunks, layer blobs, snapshot blobs.
    pub records: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
}

fn mismatch(id: &SnapshotId, detail: String) -> Error {
    Error::Copy {
        snapshot: id.to_string(),
        detail,
    }
}

/// Reads back the chunks `written` for `record`, its layer blobs (which must hold `entries`
/// layer entries) and its snapshot blob (which must be `record`).
pub(super) fn records(
    target: &Repo,
    written: &[ChunkId],
    record: &Snapshot,
    entries: u64,
    progress: &ProgressHandle,
) -> Result<Verified> {
    let mut v = Verified::default();
    for id in written {
        let loc = target.chunk_location(id)?;
        target.verify_record(id, &loc)?;
        v.records += 1;
        v.bytes += u64::from(loc.raw_len);
        progress.0.data_checked(u64::from(loc.raw_len));
    }
    let mut in_blobs = 0;
    for id in &record.layer_blobs {
        let plain = read_verified(target, id)?;
        in_blobs += crate::layer_blob::entries(&plain)?.len() as u64;
        v.records += 1;
        v.bytes += plain.len() as u64;
    }
    if in_blobs != entries {
        return Err(mismatch(
            &record.id,
            format!("its layer blobs hold {in_blobs} entries, its layer {entries}, after writing"),
        ));
    }
    let encoded = record.encode();
    let plain = read_verified(target, &target.chunk_id(&encoded))?;
    if plain != encoded {
        return Err(mismatch(
            &record.id,
            "its snapshot blob differs from its record after writing".into(),
        ));
    }
    v.records += 1;
    v.bytes += plain.len() as u64;
    Ok(v)
}

/// Reads record `id` from `repo`'s packs and checks that its plaintext has that id.
fn read_verified(repo: &Repo, id: &ChunkId) -> Result<Vec<u8>> {
    let plain = repo.read_chunk(id)?;
    if repo.chunk_id(&plain) != *id {
        let pack = repo.chunk_location(id)?.pack;
        return Err(Error::CorruptChunk {
            id: *id,
            pack,
            detail: "keyed id mismatch".into(),
        });
    }
    Ok(plain)
}

/// Compares the view of `id` in `target` with its view in `source`; returns the entries
/// compared. `identify` gives a source chunk's id in the target.
pub(super) fn view(
    source: &Arc<Repo>,
    target: &Arc<Repo>,
    id: &SnapshotId,
    identify: &mut dyn FnMut(&ChunkId) -> Result<ChunkId>,
) -> Result<u64> {
    let (a, b) = (View::open(source, id)?, View::open(target, id)?);
    compare(id, b"", &a.root()?, &b.root()?, identify)?;
    let (mut wa, mut wb) = (a.walk(b"")?, b.walk(b"")?);
    let mut n = 1;
    loop {
        match (wa.next().transpose()?, wb.next().transpose()?) {
            (None, None) => return Ok(n),
            (Some((p, _)), None) => return Err(differs(id, &p, "missing from the copy")),
            (None, Some((p, _))) => return Err(differs(id, &p, "only in the copy")),
            (Some((pa, ea)), Some((pb, eb))) => {
                if pa != pb {
                    let (p, what) = if pa < pb {
                        (pa, "missing from the copy")
                    } else {
                        (pb, "only in the copy")
                    };
                    return Err(differs(id, &p, what));
                }
                compare(id, &pa, &ea, &eb, identify)?;
                n += 1;
            }
        }
    }
}

fn differs(id: &SnapshotId, path: &[u8], what: &str) -> Error {
    mismatch(
        id,
        format!("the copy differs from the source: {} is {what}", show(path)),
    )
}

fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "the root directory".into()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

/// Compares one path's entries: the source's, its chunks translated, must equal the copy's.
fn compare(
    id: &SnapshotId,
    path: &[u8],
    src: &Entry,
    dst: &Entry,
    identify: &mut dyn FnMut(&ChunkId) -> Result<ChunkId>,
) -> Result<()> {
    let mut want = src.clone();
    for c in want.chunks.iter_mut() {
        c.id = identify(&c.id)?;
    }
    if want == *dst {
        return Ok(());
    }
    let bare = |e: &Entry| Entry {
        chunks: Vec::new(),
        ..e.clone()
    };
    let what = if bare(&want) == bare(dst) {
        "different content"
    } else {
        "different metadata"
    };
    Err(differs(id, path, &format!("copied with {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ChunkRef, Kind};

    fn file(chunk: u8, mtime_ns: i64) -> Entry {
        Entry {
            kind: Kind::File,
            size: 10,
            mtime_ns,
            chunks: vec![ChunkRef {
                id: ChunkId([chunk; 32]),
                offset: 0,
                len: 10,
            }],
            ..Entry::whiteout()
        }
    }

    #[test]
    fn entries_compare_with_their_chunks_translated() {
        let id = SnapshotId([1; 16]);
        // The target knows source chunk 1 as chunk 2.
        let mut identify = |c: &ChunkId| Ok(if c.0[0] == 1 { ChunkId([2; 32]) } else { *c });
        assert!(compare(&id, b"f", &file(1, 5), &file(2, 5), &mut identify).is_ok());
        let content = compare(&id, b"f", &file(1, 5), &file(1, 5), &mut identify).unwrap_err();
        assert!(
            content
                .to_string()
                .contains("f is copied with different content"),
            "{content}"
        );
        let meta = compare(&id, b"d/f", &file(1, 5), &file(2, 6), &mut identify).unwrap_err();
        assert!(
            meta.to_string()
                .contains("d/f is copied with different metadata"),
            "{meta}"
        );
        assert!(meta.to_string().contains(&id.to_string()));
    }
}
