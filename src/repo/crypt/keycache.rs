//! Keeping an unlocked key between commands (`--key-cache DURATION`), so that a run of commands
//! pays the passphrase's key derivation (argon2id, ~0.14 s) once, and needs the passphrase once.
//!
//! **What is kept.** Not the master key: the *wrapping key* of the key file that a passphrase
//! opened (argon2id's output) and that file's id, in a `user` key of the kernel's user keyring
//! ([`super::keyring`]) described `strata:key:<repository id>`, which expires after the duration
//! given (counted from the unlock with the passphrase: using a cached key does not extend it).
//!
//! **Why the wrapping key.** A cached key is verified against the repository before it is used:
//! it must open, under the key file's own authentication tag, the key file it names, which must
//! name the repository. So a cached key that was changed, that belongs to another repository
//! (a repository swapped under the same path, a marker claiming another's id) or whose key file
//! is gone (`key passwd`, `key remove`) opens nothing: it is discarded and the passphrase is
//! asked for, as without a cache. What it opens is the master key the repository's own key file
//! holds, never a key from the cache alone. And it stands for the passphrase of one key file
//! without revealing the passphrase (which may serve elsewhere).
//!
//! Payload (76 bytes, docs/FORMAT.md, "The key cache"):
//!
//! ```text
//!  0  "STRATAKC" ‖ version u32 LE (1)
//! 12  repository id [16]
//! 28  key file id [16] (its name: 16 hex digits)
//! 44  wrapping key [32]
//! 76
//! ```
//!
//! The process-wide setting ([`set_lifetime`]) is the CLI's; off by default, and then the
//! keyring is neither read nor written, except that `strata key remove|passwd` drop a cached
//! key naming the key file they remove ([`discard_naming`]) and `strata key forget` drops one.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

use super::{keyring, REPO_ID_LEN};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"STRATAKC";
const VERSION: u32 = 1;
const KEY_ID_LEN: usize = 16;
const PAYLOAD_LEN: usize = 12 + REPO_ID_LEN + KEY_ID_LEN + 32;

/// How long a key stays cached, in seconds; 0: the cache is off.
static LIFETIME_S: AtomicU32 = AtomicU32::new(0);
/// Whether this process may unlock with a cached key (`strata key` may not).
static REUSE: AtomicBool = AtomicBool::new(true);
/// Whether the keyring's absence has been told already.
static TOLD: AtomicBool = AtomicBool::new(false);

/// Sets, for this process, how long an unlocked key stays cached (`--key-cache`); zero turns
/// the cache off. Rounded up to whole seconds (the keyring's unit).
pub fn set_lifetime(lifetime: Duration) {
    LIFETIME_S.store(seconds(lifetime), Ordering::Relaxed);
}

/// `d` in whole seconds, rounded up (a keyring timeout's unit).
fn seconds(d: Duration) -> u32 {
    d.as_millis().div_ceil(1000).min(u32::MAX as u128) as u32
}

/// How long an unlocked key stays cached; `None` when the cache is off.
pub fn lifetime() -> Option<Duration> {
    match LIFETIME_S.load(Ordering::Relaxed) {
        0 => None,
        s => Some(Duration::from_secs(s.into())),
    }
}

/// This process unlocks with a passphrase only, never with a cached key (it may still cache the
/// key it unlocks): `strata key`, whose commands are about passphrases — `key remove` keeps the
/// key that unlocked the command, `key passwd` replaces it, and both must be the passphrase's.
pub fn passphrase_only() {
    REUSE.store(false, Ordering::Relaxed);
}

/// The keyring's description of the cached key of repository `repo_id`.
pub fn description(repo_id: &[u8; REPO_ID_LEN]) -> String {
    let hex: String = repo_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("strata:key:{hex}")
}

/// A cached key: the id of the key file it opens and that file's wrapping key.
pub struct Cached {
    /// The key file's id.
    pub key_id: String,
    /// The key file's wrapping key (argon2id of its passphrase).
    pub wrap: Zeroizing<[u8; 32]>,
}

impl Cached {
    /// The keyring payload for repository `repo_id`; `None` when the key id is not 16 bytes
    /// (a key file named by hand, which is then not cached).
    fn encode(&self, repo_id: &[u8; REPO_ID_LEN]) -> Option<Zeroizing<Vec<u8>>> {
        if self.key_id.len() != KEY_ID_LEN {
            return None;
        }
        let mut b = Zeroizing::new(Vec::with_capacity(PAYLOAD_LEN));
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(repo_id);
        b.extend_from_slice(self.key_id.as_bytes());
        b.extend_from_slice(&self.wrap[..]);
        Some(b)
    }

    /// Parses a payload that claims to be repository `repo_id`'s; `None` for anything else.
    fn decode(b: &[u8], repo_id: &[u8; REPO_ID_LEN]) -> Option<Cached> {
        if b.len() != PAYLOAD_LEN || &b[..8] != MAGIC || b[8..12] != VERSION.to_le_bytes() {
            return None;
        }
        if b[12..28] != repo_id[..] {
            return None;
        }
        let key_id = std::str::from_utf8(&b[28..44]).ok()?.to_string();
        let mut wrap = Zeroizing::new([0u8; 32]);
        wrap.copy_from_slice(&b[44..76]);
        Some(Cached { key_id, wrap })
    }
}

/// Logs, once per process, that the keyring cannot be used.
fn unavailable(e: &std::io::Error) {
    if !TOLD.swap(true, Ordering::Relaxed) {
        log::warn!(
            "--key-cache: the kernel keyring cannot be used here ({e}); the key is not kept between commands"
        );
    }
}

/// The cached key of repository `repo_id`, when the cache is on, this process may use it, and
/// one is cached. The caller verifies it (it must open its key file) and [`discard`]s it if not.
pub fn fetch(repo_id: &[u8; REPO_ID_LEN]) -> Option<Cached> {
    if lifetime().is_none() || !REUSE.load(Ordering::Relaxed) {
        return None;
    }
    let found = keyring::find(&description(repo_id)).and_then(|s| match s {
        Some(serial) => keyring::read(serial).map(Some),
        None => Ok(None),
    });
    match found {
        Ok(Some(payload)) => {
            let c = Cached::decode(&payload, repo_id);
            if c.is_none() {
                log::warn!(
                    "The cached key of this repository is not one strata wrote; discarding it"
                );
                discard(repo_id);
            }
            c
        }
        Ok(None) => None,
        Err(e) => {
            unavailable(&e);
            None
        }
    }
}

/// Caches `key` for repository `repo_id` when the cache is on (replacing what was cached). A
/// keyring that cannot be used is a warning, never an error: the command was unlocked.
pub fn store(repo_id: &[u8; REPO_ID_LEN], key: &Cached) {
    let Some(lifetime) = lifetime() else {
        return;
    };
    let Some(payload) = key.encode(repo_id) else {
        log::info!(
            "Key file {} is not named as strata names key files; not caching it",
            key.key_id
        );
        return;
    };
    match keyring::put(&description(repo_id), &payload, lifetime.as_secs() as u32) {
        Ok(_) => log::debug!("Cached the key for {} s", lifetime.as_secs()),
        Err(e) => unavailable(&e),
    }
}

/// Drops the cached key of repository `repo_id` if it names key file `key_id` (which
/// `strata key` just removed), whatever this process's setting: it could only be discarded later.
pub fn discard_naming(repo_id: &[u8; REPO_ID_LEN], key_id: &str) {
    let found = keyring::find(&description(repo_id)).and_then(|s| match s {
        Some(serial) => keyring::read(serial).map(|p| Some((serial, p))),
        None => Ok(None),
    });
    match found {
        Ok(Some((serial, payload))) => {
            let names = Cached::decode(&payload, repo_id).is_none_or(|c| c.key_id == key_id);
            if names {
                if let Err(e) = keyring::invalidate(serial) {
                    log::warn!("Could not discard the cached key: {e}");
                }
            }
        }
        Ok(None) => {}
        Err(e) => log::debug!("No kernel keyring to discard a cached key from ({e})"),
    }
}

/// Drops the cached key of repository `repo_id`, if any, logging a failure.
pub fn discard(repo_id: &[u8; REPO_ID_LEN]) {
    if let Err(e) = forget(repo_id) {
        log::warn!("Could not discard the cached key: {e}");
    }
}

/// Drops the cached key of repository `repo_id` (`strata key forget`), whatever this process's
/// setting; returns whether one was cached.
pub fn forget(repo_id: &[u8; REPO_ID_LEN]) -> Result<bool> {
    let io = |source| Error::Io {
        context: "Using",
        path: "the kernel keyring".into(),
        source,
    };
    match keyring::find(&description(repo_id)).map_err(io)? {
        Some(serial) => {
            keyring::invalidate(serial).map_err(io)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_and_names_its_repository() {
        let c = Cached {
            key_id: "0123456789abcdef".into(),
            wrap: Zeroizing::new([7; 32]),
        };
        let b = c.encode(&[1; REPO_ID_LEN]).unwrap();
        assert_eq!(b.len(), PAYLOAD_LEN);
        let back = Cached::decode(&b, &[1; REPO_ID_LEN]).unwrap();
        assert_eq!(back.key_id, c.key_id);
        assert_eq!(*back.wrap, *c.wrap);
        assert!(Cached::decode(&b, &[2; REPO_ID_LEN]).is_none());
        assert!(Cached::decode(&b[..70], &[1; REPO_ID_LEN]).is_none());
        let mut bent = b.clone();
        bent[0] ^= 1;
        assert!(Cached::decode(&bent, &[1; REPO_ID_LEN]).is_none());
        let odd = Cached {
            key_id: "hand-named".into(),
            wrap: Zeroizing::new([7; 32]),
        };
        assert!(odd.encode(&[1; REPO_ID_LEN]).is_none());
    }

    #[test]
    fn durations_round_up_to_seconds() {
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
