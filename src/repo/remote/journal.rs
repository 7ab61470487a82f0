//! The index of a repository in a bucket: a log of immutable objects `log/<name>`, each the
//! writes one commit made to the index, replayed in name order into the local sled database of
//! every machine that uses the repository (its cache).
//!
//! **Writing.** While a command writes to the index, every write is also appended to
//! `CACHE/journal`. At the commit (the index's flush) the journal is uploaded as the next log
//! object, after every pack it names is in the bucket ([`RemotePacks::barrier`]); only then is the
//! local database flushed and the journal removed. A journal left behind by a killed command means
//! the local database may hold writes the bucket never got: the next command rebuilds the cache
//! from the log.
//!
//! **Order.** Names are `<20-digit ns time>-<16 hex random>.<d|c>`, and a new name is later than
//! every name its writer has seen (it takes the later of its clock and the newest name plus one),
//! so whatever was committed before a command started sorts before that command's commits.
//! Replaying in name order gives every machine the same index. Two commands that commit at the
//! same time (backups from two hosts) write disjoint keys, except chunk locations of a chunk both
//! stored, where either location is right and the later name wins everywhere. A machine that
//! finds a name it has not applied sorting before names it has re-applies from that name on, so
//! it ends where a replay from scratch would.
//!
//! **Checkpoints** (`.c`) hold the whole index: `prune` and `repair` write one and delete the log
//! before it, so the log stays short and a new machine downloads one object.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::client::Client;
use super::packs::RemotePacks;
use crate::error::{Error, IoContext, Result};
use crate::repo::store::Space;

const MAGIC: &[u8; 11] = b"STRATALOG1\n";
const JOURNAL: &str = "journal";
const APPLIED: &str = "applied";
/// The log's prefix in the bucket.
pub const LOG: &str = "log";

const END: u8 = 0;
const INSERT: u8 = 1;
const REMOVE: u8 = 2;
const CLEAR: u8 = 3;

/// Encodes log entries: the magic, operations, an end mark and the blake3 hash of everything
/// before it; zstd-compressed as a whole.
struct EntryWriter {
    out: zstd::Encoder<'static, BufWriter<File>>,
    hash: blake3::Hasher,
}

impl EntryWriter {
    fn create(path: &Path) -> Result<EntryWriter> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .ctx("Creating", path)?;
        let out =
            zstd::Encoder::new(BufWriter::with_capacity(1 << 20, f), 3).ctx("Creating", path)?;
        let mut w = EntryWriter {
            out,
            hash: blake3::Hasher::new(),
        };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.out.write_all(b).map_err(|e| Error::Io {
            context: "Writing the journal",
            path: PathBuf::from(JOURNAL),
            source: e,
        })
    }

    fn op(&mut self, tag: u8, space: Space, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.put(&[tag, space as u8])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        if let Some(v) = value {
            self.put(&(v.len() as u32).to_le_bytes())?;
            self.put(v)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.put(&[END])?;
        let h = *self.hash.finalize().as_bytes();
        self.out.write_all(&h).ctx("Writing the journal", JOURNAL)?;
        let w = self.out.finish().ctx("Writing the journal", JOURNAL)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .ctx("Writing the journal", JOURNAL)?;
        Ok(())
    }
}

/// One operation of a log entry.
enum Op<'a> {
    Insert(Space, &'a [u8], &'a [u8]),
    Remove(Space, &'a [u8]),
    Clear(Space),
}

/// Decodes a log entry, verifying its hash before anything is applied.
fn decode(name: &str, compressed: &[u8]) -> Result<Vec<u8>> {
    let bad = |d: &str| Error::CorruptMetadata(format!("log entry {name}: {d}"));
    let mut plain = Vec::new();
    zstd::Decoder::new(compressed)
        .and_then(|mut d| d.read_to_end(&mut plain))
        .map_err(|e| bad(&format!("not a zstd stream ({e})")))?;
    if plain.len() < MAGIC.len() + 33 || &plain[..MAGIC.len()] != MAGIC {
        return Err(bad("not a strata log entry"));
    }
    let body = plain.len() - 32;
    if blake3::hash(&plain[..body]).as_bytes() != &plain[body..] {
        return Err(bad("its hash does not match (damaged or altered)"));
    }
    plain.truncate(body);
    Ok(plain)
}

/// The operations of a decoded entry, in order.
fn ops<'a>(name: &str, plain: &'a [u8]) -> Result<Vec<Op<'a>>> {
    let bad = || Error::CorruptMetadata(format!("log entry {name}: malformed operation"));
    let mut at = MAGIC.len();
    let mut out = Vec::new();
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let s = plain.get(*at..*at + n).ok_or_else(bad)?;
        *at += n;
        Ok(s)
    };
    loop {
        let tag = take(&mut at, 1)?[0];
        if tag == END {
            return if at == plain.len() {
                Ok(out)
            } else {
                Err(bad())
            };
        }
        let space = *Space::ALL
            .get(take(&mut at, 1)?[0] as usize)
            .ok_or_else(bad)?;
        let field = |at: &mut usize| -> Result<&[u8]> {
            let n = u32::from_le_bytes(take(at, 4)?.try_into().map_err(|_| bad())?) as usize;
            take(at, n)
        };
        out.push(match tag {
            INSERT => {
                let k = field(&mut at)?;
                Op::Insert(space, k, field(&mut at)?)
            }
            REMOVE => Op::Remove(space, field(&mut at)?),
            CLEAR => {
                field(&mut at)?;
                Op::Clear(space)
            }
            _ => return Err(bad()),
        });
    }
}

/// A new log name, later than `after` and than the clock.
fn next_name(after: Option<&str>, kind: char) -> Result<String> {
    let last = after
        .and_then(|n| n.get(..20))
        .and_then(|t| t.parse::<u128>().ok())
        .unwrap_or(0);
    let now = crate::time::now_ns().max(0) as u128;
    let t = now.max(last + 1);
    let r = u64::from_le_bytes(crate::repo::crypt::random::<8>()?);
    Ok(format!("{t:020}-{r:016x}.{kind}"))
}

fn is_log_name(n: &str) -> bool {
    n.len() == 39
        && n.as_bytes()[20] == b'-'
        && (n.ends_with(".d") || n.ends_with(".c"))
        && n[..20].bytes().all(|b| b.is_ascii_digit())
}

/// Names this cache has applied, in order.
fn read_applied(cache: &Path) -> Vec<String> {
    fs::read_to_string(cache.join(APPLIED))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn write_applied(cache: &Path, names: &[String]) -> Result<()> {
    let tmp = cache.join("applied.tmp");
    let mut text = names.join("\n");
    text.push('\n');
    fs::write(&tmp, text).ctx("Writing", &tmp)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .ctx("Syncing", &tmp)?;
    fs::rename(&tmp, cache.join(APPLIED)).ctx("Writing", cache.join(APPLIED))?;
    crate::fsio::sync_dir(cache)
}

/// The writes of the current commit, on their way to the bucket.
pub struct Journal {
    cache: PathBuf,
    client: Arc<Client>,
    packs: Arc<RemotePacks>,
    open: Mutex<Option<EntryWriter>>,
    /// A commit failed: the local index holds writes the bucket may lack, so this process commits
    /// nothing more (its journal stays, and the next command rebuilds the local index).
    failed: std::sync::atomic::AtomicBool,
    /// The time part of the last pack number handed out.
    last_pack_ms: Mutex<u64>,
}

impl Journal {
    /// The journal of the cache directory `cache`.
    pub fn new(cache: &Path, client: Arc<Client>, packs: Arc<RemotePacks>) -> Journal {
        Journal {
            cache: cache.to_path_buf(),
            client,
            packs,
            open: Mutex::new(None),
            failed: Default::default(),
            last_pack_ms: Mutex::new(0),
        }
    }

    fn refuse_after_failure(&self) -> Result<()> {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Remote {
                url: self.client.url().to_string(),
                detail: "an earlier commit of this command did not reach the bucket".into(),
            });
        }
        Ok(())
    }

    /// A new pack number: the time in milliseconds (never before the newest commit this cache
    /// has seen, nor before the last number handed out) above 22 random bits. Numbers grow with
    /// commits across machines (what `check` and `repair` rely on to tell the newer of two
    /// copies of a record) and do not collide between machines that share the bucket.
    pub fn pack_id(&self) -> Result<u64> {
        let mut last = self.last_pack_ms.lock().unwrap_or_else(|e| e.into_inner());
        if *last == 0 {
            *last = read_applied(&self.cache)
                .last()
                .and_then(|n| n.get(..20))
                .and_then(|t| t.parse::<u128>().ok())
                .map(|ns| (ns / 1_000_000) as u64)
                .unwrap_or(0);
        }
        let now = (crate::time::now_ns().max(0) / 1_000_000) as u64;
        let ms = now.max(*last + 1);
        *last = ms;
        let low = u32::from_le_bytes(crate::repo::crypt::random::<4>()?) & 0x3f_ffff;
        Ok(ms << 22 | u64::from(low))
    }

    /// Records a write about to be made to the local index. The journal file exists (durably)
    /// before the first write of a commit reaches the local database.
    pub fn record(&self, space: Space, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.refuse_after_failure()?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_none() {
            let path = self.cache.join(JOURNAL);
            let w = EntryWriter::create(&path)?;
            File::open(&path)
                .and_then(|f| f.sync_all())
                .ctx("Syncing", &path)?;
            crate::fsio::sync_dir(&self.cache)?;
            *open = Some(w);
        }
        let w = open.as_mut().expect("opened above");
        match value {
            Some(v) => w.op(INSERT, space, key, Some(v)),
            None => w.op(REMOVE, space, key, None),
        }
    }

    /// Commits: uploads the journal as the next log entry once every pack is in the bucket,
    /// then runs `flush_local` (the local database's flush) and forgets the journal. Without
    /// writes since the last commit, only `flush_local` runs.
    pub fn commit(&self, flush_local: impl FnOnce() -> Result<()>) -> Result<()> {
        self.refuse_after_failure()?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = open.take() else {
            return flush_local();
        };
        let r = self.send(w, flush_local);
        if r.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    fn send(&self, w: EntryWriter, flush_local: impl FnOnce() -> Result<()>) -> Result<()> {
        w.finish()?;
        self.packs.barrier()?;
        let path = self.cache.join(JOURNAL);
        let data = fs::read(&path).ctx("Reading", &path)?;
        let mut applied = read_applied(&self.cache);
        let name = next_name(applied.last().map(String::as_str), 'd')?;
        self.client
            .put(&format!("{LOG}/{name}"), Bytes::from(data))?;
        flush_local()?;
        applied.push(name);
        write_applied(&self.cache, &applied)?;
        fs::remove_file(&path).ctx("Removing", &path)?;
        Ok(())
    }
}

/// Brings the local index of the cache `cache` up to the bucket's log. Returns whether the
/// index changed. A journal left by a killed command, a missing or unreadable index: the index is
/// rebuilt from the log.
pub fn sync(cache: &Path, client: &Client) -> Result<bool> {
    for _ in 0..5 {
        match sync_once(cache, client)? {
            Some(changed) => return Ok(changed),
            // An entry went away while it was read: a checkpoint replaced it; start again.
            None => continue,
        }
    }
    Err(Error::Remote {
        url: client.url().to_string(),
        detail: "the log keeps changing while it is read; try again".into(),
    })
}

fn sync_once(cache: &Path, client: &Client) -> Result<Option<bool>> {
    let index = cache.join(crate::repo::INDEX_DIR);
    let mut names: Vec<String> = client
        .list(LOG)?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| is_log_name(n))
        .collect();
    names.sort();
    let mut applied = read_applied(cache);
    let journal = cache.join(JOURNAL);
    let mut rebuild = journal.exists() || !index.exists();
    if rebuild && !applied.is_empty() {
        log::warn!(
            "The local cache of {} holds writes a killed command never committed; rebuilding it from the bucket",
            client.url()
        );
    }
    if !rebuild {
        if let Some(gone) = lost(&names, &applied) {
            log::warn!(
                "The log of {} no longer holds {gone}, which this machine applied (and no \
                 checkpoint replaced it): the bucket lost a commit; rebuilding the local index \
                 from what the bucket holds",
                client.url()
            );
            rebuild = true;
        }
    }
    let open = || crate::repo::open_sled(sled::Config::new().path(&index).cache_capacity(64 << 20));
    let mut first = unapplied(&names, &applied);
    // The index is opened only when there is something to apply (a command that finds the log
    // unchanged opens it anyway, later); one that does not open is rebuilt from the log.
    let mut db = None;
    if first.is_some() && !rebuild {
        match open() {
            Ok(d) => db = Some(d),
            Err(e) => {
                log::warn!(
                    "The local index of {} is unusable ({e}); rebuilding it from the bucket",
                    client.url()
                );
                rebuild = true;
            }
        }
    }
    if rebuild {
        applied.clear();
        if index.exists() {
            fs::remove_dir_all(&index).ctx("Removing", &index)?;
        }
        let _ = fs::remove_file(&journal);
        first = unapplied(&names, &applied);
    }
    let Some(first) = first else {
        if applied.len() != names.len() {
            // Entries a checkpoint replaced are gone; remember only what is there.
            write_applied(cache, &names)?;
        }
        return Ok(Some(false));
    };
    // A checkpoint holds everything before it.
    let start = names[first..]
        .iter()
        .rposition(|n| n.ends_with(".c"))
        .map(|i| i + first)
        .unwrap_or(first);
    let db = match db {
        Some(db) => db,
        None => open()?,
    };
    let trees = Space::ALL.map(|s| db.open_tree(s.tree_name()));
    let trees: Vec<sled::Tree> = trees.into_iter().collect::<std::result::Result<_, _>>()?;
    log::debug!(
        "Applying {} log entries of {}",
        names.len() - start,
        client.url()
    );
    for name in &names[start..] {
        let Some(data) = client.get(&format!("{LOG}/{name}"))? else {
            return Ok(None);
        };
        let plain = decode(name, &data)?;
        for op in ops(name, &plain)? {
            match op {
                Op::Insert(s, k, v) => {
                    trees[s as usize].insert(k, v)?;
                }
                Op::Remove(s, k) => {
                    trees[s as usize].remove(k)?;
                }
                Op::Clear(s) => trees[s as usize].clear()?,
            }
        }
    }
    db.flush()?;
    crate::repo::commits::count_external(cache, &db)?;
    drop(trees);
    drop(db);
    write_applied(cache, &names)?;
    // The lookup files describe the index as it was.
    let catalog = cache.join("lookup").join("catalog");
    if catalog.exists() {
        fs::remove_file(&catalog).ctx("Removing", &catalog)?;
    }
    Ok(Some(true))
}

/// An entry this cache applied that the bucket's log no longer holds, unless a checkpoint named
/// after it replaced it (what `prune` and `repair` do).
fn lost(names: &[String], applied: &[String]) -> Option<String> {
    let listed: HashSet<&str> = names.iter().map(String::as_str).collect();
    let newest_checkpoint = names.iter().rev().find(|n| n.ends_with(".c"));
    applied
        .iter()
        .filter(|a| !listed.contains(a.as_str()))
        .find(|a| newest_checkpoint.is_none_or(|c| c.as_str() < a.as_str()))
        .cloned()
}

/// The position of the first name of the log this cache has not applied.
fn unapplied(names: &[String], applied: &[String]) -> Option<usize> {
    let seen: HashSet<&str> = applied.iter().map(String::as_str).collect();
    names.iter().position(|n| !seen.contains(n.as_str()))
}

/// Writes the whole index `db` as a checkpoint, makes it the log's start, and deletes the
/// entries before it. Only under the bucket's exclusive lock: nobody else commits meanwhile.
pub fn checkpoint(cache: &Path, client: &Client, db: &sled::Db) -> Result<()> {
    let path = cache.join("checkpoint");
    let mut w = EntryWriter::create(&path)?;
    for s in Space::ALL {
        w.op(CLEAR, s, b"", None)?;
        for kv in db.open_tree(s.tree_name())?.iter() {
            let (k, v) = kv?;
            w.op(INSERT, s, &k, Some(&v))?;
        }
    }
    w.finish()?;
    let data = fs::read(&path).ctx("Reading", &path)?;
    let mut names: Vec<String> = client
        .list(LOG)?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| is_log_name(n))
        .collect();
    names.sort();
    let name = next_name(names.last().map(String::as_str), 'c')?;
    client.put(&format!("{LOG}/{name}"), Bytes::from(data))?;
    fs::remove_file(&path).ctx("Removing", &path)?;
    write_applied(cache, std::slice::from_ref(&name))?;
    for old in names {
        client.delete(&format!("{LOG}/{old}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_caught() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("e");
        let mut w = EntryWriter::create(&p).unwrap();
        w.op(INSERT, Space::Records, b"k1", Some(b"v1")).unwrap();
        w.op(REMOVE, Space::Chunks, b"k2", None).unwrap();
        w.op(CLEAR, Space::Layers, b"", None).unwrap();
        w.finish().unwrap();
        let data = fs::read(&p).unwrap();
        let plain = decode("x", &data).unwrap();
        let got = ops("x", &plain).unwrap();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[0], Op::Insert(Space::Records, b"k1", b"v1")));
        assert!(matches!(got[1], Op::Remove(Space::Chunks, b"k2")));
        assert!(matches!(got[2], Op::Clear(Space::Layers)));
        // A flipped byte in the plaintext is caught by the hash.
        let mut plain2 = zstd::decode_all(&data[..]).unwrap();
        plain2[MAGIC.len() + 3] ^= 1;
        let bad = zstd::encode_all(&plain2[..], 1).unwrap();
        assert!(decode("x", &bad).is_err());
        assert!(decode("x", b"not zstd").is_err());
    }

    #[test]
    fn names_sort_after_what_was_seen_and_are_recognised() {
        let far = format!("{:020}-{:016x}.d", u64::MAX as u128 * 4, 7u64);
        let n = next_name(Some(&far), 'd').unwrap();
        assert!(n > far, "{n} <= {far}");
        assert!(is_log_name(&n));
        let c = next_name(None, 'c').unwrap();
        assert!(is_log_name(&c) && c.ends_with(".c"));
        assert!(!is_log_name("garbage"));
    }
}
