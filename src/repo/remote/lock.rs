//! Locks between machines: objects `locks/<random>` in the bucket, shared or exclusive. Backups
//! and readers take shared locks and may run together; `forget`, `consolidate`, `prune` and
//! `repair` take an exclusive one. A taker writes its lock, then lists the others: if one
//! conflicts, it deletes its own and tries again later (two takers that see each other both step
//! back, so neither proceeds unsafely). A lock is kept fresh by rewriting it every
//! [`REFRESH`]; one not rewritten for [`STALE`] belonged to a machine that died and is ignored
//! (and deleted by the next exclusive taker). Within one machine the cache directory's own lock
//! file already serialises commands; these locks are about other machines.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::Client;
use crate::error::{Error, Result};

/// How often a held lock is rewritten.
const REFRESH: Duration = Duration::from_secs(300);
/// A lock not rewritten for this long is stale.
const STALE: Duration = Duration::from_secs(1800);

/// The kind of lock a command takes on a repository in a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LockMode {
    /// Backups and reads: many at once.
    Shared = 0,
    /// Rewriting the index or deleting packs: alone.
    Exclusive = 1,
}

static MODE: AtomicU8 = AtomicU8::new(LockMode::Shared as u8);

/// Sets the kind of bucket lock this process's commands take (the CLI sets exclusive for
/// forget, consolidate, prune and repair).
pub fn set_lock_mode(mode: LockMode) {
    MODE.store(mode as u8, Ordering::Relaxed);
}

fn mode() -> LockMode {
    if MODE.load(Ordering::Relaxed) == LockMode::Exclusive as u8 {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    }
}

/// A lock held in the bucket; deleted when dropped, or by [`release_all`].
pub struct BucketLock {
    client: Arc<Client>,
    key: String,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

/// Locks this process holds: a handle that is never dropped (commands that only read skip the
/// index's shutdown) must not leave its lock behind.
type Held = Mutex<Vec<(Arc<Client>, String)>>;

fn held() -> &'static Held {
    static H: OnceLock<Held> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// Deletes every bucket lock this process still holds; the program's last step.
pub fn release_all() {
    let all = std::mem::take(&mut *held().lock().unwrap_or_else(|e| e.into_inner()));
    for (c, k) in all {
        if let Err(e) = c.delete(&k) {
            log::warn!("Could not remove the repository lock {k}: {e}");
        }
    }
}

/// This machine's name, as lock objects record it.
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn kind(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => "shared",
        LockMode::Exclusive => "exclusive",
    }
}

fn body(mode: LockMode) -> Bytes {
    let host = hostname();
    Bytes::from(format!(
        "{}\nhost {host}\npid {}\n",
        kind(mode),
        std::process::id()
    ))
}

/// Takes this process's kind of lock ([`set_lock_mode`]) on the bucket, waiting up to `wait`
/// while another machine holds a conflicting one.
pub fn take(client: &Arc<Client>, wait: Duration) -> Result<BucketLock> {
    let mode = mode();
    let id = u64::from_le_bytes(crate::repo::crypt::random::<8>()?);
    let key = format!("locks/{id:016x}.{}", kind(mode));
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        client.put(&key, body(mode))?;
        match conflict(client, &key, mode)? {
            None => break,
            Some(holder) => {
                client.delete(&key)?;
                if Instant::now() >= deadline {
                    return Err(Error::RepoLocked {
                        path: client.url().into(),
                        holder: format!(" on another machine ({holder})"),
                    });
                }
                if !told {
                    told = true;
                    log::warn!(
                        "Waiting for repository {}, locked by another machine ({holder})",
                        client.url()
                    );
                }
                let jitter = u64::from(crate::repo::crypt::random::<1>()?[0]) * 8;
                std::thread::sleep(Duration::from_millis(500 + jitter));
            }
        }
    }
    let (tx, rx) = mpsc::channel::<()>();
    let (c, k) = (client.clone(), key.clone());
    let refresher = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH) {
            if let Err(e) = c.put(&k, body(mode)) {
                log::warn!("Refreshing the repository lock {k}: {e}");
            }
        }
    });
    held()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((client.clone(), key.clone()));
    Ok(BucketLock {
        client: client.clone(),
        key,
        stop: Some(tx),
        refresher: Some(refresher),
    })
}

/// Another fresh lock that conflicts with ours, described; stale ones are skipped (and deleted
/// by an exclusive taker).
fn conflict(client: &Client, own: &str, mode: LockMode) -> Result<Option<String>> {
    let now = crate::time::now_ns() / 1_000_000_000;
    for l in client.list("locks")? {
        let key = format!("locks/{}", l.name);
        if key == own {
            continue;
        }
        if now - l.modified_s > STALE.as_secs() as i64 {
            if mode == LockMode::Exclusive {
                log::warn!(
                    "Removing the stale lock {key} (not refreshed for {}s)",
                    now - l.modified_s
                );
                client.delete(&key)?;
            }
            continue;
        }
        let exclusive = l.name.ends_with(".exclusive");
        if mode == LockMode::Exclusive || exclusive {
            let Some(text) = client.get(&key)? else {
                continue;
            };
            let text = String::from_utf8_lossy(&text).into_owned();
            if dead_here(&text) {
                log::warn!(
                    "Removing the lock {key} of a strata process of this machine that is gone"
                );
                client.delete(&key)?;
                continue;
            }
            let who = text.lines().skip(1).collect::<Vec<_>>().join(", ");
            let kind = if exclusive { "exclusive" } else { "shared" };
            return Ok(Some(format!("{kind} lock {}, {who}", l.name)));
        }
    }
    Ok(None)
}

/// Whether a lock's text names a process of this machine that no longer runs (killed): such a
/// lock is stale at once, without waiting for [`STALE`].
fn dead_here(text: &str) -> bool {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let (Some(host), Some(pid)) = (field("host "), field("pid ")) else {
        return false;
    };
    host == hostname()
        && pid.parse::<u32>().is_ok()
        && !std::path::Path::new("/proc").join(pid).exists()
}

impl Drop for BucketLock {
    fn drop(&mut self) {
        held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, k)| k != &self.key);
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if let Err(e) = self.client.delete(&self.key) {
            log::warn!("Could not remove the repository lock {}: {e}", self.key);
        }
    }
}
