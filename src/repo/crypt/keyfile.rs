//! Key files, `REPO/keys/<id>`: the master key wrapped by a key derived from a passphrase.
//! Several key files can hold the same master key (one per passphrase); any one unlocks the
//! repository. Layout (docs/FORMAT.md, "Key files"):
//!
//! ```text
//!   0  "STRATAKY" ‖ version u32 LE (1) ‖ reserved u32 (0)
//!  16  repository id [16]
//!  32  created, ns since the epoch, i64 LE
//!  40  kdf u32 LE (1 = argon2id, version 0x13) ‖ memory KiB u32 LE ‖ iterations u32 LE ‖
//!      parallelism u32 LE
//!  56  salt [32]
//!  88  nonce [24]
//! 112  master key sealed ([`super::aead`]) under argon2id(passphrase, salt), associated data
//!      bytes 0..88: ciphertext [64] ‖ tag [16]
//! 192  check [16]: the first 16 bytes of blake3(bytes 0..192)
//! 208
//! ```
//!
//! The check tells a damaged or truncated file (an error naming the file) from a wrong
//! passphrase (the tag fails on an intact file); the associated data binds the parameters and
//! the repository id, so a key file of another repository, or one whose parameters were
//! lowered, does not open.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::aead::SealKey;
use super::{keycache, random, MASTER_LEN, NONCE_LEN, REPO_ID_LEN, TAG_LEN};
use crate::error::{Error, IoContext, Result};

/// The directory of key files inside a repository.
pub const KEYS_DIR: &str = "keys";
const MAGIC: &[u8; 8] = b"STRATAKY";
const VERSION: u32 = 1;
const KDF_ARGON2ID: u32 = 1;
const SALT_LEN: usize = 32;
const AAD_END: usize = 88;
const SEALED_END: usize = AAD_END + NONCE_LEN + MASTER_LEN + TAG_LEN;
/// Length of a key file.
pub const KEY_FILE_LEN: usize = SEALED_END + 16;

/// A passphrase, wiped from memory when dropped.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps passphrase bytes.
    pub fn new(bytes: Vec<u8>) -> Passphrase {
        Passphrase(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// argon2id parameters, stored in each key file. The default follows RFC 9106's second
/// recommendation in memory (64 MiB) with 3 passes and one lane: about 0.2 s on this
/// project's 2-core benchmark machine, paid once per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct KdfParams {
    /// Memory of the key derivation, in KiB.
    #[arg(
        long = "kdf-memory",
        value_name = "KIB",
        default_value_t = 64 * 1024,
        value_parser = clap::value_parser!(u32).range(8..),
        help = "Memory of the passphrase key derivation (argon2id), in KiB"
    )]
    pub memory_kib: u32,
    /// Passes over that memory.
    #[arg(
        long = "kdf-iterations",
        value_name = "N",
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..),
        help = "Passes of the passphrase key derivation (argon2id)"
    )]
    pub iterations: u32,
    /// Lanes (computed one after another by this build).
    #[arg(skip = 1u32)]
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// One key file, parsed.
#[derive(Clone, Debug)]
pub struct KeyFile {
    /// The repository it unlocks.
    pub repo_id: [u8; REPO_ID_LEN],
    /// When it was made, ns since the epoch.
    pub created_ns: i64,
    /// How the passphrase becomes the wrapping key.
    pub kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    sealed: [u8; MASTER_LEN + TAG_LEN],
}

/// The argon2id output for `pass` under `kdf` and `salt`: the key that wraps the master key.
fn wrapping_key(pass: &Passphrase, salt: &[u8], kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let bad = |e: argon2::Error| Error::InvalidArgument(format!("key derivation parameters: {e}"));
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(bad)?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.as_bytes(), salt, &mut out[..])
        .map_err(bad)?;
    Ok(out)
}

impl KeyFile {
    /// Wraps `master` for the repository `repo_id` under `pass`.
    pub fn seal(
        master: &[u8; MASTER_LEN],
        repo_id: [u8; REPO_ID_LEN],
        pass: &Passphrase,
        kdf: KdfParams,
    ) -> Result<KeyFile> {
        let mut k = KeyFile {
            repo_id,
            created_ns: crate::time::now_ns(),
            kdf,
            salt: random()?,
            nonce: random()?,
            sealed: [0; MASTER_LEN + TAG_LEN],
        };
        let wrap = wrapping_key(pass, &k.salt, &kdf)?;
        let aad = k.encode();
        let mut body = Zeroizing::new(*master);
        let tag = SealKey::new(*wrap).seal_in_place(&k.nonce, &aad[..AAD_END], &mut body[..]);
        k.sealed[..MASTER_LEN].copy_from_slice(&body[..]);
        k.sealed[MASTER_LEN..].copy_from_slice(&tag);
        Ok(k)
    }

    /// The master key, or `None` when `pass` is not this key's passphrase.
    pub fn unwrap(&self, pass: &Passphrase) -> Result<Option<Zeroizing<[u8; MASTER_LEN]>>> {
        let wrap = wrapping_key(pass, &self.salt, &self.kdf)?;
        Ok(self.open_with(&wrap))
    }

    /// The master key, or `None` when `wrap` is not this key's wrapping key: the tag over the
    /// sealed master key and the associated data (repository id, parameters, salt) decides.
    fn open_with(&self, wrap: &[u8; 32]) -> Option<Zeroizing<[u8; MASTER_LEN]>> {
        let aad = self.encode();
        let mut master = Zeroizing::new([0u8; MASTER_LEN]);
        master.copy_from_slice(&self.sealed[..MASTER_LEN]);
        let ok = SealKey::new(*wrap)
            .open_in_place(
                &self.nonce,
                &aad[..AAD_END],
                &mut master[..],
                &self.sealed[MASTER_LEN..],
            )
            .is_ok();
        ok.then_some(master)
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(KEY_FILE_LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.repo_id);
        b.extend_from_slice(&self.created_ns.to_le_bytes());
        for v in [
            KDF_ARGON2ID,
            self.kdf.memory_kib,
            self.kdf.iterations,
            self.kdf.parallelism,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.salt);
        debug_assert_eq!(b.len(), AAD_END);
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&self.sealed);
        let check = blake3::hash(&b);
        b.extend_from_slice(&check.as_bytes()[..16]);
        b
    }

    /// Parses a key file; a damaged, truncated or unknown one is an error saying what is wrong.
    pub fn decode(b: &[u8]) -> std::result::Result<KeyFile, String> {
        if b.len() < 12 || &b[..8] != MAGIC {
            return Err("not a strata key file".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        if u32_at(8) != VERSION {
            return Err(format!(
                "key file version {}, expected {VERSION}",
                u32_at(8)
            ));
        }
        if b.len() != KEY_FILE_LEN {
            return Err(format!(
                "{} bytes instead of {KEY_FILE_LEN} (truncated or damaged)",
                b.len()
            ));
        }
        if blake3::hash(&b[..SEALED_END]).as_bytes()[..16] != b[SEALED_END..] {
            return Err("checksum mismatch (the file is damaged)".into());
        }
        if u32_at(12) != 0 || u32_at(40) != KDF_ARGON2ID {
            return Err("unknown key derivation".into());
        }
        let kdf = KdfParams {
            memory_kib: u32_at(44),
            iterations: u32_at(48),
            parallelism: u32_at(52),
        };
        Ok(KeyFile {
            repo_id: b[16..32].try_into().unwrap(),
            created_ns: i64::from_le_bytes(b[32..40].try_into().unwrap()),
            kdf,
            salt: b[56..88].try_into().unwrap(),
            nonce: b[88..112].try_into().unwrap(),
            sealed: b[112..SEALED_END].try_into().unwrap(),
        })
    }
}

/// A key file found in `keys/`: its id (the file name) and what it holds, or why it is unusable.
#[derive(Debug)]
pub struct Found {
    /// The file name: 16 hex digits.
    pub id: String,
    /// The file.
    pub path: PathBuf,
    /// The parsed file, or what is wrong with it.
    pub key: std::result::Result<KeyFile, String>,
}

/// Every file in the repository's `keys/` directory, sorted by id. A missing directory is an
/// empty list.
pub fn list(repo: &Path) -> Result<Vec<Found>> {
    let dir = repo.join(KEYS_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("Listing", &dir),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.ctx("Listing", &dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") || name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let key = match fs::read(&path) {
            Ok(b) => KeyFile::decode(&b),
            Err(err) => Err(format!("cannot be read: {err}")),
        };
        out.push(Found {
            id: name,
            path,
            key,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Writes `key` as a new key file (temporary name, fsync, rename, directory fsync); returns
/// its id.
pub fn write(repo: &Path, key: &KeyFile) -> Result<String> {
    let dir = repo.join(KEYS_DIR);
    fs::create_dir_all(&dir).ctx("Creating", &dir)?;
    let id: String = random::<8>()?.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(&id);
    let tmp = dir.join(format!("{id}.tmp"));
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp).ctx("Creating", &tmp)?;
        f.write_all(&key.encode()).ctx("Writing", &tmp)?;
        f.sync_all().ctx("Syncing", &tmp)?;
    }
    fs::rename(&tmp, &path).ctx("Renaming", &tmp)?;
    crate::fsio::sync_dir(&dir)?;
    crate::repo::remote::key_written(repo, &id, &key.encode())?;
    Ok(id)
}

/// Removes key file `id` (durably).
pub fn remove(repo: &Path, id: &str) -> Result<()> {
    let dir = repo.join(KEYS_DIR);
    let path = dir.join(id);
    crate::repo::remote::key_removed(repo, id)?;
    fs::remove_file(&path).ctx("Removing", &path)?;
    crate::fsio::sync_dir(&dir)
}

/// The master key of the repository `repo_id` at `repo`, unwrapped from the first key file the
/// passphrase opens, with that file's id; or, when the key cache is on, with the cached key
/// (`keycache`), and then `pass` is not asked. `pass` is asked only once a key file that could
/// open is found, and a key it opens is cached when the cache is on. Errors say which case it
/// is: no key file, only damaged or foreign ones, or a passphrase no key file takes.
pub fn unlock(
    repo: &Path,
    repo_id: &[u8; REPO_ID_LEN],
    pass: &mut dyn FnMut() -> Result<Passphrase>,
) -> Result<(Zeroizing<[u8; MASTER_LEN]>, String)> {
    let found = list(repo)?;
    let unusable = |detail: String| Error::KeyUnusable {
        path: repo.to_path_buf(),
        detail,
    };
    if found.is_empty() {
        return Err(unusable(format!(
            "it has no key file in {}",
            repo.join(KEYS_DIR).display()
        )));
    }
    let mut problems = Vec::new();
    let mut candidates = Vec::new();
    for f in &found {
        match &f.key {
            Err(e) => problems.push(format!("key file {} {e}", f.path.display())),
            Ok(k) if k.repo_id != *repo_id => problems.push(format!(
                "key file {} belongs to another repository",
                f.path.display()
            )),
            Ok(k) => candidates.push((f, k)),
        }
    }
    if candidates.is_empty() {
        return Err(unusable(format!(
            "no key file can unlock it: {}",
            problems.join("; ")
        )));
    }
    for p in &problems {
        log::warn!("Repository {}: {p}", repo.display());
    }
    if let Some(found) = from_cache(repo_id, &candidates) {
        return Ok(found);
    }
    let pass = pass()?;
    for (f, k) in candidates {
        let wrap = wrapping_key(&pass, &k.salt, &k.kdf)?;
        if let Some(master) = k.open_with(&wrap) {
            let cached = keycache::Cached {
                key_id: f.id.clone(),
                wrap,
            };
            keycache::store(repo_id, &cached);
            return Ok((master, f.id.clone()));
        }
    }
    Err(Error::WrongPassphrase(repo.to_path_buf()))
}

/// The master key from the key cached for repository `repo_id` (`keycache`), verified: it must
/// open the key file it names, one of `candidates` (key files that parse and name the
/// repository). One that does not is discarded, and the caller asks for the passphrase.
fn from_cache(
    repo_id: &[u8; REPO_ID_LEN],
    candidates: &[(&Found, &KeyFile)],
) -> Option<(Zeroizing<[u8; MASTER_LEN]>, String)> {
    let cached = keycache::fetch(repo_id)?;
    let opened = candidates
        .iter()
        .find(|(f, _)| f.id == cached.key_id)
        .and_then(|(f, k)| Some((k.open_with(&cached.wrap)?, f.id.clone())));
    match opened {
        Some(found) => {
            log::debug!("Unlocked with the cached key of key file {}", found.1);
            Some(found)
        }
        None => {
            log::warn!(
                "The cached key does not open key file {} of this repository (changed, removed, or another repository's); discarding it",
                cached.key_id
            );
            keycache::discard(repo_id);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak() -> KdfParams {
        KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn a_key_file_opens_with_its_passphrase_only_and_notices_damage() {
        let master = [5u8; MASTER_LEN];
        let pass = Passphrase::new(b"correct horse".to_vec());
        let k = KeyFile::seal(&master, [1; REPO_ID_LEN], &pass, weak()).unwrap();
        let bytes = k.encode();
        assert_eq!(bytes.len(), KEY_FILE_LEN);
        let back = KeyFile::decode(&bytes).unwrap();
        assert_eq!(*back.unwrap(&pass).unwrap().unwrap(), master);
        let wrong = Passphrase::new(b"battery staple".to_vec());
        assert!(back.unwrap(&wrong).unwrap().is_none());
        assert!(KeyFile::decode(&bytes[..100]).is_err());
        for i in 0..bytes.len() {
            let mut bent = bytes.clone();
            bent[i] ^= 1;
            assert!(KeyFile::decode(&bent).is_err(), "byte {i}");
        }
        // Parameters lowered (with the check recomputed): the tag refuses them.
        let mut lowered = back.clone();
        lowered.kdf.iterations = 2;
        assert!(lowered.unwrap(&pass).unwrap().is_none());
    }

    /// Known answer for the key derivation: a change to argon2id's use here would lock every
    /// repository out. The value is argon2-cffi's `hash_secret_raw` with the same inputs.
    #[test]
    fn key_derivation_known_answer() {
        let pass = Passphrase::new(b"password".to_vec());
        let key = wrapping_key(&pass, &[2u8; SALT_LEN], &weak()).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "03a3bf3aae0ca6e797040420b1f971d2363c42470b2689e6f31a4756064dbc74"
        );
    }
}
