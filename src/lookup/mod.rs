//! Lookup files: a sled-free copy of what `strata cat` needs, so that fetching one file from a
//! snapshot costs a few reads instead of opening the index (sled's open alone takes 10–30 ms: it
//! starts threads, decodes its page table and writes and fsyncs on every open).
//!
//! `REPO/lookup/` holds a **catalog** (every snapshot record, each non-full layer's touched
//! directories, the compression dictionary) and one **table** per snapshot layer: the layer's
//! entries sorted by key, each with the pack location of its chunks (`src/lookup/table.rs`; the
//! layout is in docs/FORMAT.md). All of it is derived from the index and can be deleted any time;
//! so anything of the wrong type where a lookup file goes is removed with a warning, and a disk too
//! full for them only means they are not written: derived files never block a command.
//!
//! Trust rests on one rule: **every process that takes the repository lock to open the index
//! removes the catalog first** (durably), and writes a fresh one ([`publish`]) only when it is
//! done. So a catalog exists only when the last process that had the index open finished and
//! described the index as it left it; a crash, a kill or a failed publish leaves none, and `cat`
//! then opens the index and writes a new one. Chunk locations in tables are hints: a read checks
//! the record's header id and blake3 as every read does, and a stale or damaged hint sends that
//! read to the index, never returns other bytes.
//!
//! In an encrypted repository the catalog's body and each table's blocks and index are sealed
//! with the repository's lookup key (catalog and tables version 2), so they hold nothing in the
//! clear but sizes, snapshot ids and table names; reading them needs the unlocked keys.

mod publish;
mod records;
mod table;

pub use publish::install_seed;
pub(crate) use publish::publish;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::entry::Entry;
use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::{DirLayer, LayerDirs, LayerStore};
use crate::repo::crypt::Crypt;
use crate::repo::keys::{self, Location};
use crate::repo::pack::PackBackend;
use crate::repo::store::Space;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use table::{Sealing, Table, TableWriter};

/// The lookup directory inside a repository.
pub const LOOKUP_DIR: &str = "lookup";
const CATALOG: &str = "catalog";
const CATALOG_MAGIC: &[u8; 8] = b"STRATACT";
const CATALOG_VERSION: u32 = 1;
/// The version of a sealed catalog (an encrypted repository's).
const SEALED_CATALOG_VERSION: u32 = 2;
/// A directory of a non-full layer with more entries than this is read name by name.
const MAX_DIR_LAYER: usize = 4096;
/// Location bytes meaning "the index had no location for this chunk when the table was built".
const NO_LOCATION: [u8; Location::LEN] = [0xff; Location::LEN];

/// Removes the catalog, durably, so that nobody trusts it while the index may change. Called
/// under the repository lock by everything that opens the index. Lookup files are derived, so
/// something of the wrong type where they go (a file named `lookup`, a directory named `catalog`)
/// is removed with a warning rather than blocking the command.
pub fn invalidate(repo_path: &Path) -> Result<()> {
    let dir = repo_path.join(LOOKUP_DIR);
    if !lookup_dir_usable(&dir)? {
        return Ok(());
    }
    let path = dir.join(CATALOG);
    match fs::symlink_metadata(&path) {
        Ok(m) => {
            if !m.is_file() {
                log::warn!(
                    "{} is not a regular file; removing it (lookup files are derived)",
                    path.display()
                );
            }
            remove_derived(&path)?;
            crate::fsio::sync_dir(&dir)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("Reading", &path),
    }
}

/// Whether the lookup directory exists as a real directory. Anything else in its place (a file,
/// a symlink) is removed with a warning, and `false` returned: there are no lookup files.
fn lookup_dir_usable(dir: &Path) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => {
            log::warn!(
                "{} is not a directory; removing it (lookup files are derived)",
                dir.display()
            );
            remove_derived(dir)?;
            if let Some(parent) = dir.parent() {
                crate::fsio::sync_dir(parent)?;
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx("Reading", dir),
    }
}

/// Removes a derived path whatever its type (a directory with its content, a symlink itself,
/// never its target); a path already gone is fine.
fn remove_derived(path: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("Removing", path),
    }
}

/// Removes every table, before changes that move chunks (`prune`, `repair`) or when tables are
/// not trusted (`check` rewrites them from the index it verified). The next [`publish`] rebuilds
/// them from the index.
pub fn drop_tables(repo_path: &Path) -> Result<()> {
    drop_tables_where(repo_path, |_| true)
}

/// Removes the tables of `ids`, before `forget` or `consolidate` rewrites their layers: a table's
/// name follows its snapshot record, which does not change at every step of a rewrite.
pub fn drop_tables_of(repo_path: &Path, ids: &[SnapshotId]) -> Result<()> {
    let prefixes: Vec<String> = ids.iter().map(|id| format!("{id}-")).collect();
    drop_tables_where(repo_path, |name| {
        prefixes.iter().any(|p| name.starts_with(p))
    })
}

fn drop_tables_where(repo_path: &Path, doomed: impl Fn(&str) -> bool) -> Result<()> {
    let dir = repo_path.join(LOOKUP_DIR);
    if !lookup_dir_usable(&dir)? {
        return Ok(());
    }
    let rd = fs::read_dir(&dir).ctx("Listing", &dir)?;
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name != CATALOG && doomed(&name) {
            remove_derived(&e.path())?;
            removed += 1;
        }
    }
    if removed == 0 {
        return Ok(());
    }
    // Durable before the change that follows: a table that came back after a crash could
    // describe a layer that has changed since.
    crate::fsio::sync_dir(&dir)
}

/// One snapshot in the catalog, borrowed from the catalog bytes.
#[derive(Serialize, Deserialize)]
struct CatalogSnapshot<'a> {
    /// [`Snapshot::encode`].
    #[serde(borrow)]
    record: &'a [u8],
    /// postcard `Vec<(dir, opaque)>`: the layer's touched directories; empty for a full layer.
    #[serde(borrow)]
    dirs: &'a [u8],
    /// File name of the layer's table in the lookup directory; empty when not built yet.
    #[serde(borrow)]
    table: &'a str,
}

#[derive(Serialize, Deserialize)]
struct CatalogBody<'a> {
    #[serde(borrow)]
    dictionary: Option<&'a [u8]>,
    #[serde(borrow)]
    snapshots: Vec<CatalogSnapshot<'a>>,
}

/// A layer's table file name: the snapshot id and a hash of its layer blobs, which change
/// whenever `forget` or `consolidate` rewrites the layer.
fn table_name(s: &Snapshot) -> String {
    let mut h = blake3::Hasher::new();
    for b in &s.layer_blobs {
        h.update(&b.0);
    }
    format!("{}-{}.tbl", s.id, &h.finalize().to_hex()[..16])
}

/// For [`publish`]: build every missing table.
pub const BUILD_ALL: u64 = u64::MAX;
/// For [`publish`]: the layer size (in entries) up to which a missing table is built by any
/// command (about 0.1 s). A bigger layer's table (a full backup of many files: 0.7 s per 100k
/// entries) is built only by a `cat` that needs it, so backups, listings and mounts do not pay
/// for it.
pub const SMALL_LAYER: u64 = 20_000;

/// The catalog file: `STRATACT ‖ version ‖ 0 ‖ body ‖ check` (first 16 bytes of blake3 of what
/// precedes it); in an encrypted repository `STRATACT ‖ 2 ‖ 0 ‖ sealed body`, the 16 header
/// bytes as associated data.
fn catalog_bytes(crypt: Option<&Arc<Crypt>>, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(CATALOG_MAGIC);
    let version = match crypt {
        Some(_) => SEALED_CATALOG_VERSION,
        None => CATALOG_VERSION,
    };
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    match crypt {
        Some(c) => {
            let head = bytes.clone();
            c.seal_into(crate::repo::crypt::Purpose::Lookup, &head, body, &mut bytes);
        }
        None => {
            bytes.extend_from_slice(body);
            let check = blake3::hash(&bytes);
            bytes.extend_from_slice(&check.as_bytes()[..16]);
        }
    }
    bytes
}

/// The body of catalog file `bytes`, checked (opened, in an encrypted repository).
fn catalog_body(crypt: Option<&Arc<Crypt>>, bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() < 32 || &bytes[..8] != CATALOG_MAGIC {
        return Err(bad_catalog("not a catalog"));
    }
    let Some(c) = crypt else {
        let (body, check) = bytes.split_at(bytes.len() - 16);
        if blake3::hash(body).as_bytes()[..16] != *check {
            return Err(bad_catalog("checksum mismatch"));
        }
        if body[8..12] != CATALOG_VERSION.to_le_bytes() {
            return Err(bad_catalog("unknown version"));
        }
        return Ok(body[16..].to_vec());
    };
    if bytes[8..12] != SEALED_CATALOG_VERSION.to_le_bytes() {
        return Err(bad_catalog("not sealed, in an encrypted repository"));
    }
    c.open(
        crate::repo::crypt::Purpose::Lookup,
        &bytes[..16],
        &bytes[16..],
    )
    .map_err(|e| bad_catalog(&e.to_string()))
}

/// [`publish`], with a failure logged instead of returned: the lookup files only make `cat`
/// faster, so failing to write them (a full disk) must not fail the command that just succeeded.
pub fn publish_or_warn(repo: &Repo, build_up_to: u64, needed: &[SnapshotId]) {
    if let Err(e) = publish(repo, build_up_to, needed) {
        log::warn!("Could not write the lookup files (strata cat will open the index): {e}");
        let _ = invalidate(repo.path());
    }
}

/// Writes the lookup files anew from `repo`, every table rebuilt, after a command that verified
/// or rebuilt its index (`check`, `repair`): `cat` then answers what that command reported (a
/// chunk the index lost stays lost to both). A failure is logged, as in [`publish_or_warn`].
pub fn rewrite_or_warn(repo: &Repo) {
    match drop_tables(repo.path()) {
        Ok(()) => publish_or_warn(repo, SMALL_LAYER, &[]),
        Err(e) => log::warn!("Could not remove the lookup tables: {e}"),
    }
}

/// Chunk ids whose locations a table build resolves up front (57 bytes each in memory); a layer
/// with more distinct chunks looks the rest up one by one.
const MAX_RESOLVED: usize = 1 << 20;

/// The location bytes of a chunk as the index holds them, or [`NO_LOCATION`].
fn index_location(repo: &Repo, id: &[u8; 32]) -> Result<[u8; Location::LEN]> {
    Ok(match repo.index().get(Space::Chunks, id)? {
        Some(loc) if loc.len() == Location::LEN => loc.as_ref().try_into().unwrap(),
        _ => NO_LOCATION,
    })
}

/// Table value: `entry length u32 LE ‖ entry ‖ one location (25 bytes) per chunk`.
///
/// The chunk locations are looked up in chunk-id order, not in the layer's path order: sorted
/// lookups touch each index page once (a full layer of 100k files: 1.3 s in path order).
fn build_table(repo: &Repo, id: &SnapshotId, path: &Path) -> Result<()> {
    let mut ids: Vec<[u8; 32]> = Vec::new();
    'collect: for kv in repo.index().scan(Space::Layers, &id.0) {
        let (_, v) = kv?;
        for c in Entry::decode(&v)?.chunks {
            if ids.len() >= MAX_RESOLVED {
                break 'collect;
            }
            ids.push(c.id.0);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let locs = ids
        .iter()
        .map(|c| index_location(repo, c))
        .collect::<Result<Vec<_>>>()?;
    let tmp = path.with_extension("tmp");
    remove_derived(&tmp)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let sealing = repo.crypt().map(|c| Sealing::new(c.clone(), &name));
    let mut w = TableWriter::create(&tmp, sealing)?;
    let mut value = Vec::new();
    for kv in repo.index().scan(Space::Layers, &id.0) {
        let (k, v) = kv?;
        let entry = Entry::decode(&v)?;
        value.clear();
        value.extend_from_slice(&(v.len() as u32).to_le_bytes());
        value.extend_from_slice(&v);
        for c in &entry.chunks {
            match ids.binary_search(&c.id.0) {
                Ok(i) => value.extend_from_slice(&locs[i]),
                Err(_) => value.extend_from_slice(&index_location(repo, &c.id.0)?),
            }
        }
        w.add(&k[16..], &value)?;
    }
    w.finish()?;
    fs::rename(&tmp, path).ctx("Renaming", &tmp)
}

/// What a catalog said of one snapshot, as stored: what the next [`publish`] can reuse when the
/// record has not changed.
#[derive(Clone)]
pub(crate) struct Described {
    /// [`Snapshot::encode`].
    record: Vec<u8>,
    /// The layer's touched directories, encoded (see [`CatalogSnapshot::dirs`]).
    dirs: Vec<u8>,
    /// Table file name; empty when not built.
    table: String,
}

/// Decodes a layer's touched directories as the catalog stores them ([`Seed::layer_dirs`]).
/// Every layer that touched nothing (a backup that found no change) shares one empty set.
pub fn decode_dirs(raw: &[u8]) -> Result<Arc<LayerDirs>> {
    static NONE: std::sync::OnceLock<Arc<LayerDirs>> = std::sync::OnceLock::new();
    // postcard's empty list is one zero byte.
    if raw.is_empty() || raw == [0] {
        return Ok(NONE.get_or_init(Default::default).clone());
    }
    let list: Vec<(Vec<u8>, bool)> =
        postcard::from_bytes(raw).map_err(|e| bad_catalog(&e.to_string()))?;
    Ok(Arc::new(list.into_iter().collect()))
}

/// What the catalog knows of the index that a reader opening the index would otherwise read from
/// sled record by record: every snapshot record and each non-full layer's touched directories.
pub struct Seed {
    /// Oldest first, as [`Repo::snapshots`] returns them.
    pub snapshots: Vec<Snapshot>,
    /// For every non-full layer, encoded as the catalog holds them ([`decode_dirs`]): decoded
    /// when a layer is first visited, so that memory and start-up do not grow with the layers
    /// nobody visits beyond these bytes.
    pub layer_dirs: crate::snapshot::IdMap<Vec<u8>>,
    /// What the catalog said of each snapshot, for the next [`publish`] to reuse.
    described: crate::snapshot::IdMap<Arc<Described>>,
}

/// The catalog's bytes for a seeded open (`crate::open::Open::seeded`), to be made a [`Seed`] by
/// [`parse_seed`]; `Ok(None)` when there is none.
/// Call under the lock, before opening the index (which removes the catalog). Parsing can then
/// go on beside the opening of the index.
pub fn read_catalog(repo_path: &Path) -> Result<Option<Vec<u8>>> {
    let path = repo_path.join(LOOKUP_DIR).join(CATALOG);
    match fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("Reading", &path),
    }
}

/// The [`Seed`] in a catalog's bytes ([`read_catalog`]), checked.
pub fn parse_seed(bytes: &[u8], crypt: Option<&Arc<Crypt>>) -> Result<Seed> {
    let body = catalog_body(crypt, bytes)?;
    let cat: CatalogBody = postcard::from_bytes(&body).map_err(|e| bad_catalog(&e.to_string()))?;
    let mut snapshots = Vec::with_capacity(cat.snapshots.len());
    let mut layer_dirs = crate::snapshot::IdMap::default();
    let mut described = crate::snapshot::IdMap::default();
    for c in &cat.snapshots {
        let s = Snapshot::decode(c.record)?;
        // A layer without entries touches nothing: views pass over it without asking.
        if !s.ends_chain() && !s.layer_blobs.is_empty() {
            layer_dirs.insert(s.id, c.dirs.to_vec());
        }
        described.insert(
            s.id,
            Arc::new(Described {
                record: c.record.to_vec(),
                dirs: c.dirs.to_vec(),
                table: c.table.to_string(),
            }),
        );
        snapshots.push(s);
    }
    Ok(Seed {
        snapshots,
        layer_dirs,
        described,
    })
}

/// Opens the index under the repository lock a [`Quick`] holds (the lock is inside), for when the
/// lookup files cannot answer.
pub type Reopen = Box<dyn FnOnce() -> Result<Arc<Repo>> + Send>;

/// The repository read through its lookup files, without sled: implements [`LayerStore`] for
/// [`crate::layers::View`], and reads chunks at the recorded locations. Holds the repository
/// lock.
pub struct Quick {
    path: PathBuf,
    packs: Arc<dyn PackBackend>,
    dictionary: Option<crate::compress::Dictionary>,
    records: records::Records,
    layer_dirs: Mutex<HashMap<SnapshotId, Arc<LayerDirs>>>,
    tables: Mutex<HashMap<SnapshotId, Arc<Table>>>,
    hints: Mutex<HashMap<ChunkId, Location>>,
    /// The keys of an encrypted repository.
    crypt: Option<Arc<Crypt>>,
    reopen: Mutex<Option<Reopen>>,
    /// The index, opened when a location hint failed.
    fallback: OnceLock<Arc<Repo>>,
}

fn bad_catalog(what: &str) -> Error {
    Error::CorruptMetadata(format!("lookup catalog: {what}"))
}

impl Quick {
    /// Reads the catalog of the repository at `repo_path`, whose lock the caller holds and
    /// hands over inside `reopen` (`crate::open::Locked`); `Ok(None)` when there is no catalog
    /// (the index has been opened since the last publish, or never published).
    pub fn open(
        repo_path: &Path,
        crypt: Option<Arc<Crypt>>,
        reopen: Reopen,
    ) -> Result<Option<Quick>> {
        let Some(records) = records::Records::read(repo_path, crypt.as_ref())? else {
            return Ok(None);
        };
        Ok(Some(Quick {
            path: repo_path.to_path_buf(),
            packs: crate::repo::pack_backend(repo_path)?,
            dictionary: records
                .dictionary()
                .map(|d| crate::compress::Dictionary::from_bytes(d.to_vec())),
            records,
            layer_dirs: Default::default(),
            tables: Default::default(),
            hints: Default::default(),
            crypt,
            reopen: Mutex::new(Some(reopen)),
            fallback: OnceLock::new(),
        }))
    }

    /// Every snapshot, oldest first (as [`Repo::snapshots`]).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        self.records.all()
    }

    /// The snapshot a user names (as [`crate::snapshot::find`]), decoding only the records it
    /// must look at.
    pub fn find(&self, name: &str, source: Option<&str>) -> Result<Snapshot> {
        self.records.find(name, source)
    }

    fn layer(&self, id: &SnapshotId) -> Result<(&[u8], &str)> {
        self.records
            .layer(id)
            .ok_or_else(|| Error::SnapshotNotFound(id.to_string()))
    }

    fn table(&self, id: &SnapshotId) -> Result<Arc<Table>> {
        if let Some(t) = self.tables.lock().unwrap().get(id) {
            return Ok(t.clone());
        }
        let name = self.layer(id)?.1;
        if name.is_empty() {
            return Err(Error::LookupIncomplete(id.short()));
        }
        if name.contains('/') || name.starts_with('.') {
            return Err(bad_catalog("table name is not a plain file name"));
        }
        let path = self.path.join(LOOKUP_DIR).join(name);
        let t = Arc::new(Table::open(&path, self.crypt.as_ref())?);
        self.tables.lock().unwrap().insert(*id, t.clone());
        Ok(t)
    }

    /// Splits a table value into its entry, remembering its chunks' locations.
    fn decode_value(&self, value: &[u8]) -> Result<Entry> {
        let bad = || Error::CorruptMetadata("lookup table value malformed".into());
        let len = u32::from_le_bytes(value.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let entry = Entry::decode(value.get(4..4 + len).ok_or_else(bad)?)?;
        let locs = &value[4 + len..];
        if locs.len() != entry.chunks.len() * Location::LEN {
            return Err(bad());
        }
        if !entry.chunks.is_empty() {
            let mut hints = self.hints.lock().unwrap();
            for (c, l) in entry.chunks.iter().zip(locs.chunks(Location::LEN)) {
                if let Some(l) = (l != NO_LOCATION).then(|| Location::decode(l)).flatten() {
                    hints.insert(c.id, l);
                }
            }
        }
        Ok(entry)
    }

    /// Reads one chunk, verified: at the location its table recorded, else (no hint, or the
    /// record there is not the chunk, e.g. after a repack) through the index, opened then.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        if self.fallback.get().is_none() {
            let hint = self.hints.lock().unwrap().get(id).copied();
            if let Some(loc) = hint {
                let mut out = Vec::new();
                match crate::repo::read_record_append_from(
                    self.packs.as_ref(),
                    self.dictionary.as_ref(),
                    self.crypt.as_deref(),
                    id,
                    &loc,
                    &mut out,
                ) {
                    Ok(()) => return Ok(out),
                    Err(e) => {
                        log::info!("Lookup location of chunk {id} failed ({e}); asking the index")
                    }
                }
            }
        }
        self.index()?.read_chunk(id)
    }

    /// The index, opened on first need under the lock this reader holds.
    fn index(&self) -> Result<&Arc<Repo>> {
        if let Some(r) = self.fallback.get() {
            return Ok(r);
        }
        let reopen =
            self.reopen.lock().unwrap().take().ok_or_else(|| {
                Error::CorruptMetadata("repository lock already handed on".into())
            })?;
        let repo = reopen()?;
        Ok(self.fallback.get_or_init(|| repo))
    }

    /// Ends a read: if the index had to be opened, writes fresh lookup files from it (opening it
    /// removed the catalog).
    pub fn finish(self) {
        if let Some(repo) = self.fallback.get() {
            publish_or_warn(repo, SMALL_LAYER, &[]);
        }
    }

    /// Removes the lookup files after they failed to answer (a damaged table), so that the
    /// index answers and the next publish writes them anew. Releases the lock.
    pub fn discard(self) {
        let _ = invalidate(&self.path);
        let _ = drop_tables(&self.path);
    }
}

impl LayerStore for Quick {
    fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        self.records.snapshot(id)
    }

    fn link(&self, id: &SnapshotId) -> Result<Option<crate::layers::Link>> {
        self.records.link(id)
    }

    fn layer_dirs(&self, id: &SnapshotId) -> Result<Arc<LayerDirs>> {
        if let Some(d) = self.layer_dirs.lock().unwrap().get(id) {
            return Ok(d.clone());
        }
        let d = decode_dirs(self.layer(id)?.0)?;
        self.layer_dirs.lock().unwrap().insert(*id, d.clone());
        Ok(d)
    }

    fn dir_layer(&self, id: &SnapshotId, dir: &[u8]) -> Result<Option<DirLayer>> {
        let mut prefix = dir.to_vec();
        prefix.push(0);
        let Some(rows) = self.table(id)?.scan_prefix(&prefix, MAX_DIR_LAYER)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            out.push((k[prefix.len()..].to_vec(), self.decode_value(&v)?));
        }
        Ok(Some(Arc::new(out)))
    }

    fn entry(&self, id: &SnapshotId, dir: &[u8], name: &[u8]) -> Result<Option<Entry>> {
        let key = &keys::entry_key(id, dir, name)[16..];
        self.table(id)?
            .get(key)?
            .map(|v| self.decode_value(&v))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
