//! The cryptography of an encrypted repository (format 2; docs/FORMAT.md, "Encryption"): a random
//! 64-byte master key, unlocked from a key file ([`keyfile`]), and what is derived from it.
//!
//! Every secret strata uses comes from the master key through `blake3::derive_key` with its own
//! context string, so that no key serves two purposes:
//!
//! | key | use |
//! |---|---|
//! | records | sealing ([`aead`]) of pack record payloads (after compression) |
//! | index | sealing of the index's values |
//! | names | keyed blake3 of the path parts that index keys would otherwise hold |
//! | ids | keyed blake3 of plaintext: chunk and blob ids |
//! | lookup | sealing of the lookup files |
//!
//! A sealed message is `nonce [24] ‖ ciphertext ‖ tag [16]`; the associated data says where the
//! message belongs (a record's header, an index key), so a sealed value moved elsewhere fails
//! to open. Nonces are 24 bytes: 16 random bytes drawn once per process, then a 64-bit counter
//! ([`next_nonce`]); see docs/FORMAT.md for why they never repeat.
//!
//! An unlocked key can be kept between commands in the kernel keyring ([`keycache`] over
//! [`keyring`]), verified against the repository's key file before each use.

pub mod aead;
pub mod keycache;
pub mod keyfile;
pub mod keyring;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use zeroize::Zeroizing;

use aead::SealKey;

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Length of the master key.
pub const MASTER_LEN: usize = 64;
/// Length of a nonce.
pub const NONCE_LEN: usize = 24;
/// Length of an authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a repository id (the marker names it; key files are bound to it).
pub const REPO_ID_LEN: usize = 16;

/// Context strings of `blake3::derive_key`: part of the format (changing one makes every
/// repository unreadable), pinned by the known-answer tests below.
const CONTEXT_RECORDS: &str = "strata 2026-12 pack record payloads";
const CONTEXT_INDEX: &str = "strata 2026-12 index values";
const CONTEXT_NAMES: &str = "strata 2026-12 index key names";
const CONTEXT_IDS: &str = "strata 2026-12 chunk ids";
const CONTEXT_LOOKUP: &str = "strata 2026-12 lookup files";

/// What a sealed message is for: each purpose has its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Pack record payloads.
    Records,
    /// The index's values.
    Index,
    /// The lookup files.
    Lookup,
}

/// The unlocked keys of an encrypted repository. Holding one means the passphrase was right.
pub struct Crypt {
    master: Zeroizing<[u8; MASTER_LEN]>,
    /// The key file that unlocked it (empty when made some other way).
    key_id: String,
    repo_id: [u8; REPO_ID_LEN],
    records: SealKey,
    index: SealKey,
    lookup: SealKey,
    names: Zeroizing<[u8; 32]>,
    ids: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypt(..)")
    }
}

fn cipher(context: &str, master: &[u8; MASTER_LEN]) -> SealKey {
    SealKey::new(blake3::derive_key(context, master))
}

impl Crypt {
    /// The keys derived from `master`, for the repository named `repo_id`.
    pub fn from_master(master: &[u8; MASTER_LEN], repo_id: [u8; REPO_ID_LEN]) -> Crypt {
        Crypt {
            master: Zeroizing::new(*master),
            key_id: String::new(),
            repo_id,
            records: cipher(CONTEXT_RECORDS, master),
            index: cipher(CONTEXT_INDEX, master),
            lookup: cipher(CONTEXT_LOOKUP, master),
            names: Zeroizing::new(blake3::derive_key(CONTEXT_NAMES, master)),
            ids: Zeroizing::new(blake3::derive_key(CONTEXT_IDS, master)),
        }
    }

    /// The same keys, noting the key file that unlocked them.
    pub fn unlocked_by(mut self, key_id: String) -> Crypt {
        self.key_id = key_id;
        self
    }

    /// The id of the key file that unlocked these keys.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The master key, for wrapping it under another passphrase (`strata key add`).
    pub fn master(&self) -> &[u8; MASTER_LEN] {
        &self.master
    }

    /// The repository these keys belong to.
    pub fn repo_id(&self) -> &[u8; REPO_ID_LEN] {
        &self.repo_id
    }

    /// The id of plaintext `data`: blake3 keyed with the ids key, so that someone who knows a
    /// candidate file cannot tell whether the repository holds it.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.ids, data).as_bytes())
    }

    /// A keyed 16-byte hash of `parts` (each length-prefixed, so no two lists hash alike): what
    /// the index stores instead of a directory path or a file name.
    pub fn name_hash(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.names);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    fn aead(&self, purpose: Purpose) -> &SealKey {
        match purpose {
            Purpose::Records => &self.records,
            Purpose::Index => &self.index,
            Purpose::Lookup => &self.lookup,
        }
    }

    /// Appends `nonce ‖ seal(plain) ‖ tag` to `out`, with associated data `aad`.
    pub fn seal_into(&self, purpose: Purpose, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        self.seal_with(purpose, next_nonce(), aad, plain, out)
    }

    /// [`Crypt::seal_into`] with a given nonce: for known-answer tests only (a nonce must never
    /// be chosen twice).
    #[cfg(test)]
    pub(crate) fn seal_with_nonce(
        &self,
        purpose: Purpose,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_with(purpose, nonce, aad, plain, &mut out);
        out
    }

    fn seal_with(
        &self,
        purpose: Purpose,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.reserve(plain.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .aead(purpose)
            .seal_in_place(&nonce, aad, &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// [`Crypt::seal_into`] into a new vector.
    pub fn seal(&self, purpose: Purpose, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        self.seal_into(purpose, aad, plain, &mut out);
        out
    }

    /// Opens a sealed message in place: `sealed` is `nonce ‖ ciphertext ‖ tag`; on success the
    /// plaintext is `sealed[NONCE_LEN..len - TAG_LEN]`, returned. A message that was changed,
    /// truncated, sealed with another key or for other associated data is an error, and no
    /// plaintext is returned.
    pub fn open_in_place<'a>(
        &self,
        purpose: Purpose,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> std::result::Result<&'a mut [u8], Unauthentic> {
        if sealed.len() < OVERHEAD {
            return Err(Unauthentic);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        self.aead(purpose).open_in_place(nonce, aad, body, tag)?;
        Ok(body)
    }

    /// Opens `nonce` and `body ‖ tag` held apart (a pack read gets the nonce with the record
    /// header and the rest straight into the caller's buffer); the plaintext replaces `body`.
    pub fn open_detached(
        &self,
        purpose: Purpose,
        aad: &[u8],
        nonce: &[u8],
        body_and_tag: &mut [u8],
    ) -> std::result::Result<usize, Unauthentic> {
        if nonce.len() != NONCE_LEN || body_and_tag.len() < TAG_LEN {
            return Err(Unauthentic);
        }
        let n = body_and_tag.len() - TAG_LEN;
        let (body, tag) = body_and_tag.split_at_mut(n);
        self.aead(purpose).open_in_place(nonce, aad, body, tag)?;
        Ok(n)
    }

    /// Opens a sealed message into a new vector.
    pub fn open(
        &self,
        purpose: Purpose,
        aad: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<Vec<u8>, Unauthentic> {
        let mut buf = sealed.to_vec();
        let n = self.open_in_place(purpose, aad, &mut buf)?.len();
        buf.truncate(NONCE_LEN + n);
        buf.drain(..NONCE_LEN);
        Ok(buf)
    }
}

/// The id of plaintext `data`: keyed with `crypt`'s ids key in an encrypted repository,
/// plain blake3 otherwise.
pub fn chunk_id(crypt: Option<&Crypt>, data: &[u8]) -> ChunkId {
    match crypt {
        Some(c) => c.chunk_id(data),
        None => ChunkId::of(data),
    }
}

/// A sealed message did not open: it was changed, or sealed with another key or for another
/// place. The caller says which message, in its own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unauthentic;

impl std::fmt::Display for Unauthentic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authentication failed (changed, or not sealed with this repository's key)")
    }
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        context: "Reading random bytes from",
        path: "the system's random source".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

/// A fresh nonce: this process's 16 random bytes, then a counter that never repeats within the
/// process. Two processes share a prefix with probability 2⁻¹²⁸ per pair.
fn next_nonce() -> [u8; NONCE_LEN] {
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX
        .get_or_init(|| random::<16>().unwrap_or_else(|e| panic!("no random nonce prefix: {e}")));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..16].copy_from_slice(prefix);
    nonce[16..].copy_from_slice(&n.to_le_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn sample() -> Crypt {
        let mut master = [0u8; MASTER_LEN];
        for (i, b) in master.iter_mut().enumerate() {
            *b = i as u8;
        }
        Crypt::from_master(&master, [7; REPO_ID_LEN])
    }

    #[test]
    fn seal_and_open_round_trip_and_refuse_any_change() {
        let c = sample();
        let sealed = c.seal(Purpose::Index, b"key", b"value");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(c.open(Purpose::Index, b"key", &sealed).unwrap(), b"value");
        assert!(c.open(Purpose::Index, b"other key", &sealed).is_err());
        assert!(c.open(Purpose::Records, b"key", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bent = sealed.clone();
            bent[i] ^= 0x20;
            assert!(c.open(Purpose::Index, b"key", &bent).is_err(), "byte {i}");
        }
        assert!(c
            .open(Purpose::Index, b"key", &sealed[..sealed.len() - 1])
            .is_err());
        // Two seals of one plaintext differ (fresh nonces).
        assert_ne!(sealed, c.seal(Purpose::Index, b"key", b"value"));
    }

    /// Known answers: a change to key derivation or sealing makes every repository unreadable,
    /// so it must be noticed here first. The values were computed independently of this code
    /// (Python: the `blake3` package and `cryptography`'s AESGCM, following docs/FORMAT.md).
    #[test]
    fn known_answers() {
        let c = sample();
        assert_eq!(
            c.chunk_id(b"").to_string(),
            "dc442571eadbc19ab0b5bb0262a0cc930e61c2997740e7f9691c7b73b47e8c8e"
        );
        assert_eq!(
            hex(&c.name_hash(&[b"dir", b"name"])),
            "dd4cf51cb8f74b0a8a3ddee6579f44d4"
        );
        let mut out = Vec::new();
        c.seal_with(
            Purpose::Records,
            [9; NONCE_LEN],
            b"aad",
            b"plaintext",
            &mut out,
        );
        assert_eq!(hex(&out), "090909090909090909090909090909090909090909090909d23f13ac871cd4bb5b6c512f2af7f0d6b32cbb5d28dcc7b2a7");
        let mut other = Vec::new();
        c.seal_with(
            Purpose::Index,
            [9; NONCE_LEN],
            b"aad",
            b"plaintext",
            &mut other,
        );
        assert_ne!(out, other, "each purpose has its own key");
    }
}
