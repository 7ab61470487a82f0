//! The index of an encrypted repository: a [`MetaStore`] over [`SledStore`] that seals every
//! value and keeps path names out of keys (docs/FORMAT.md, "The encrypted index").
//!
//! - `meta`, `chunks`, `snapshots`: keys as given (setting names, keyed chunk ids, random
//!   snapshot ids); values sealed. `meta/format` alone is stored in the clear, so that any strata
//!   build can say which format a repository has.
//! - `layers` (snapshot ‖ dir ‖ 0 ‖ name) and `layerdirs` (snapshot ‖ dir): stored under
//!   snapshot ‖ H(dir) [‖ H(dir ‖ 0 ‖ name)], with keyed hashes ([`Crypt::name_hash`]) of
//!   16 bytes each; the key itself travels inside the sealed value.
//!
//! Every sealed value is authenticated with its keyspace and stored key as associated data, so a
//! value moved under another key does not open. Callers rely on scans returning keys in order
//! (a directory's children sorted by name, a layer's entries directory by directory); hashed keys
//! are not in that order, so a scan of these two keyspaces gathers the entries of one snapshot (or,
//! for a directory's children, of one directory), sorts them, then yields them. Memory of a scan
//! is therefore the largest such group, not constant as over sled.

use std::sync::Arc;

use super::{Batch, MetaStore, Pair, Scan, SledStore, Space, Value};
use crate::error::{Error, Result};
use crate::repo::crypt::{Crypt, Purpose};
use crate::repo::keys::{META_FORMAT, SEP};

/// Length of the snapshot id that starts `layers` and `layerdirs` keys.
const SNAP: usize = 16;

/// The encrypting store; see the module documentation.
pub struct SealedStore {
    inner: SledStore,
    crypt: Arc<Crypt>,
}

impl SealedStore {
    /// Seals what goes into `inner` with `crypt`'s index keys.
    pub fn new(inner: SledStore, crypt: Arc<Crypt>) -> SealedStore {
        SealedStore { inner, crypt }
    }
}

fn space_byte(space: Space) -> u8 {
    space as u8
}

/// Whether keys of `space` are hashed (and so scans re-sorted).
fn hashed(space: Space) -> bool {
    matches!(space, Space::Layers | Space::LayerDirs)
}

/// The value of `meta/format`, which is stored in the clear.
fn clear(space: Space, key: &[u8]) -> bool {
    space == Space::Meta && key == META_FORMAT
}

/// The directory part of the rest of a `layers` key or prefix (after the snapshot id): up to
/// the first separator (directories never hold one), or all of it.
fn dir_part(rest: &[u8]) -> (&[u8], bool) {
    match rest.iter().position(|&b| b == SEP) {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    }
}

impl SealedStore {
    fn dir_hash(&self, snap: &[u8], dir: &[u8]) -> [u8; 16] {
        self.crypt.name_hash(&[b"dir", snap, dir])
    }

    /// The key `key` of `space` is stored under.
    fn stored_key(&self, space: Space, key: &[u8]) -> Vec<u8> {
        if !hashed(space) || key.len() < SNAP {
            return key.to_vec();
        }
        let (snap, rest) = key.split_at(SNAP);
        let mut k = Vec::with_capacity(SNAP + 32);
        k.extend_from_slice(snap);
        match space {
            Space::Layers => {
                k.extend_from_slice(&self.dir_hash(snap, dir_part(rest).0));
                k.extend_from_slice(&self.crypt.name_hash(&[b"entry", snap, rest]));
            }
            _ => k.extend_from_slice(&self.dir_hash(snap, rest)),
        }
        k
    }

    fn aad(space: Space, stored: &[u8]) -> Vec<u8> {
        let mut a = Vec::with_capacity(1 + stored.len());
        a.push(space_byte(space));
        a.extend_from_slice(stored);
        a
    }

    /// The sealed value stored for `key` (plaintext) under `stored`.
    fn seal(&self, space: Space, key: &[u8], stored: &[u8], value: &[u8]) -> Vec<u8> {
        if clear(space, key) {
            return value.to_vec();
        }
        let aad = Self::aad(space, stored);
        if hashed(space) && key.len() >= SNAP {
            let rest = &key[SNAP..];
            let mut plain = Vec::with_capacity(4 + rest.len() + value.len());
            plain.extend_from_slice(&(rest.len() as u32).to_le_bytes());
            plain.extend_from_slice(rest);
            plain.extend_from_slice(value);
            self.crypt.seal(Purpose::Index, &aad, &plain)
        } else {
            self.crypt.seal(Purpose::Index, &aad, value)
        }
    }

    /// Opens what is stored under `stored`: the plaintext key and value.
    fn open(&self, space: Space, stored: &[u8], sealed: &[u8]) -> Result<Pair> {
        if clear(space, stored) {
            return Ok((Value::from(stored), Value::from(sealed)));
        }
        let damaged = |what: &str| {
            Error::CorruptMetadata(format!(
                "index entry of {space:?} {}: {what}",
                crate::id::ChunkId(blake3::hash(stored).into()).short()
            ))
        };
        let plain = self
            .crypt
            .open(Purpose::Index, &Self::aad(space, stored), sealed)
            .map_err(|e| damaged(&e.to_string()))?;
        if !hashed(space) || stored.len() < SNAP {
            return Ok((Value::from(stored), Value::from(plain)));
        }
        let len = plain
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .filter(|&n| 4 + n <= plain.len())
            .ok_or_else(|| damaged("sealed key malformed"))?;
        let mut key = Vec::with_capacity(SNAP + len);
        key.extend_from_slice(&stored[..SNAP]);
        key.extend_from_slice(&plain[4..4 + len]);
        Ok((Value::from(key), Value::from(&plain[4 + len..])))
    }

    /// The stored prefix that covers every key starting with plaintext `prefix`: the snapshot
    /// part as it is, then, for a `layers` prefix that names a whole directory, its hash. It can
    /// cover more keys than asked for; [`Sorted`] filters them out.
    fn stored_prefix(&self, space: Space, prefix: &[u8]) -> Vec<u8> {
        if !hashed(space) || prefix.len() <= SNAP {
            return prefix.to_vec();
        }
        let (snap, rest) = prefix.split_at(SNAP);
        let mut p = snap.to_vec();
        if space == Space::Layers {
            if let (dir, true) = dir_part(rest) {
                p.extend_from_slice(&self.dir_hash(snap, dir));
            }
        }
        p
    }
}

impl MetaStore for SealedStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Value>> {
        let stored = self.stored_key(space, key);
        let Some(v) = self.inner.get(space, &stored)? else {
            return Ok(None);
        };
        let (k, v) = self.open(space, &stored, &v)?;
        if k.as_ref() != key {
            return Err(Error::CorruptMetadata(format!(
                "index entry of {space:?} holds another key than the one it is stored under"
            )));
        }
        Ok(Some(v))
    }

    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        self.inner.contains(space, &self.stored_key(space, key))
    }

    fn scan(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        let stored = self.stored_prefix(space, prefix);
        let inner = self.inner.scan(space, &stored);
        let opened = inner.map(move |kv| {
            let (k, v) = kv?;
            self.open(space, &k, &v)
        });
        if !hashed(space) {
            return Box::new(opened);
        }
        let prefix = prefix.to_vec();
        Box::new(Sorted {
            it: Box::new(opened),
            group: Vec::new(),
            next: None,
            prefix,
        })
    }

    fn scan_unordered(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        let stored = self.stored_prefix(space, prefix);
        let prefix = prefix.to_vec();
        Box::new(
            self.inner
                .scan(space, &stored)
                .map(move |kv| {
                    let (k, v) = kv?;
                    self.open(space, &k, &v)
                })
                .filter(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))),
        )
    }

    fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> Result<()> {
        let stored = self.stored_key(space, key);
        let sealed = self.seal(space, key, &stored, value);
        self.inner.insert(space, &stored, &sealed)
    }

    fn remove(&self, space: Space, key: &[u8]) -> Result<()> {
        self.inner.remove(space, &self.stored_key(space, key))
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        // Callers sort their batches so that sled rewrites few pages per batch; hashing the keys
        // undoes that, so the batch is sorted again by stored key (stably: a key written twice
        // keeps its last value).
        let mut ops: Vec<_> = batch
            .ops
            .into_iter()
            .map(|(space, k, v)| (space as u8, self.stored_key(space, &k), space, k, v))
            .collect();
        ops.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut sealed = Batch::default();
        for (_, stored, space, k, v) in ops {
            match v {
                Some(v) => {
                    let v = self.seal(space, &k, &stored, &v);
                    sealed.insert(space, stored, v);
                }
                None => sealed.remove(space, stored),
            }
        }
        self.inner.apply(sealed)
    }

    fn generate_id(&self) -> Result<u64> {
        self.inner.generate_id()
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn raw_db(&self) -> Option<sled::Db> {
        self.inner.raw_db()
    }
}

/// The pairs of a hashed keyspace in plaintext key order: each snapshot's pairs (the stored
/// keys of one snapshot are contiguous, and snapshots are in order) gathered, filtered by the
/// plaintext prefix, sorted, then yielded.
struct Sorted<'a> {
    it: Scan<'a>,
    /// The current group, reversed (popped from the end).
    group: Vec<Pair>,
    /// The first pair of the next group, read while finishing this one.
    next: Option<Pair>,
    prefix: Vec<u8>,
}

fn group_of(key: &[u8]) -> &[u8] {
    &key[..key.len().min(SNAP)]
}

impl Iterator for Sorted<'_> {
    type Item = Result<Pair>;

    fn next(&mut self) -> Option<Result<Pair>> {
        loop {
            if let Some(p) = self.group.pop() {
                return Some(Ok(p));
            }
            let first = match self.next.take() {
                Some(p) => p,
                None => match self.it.next()? {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                },
            };
            let mut group = vec![first];
            loop {
                match self.it.next() {
                    None => break,
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(p)) if group_of(&p.0) == group_of(&group[0].0) => group.push(p),
                    Some(Ok(p)) => {
                        self.next = Some(p);
                        break;
                    }
                }
            }
            group.retain(|(k, _)| k.starts_with(&self.prefix));
            group.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            self.group = group;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SnapshotId;
    use crate::repo::keys;

    fn store() -> (SealedStore, sled::Db) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let crypt = Arc::new(Crypt::from_master(&[3; 64], [1; 16]));
        (
            SealedStore::new(SledStore::new(db.clone()).unwrap(), crypt),
            db,
        )
    }

    fn keys_of(s: &SealedStore, space: Space, prefix: &[u8]) -> Vec<Vec<u8>> {
        s.scan(space, prefix)
            .map(|kv| kv.unwrap().0.to_vec())
            .collect()
    }

    #[test]
    fn scans_return_plaintext_keys_in_plaintext_order_for_every_prefix_shape() {
        let (s, _db) = store();
        let snaps = [SnapshotId([1; 16]), SnapshotId([2; 16])];
        let paths: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"", b"a"),
            (b"", b"b"),
            (b"a", b"x"),
            (b"a", b"y"),
            (b"a/x", b"z"),
            (b"ab", b"q"),
            (b"b", b"c"),
        ];
        let mut all = Vec::new();
        for snap in &snaps {
            // Inserted out of order, half one by one, half in a batch.
            let mut batch = Batch::default();
            for (i, (dir, name)) in paths.iter().rev().enumerate() {
                let k = keys::entry_key(snap, dir, name);
                let v = [dir, &b"="[..], name].concat();
                if i % 2 == 0 {
                    s.insert(Space::Layers, &k, &v).unwrap();
                } else {
                    batch.insert(Space::Layers, &k, &v);
                }
                all.push(k);
                s.insert(Space::LayerDirs, &keys::layerdir_key(snap, dir), &[1])
                    .unwrap();
            }
            s.apply(batch).unwrap();
        }
        all.sort();
        assert_eq!(keys_of(&s, Space::Layers, b""), all);
        let mut prefixes: Vec<Vec<u8>> = vec![vec![], snaps[0].0[..3].to_vec()];
        for snap in &snaps {
            prefixes.push(snap.0.to_vec());
            for (dir, name) in paths {
                let k = keys::entry_key(snap, dir, name);
                for cut in 16..=k.len() {
                    prefixes.push(k[..cut].to_vec());
                }
            }
        }
        for p in &prefixes {
            let want: Vec<_> = all.iter().filter(|k| k.starts_with(p)).cloned().collect();
            assert_eq!(keys_of(&s, Space::Layers, p), want, "prefix {p:?}");
        }
        for (dir, name) in paths {
            let k = keys::entry_key(&snaps[1], dir, name);
            let v = s.get(Space::Layers, &k).unwrap().unwrap();
            assert_eq!(v.as_ref(), [dir, &b"="[..], name].concat());
        }
        let dirs = keys_of(&s, Space::LayerDirs, &snaps[0].0);
        assert_eq!(
            dirs,
            [&b""[..], b"a", b"a/x", b"ab", b"b"]
                .iter()
                .map(|d| keys::layerdir_key(&snaps[0], d))
                .collect::<Vec<_>>()
        );
        for p in &prefixes {
            let mut want: Vec<_> = all.iter().filter(|k| k.starts_with(p)).cloned().collect();
            let mut got: Vec<_> = s
                .scan_unordered(Space::Layers, p)
                .map(|kv| kv.unwrap().0.to_vec())
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "unordered, prefix {p:?}");
        }
        s.remove(Space::Layers, &keys::entry_key(&snaps[0], b"a", b"x"))
            .unwrap();
        assert_eq!(
            keys_of(&s, Space::Layers, &keys::dir_prefix(&snaps[0], b"a")).len(),
            1
        );
    }

    /// Known answer for the stored keys of `layers` and `layerdirs`: a change makes every
    /// encrypted index unreadable. Value computed independently (Python `blake3`).
    #[test]
    fn stored_keys_known_answer() {
        let (s, _db) = store();
        let snap = SnapshotId([6; 16]);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let entry = s.stored_key(Space::Layers, &keys::entry_key(&snap, b"dir/sub", b"name"));
        assert_eq!(hex(&entry), "0606060606060606060606060606060678eadd16975dee638ffa6fe7e075d355c24eb85daebb54c948d7adc5f42698cb");
        let dir = s.stored_key(Space::LayerDirs, &keys::layerdir_key(&snap, b"dir/sub"));
        assert_eq!(
            dir[..],
            entry[..32],
            "a directory's entries share its stored prefix"
        );
        assert_eq!(s.stored_key(Space::Records, &snap.0), snap.0);
    }

    #[test]
    fn nothing_in_the_clear_and_a_moved_value_does_not_open() {
        let (s, db) = store();
        let snap = SnapshotId([9; 16]);
        let k = keys::entry_key(&snap, b"secret-dir", b"secret-name");
        s.insert(Space::Layers, &k, b"secret-value").unwrap();
        s.insert(Space::Records, &snap.0, b"secret-record").unwrap();
        s.insert(Space::Meta, META_FORMAT, &2u32.to_be_bytes())
            .unwrap();
        for name in ["layers", "snapshots"] {
            for kv in db.open_tree(name).unwrap().iter() {
                let (k, v) = kv.unwrap();
                for b in [&k[..], &v[..]] {
                    assert!(!b.windows(6).any(|w| w == b"secret"), "{name}");
                }
            }
        }
        assert_eq!(
            db.open_tree("meta")
                .unwrap()
                .get(META_FORMAT)
                .unwrap()
                .unwrap(),
            &2u32.to_be_bytes()
        );
        assert_eq!(
            s.get(Space::Meta, META_FORMAT).unwrap().unwrap(),
            &2u32.to_be_bytes()
        );
        // A value copied under another key is refused.
        let other = SnapshotId([8; 16]);
        s.insert(Space::Records, &other.0, b"x").unwrap();
        let tree = db.open_tree("snapshots").unwrap();
        let v = tree.get(snap.0).unwrap().unwrap();
        tree.insert(other.0, v).unwrap();
        assert!(s.get(Space::Records, &other.0).is_err());
        assert_eq!(
            s.get(Space::Records, &snap.0).unwrap().unwrap(),
            b"secret-record"
        );
    }
}
