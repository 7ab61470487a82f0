//! The two forms of a layer that are derived from its entries, as `check` verifies them and
//! `repair` rebuilds from them (docs/FORMAT.md): the layer blob, a copy of the entries in a pack
//! record so that the index can be rebuilt from the packs alone; and the `layerdirs` of a non-full
//! layer, the directories it holds entries in. Both commands read these here, below either of
//! them, so that neither imports the other. Nothing here reads or writes the repository.

use std::collections::HashMap;

use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::layers::join;
use crate::repo::keys;

/// Parses a layer blob (`key-length u32 LE ‖ key ‖ value-length u32 LE ‖ entry`, repeated; keys
/// are `dir ‖ 0x00 ‖ name`) into (key, value) pairs.
pub fn entries(plain: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if rest.len() < n {
            return Err(Error::CorruptMetadata("layer blob truncated".into()));
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a)
    }
    fn len(rest: &mut &[u8]) -> Result<usize> {
        let b = take(rest, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut out = Vec::new();
    let mut rest = plain;
    while !rest.is_empty() {
        let klen = len(&mut rest)?;
        let key = take(&mut rest, klen)?;
        let vlen = len(&mut rest)?;
        let val = take(&mut rest, vlen)?;
        if keys::split_entry_key(key).is_none() {
            return Err(Error::CorruptMetadata(
                "layer blob key without separator".into(),
            ));
        }
        out.push((key, val));
    }
    Ok(out)
}

/// The `layerdirs` of one layer: directory → whether it is opaque in that layer.
pub type Dirs = HashMap<Vec<u8>, bool>;

/// Adds what the entry `dir/name` implies to `dirs`, exactly as backup fills `layerdirs`: `dir`
/// holds an entry; a directory entry marked opaque (other than the root) is itself an opaque
/// directory of the layer.
pub fn note_dir(dirs: &mut Dirs, dir: &[u8], name: &[u8], entry: &Entry) {
    dirs.entry(dir.to_vec()).or_insert(false);
    if entry.kind == Kind::Dir && entry.opaque && !name.is_empty() {
        dirs.insert(join(dir, name), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_blob_parse_round_trip_and_truncation() {
        let mut b = Vec::new();
        for (k, v) in [(&b"dir\0name"[..], &b"v1"[..]), (b"\0", b"")] {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        }
        let e = entries(&b).unwrap();
        assert_eq!(
            e,
            vec![(&b"dir\0name"[..], &b"v1"[..]), (&b"\0"[..], &b""[..])]
        );
        assert!(entries(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn dirs_hold_every_directory_with_entries_and_opaque_subdirectories() {
        let opaque_dir = Entry {
            kind: Kind::Dir,
            opaque: true,
            ..Entry::whiteout()
        };
        let mut dirs = Dirs::new();
        note_dir(&mut dirs, b"", b"", &opaque_dir);
        note_dir(&mut dirs, b"a", b"gone", &Entry::whiteout());
        note_dir(&mut dirs, b"a", b"new", &opaque_dir);
        note_dir(&mut dirs, b"a/new", b"x", &Entry::whiteout());
        let want: Dirs = [(&b""[..], false), (b"a", false), (b"a/new", true)]
            .into_iter()
            .map(|(d, o)| (d.to_vec(), o))
            .collect();
        assert_eq!(dirs, want);
    }
}
