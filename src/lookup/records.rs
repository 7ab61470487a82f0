//! The catalog as `cat` reads it: its body kept whole, each snapshot's parts found by position,
//! records decoded only when asked for. Resolving `latest` and walking its chain then costs
//! what that chain needs — a few fields of each of its records — not a decoded copy of every
//! record in the repository.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{bad_catalog, catalog_body, CatalogBody, CATALOG, LOOKUP_DIR};
use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::Link;
use crate::repo::crypt::Crypt;
use crate::snapshot::{BackupKind, BackupStats, Snapshot};

/// A snapshot record with its strings borrowed: the same fields, in the same order, as
/// [`Snapshot`] (postcard is not self-describing), decoded without copying names.
#[derive(Deserialize)]
struct Head<'a> {
    _id: SnapshotId,
    _time_ns: i64,
    _host: &'a str,
    source: &'a str,
    kind: BackupKind,
    parent: Option<SnapshotId>,
    _depth: u32,
    #[serde(borrow)]
    _tags: Vec<&'a str>,
    _stats: BackupStats,
    layer_blobs: Vec<ChunkId>,
}

/// A read, checked catalog (see the module documentation).
pub(super) struct Records {
    /// The catalog body.
    body: Vec<u8>,
    /// Per snapshot, oldest first: where its record, touched directories and table name are.
    parts: Vec<[Range<usize>; 3]>,
    by_id: crate::snapshot::IdMap<usize>,
    /// Where the dictionary is, when there is one.
    dictionary: Option<Range<usize>>,
}

impl Records {
    /// Reads and checks the catalog of the repository at `repo_path`; `Ok(None)` when there is
    /// none.
    pub fn read(repo_path: &Path, crypt: Option<&Arc<Crypt>>) -> Result<Option<Records>> {
        let path = repo_path.join(LOOKUP_DIR).join(CATALOG);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("Reading", &path),
        };
        let body = catalog_body(crypt, &bytes)?;
        drop(bytes);
        let base = body.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let (parts, dictionary) = {
            let cat: CatalogBody =
                postcard::from_bytes(&body).map_err(|e| bad_catalog(&e.to_string()))?;
            let parts: Vec<[Range<usize>; 3]> = cat
                .snapshots
                .iter()
                .map(|s| [at(s.record), at(s.dirs), at(s.table.as_bytes())])
                .collect();
            (parts, cat.dictionary.map(at))
        };
        let mut by_id = crate::snapshot::IdMap::default();
        for (i, p) in parts.iter().enumerate() {
            // A record starts with its id (16 bytes, postcard writes arrays as they are).
            let id: [u8; 16] = body
                .get(p[0].start..p[0].start + 16)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad_catalog("a record shorter than an id"))?;
            by_id.insert(SnapshotId(id), i);
        }
        Ok(Some(Records {
            body,
            parts,
            by_id,
            dictionary,
        }))
    }

    /// The dictionary's bytes.
    pub fn dictionary(&self) -> Option<&[u8]> {
        self.dictionary.clone().map(|r| &self.body[r])
    }

    fn record(&self, i: usize) -> &[u8] {
        &self.body[self.parts[i][0].clone()]
    }

    fn head(&self, i: usize) -> Result<Head<'_>> {
        postcard::from_bytes(self.record(i)).map_err(|e| {
            Error::CorruptMetadata(format!("undecodable snapshot record in the catalog: {e}"))
        })
    }

    /// Every snapshot, oldest first.
    pub fn all(&self) -> Result<Vec<Snapshot>> {
        (0..self.parts.len())
            .map(|i| Snapshot::decode(self.record(i)))
            .collect()
    }

    /// One snapshot's record.
    pub fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        self.by_id
            .get(id)
            .map(|&i| Snapshot::decode(self.record(i)))
            .transpose()
    }

    /// What a chain walk needs of one record.
    pub fn link(&self, id: &SnapshotId) -> Result<Option<Link>> {
        let Some(&i) = self.by_id.get(id) else {
            return Ok(None);
        };
        let h = self.head(i)?;
        Ok(Some(Link {
            kind: h.kind,
            parent: h.parent,
            empty: h.layer_blobs.is_empty(),
        }))
    }

    /// A snapshot's touched directories, encoded, and its table's file name.
    pub fn layer(&self, id: &SnapshotId) -> Option<(&[u8], &str)> {
        let p = &self.parts[*self.by_id.get(id)?];
        let table = std::str::from_utf8(&self.body[p[2].clone()]).unwrap_or("");
        Some((&self.body[p[1].clone()], table))
    }

    /// [`crate::snapshot::find`] in this catalog: `latest` decodes the newest records only
    /// (of `source`, the newest of that source), an id prefix compares ids.
    pub fn find(&self, name: &str, source: Option<&str>) -> Result<Snapshot> {
        let of_source = |i: &usize| -> Result<bool> {
            Ok(source.is_none_or(|src| self.head(*i).is_ok_and(|h| h.source == src)))
        };
        if name == "latest" {
            for i in (0..self.parts.len()).rev() {
                if of_source(&i)? {
                    return Snapshot::decode(self.record(i));
                }
            }
            return Err(Error::SnapshotNotFound(name.to_string()));
        }
        let lower = name.to_ascii_lowercase();
        if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(name.to_string()));
        }
        let mut hit = None;
        for i in 0..self.parts.len() {
            let id = SnapshotId(self.record(i)[..16].try_into().expect("checked on read"));
            if id.to_string().starts_with(&lower) && of_source(&i)? {
                if hit.is_some() {
                    return Err(Error::SnapshotAmbiguous(name.to_string()));
                }
                hit = Some(i);
            }
        }
        match hit {
            Some(i) => Snapshot::decode(self.record(i)),
            None => Err(Error::SnapshotNotFound(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_head_reads_what_the_record_says() {
        for (parent, tags, blobs) in [
            (None, vec![], vec![]),
            (
                Some(SnapshotId([3; 16])),
                vec!["a".to_string(), "b c".to_string()],
                vec![ChunkId([7; 32]), ChunkId([8; 32])],
            ),
        ] {
            let s = Snapshot {
                id: SnapshotId([1; 16]),
                time_ns: -5,
                host: "h".into(),
                source: "/srv/é".into(),
                kind: if parent.is_some() {
                    BackupKind::Differential
                } else {
                    BackupKind::Full
                },
                parent,
                depth: 9,
                tags,
                stats: BackupStats {
                    files: 3,
                    elapsed_ms: 99,
                    ..Default::default()
                },
                layer_blobs: blobs,
            };
            let bytes = s.encode();
            let h: Head = postcard::from_bytes(&bytes).unwrap();
            assert_eq!((h.source, h.kind, h.parent), (&*s.source, s.kind, s.parent));
            assert_eq!(h.layer_blobs, s.layer_blobs);
            assert_eq!(&bytes[..16], &s.id.0);
        }
    }
}
