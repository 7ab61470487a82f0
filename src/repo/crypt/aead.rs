//! The AEAD every sealed message uses: AES-256-GCM (ring) with a 24-byte nonce, made safe for
//! random nonces by a key per nonce prefix, in the manner of XAES-256-GCM:
//!
//! ```text
//! nonce      = prefix [16] ‖ n [8]
//! key        = blake3 keyed with the purpose key over ("strata aes-256-gcm key" ‖ prefix)
//! ciphertext ‖ tag = AES-256-GCM(key, 96-bit nonce = n ‖ 0 [4], associated data, plaintext)
//! ```
//!
//! AES-GCM's own 96-bit nonce may not repeat under one key; here a key serves only the messages
//! of one prefix, and strata draws a prefix at random once per process and counts `n` up
//! (`super::next_nonce`), so a (key, nonce) pair repeats only if two processes draw the same 128
//! random bits. Why AES-GCM rather than XChaCha20-Poly1305: on the benchmark machine ring's
//! AES-256-GCM seals about 10 GB/s on one core, XChaCha20-Poly1305 (RustCrypto) 1.3 GB/s, blake3
//! 7.3 GB/s; with the latter every encrypted read cost a third more (docs/FORMAT.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use super::{Unauthentic, NONCE_LEN, TAG_LEN};

/// Keys kept per sealing key (one per prefix met: one per process that wrote).
const CACHED_KEYS: usize = 1024;

/// One purpose's key, and the AES keys derived from it per nonce prefix.
pub struct SealKey {
    base: Zeroizing<[u8; 32]>,
    keys: Mutex<HashMap<[u8; 16], Arc<LessSafeKey>>>,
}

impl SealKey {
    /// The sealing key `base` (32 bytes).
    pub fn new(base: [u8; 32]) -> SealKey {
        SealKey {
            base: Zeroizing::new(base),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The AES key of nonce prefix `prefix`.
    fn key(&self, prefix: &[u8]) -> Arc<LessSafeKey> {
        let prefix: [u8; 16] = prefix.try_into().expect("16-byte prefix");
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(&prefix) {
            return k.clone();
        }
        let mut h = blake3::Hasher::new_keyed(&self.base);
        h.update(b"strata aes-256-gcm key");
        h.update(&prefix);
        let raw = Zeroizing::new(*h.finalize().as_bytes());
        let key = Arc::new(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &raw[..]).expect("a 32-byte AES-256 key"),
        ));
        if keys.len() >= CACHED_KEYS {
            keys.clear();
        }
        keys.insert(prefix, key.clone());
        key
    }

    fn gcm_nonce(nonce: &[u8; NONCE_LEN]) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&nonce[16..]);
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `buf` in place under `nonce` (never used before with this key) and `aad`;
    /// returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self
            .key(&nonce[..16])
            .seal_in_place_separate_tag(Self::gcm_nonce(nonce), Aad::from(aad), buf)
            .expect("AES-256-GCM seals any length strata writes");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypts `buf` in place if `tag` authenticates it under `nonce` and `aad`; on failure
    /// `buf` holds nothing usable.
    pub fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> std::result::Result<(), Unauthentic> {
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unauthentic)?;
        let tag = Tag::try_from(tag).map_err(|_| Unauthentic)?;
        self.key(&nonce[..16])
            .open_in_place_separate_tag(Self::gcm_nonce(nonce), Aad::from(aad), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| Unauthentic)
    }
}
