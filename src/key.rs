//! Managing the key files of an encrypted repository (`strata key`): each wraps the one master
//! key under its own passphrase (see `crate::repo::crypt::keyfile`). Every operation first
//! unlocks the repository with a passphrase it already has and takes the repository lock, so
//! that two of them cannot race into a repository without a key.
//!
//! They unlock with a passphrase, never with a key cached by `--key-cache` (the CLI says so,
//! `keycache::passphrase_only`): "the key that unlocked the command" is the passphrase's. A
//! cached key naming a key file they remove is dropped; [`forget`] drops it on request.

use std::path::Path;

use crate::error::{Error, Result};
use crate::open::{Locked, Open};
use crate::repo::crypt::keyfile::{self, Found, KeyFile};
use crate::repo::crypt::{keycache, Crypt};
use crate::repo::NewKey;

/// A key file as `strata key list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    /// The key file's id (its name in `keys/`).
    pub id: String,
    /// Whether this key unlocked the repository for this command.
    pub current: bool,
    /// When it was made (RFC 3339), when readable.
    pub created: Option<String>,
    /// argon2id memory, KiB.
    pub kdf_memory_kib: Option<u32>,
    /// argon2id passes.
    pub kdf_iterations: Option<u32>,
    /// Why the file is unusable, if it is.
    pub problem: Option<String>,
}

/// The repository at `path` locked and unlocked (`open` carries the passphrase, if given). The
/// index is not opened: key files are all these operations touch.
fn unlocked(open: Open, path: &Path) -> Result<Locked> {
    let lock = open.lock()?;
    if lock.crypt().is_none() {
        return Err(not_encrypted(path));
    }
    Ok(lock)
}

fn crypt(lock: &Locked) -> &Crypt {
    lock.crypt().expect("checked by unlocked()")
}

/// Every key file of the repository.
pub fn list(open: Open, path: &Path) -> Result<Vec<KeyInfo>> {
    let lock = unlocked(open, path)?;
    let c = crypt(&lock);
    Ok(keyfile::list(path)?
        .into_iter()
        .map(|f| info(f, c))
        .collect())
}

fn info(f: Found, c: &Crypt) -> KeyInfo {
    let current = f.id == c.key_id();
    match f.key {
        Ok(k) if k.repo_id == *c.repo_id() => KeyInfo {
            id: f.id,
            current,
            created: Some(crate::time::rfc3339(k.created_ns)),
            kdf_memory_kib: Some(k.kdf.memory_kib),
            kdf_iterations: Some(k.kdf.iterations),
            problem: None,
        },
        other => KeyInfo {
            id: f.id,
            current,
            created: None,
            kdf_memory_kib: None,
            kdf_iterations: None,
            problem: Some(match other {
                Ok(_) => "belongs to another repository".into(),
                Err(e) => e,
            }),
        },
    }
}

/// Adds a key file for `new`'s passphrase; returns its id.
pub fn add(open: Open, path: &Path, new: &NewKey) -> Result<String> {
    let lock = unlocked(open, path)?;
    let c = crypt(&lock);
    let key = KeyFile::seal(c.master(), *c.repo_id(), &new.passphrase, new.kdf)?;
    keyfile::write(path, &key)
}

/// Replaces the key file that unlocked the repository by one for `new`'s passphrase (the new
/// one is written first, so the repository never has fewer keys); returns (old id, new id).
pub fn change(open: Open, path: &Path, new: &NewKey) -> Result<(String, String)> {
    let lock = unlocked(open, path)?;
    let c = crypt(&lock);
    let key = KeyFile::seal(c.master(), *c.repo_id(), &new.passphrase, new.kdf)?;
    let id = keyfile::write(path, &key)?;
    keyfile::remove(path, c.key_id())?;
    keycache::discard_naming(c.repo_id(), c.key_id());
    Ok((c.key_id().to_string(), id))
}

/// Removes key file `id`. Refuses to remove the key that unlocked the repository (use another
/// key's passphrase for that, proving it works), and so never removes the last usable key.
pub fn remove(open: Open, path: &Path, id: &str) -> Result<()> {
    let lock = unlocked(open, path)?;
    let c = crypt(&lock);
    let all = keyfile::list(path)?;
    if !all.iter().any(|f| f.id == id) {
        return Err(Error::InvalidArgument(format!(
            "repository {} has no key {id}",
            path.display()
        )));
    }
    if id == c.key_id() {
        return Err(Error::InvalidArgument(format!(
            "key {id} is the one this command was unlocked with; to remove it, give the passphrase of another key (a repository always keeps a key that is known to work)"
        )));
    }
    keyfile::remove(path, id)?;
    keycache::discard_naming(c.repo_id(), id);
    Ok(())
}

/// Drops the key of the repository at `path` that `--key-cache` kept in the kernel keyring, so
/// that the next command asks for the passphrase; returns whether one was cached. Needs no
/// passphrase, nor the repository's lock: only its marker, which names it.
pub fn forget(path: &Path) -> Result<bool> {
    let marker = match crate::repo::read_marker(path)? {
        Some(m) => m,
        None if !path.exists() => return Err(Error::RepoNotFound(path.to_path_buf())),
        None => return Err(Error::NotARepo(path.to_path_buf())),
    };
    match marker.repo_id {
        Some(id) if marker.format == crate::repo::ENCRYPTED_FORMAT => keycache::forget(&id),
        _ => Err(not_encrypted(path)),
    }
}

fn not_encrypted(path: &Path) -> Error {
    Error::InvalidArgument(format!(
        "repository {} is not encrypted; it has no keys",
        path.display()
    ))
}
