//! Pack files: append-only containers of self-describing records (chunks, layer copies, snapshot
//! records). Every record carries its own header, so the whole index can be rebuilt by reading packs
//! alone. Storage goes through [`PackBackend`], a deliberately small interface (create sequentially,
//! read a range, list, delete) so that an object store can replace the directory later.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, PackId};
use crate::repo::crypt::{self, Crypt, Purpose};

/// First bytes of every pack file.
pub const PACK_MAGIC: &[u8; 8] = b"STRATAPK";
/// Pack file header: magic ‖ version u32 LE ‖ reserved u32.
pub const PACK_HEADER_LEN: u64 = 16;
/// Version written into new packs.
pub const PACK_VERSION: u32 = 1;
/// First bytes of every record header.
pub const RECORD_MAGIC: &[u8; 4] = b"SREC";
/// Record header length, including its 8-byte checksum.
pub const RECORD_HEADER_LEN: usize = 56;

/// What a record holds. Numbers are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// File content; `id` is blake3 of the plaintext.
    Chunk = 0,
    /// A slice of a layer's entries (see docs/FORMAT.md); `id` is blake3 of the plaintext.
    Layer = 1,
    /// A snapshot record; `id` is blake3 of the plaintext.
    Snapshot = 2,
    /// The repository's zstd dictionary; `id` is blake3 of the dictionary.
    Dictionary = 3,
    /// A tombstone written by `forget`: the payload is the 16-byte ids of the snapshots forgotten,
    /// so that rebuilding the index from packs does not bring them back. `id` is blake3 of the payload.
    Forget = 4,
}

impl RecordType {
    fn from_byte(b: u8) -> Option<RecordType> {
        match b {
            0 => Some(RecordType::Chunk),
            1 => Some(RecordType::Layer),
            2 => Some(RecordType::Snapshot),
            3 => Some(RecordType::Dictionary),
            4 => Some(RecordType::Forget),
            _ => None,
        }
    }
}

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record type.
    pub rtype: RecordType,
    /// Compression byte.
    pub compression: u8,
    /// Plaintext length.
    pub raw_len: u32,
    /// Stored payload length.
    pub stored_len: u32,
    /// blake3 of the plaintext.
    pub id: ChunkId,
}

impl RecordHeader {
    /// `SREC ‖ type u8 ‖ compression u8 ‖ 0u16 ‖ raw_len u32 LE ‖ stored_len u32 LE ‖ id[32] ‖
    /// blake3(previous 48 bytes)[..8]`.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(RECORD_MAGIC);
        h[4] = self.rtype as u8;
        h[5] = self.compression;
        h[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        h[16..48].copy_from_slice(&self.id.0);
        let check = blake3::hash(&h[..48]);
        h[48..56].copy_from_slice(&check.as_bytes()[..8]);
        h
    }

    /// What a sealed payload is authenticated with in an encrypted repository: the header's first
    /// 48 bytes (everything but its checksum), so that a payload moved under another header, or
    /// a header changed in any field, does not open.
    pub fn aad(&self) -> [u8; 48] {
        self.encode()[..48].try_into().expect("48 bytes")
    }

    /// Parses and verifies a header; a torn or flipped header is an error, never a guess.
    pub fn decode(h: &[u8]) -> std::result::Result<RecordHeader, String> {
        if h.len() < RECORD_HEADER_LEN {
            return Err("record header truncated".into());
        }
        if &h[0..4] != RECORD_MAGIC {
            return Err("bad record magic".into());
        }
        if blake3::hash(&h[..48]).as_bytes()[..8] != h[48..56] {
            return Err("record header checksum mismatch".into());
        }
        let rtype = RecordType::from_byte(h[4]).ok_or("unknown record type")?;
        Ok(RecordHeader {
            rtype,
            compression: h[5],
            raw_len: u32::from_le_bytes(h[8..12].try_into().unwrap()),
            stored_len: u32::from_le_bytes(h[12..16].try_into().unwrap()),
            id: ChunkId(h[16..48].try_into().unwrap()),
        })
    }
}

/// A pack being written; becomes visible (listed, readable) only after [`PackSink::finish`].
pub trait PackSink: Send {
    /// Appends bytes.
    fn write_all(&mut self, buf: &[u8]) -> Result<()>;
    /// Makes the pack durable and visible under its final name.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Where packs live. Packs are immutable once finished.
pub trait PackBackend: Send + Sync {
    /// Starts a new pack.
    fn create(&self, id: PackId) -> Result<Box<dyn PackSink>>;
    /// Reads exactly `len` bytes at `offset`; a short pack is an error.
    fn read_at(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Like [`PackBackend::read_at`], appended to `buf`, so a caller can reuse one buffer across
    /// reads or gather several records into one. On error `buf` may hold a partial read past
    /// its previous length.
    fn read_into(&self, id: PackId, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        buf.extend_from_slice(&self.read_at(id, offset, len)?);
        Ok(())
    }
    /// Hints that `len` bytes at `offset` will be read soon, so a backend can start fetching them
    /// (a sequential reader far ahead of its reads). Advice only: the default does nothing.
    fn will_need(&self, _id: PackId, _offset: u64, _len: u64) {}
    /// How far ahead of a sequential reader [`PackBackend::will_need`] is worth asking: enough
    /// requests in flight to keep the storage streaming while the reader decodes.
    fn read_ahead(&self) -> u64 {
        32 << 20
    }
    /// Whether reads must come from the storage itself, past any cache of it (`check
    /// --read-data`, which must see what the storage holds). A local pack has no cache of its own.
    fn verify_at_source(&self, _yes: bool) {}
    /// Every finished pack with its size.
    fn list(&self) -> Result<Vec<(PackId, u64)>>;
    /// Removes a pack.
    fn delete(&self, id: PackId) -> Result<()>;
    /// Removes leftovers of packs that were never finished (only call while holding the repo lock).
    fn remove_unfinished(&self) -> Result<usize>;
}

/// Packs as files `packs/<last two hex digits>/<16 hex digits>.pack` in a directory.
pub struct DirBackend {
    root: PathBuf,
    open: Mutex<HashMap<PackId, Arc<File>>>,
}

/// Open read handles kept per backend; beyond this the map is cleared (cheap to reopen).
const MAX_OPEN_PACKS: usize = 256;

impl DirBackend {
    /// Uses `root` (created if missing) as the pack directory.
    pub fn open(root: &Path) -> Result<DirBackend> {
        fs::create_dir_all(root).ctx("Creating pack directory", root)?;
        Ok(DirBackend {
            root: root.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, id: PackId) -> PathBuf {
        self.root
            .join(format!("{:02x}", id.0 & 0xff))
            .join(format!("{id}.pack"))
    }

    fn handle(&self, id: PackId) -> Result<Arc<File>> {
        let mut open = self.open.lock().unwrap();
        if let Some(f) = open.get(&id) {
            return Ok(f.clone());
        }
        let path = self.path(id);
        let f = Arc::new(File::open(&path).ctx("Opening pack", path)?);
        if open.len() >= MAX_OPEN_PACKS {
            open.clear();
        }
        open.insert(id, f.clone());
        Ok(f)
    }
}

/// A pack being written under its temporary name. Dropped unfinished (an error or a full disk
/// part-way through a backup), it removes its temporary file: nothing indexes an unfinished pack,
/// and on a full disk those bytes are what the next command needs to open the index at all.
struct DirSink {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

impl PackSink for DirSink {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.out
            .as_mut()
            .expect("sink not finished")
            .write_all(buf)
            .ctx("Writing pack", &self.tmp)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let out = self.out.take().expect("sink not finished");
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("Writing pack", &self.tmp)?;
        file.sync_all().ctx("Syncing pack", &self.tmp)?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).ctx("Renaming pack", &self.dest)?;
        crate::fsio::sync_dir(self.dest.parent().expect("pack has a parent dir"))
    }
}

impl Drop for DirSink {
    fn drop(&mut self) {
        // `out` is taken by `finish`; still here means the pack was abandoned. (After a failed
        // rename in `finish` the temporary file stays for `prune` to remove.)
        if let Some(out) = self.out.take() {
            // Buffered bytes may not fit either; they are discarded with the file.
            let (file, _) = out.into_parts();
            drop(file);
            match fs::remove_file(&self.tmp) {
                Ok(()) => log::info!("Removed unfinished pack {}", self.tmp.display()),
                Err(e) => log::warn!(
                    "Could not remove unfinished pack {}: {e}",
                    self.tmp.display()
                ),
            }
        }
    }
}

impl PackBackend for DirBackend {
    fn create(&self, id: PackId) -> Result<Box<dyn PackSink>> {
        let dest = self.path(id);
        let dir = dest.parent().expect("pack has a parent dir");
        fs::create_dir_all(dir).ctx("Creating pack directory", dir)?;
        // A finished pack is never replaced: sled's id generator can hand out an id again after
        // a kill (its counter is persisted lazily), and renaming over a finished pack would destroy
        // records the index may point at. The caller takes another id.
        if dest.exists() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                .ctx("Creating pack", &dest);
        }
        let tmp = dest.with_extension("pack.tmp");
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .ctx("Creating pack", &tmp)?;
        Ok(Box::new(DirSink {
            tmp,
            dest,
            out: Some(BufWriter::with_capacity(1 << 20, f)),
        }))
    }

    fn read_at(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(id, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_into(&self, id: PackId, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let f = self.handle(id)?;
        pread_append(&f, offset, len, buf).ctx("Reading pack", self.path(id))
    }

    fn will_need(&self, id: PackId, offset: u64, len: u64) {
        if let Ok(f) = self.handle(id) {
            crate::fsio::will_need(&f, offset, len);
        }
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        for sub in fs::read_dir(&self.root).ctx("Listing packs", &self.root)? {
            let sub = sub.ctx("Listing packs", &self.root)?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in fs::read_dir(&sub).ctx("Listing packs", &sub)? {
                let f = f.ctx("Listing packs", &sub)?;
                let name = f.file_name();
                let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".pack")) else {
                    continue;
                };
                if let Ok(n) = u64::from_str_radix(hex, 16) {
                    let len = f.metadata().ctx("Listing packs", f.path())?.len();
                    out.push((PackId(n), len));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, id: PackId) -> Result<()> {
        self.open.lock().unwrap().remove(&id);
        let p = self.path(id);
        fs::remove_file(&p).ctx("Deleting pack", p)
    }

    fn remove_unfinished(&self) -> Result<usize> {
        let mut n = 0;
        for sub in fs::read_dir(&self.root).ctx("Listing packs", &self.root)? {
            let sub = sub.ctx("Listing packs", &self.root)?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in fs::read_dir(&sub).ctx("Listing packs", &sub)? {
                let p = f.ctx("Listing packs", &sub)?.path();
                if p.extension().is_some_and(|e| e == "tmp") {
                    log::info!("Removing unfinished pack {}", p.display());
                    fs::remove_file(&p).ctx("Removing unfinished pack", &p)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Reads exactly `len` bytes at `offset` onto the end of `buf`, straight into its spare capacity
/// (a streaming reader's buffers are large; zero-filling them first cost a pass over every byte).
fn pread_append(f: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let start = buf.len();
    buf.reserve(len);
    let mut done = 0usize;
    while done < len {
        // SAFETY: `reserve` made room for `len` bytes after `start`; the kernel writes at most
        // `len - done` bytes at `start + done`, inside that spare capacity.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                buf.as_mut_ptr().add(start + done).cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: the `len` bytes after `start` were all written by pread above.
    unsafe { buf.set_len(start + len) };
    Ok(())
}

/// Checks and decodes a whole record read from `pack` (header and payload) that should hold
/// `expect`: header, id, length, authentication (encrypted repositories), decompression and the
/// id of the plaintext. Never returns unverified bytes.
pub fn open_record(
    pack: PackId,
    bytes: &[u8],
    expect: &ChunkId,
    dict: Option<&crate::compress::Dictionary>,
    crypt: Option<&Crypt>,
) -> Result<(RecordHeader, Vec<u8>)> {
    let h = open_header(pack, bytes, expect)?;
    let mut plain = Vec::new();
    decode_payload_into(
        pack,
        &h,
        &bytes[RECORD_HEADER_LEN..],
        expect,
        dict,
        crypt,
        &mut plain,
    )?;
    Ok((h, plain))
}

/// The header at the start of `bytes`, checked to be `expect`'s.
pub fn open_header(pack: PackId, bytes: &[u8], expect: &ChunkId) -> Result<RecordHeader> {
    let h = RecordHeader::decode(bytes).map_err(|detail| Error::CorruptChunk {
        id: *expect,
        pack,
        detail,
    })?;
    if h.id != *expect {
        return Err(Error::CorruptChunk {
            id: *expect,
            pack,
            detail: format!("record holds {} instead", h.id),
        });
    }
    Ok(h)
}

/// Decodes the payload of the record with header `h` onto the end of `out` and verifies it (see
/// [`decode_payload_mut`]); the payload is copied first when it must be opened.
pub fn decode_payload_into(
    pack: PackId,
    h: &RecordHeader,
    payload: &[u8],
    expect: &ChunkId,
    dict: Option<&crate::compress::Dictionary>,
    crypt: Option<&Crypt>,
    out: &mut Vec<u8>,
) -> Result<()> {
    match crypt {
        None => decode_plain_into(pack, h, payload, expect, dict, None, out),
        Some(_) => {
            let mut copy = payload.to_vec();
            decode_payload_mut(pack, h, &mut copy, expect, dict, crypt, out)
        }
    }
}

/// Decodes the payload of the record with header `h` onto the end of `out` and verifies it: in
/// an encrypted repository the payload is opened in place first (it is changed); then it is
/// decompressed and its id checked ([`verify_plain`]). On error `out` is back to its previous
/// length.
pub fn decode_payload_mut(
    pack: PackId,
    h: &RecordHeader,
    payload: &mut [u8],
    expect: &ChunkId,
    dict: Option<&crate::compress::Dictionary>,
    crypt: Option<&Crypt>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let Some(c) = crypt else {
        return decode_plain_into(pack, h, payload, expect, dict, None, out);
    };
    if payload.len() != h.stored_len as usize {
        return Err(corrupt(pack, expect, "record payload truncated".into()));
    }
    let plain = c
        .open_in_place(Purpose::Records, &h.aad(), payload)
        .map_err(|e| corrupt(pack, expect, e.to_string()))?;
    let n = plain.len();
    let inner = RecordHeader {
        stored_len: n as u32,
        ..*h
    };
    decode_plain_into(pack, &inner, plain, expect, dict, crypt, out)
}

fn corrupt(pack: PackId, expect: &ChunkId, detail: String) -> Error {
    Error::CorruptChunk {
        id: *expect,
        pack,
        detail,
    }
}

/// Decompresses an opened (or never sealed) payload onto `out` and verifies it.
fn decode_plain_into(
    pack: PackId,
    h: &RecordHeader,
    payload: &[u8],
    expect: &ChunkId,
    dict: Option<&crate::compress::Dictionary>,
    crypt: Option<&Crypt>,
    out: &mut Vec<u8>,
) -> Result<()> {
    if payload.len() != h.stored_len as usize {
        return Err(corrupt(pack, expect, "record payload truncated".into()));
    }
    let compression = crate::compress::Compression::from_byte(h.compression).ok_or_else(|| {
        corrupt(
            pack,
            expect,
            format!("unknown compression {}", h.compression),
        )
    })?;
    let start = out.len();
    crate::compress::decode_into(payload, h.raw_len as usize, compression, dict, out)
        .map_err(|e| corrupt(pack, expect, e.to_string()))?;
    verify_plain(pack, h, &out[start..], expect, crypt).inspect_err(|_| out.truncate(start))
}

/// The last check before bytes leave the repository layer: the plaintext has the header's length
/// and, in a plain repository, hashes to the id asked for. In an encrypted one (`crypt`) the
/// payload was opened before: its tag authenticates it together with the header that holds the
/// id (both the tag and the keyed id are MACs under the master key), so the id is not computed
/// again on every read; `check --read-data` still does ([`super::Repo::verify_record`]).
pub fn verify_plain(
    pack: PackId,
    h: &RecordHeader,
    plain: &[u8],
    expect: &ChunkId,
    crypt: Option<&Crypt>,
) -> Result<()> {
    let id_differs = || crypt.is_none() && crypt::chunk_id(None, plain) != *expect;
    if plain.len() != h.raw_len as usize || id_differs() {
        return Err(Error::CorruptChunk {
            id: *expect,
            pack,
            detail: "blake3 mismatch".into(),
        });
    }
    Ok(())
}

/// The header and the stored payload of a new record: the payload sealed in an encrypted
/// repository (`stored_len` then counts the nonce and tag).
pub fn seal_record(
    crypt: Option<&Crypt>,
    rtype: RecordType,
    id: ChunkId,
    raw_len: u32,
    compression: u8,
    payload: &[u8],
    sealed: &mut Vec<u8>,
) -> RecordHeader {
    let overhead = if crypt.is_some() { crypt::OVERHEAD } else { 0 };
    let h = RecordHeader {
        rtype,
        compression,
        raw_len,
        stored_len: (payload.len() + overhead) as u32,
        id,
    };
    sealed.clear();
    if let Some(c) = crypt {
        c.seal_into(Purpose::Records, &h.aad(), payload, sealed);
    }
    h
}

/// The 16-byte header every pack starts with: magic, version, reserved word.
pub fn pack_header() -> [u8; PACK_HEADER_LEN as usize] {
    let mut h = [0u8; PACK_HEADER_LEN as usize];
    h[..8].copy_from_slice(PACK_MAGIC);
    h[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
    h
}

/// Checks a pack's first bytes, every one of them: the magic, the version (a version this strata
/// does not know could lay records out differently) and the reserved word, which is 0 in format 1
/// (anything else is damage, or a later format this strata must not read as its own).
pub fn verify_pack_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(h) = bytes.get(..PACK_HEADER_LEN as usize) else {
        return Err(format!("pack header truncated ({} bytes)", bytes.len()));
    };
    if &h[..8] != PACK_MAGIC {
        return Err("bad pack magic".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != PACK_VERSION {
        return Err(format!("pack version {version}, expected {PACK_VERSION}"));
    }
    let reserved = u32::from_le_bytes(h[12..16].try_into().unwrap());
    if reserved != 0 {
        return Err(format!("pack header reserved word is {reserved:#x}, not 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = RecordHeader {
            rtype: RecordType::Chunk,
            compression: 1,
            raw_len: 1000,
            stored_len: 10,
            id: ChunkId::of(b"a"),
        };
        let mut b = h.encode();
        assert_eq!(RecordHeader::decode(&b).unwrap(), h);
        b[9] ^= 1;
        assert!(RecordHeader::decode(&b).is_err());
    }

    /// Known answer for a sealed record: the header, what it authenticates (its first 48 bytes)
    /// and the sealed payload. A change here makes every encrypted pack unreadable. Values
    /// computed independently (Python `blake3` and `cryptography`'s AESGCM).
    #[test]
    fn sealed_record_known_answer() {
        let c = Crypt::from_master(&[1; crypt::MASTER_LEN], [2; crypt::REPO_ID_LEN]);
        let plain = b"record plaintext";
        let h = RecordHeader {
            rtype: RecordType::Chunk,
            compression: 0,
            raw_len: plain.len() as u32,
            stored_len: (plain.len() + crypt::OVERHEAD) as u32,
            id: c.chunk_id(plain),
        };
        let sealed = c.seal_with_nonce(Purpose::Records, [3; crypt::NONCE_LEN], &h.aad(), plain);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&h.encode()), "5352454300000000100000003800000060043b715664dc46015e5c6a88c790bf70c308918b9efc1858ca382a5f56fc6c325251ad45efe6d4");
        assert_eq!(hex(&sealed), "030303030303030303030303030303030303030303030303656130b5cb43bdf98a24677b200ed2ae884f574c2687bf35146b0d6920c093ea");
        let mut out = Vec::new();
        let mut payload = sealed.clone();
        decode_payload_mut(PackId(1), &h, &mut payload, &h.id, None, Some(&c), &mut out).unwrap();
        assert_eq!(out, plain);
        // The same payload under a header that differs in any authenticated field does not open.
        for bent in [
            RecordHeader {
                rtype: RecordType::Layer,
                ..h
            },
            RecordHeader {
                raw_len: h.raw_len + 1,
                ..h
            },
            RecordHeader {
                id: ChunkId::of(plain),
                ..h
            },
        ] {
            let mut payload = sealed.clone();
            let r = decode_payload_mut(
                PackId(1),
                &bent,
                &mut payload,
                &bent.id,
                None,
                Some(&c),
                &mut out,
            );
            assert!(r.is_err());
        }
    }

    #[test]
    fn every_pack_header_byte_is_verified() {
        let good = pack_header();
        assert_eq!(verify_pack_header(&good), Ok(()));
        for at in 0..PACK_HEADER_LEN as usize {
            let mut b = good;
            b[at] ^= 0x10;
            assert!(verify_pack_header(&b).is_err(), "byte {at}");
        }
        assert!(verify_pack_header(&good[..15]).is_err());
    }

    #[test]
    fn dir_backend_finish_makes_visible() {
        let t = tempfile::tempdir().unwrap();
        let b = DirBackend::open(t.path()).unwrap();
        let mut s = b.create(PackId(0x1ff)).unwrap();
        s.write_all(b"hello world").unwrap();
        assert!(b.list().unwrap().is_empty());
        s.finish().unwrap();
        assert_eq!(b.list().unwrap(), vec![(PackId(0x1ff), 11)]);
        // A finished pack is never replaced (a repeated id must take another number).
        assert!(b.create(PackId(0x1ff)).is_err());
        assert_eq!(b.read_at(PackId(0x1ff), 6, 5).unwrap(), b"world");
        assert!(b.read_at(PackId(0x1ff), 6, 50).is_err());
        // Dropped unfinished (an error mid-backup), a pack removes its temporary file...
        let mut s = b.create(PackId(2)).unwrap();
        s.write_all(b"partial").unwrap();
        let tmp = b.path(PackId(2)).with_extension("pack.tmp");
        assert!(tmp.exists());
        drop(s);
        assert!(!tmp.exists());
        assert_eq!(b.remove_unfinished().unwrap(), 0);
        // ...while one left by a killed process is removed by `remove_unfinished`.
        fs::write(&tmp, b"left by a kill").unwrap();
        assert_eq!(b.remove_unfinished().unwrap(), 1);
        assert!(!tmp.exists());
    }
}
