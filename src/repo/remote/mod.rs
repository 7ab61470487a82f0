//! Repositories in S3-compatible object storage (`--repo s3://BUCKET/PREFIX`).
//!
//! The bucket holds everything: `config` (the marker, with the repository id), `keys/` (the key
//! files of an encrypted repository), `packs/` (packs, as on disk), `log/` (the index, as a log
//! of commits, [`journal`]) and `locks/` ([`lock`]). A machine that uses the repository keeps a
//! cache directory, `$XDG_CACHE_HOME/strata/<repository id>`, which is an ordinary repository
//! directory whose marker names the bucket: its sled index is replayed from the log, its packs
//! are read from the bucket through a block cache ([`packs`]), and every commit goes to the
//! bucket before it counts locally. The cache never holds the only copy of anything: delete it
//! and the next command rebuilds it.
//!
//! The rest of strata sees a repository directory: [`attach`] turns an address into the cache
//! directory, and the storage layer (`repo::open`, `repo::lock`) finds the bucket through the
//! marker ([`session`]).

pub mod client;
pub mod journal;
pub mod lock;
pub mod packs;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::repo::pack::PackBackend;

pub use client::{requests, Requests};
pub use lock::{release_all as release_locks, set_lock_mode, BucketLock, LockMode};

use crate::error::{Error, IoContext, Result};

/// The object holding the repository's marker.
const CONFIG: &str = "config";
const KEYS: &str = "keys";

/// An `s3://BUCKET/PREFIX` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The bucket.
    pub bucket: String,
    /// The prefix inside it (no leading or trailing `/`; may be empty).
    pub prefix: String,
}

impl Address {
    /// The address as the user writes it.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Parses `s3://BUCKET[/PREFIX]`; `None` when `s` is not an object-storage address (a path).
pub fn parse(s: &str) -> Option<Result<Address>> {
    let rest = s.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if bucket.is_empty() || prefix.split('/').any(|p| p == "." || p == "..") {
        return Some(Err(Error::InvalidArgument(format!(
            "{s:?} is not a bucket address (expected s3://BUCKET or s3://BUCKET/PREFIX)"
        ))));
    }
    Some(Ok(Address {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    }))
}

/// Where the caches of repositories in buckets live: `$XDG_CACHE_HOME/strata`, else
/// `~/.cache/strata`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache")
        })
        .join("strata")
}

/// What one cache directory uses to reach its bucket, shared by everything in the process.
pub struct Session {
    /// The bucket.
    pub client: Arc<Client>,
    /// Its packs.
    pub packs: Arc<packs::RemotePacks>,
    /// The commit in progress.
    pub journal: Arc<journal::Journal>,
}

use client::Client;

fn sessions() -> &'static Mutex<HashMap<PathBuf, Arc<Session>>> {
    static S: OnceLock<Mutex<HashMap<PathBuf, Arc<Session>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// Repositories being created in this process: cache directory → address and repository id.
type Creating = Mutex<HashMap<PathBuf, (Address, [u8; 16])>>;

fn creating() -> &'static Creating {
    static C: OnceLock<Creating> = OnceLock::new();
    C.get_or_init(Default::default)
}

static ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process uses a repository in object storage.
pub fn active() -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn open_session(cache: &Path, addr: &Address) -> Result<Arc<Session>> {
    if let Some(s) = sessions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(cache)
    {
        return Ok(s.clone());
    }
    let client = Arc::new(Client::new(&addr.bucket, &addr.prefix, &addr.url())?);
    session_over(cache, client)
}

/// Registers the session of the cache `cache` over `client` (one client per bucket and process:
/// building one costs a runtime and loading the TLS roots).
fn session_over(cache: &Path, client: Arc<Client>) -> Result<Arc<Session>> {
    ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = sessions().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get(cache) {
        return Ok(s.clone());
    }
    let packs = packs::RemotePacks::new(client.clone(), cache)?;
    let journal = Arc::new(journal::Journal::new(cache, client.clone(), packs.clone()));
    let s = Arc::new(Session {
        client,
        packs,
        journal,
    });
    all.insert(cache.to_path_buf(), s.clone());
    Ok(s)
}

/// The bucket behind the repository directory `path`, when it is the cache of one (its marker
/// names the bucket, or it is being created for one); `None` for a local repository.
pub fn session(path: &Path) -> Result<Option<Arc<Session>>> {
    if let Some(s) = sessions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
    {
        return Ok(Some(s.clone()));
    }
    let pending = creating()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .map(|(a, _)| a.clone());
    let addr = match pending {
        Some(a) => a,
        None => match super::read_marker(path)?.and_then(|m| m.remote) {
            Some(url) => match parse(&url) {
                Some(r) => r?,
                None => {
                    return Err(Error::CorruptMetadata(format!(
                        "{}: its marker names {url:?}, which is not a bucket address",
                        path.display()
                    )))
                }
            },
            None => return Ok(None),
        },
    };
    open_session(path, &addr).map(Some)
}

/// How to name the repository at `path` to the user: its bucket address for the cache of a
/// repository in object storage, else the directory.
pub fn display_name(path: &Path) -> String {
    if let Some((url, _)) = created(path) {
        return url;
    }
    match super::read_marker(path)
        .ok()
        .flatten()
        .and_then(|m| m.remote)
    {
        Some(url) => url,
        None => path.display().to_string(),
    }
}

/// The address and repository id of a repository being created at `path` ([`attach`] with
/// `create`), for the marker.
pub fn created(path: &Path) -> Option<(String, [u8; 16])> {
    creating()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .map(|(a, id)| (a.url(), *id))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The repository id a bucket's `config` names.
fn config_id(text: &str) -> Option<[u8; 16]> {
    text.lines()
        .find_map(|l| l.strip_prefix("repository "))
        .and_then(|h| crate::id::hex_decode(h.trim()))
        .and_then(|b| b.try_into().ok())
}

/// The cache directory of the repository at `addr`, made ready for the storage layer: its marker
/// (the bucket's `config` plus the bucket's address) and its key files match the bucket's. With
/// `create`, the bucket must hold no repository, and the directory returned is a new one that
/// `create` fills (see [`created`]). The index itself is brought up to date under the lock
/// ([`on_lock`]).
pub fn attach(addr: &Address, create: bool) -> Result<PathBuf> {
    let url = addr.url();
    let client = Arc::new(Client::new(&addr.bucket, &addr.prefix, &url)?);
    let config = client.get(CONFIG)?;
    if create {
        if config.is_some() {
            return Err(Error::RepoExists(url.into()));
        }
        let id = crate::repo::crypt::random::<16>()?;
        let path = cache_root().join(hex(&id));
        creating()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), (addr.clone(), id));
        session_over(&path, client)?;
        return Ok(path);
    }
    let Some(config) = config else {
        return Err(Error::RepoNotFound(url.into()));
    };
    let text = String::from_utf8_lossy(&config).into_owned();
    let id = config_id(&text)
        .ok_or_else(|| Error::CorruptMetadata(format!("{url}/config names no repository id")))?;
    let path = cache_root().join(hex(&id));
    fs::create_dir_all(&path).ctx("Creating cache directory", &path)?;
    let marker = format!(
        "{}remote {url}\n",
        text.trim_end_matches('\n').to_string() + "\n"
    );
    let file = path.join("STRATA");
    if fs::read_to_string(&file).ok().as_deref() != Some(marker.as_str()) {
        crate::fsio::write_atomic(&file, marker.as_bytes())?;
    }
    mirror_keys(&client, &path)?;
    session_over(&path, client)?;
    Ok(path)
}

/// Makes the cache's key files those of the bucket.
fn mirror_keys(client: &Client, path: &Path) -> Result<()> {
    let listed = client.list(KEYS)?;
    let dir = path.join(KEYS);
    if listed.is_empty() && !dir.exists() {
        return Ok(());
    }
    fs::create_dir_all(&dir).ctx("Creating", &dir)?;
    let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    for o in &listed {
        let local = dir.join(&o.name);
        if fs::metadata(&local).map(|m| m.len()).ok() == Some(o.size) {
            continue;
        }
        if let Some(data) = client.get(&format!("{KEYS}/{}", o.name))? {
            crate::fsio::write_atomic(&local, &data)?;
        }
    }
    for f in fs::read_dir(&dir).ctx("Listing", &dir)?.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if !names.contains(&name.as_str()) {
            fs::remove_file(f.path()).ctx("Removing", f.path())?;
        }
    }
    Ok(())
}

/// Writes the bucket's `config` for a repository just created at `path`: the last step of
/// creating one, as the marker is on disk.
pub fn publish_config(path: &Path, marker_text: &str) -> Result<()> {
    if let Some(s) = session(path)? {
        let text: String = marker_text
            .lines()
            .filter(|l| !l.starts_with("remote "))
            .map(|l| format!("{l}\n"))
            .collect();
        s.client.put(CONFIG, Bytes::from(text))?;
        creating()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }
    Ok(())
}

/// Copies a key file just written in `path` to the bucket.
pub fn key_written(path: &Path, id: &str, data: &[u8]) -> Result<()> {
    match session(path)? {
        Some(s) => s
            .client
            .put(&format!("{KEYS}/{id}"), Bytes::copy_from_slice(data)),
        None => Ok(()),
    }
}

/// Removes from the bucket a key file just removed in `path`.
pub fn key_removed(path: &Path, id: &str) -> Result<()> {
    match session(path)? {
        Some(s) => s.client.delete(&format!("{KEYS}/{id}")),
        None => Ok(()),
    }
}

static LOCK_WAIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(300_000);

/// How long taking a bucket's lock waits for another machine (`--lock-wait`).
pub fn set_lock_wait(wait: Duration) {
    LOCK_WAIT_MS.store(
        wait.as_millis().min(u64::MAX as u128) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// What taking the local lock of `path` adds for a repository in a bucket: the bucket's lock,
/// then the local index brought up to the bucket's log. `None` for a local repository.
pub fn on_lock(path: &Path) -> Result<Option<BucketLock>> {
    let Some(s) = session(path)? else {
        return Ok(None);
    };
    if created(path).is_some() {
        return Ok(None);
    }
    let wait = Duration::from_millis(LOCK_WAIT_MS.load(std::sync::atomic::Ordering::Relaxed));
    let held = lock::take(&s.client, wait)?;
    // Under the local lock no other process of this machine is writing: spooled packs that are
    // not this process's belonged to a killed command (its commit never reached the bucket).
    s.packs.remove_unfinished()?;
    journal::sync(path, &s.client)?;
    Ok(Some(held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let a = parse("s3://b/p/q/").unwrap().unwrap();
        assert_eq!((a.bucket.as_str(), a.prefix.as_str()), ("b", "p/q"));
        assert_eq!(a.url(), "s3://b/p/q");
        let a = parse("s3://bucket").unwrap().unwrap();
        assert_eq!(a.prefix, "");
        assert!(parse("/srv/repo").is_none());
        assert!(parse("s3://").unwrap().is_err());
        assert!(parse("s3://b/../x").unwrap().is_err());
    }
}
