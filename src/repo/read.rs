//! Verified reads of indexed records: a chunk (or any record indexed by id) is looked up in the
//! index, read from its pack and checked against its id before any byte is returned.

use super::crypt::{Crypt, Purpose, NONCE_LEN, OVERHEAD};
use super::keys::Location;
use super::pack::{self, PackBackend, RECORD_HEADER_LEN};
use super::store::Space;
use super::Repo;
use crate::error::{Error, Result};
use crate::id::ChunkId;

thread_local! {
    // Compressed records are read here, then decompressed into their own buffer.
    static RECORD_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Repo {
    /// Whether the index knows `id`.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.store.contains(Space::Chunks, &id.0)
    }

    /// Index location of a chunk.
    pub fn chunk_location(&self, id: &ChunkId) -> Result<Location> {
        let v = self
            .store
            .get(Space::Chunks, &id.0)?
            .ok_or(Error::MissingChunk(*id))?;
        Location::decode(&v).ok_or_else(|| Error::CorruptMetadata(format!("index entry of {id}")))
    }

    /// Reads and verifies a chunk (or any record indexed by id). Never returns unverified bytes.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = self.chunk_location(id)?;
        self.read_record_at(id, &loc)
    }

    /// Reads and verifies the record at `loc`, which must hold `id`.
    pub fn read_record_at(&self, id: &ChunkId, loc: &Location) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_record_into(id, loc, &mut out)?;
        Ok(out)
    }

    /// Reads the record at `loc` as [`Repo::read_record_at`] does and also recomputes its id
    /// from the plaintext, which an encrypted repository's reads leave to the tag (see
    /// [`pack::verify_plain`]): what `check --read-data` verifies.
    pub fn verify_record(&self, id: &ChunkId, loc: &Location) -> Result<()> {
        let plain = self.read_record_at(id, loc)?;
        if self.crypt.is_some() && self.chunk_id(&plain) != *id {
            return Err(pack_damage(id, loc, "keyed id mismatch"));
        }
        Ok(())
    }

    /// [`Repo::read_record_at`] into `out` (replacing its content), so a reader can recycle
    /// buffers. On error `out` holds nothing usable.
    pub fn read_record_into(&self, id: &ChunkId, loc: &Location, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        self.read_record_append(id, loc, out)
    }

    /// [`Repo::read_record_at`] appended to `out`, so a reader can gather several chunks into
    /// one buffer with no copy. A record stored raw is read as header, then payload straight
    /// into `out`; a compressed one into a per-thread buffer reused from read to read, then
    /// decompressed into `out`. Nothing unverified stays: on error `out` is back to its
    /// previous length.
    pub fn read_record_append(
        &self,
        id: &ChunkId,
        loc: &Location,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let dict = self.dictionary().map(|d| d.as_ref());
        let crypt = self.crypt().map(|c| c.as_ref());
        read_record_append_from(self.packs.as_ref(), dict, crypt, id, loc, out)
    }
}

/// Reads the record at `loc`, which must hold `id`, from `packs`, and appends its verified
/// plaintext to `out` ([`Repo::read_record_append`] without a repository: the sled-free `cat` path
/// reads this way). On error `out` is back to its previous length.
pub fn read_record_append_from(
    packs: &dyn PackBackend,
    dict: Option<&crate::compress::Dictionary>,
    crypt: Option<&Crypt>,
    id: &ChunkId,
    loc: &Location,
    out: &mut Vec<u8>,
) -> Result<()> {
    let read_err = |e: Error| Error::CorruptChunk {
        id: *id,
        pack: loc.pack,
        detail: e.to_string(),
    };
    let start = out.len();
    let res = (|| {
        if loc.compression == crate::compress::Compression::None as u8 {
            // Header (and the nonce of a sealed payload) first, then the payload straight into
            // `out`, opened there in place.
            let nonce = if crypt.is_some() { NONCE_LEN } else { 0 };
            let head = packs
                .read_at(loc.pack, loc.offset, RECORD_HEADER_LEN + nonce)
                .map_err(read_err)?;
            let h = pack::open_header(loc.pack, &head, id)?;
            // The pack's header decides; should it disagree with the index, the general
            // path below decodes what the header says (and blake3 judges).
            if h.compression == loc.compression
                && (crypt.is_none() || h.stored_len == loc.stored_len)
            {
                let at = loc.offset + (RECORD_HEADER_LEN + nonce) as u64;
                let len = (loc.stored_len as usize)
                    .checked_sub(nonce)
                    .filter(|_| crypt.is_none() || loc.stored_len as usize >= OVERHEAD)
                    .ok_or_else(|| pack_damage(id, loc, "record payload truncated"))?;
                packs.read_into(loc.pack, at, len, out).map_err(read_err)?;
                if let Some(c) = crypt {
                    let n = c
                        .open_detached(
                            Purpose::Records,
                            &h.aad(),
                            &head[RECORD_HEADER_LEN..],
                            &mut out[start..],
                        )
                        .map_err(|e| pack_damage(id, loc, &e.to_string()))?;
                    out.truncate(start + n);
                }
                return pack::verify_plain(loc.pack, &h, &out[start..], id, crypt);
            }
        }
        let len = RECORD_HEADER_LEN + loc.stored_len as usize;
        RECORD_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            packs
                .read_into(loc.pack, loc.offset, len, &mut buf)
                .map_err(read_err)?;
            let h = pack::open_header(loc.pack, &buf, id)?;
            let payload = &mut buf[RECORD_HEADER_LEN..];
            let r = pack::decode_payload_mut(loc.pack, &h, payload, id, dict, crypt, out);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        })
    })();
    if res.is_err() {
        out.truncate(start);
    }
    res.inspect_err(|e| log::error!("{e}"))
}

fn pack_damage(id: &ChunkId, loc: &Location, detail: &str) -> Error {
    Error::CorruptChunk {
        id: *id,
        pack: loc.pack,
        detail: detail.to_string(),
    }
}
