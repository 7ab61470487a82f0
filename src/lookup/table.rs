//! Sorted key/value table files: what the lookup files store one layer in.
//!
//! ```text
//! file   = header block* index footer
//! header = "STRATALT" ‖ version u32 LE (1) ‖ reserved u32 (0)                    16 bytes
//! block  = zstd frame of records; record = key-len u32 LE ‖ key ‖ value-len u32 LE ‖ value
//! index  = key-hash count u32 LE ‖ key hashes, sorted (u32 LE each: the first 4 bytes of blake3 of
//!          each key; none when the table has more than 16,384 keys) ‖
//!          per block: first-key-len u32 LE ‖ first key ‖ offset u64 LE ‖ stored-len u32 LE ‖
//!          plain-len u32 LE ‖ check [16] (blake3 of the plain block)
//! footer = index offset u64 LE ‖ index length u32 LE ‖ version u32 LE (1) ‖ check [8] (blake3 of
//!          the index) ‖ "STRATALT"                                                 32 bytes
//! ```
//!
//! In an encrypted repository a table is version 2: each block (its zstd frame) and the index
//! are sealed with the lookup key (`crate::repo::crypt`), a block with the table's file name and
//! its offset as associated data, the index with the file name and `index`; the footer's check
//! covers the sealed index.
//!
//! Keys are strictly increasing across the file. The key hashes let a reader that probes many
//! layers for one name skip, without reading a block, every table that does not hold it. Opening reads the file's tail once (footer and
//! index, and the whole file when it is small), a lookup then one block; every block and the
//! index are checked before use, so a damaged or truncated table is an error, never a wrong
//! answer.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::repo::crypt::{Crypt, Purpose};

const MAGIC: &[u8; 8] = b"STRATALT";
const VERSION: u32 = 1;
/// The version of a sealed table (an encrypted repository's).
const SEALED_VERSION: u32 = 2;

/// How a table of an encrypted repository is sealed: the repository's keys and the table's
/// final file name, which every sealed part is bound to.
#[derive(Clone)]
pub struct Sealing {
    crypt: Arc<Crypt>,
    name: Vec<u8>,
}

impl Sealing {
    /// Sealing for the table named `name` (its file name in the lookup directory).
    pub fn new(crypt: Arc<Crypt>, name: &str) -> Sealing {
        Sealing {
            crypt,
            name: name.as_bytes().to_vec(),
        }
    }

    fn aad(&self, part: &[u8]) -> Vec<u8> {
        [&self.name[..], &[0], part].concat()
    }

    fn version(s: Option<&Sealing>) -> u32 {
        if s.is_some() {
            SEALED_VERSION
        } else {
            VERSION
        }
    }
}
const HEADER_LEN: u64 = 16;
const FOOTER_LEN: usize = 32;
/// Plain bytes per block: one block is what a lookup decompresses.
const BLOCK_SIZE: usize = 64 * 1024;
/// Decoded blocks a table keeps (a path lookup touches a handful).
const CACHED_BLOCKS: usize = 32;
/// Tables with more keys than this carry no key hashes (they would make the index large).
const MAX_HASHED_KEYS: usize = 16 * 1024;
/// Bytes read from the end of a table when it is opened: footer and index in one read, and all
/// of a small table (most incremental layers), whose blocks then need no further read.
const TAIL_READ: u64 = 16 * 1024;

/// One (key, value) pair.
pub type Record = (Vec<u8>, Vec<u8>);

/// Writes a table; keys must come in strictly increasing order.
pub struct TableWriter {
    path: PathBuf,
    out: BufWriter<File>,
    zstd: zstd::bulk::Compressor<'static>,
    block: Vec<u8>,
    first_key: Option<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    index: Vec<u8>,
    hashes: Vec<u32>,
    keys: usize,
    offset: u64,
    sealing: Option<Sealing>,
}

/// The hash a table keeps of each key.
fn key_hash(key: &[u8]) -> u32 {
    u32::from_le_bytes(blake3::hash(key).as_bytes()[..4].try_into().unwrap())
}

impl TableWriter {
    /// Creates (truncates) `path`, sealed when `sealing` says how.
    pub fn create(path: &Path, sealing: Option<Sealing>) -> Result<TableWriter> {
        let f = File::create(path).ctx("Creating", path)?;
        let mut out = BufWriter::with_capacity(256 * 1024, f);
        let mut head = [0u8; HEADER_LEN as usize];
        head[..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&Sealing::version(sealing.as_ref()).to_le_bytes());
        out.write_all(&head).ctx("Writing", path)?;
        Ok(TableWriter {
            path: path.to_path_buf(),
            out,
            zstd: zstd::bulk::Compressor::new(1).ctx("Compressing", path)?,
            block: Vec::with_capacity(BLOCK_SIZE + 4096),
            first_key: None,
            last_key: None,
            index: Vec::new(),
            hashes: Vec::new(),
            keys: 0,
            offset: HEADER_LEN,
            sealing,
        })
    }

    /// Appends one record.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.last_key.as_deref().is_some_and(|k| k >= key) {
            return Err(Error::CorruptMetadata(
                "lookup table keys out of order".into(),
            ));
        }
        if self.first_key.is_none() {
            self.first_key = Some(key.to_vec());
        }
        self.keys += 1;
        if self.keys <= MAX_HASHED_KEYS {
            self.hashes.push(key_hash(key));
        } else {
            self.hashes = Vec::new();
        }
        self.block
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.block.extend_from_slice(key);
        self.block
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.block.extend_from_slice(value);
        self.last_key = Some(key.to_vec());
        if self.block.len() >= BLOCK_SIZE {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        let Some(first) = self.first_key.take() else {
            return Ok(());
        };
        let mut stored = self
            .zstd
            .compress(&self.block)
            .ctx("Compressing", &self.path)?;
        if let Some(s) = &self.sealing {
            let aad = s.aad(&self.offset.to_le_bytes());
            stored = s.crypt.seal(Purpose::Lookup, &aad, &stored);
        }
        self.out.write_all(&stored).ctx("Writing", &self.path)?;
        self.index
            .extend_from_slice(&(first.len() as u32).to_le_bytes());
        self.index.extend_from_slice(&first);
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index
            .extend_from_slice(&(stored.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        self.index
            .extend_from_slice(&blake3::hash(&self.block).as_bytes()[..16]);
        self.offset += stored.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block, the index and the footer, and closes the file (not fsynced: a
    /// table lost in a crash fails its checks and is rebuilt).
    pub fn finish(mut self) -> Result<()> {
        self.flush_block()?;
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.sort_unstable();
        let mut index = Vec::with_capacity(4 + 4 * hashes.len() + self.index.len());
        index.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
        for h in &hashes {
            index.extend_from_slice(&h.to_le_bytes());
        }
        index.extend_from_slice(&self.index);
        self.index = match &self.sealing {
            Some(s) => s.crypt.seal(Purpose::Lookup, &s.aad(b"index"), &index),
            None => index,
        };
        let mut foot = [0u8; FOOTER_LEN];
        foot[0..8].copy_from_slice(&self.offset.to_le_bytes());
        foot[8..12].copy_from_slice(&(self.index.len() as u32).to_le_bytes());
        foot[12..16].copy_from_slice(&Sealing::version(self.sealing.as_ref()).to_le_bytes());
        foot[16..24].copy_from_slice(&blake3::hash(&self.index).as_bytes()[..8]);
        foot[24..32].copy_from_slice(MAGIC);
        self.out.write_all(&self.index).ctx("Writing", &self.path)?;
        self.out.write_all(&foot).ctx("Writing", &self.path)?;
        self.out.flush().ctx("Writing", &self.path)
    }
}

struct BlockRef {
    first_key: Vec<u8>,
    offset: u64,
    stored: u32,
    plain: u32,
    check: [u8; 16],
}

/// An open table.
pub struct Table {
    path: PathBuf,
    file: File,
    /// The whole file, when one read at open got all of it.
    whole: Option<Vec<u8>>,
    blocks: Vec<BlockRef>,
    /// Sorted key hashes; empty when the table has none (then every probe reads a block).
    hashes: Vec<u32>,
    cache: Mutex<Vec<(usize, Arc<Vec<u8>>)>>,
    sealing: Option<Sealing>,
}

fn bad(path: &Path, what: &str) -> Error {
    Error::CorruptMetadata(format!("lookup table {}: {what}", path.display()))
}

/// Reads a `u32 LE`-length-prefixed field at `*pos`.
fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let s = buf.get(*pos..*pos + n)?;
    *pos += n;
    Some(s)
}

fn take_u32(buf: &[u8], pos: &mut usize) -> Option<u32> {
    Some(u32::from_le_bytes(take(buf, pos, 4)?.try_into().ok()?))
}

fn take_u64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    Some(u64::from_le_bytes(take(buf, pos, 8)?.try_into().ok()?))
}

impl Table {
    /// Opens `path` and reads and checks its footer and index (one read for most tables). An
    /// encrypted repository's table opens only with its keys (`crypt`).
    pub fn open(path: &Path, crypt: Option<&Arc<Crypt>>) -> Result<Table> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let sealing = crypt.map(|c| Sealing::new(c.clone(), &name));
        let version = Sealing::version(sealing.as_ref());
        let file = File::open(path).ctx("Opening", path)?;
        let len = file.metadata().ctx("Reading", path)?.len();
        if len < HEADER_LEN + FOOTER_LEN as u64 {
            return Err(bad(path, "truncated"));
        }
        let tail_at = len - len.min(TAIL_READ);
        let mut tail = vec![0u8; (len - tail_at) as usize];
        file.read_exact_at(&mut tail, tail_at)
            .ctx("Reading", path)?;
        let foot = &tail[tail.len() - FOOTER_LEN..];
        if &foot[24..32] != MAGIC || foot[12..16] != version.to_le_bytes() {
            return Err(bad(path, &format!("not a version-{version} table")));
        }
        let index_at = u64::from_le_bytes(foot[0..8].try_into().unwrap());
        let index_len = u32::from_le_bytes(foot[8..12].try_into().unwrap()) as u64;
        if index_at < HEADER_LEN || index_at + index_len + FOOTER_LEN as u64 != len {
            return Err(bad(path, "index out of bounds"));
        }
        let check: [u8; 8] = foot[16..24].try_into().unwrap();
        let index = if index_at >= tail_at {
            let from = (index_at - tail_at) as usize;
            tail[from..from + index_len as usize].to_vec()
        } else {
            let mut index = vec![0u8; index_len as usize];
            file.read_exact_at(&mut index, index_at)
                .ctx("Reading", path)?;
            index
        };
        if blake3::hash(&index).as_bytes()[..8] != check {
            return Err(bad(path, "index checksum mismatch"));
        }
        let index = match &sealing {
            Some(s) => s
                .crypt
                .open(Purpose::Lookup, &s.aad(b"index"), &index)
                .map_err(|e| bad(path, &format!("index: {e}")))?,
            None => index,
        };
        let mut pos = 0;
        let hashes = (|| {
            let n = take_u32(&index, &mut pos)? as usize;
            let raw = take(&index, &mut pos, n.checked_mul(4)?)?;
            let v: Vec<u32> = raw
                .chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            v.is_sorted().then_some(v)
        })()
        .ok_or_else(|| bad(path, "key hashes malformed"))?;
        let mut blocks = Vec::new();
        while pos < index.len() {
            let parse = |pos: &mut usize| -> Option<BlockRef> {
                let klen = take_u32(&index, pos)? as usize;
                let first_key = take(&index, pos, klen)?.to_vec();
                Some(BlockRef {
                    first_key,
                    offset: take_u64(&index, pos)?,
                    stored: take_u32(&index, pos)?,
                    plain: take_u32(&index, pos)?,
                    check: take(&index, pos, 16)?.try_into().ok()?,
                })
            };
            let b = parse(&mut pos).ok_or_else(|| bad(path, "index malformed"))?;
            if b.offset < HEADER_LEN || b.offset + b.stored as u64 > index_at {
                return Err(bad(path, "block out of bounds"));
            }
            blocks.push(b);
        }
        Ok(Table {
            path: path.to_path_buf(),
            file,
            whole: (tail_at == 0).then_some(tail),
            blocks,
            hashes,
            cache: Mutex::new(Vec::new()),
            sealing,
        })
    }

    /// The decoded, checked block `i`.
    fn block(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        if let Some((_, b)) = self.cache.lock().unwrap().iter().find(|(n, _)| *n == i) {
            return Ok(b.clone());
        }
        let r = &self.blocks[i];
        let range = r.offset as usize..(r.offset + r.stored as u64) as usize;
        let read;
        let stored = match &self.whole {
            Some(all) => &all[range],
            None => {
                let mut buf = vec![0u8; r.stored as usize];
                self.file
                    .read_exact_at(&mut buf, r.offset)
                    .ctx("Reading", &self.path)?;
                read = buf;
                &read[..]
            }
        };
        let opened;
        let stored = match &self.sealing {
            Some(s) => {
                let aad = s.aad(&r.offset.to_le_bytes());
                opened = s
                    .crypt
                    .open(Purpose::Lookup, &aad, stored)
                    .map_err(|e| bad(&self.path, &format!("block {i}: {e}")))?;
                &opened[..]
            }
            None => stored,
        };
        let plain = crate::compress::decompress(stored, r.plain as usize)
            .map_err(|e| bad(&self.path, &format!("block {i}: {e}")))?;
        if plain.len() != r.plain as usize || blake3::hash(&plain).as_bytes()[..16] != r.check {
            return Err(bad(&self.path, &format!("block {i} checksum mismatch")));
        }
        let plain = Arc::new(plain);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHED_BLOCKS {
            cache.remove(0);
        }
        cache.push((i, plain.clone()));
        Ok(plain)
    }

    /// The block that would hold `key`: the last whose first key is ≤ `key`.
    fn block_for(&self, key: &[u8]) -> usize {
        self.blocks
            .partition_point(|b| b.first_key.as_slice() <= key)
            .saturating_sub(1)
    }

    /// Calls `f(key, value)` for every record from the block that could hold `from` onwards,
    /// in key order, until `f` returns `false`.
    fn walk(&self, from: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        for i in self.block_for(from)..self.blocks.len() {
            let block = self.block(i)?;
            let mut pos = 0;
            while pos < block.len() {
                let rec = (|| {
                    let klen = take_u32(&block, &mut pos)? as usize;
                    let key = take(&block, &mut pos, klen)?;
                    let vlen = take_u32(&block, &mut pos)? as usize;
                    Some((key, take(&block, &mut pos, vlen)?))
                })();
                let (key, value) = rec.ok_or_else(|| bad(&self.path, "record malformed"))?;
                if key >= from && !f(key, value) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.blocks.is_empty()
            || (!self.hashes.is_empty() && self.hashes.binary_search(&key_hash(key)).is_err())
        {
            return Ok(None);
        }
        let mut found = None;
        self.walk(key, |k, v| {
            if k == key {
                found = Some(v.to_vec());
            }
            false
        })?;
        Ok(found)
    }

    /// Every record whose key starts with `prefix`, in key order; `None` when there are more
    /// than `max`.
    pub fn scan_prefix(&self, prefix: &[u8], max: usize) -> Result<Option<Vec<Record>>> {
        let mut out = Vec::new();
        let mut too_many = false;
        self.walk(prefix, |k, v| {
            if !k.starts_with(prefix) {
                return false;
            }
            if out.len() >= max {
                too_many = true;
                return false;
            }
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok((!too_many).then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypt::Crypt;

    fn key(i: u32) -> Vec<u8> {
        format!("dir{:03}\0name{:06}", i / 1000, i).into_bytes()
    }

    fn sample(dir: &Path, n: u32) -> PathBuf {
        let p = dir.join("t.tbl");
        let mut w = TableWriter::create(&p, None).unwrap();
        for i in 0..n {
            w.add(
                &key(i),
                format!("value {i} {}", "x".repeat((i % 300) as usize)).as_bytes(),
            )
            .unwrap();
        }
        w.finish().unwrap();
        p
    }

    #[test]
    fn get_and_prefix_scan_across_many_blocks() {
        let d = tempfile::tempdir().unwrap();
        let p = sample(d.path(), 20_000);
        let t = Table::open(&p, None).unwrap();
        assert!(t.blocks.len() > 10, "{} blocks", t.blocks.len());
        for i in [0, 1, 999, 1000, 12_345, 19_999] {
            let v = t.get(&key(i)).unwrap().unwrap();
            assert!(v.starts_with(format!("value {i} ").as_bytes()));
        }
        assert_eq!(t.get(b"dir000\0name0000005").unwrap(), None);
        assert_eq!(t.get(b"a").unwrap(), None);
        assert_eq!(t.get(b"z").unwrap(), None);
        let dir7 = t.scan_prefix(b"dir007\0", 5000).unwrap().unwrap();
        assert_eq!(dir7.len(), 1000);
        assert_eq!(dir7[0].0, key(7000));
        assert_eq!(dir7[999].0, key(7999));
        assert_eq!(t.scan_prefix(b"dir007\0", 999).unwrap(), None);
        assert!(t.scan_prefix(b"nope", 10).unwrap().unwrap().is_empty());
    }

    #[test]
    fn small_tables_answer_from_their_key_hashes_and_big_ones_without() {
        let d = tempfile::tempdir().unwrap();
        let small = sample(d.path(), 300);
        let t = Table::open(&small, None).unwrap();
        assert_eq!(t.hashes.len(), 300);
        assert!(t.whole.is_some(), "a small table is read whole at open");
        assert!(t.get(&key(299)).unwrap().is_some());
        assert_eq!(t.get(&key(300)).unwrap(), None);
        let big = sample(d.path(), MAX_HASHED_KEYS as u32 + 1);
        let t = Table::open(&big, None).unwrap();
        assert!(t.hashes.is_empty() && t.whole.is_none());
        assert!(t.get(&key(MAX_HASHED_KEYS as u32)).unwrap().is_some());
        let empty = d.path().join("empty.tbl");
        TableWriter::create(&empty, None).unwrap().finish().unwrap();
        let t = Table::open(&empty, None).unwrap();
        assert_eq!(t.get(b"x").unwrap(), None);
        assert!(t.scan_prefix(b"", 10).unwrap().unwrap().is_empty());
    }

    #[test]
    fn a_sealed_table_opens_only_with_its_keys_and_its_name() {
        let d = tempfile::tempdir().unwrap();
        let crypt = Arc::new(Crypt::from_master(&[4; 64], [2; 16]));
        let p = d.path().join("sealed.tbl");
        let mut w =
            TableWriter::create(&p, Some(Sealing::new(crypt.clone(), "sealed.tbl"))).unwrap();
        for i in 0..3000 {
            w.add(&key(i), format!("secret value {i}").as_bytes())
                .unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        let t = Table::open(&p, Some(&crypt)).unwrap();
        assert_eq!(t.get(&key(2999)).unwrap().unwrap(), b"secret value 2999");
        assert!(Table::open(&p, None).is_err(), "not without the keys");
        let other = Arc::new(Crypt::from_master(&[5; 64], [2; 16]));
        assert!(
            Table::open(&p, Some(&other)).is_err(),
            "not with other keys"
        );
        let renamed = d.path().join("other.tbl");
        std::fs::copy(&p, &renamed).unwrap();
        assert!(
            Table::open(&renamed, Some(&crypt)).is_err(),
            "bound to its name"
        );
        let mut bent = bytes.clone();
        bent[HEADER_LEN as usize + 30] ^= 1;
        std::fs::write(&p, &bent).unwrap();
        let t = Table::open(&p, Some(&crypt)).unwrap();
        assert!(t.get(&key(0)).is_err(), "a changed block is an error");
    }

    #[test]
    fn out_of_order_keys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut w = TableWriter::create(&d.path().join("t"), None).unwrap();
        w.add(b"b", b"1").unwrap();
        assert!(w.add(b"a", b"2").is_err());
        assert!(w.add(b"b", b"2").is_err());
    }

    #[test]
    fn damage_is_an_error_never_a_wrong_answer() {
        let d = tempfile::tempdir().unwrap();
        let p = sample(d.path(), 5_000);
        let good = std::fs::read(&p).unwrap();
        // Truncated anywhere: refused at open.
        for cut in [0, 10, good.len() / 2, good.len() - 1] {
            std::fs::write(&p, &good[..cut]).unwrap();
            assert!(Table::open(&p, None).is_err(), "cut at {cut}");
        }
        // A flipped byte inside a block: open works, reading that block fails.
        let mut bent = good.clone();
        bent[HEADER_LEN as usize + 100] ^= 0x40;
        std::fs::write(&p, &bent).unwrap();
        let t = Table::open(&p, None).unwrap();
        assert!(t.get(&key(0)).is_err());
        // A flipped byte in the index: refused at open.
        let mut bent = good.clone();
        let n = bent.len();
        bent[n - FOOTER_LEN - 3] ^= 1;
        std::fs::write(&p, &bent).unwrap();
        assert!(Table::open(&p, None).is_err());
    }
}
