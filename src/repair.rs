//! `strata repair`: rebuilds the sled database (index and metadata) from the pack files alone, for
//! when `REPO/index/` is lost or damaged. The packs are the source of truth; nothing is invented.
//!
//! What is trusted, in order (documented in docs/FORMAT.md, "Rebuilding the index"):
//! 1. the `STRATA` marker (without it, nothing is touched);
//! 2. record headers found by scanning each pack sequentially ([`crate::repo::scan`]): a record is
//!    indexed when its header verifies and its payload lies inside the file; damaged stretches are
//!    skipped up to the next valid header, or to the end of the pack;
//! 3. metadata payloads, read and verified (blake3) before use: the dictionary, forget tombstones,
//!    snapshot blobs (for one id the last written — highest pack, then offset — wins; tombstoned
//!    ids are not restored), then each restored snapshot's layer blobs;
//! 4. chunk payloads only with `read_data`: a chunk record failing its hash is dropped (another
//!    copy of the same id is used when one verifies).
//!
//! The old database, when it still opens, is merged in: repair never loses what either the packs
//! or the old index hold. A snapshot the old index lists is kept when its record or its layer
//! blobs are lost from the packs but the old index still holds them — its record (when the packs
//! lost it or disagree with it only because of that loss) and its layer entries (when its layer
//! blobs are missing or damaged) come from the old index, and are written back into a new pack
//! (new layer blobs, a new snapshot blob, which is then the last written and so authoritative), so
//! that the packs describe it again. Where both hold a record, the pack's is authoritative
//! (`forget` writes its new records there before switching the index); the old index's final
//! stats are kept when nothing else differs.
//!
//! A snapshot whose layer is truly gone (neither its blobs nor the old index hold it) cannot be
//! rebuilt and is dropped (a partial layer would show a wrong tree), and reported. Its dependants
//! are kept — their own layers are intact — and are reported damaged by the check that ends every
//! repair (their views cannot open without the parent). A file whose chunk is gone stays listed
//! and reads as an error, never as zeros. What could not be restored (dropped snapshots, torn
//! packs, damaged records) goes into the damage marker ([`crate::check::marker`]), so that `prune`
//! does not delete what only those records referenced until the user says so.
//!
//! Crash safety: the new database is built in `REPO/index.rebuild` (removed first if a previous
//! repair died), flushed and closed; only then is the old `index/` renamed to
//! `index.damaged-<time>` and the new one renamed into place. Killed at any moment, a rerun starts
//! over and ends in the same state, so repair is idempotent. Records written back into the packs
//! are written after the swap, through the new index (as a backup would), then the snapshot
//! records are switched to them; killed in between, the rebuilt index still holds the snapshot
//! and its layer, and a rerun writes them again. `--dry-run` builds a temporary database outside
//! the repository, reads a copy of the old one, and changes nothing.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::check::{self, CheckOptions, CheckReport, DbCopy};
use crate::compress::Dictionary;
use crate::entry::Entry;
use crate::error::{Error, IoContext, Result};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::layer_blob;
use crate::progress::ProgressHandle;
use crate::repo::keys::{self, Location};
use crate::repo::pack::{self, DirBackend, PackBackend, RecordType, RECORD_HEADER_LEN};
use crate::repo::scan::{self, TornRegion};
use crate::repo::store::{Batch, MetaStore, SledStore, Space};
use crate::repo::writer::PackWriter;
use crate::repo::{Repo, DEFAULT_COMPRESSION, FORMAT_VERSION, INDEX_DIR};
use crate::snapshot::Snapshot;

/// Where the new database is built before it replaces `index/`.
pub const REBUILD_DIR: &str = "index.rebuild";
/// Prefix of the directory the replaced database is moved to.
pub const DAMAGED_PREFIX: &str = "index.damaged-";

/// Options for [`repair`].
#[derive(Clone, Debug, Default)]
pub struct RepairOptions {
    /// Build and report, but leave the repository untouched.
    pub dry_run: bool,
    /// Also read and re-hash every chunk record, dropping those that fail.
    pub read_data: bool,
    /// Reader threads for `read_data` (0: two per CPU).
    pub threads: usize,
    /// Receives `data_checked` as packs are scanned and chunks verified.
    pub progress: ProgressHandle,
}

/// A snapshot repair could not rebuild.
#[derive(Clone, Debug)]
pub struct DroppedSnapshot {
    /// Its id.
    pub id: SnapshotId,
    /// Why.
    pub reason: String,
}

/// A record dropped because its payload is damaged.
#[derive(Clone, Debug)]
pub struct CorruptRecord {
    /// The record's id.
    pub id: ChunkId,
    /// Where it was.
    pub pack: PackId,
    /// What failed.
    pub detail: String,
}

/// What [`repair`] did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Pack files scanned.
    pub packs: u64,
    /// Their total size.
    pub pack_bytes: u64,
    /// Valid records found.
    pub records: u64,
    /// Damaged stretches of packs, skipped.
    pub torn: Vec<(PackId, TornRegion)>,
    /// Packs whose 16-byte header was wrong (their records were still scanned).
    pub bad_pack_headers: Vec<PackId>,
    /// Index entries written.
    pub index_entries: u64,
    /// Records whose id was already found in an earlier record (one copy is indexed).
    pub duplicates: u64,
    /// Records dropped because their payload failed verification.
    pub corrupt: Vec<CorruptRecord>,
    /// Snapshots restored, oldest first.
    pub snapshots: Vec<SnapshotId>,
    /// Snapshot blobs not restored because a forget tombstone names them.
    pub tombstoned: u64,
    /// Snapshots that could not be rebuilt.
    pub dropped: Vec<DroppedSnapshot>,
    /// Snapshots kept thanks to the old index (their record or layer was lost from the packs),
    /// with what came from it; their records were written back into a new pack (not in a dry run).
    pub rewritten: Vec<DroppedSnapshot>,
    /// Whether a dictionary was restored.
    pub dictionary: bool,
    /// The compression level recorded in the new database.
    pub compression: i32,
    /// Whether that level came from the old database (else it is the default).
    pub compression_from_old_index: bool,
    /// Where the replaced database went.
    pub moved_aside: Option<PathBuf>,
    /// A structural check of the rebuilt repository: what is still damaged, down to files.
    pub after: CheckReport,
    /// Wall time.
    pub elapsed_ms: u64,
}

fn db_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(64 << 20)
        .mode(sled::Mode::HighThroughput)
}

/// Reads and verifies one record with `packs` (the dictionary only matters for chunks).
fn read_record(
    packs: &dyn PackBackend,
    id: &ChunkId,
    loc: &Location,
    dict: Option<&Dictionary>,
) -> Result<Vec<u8>> {
    let bytes = packs
        .read_at(
            loc.pack,
            loc.offset,
            RECORD_HEADER_LEN + loc.stored_len as usize,
        )
        .map_err(|e| Error::CorruptChunk {
            id: *id,
            pack: loc.pack,
            detail: e.to_string(),
        })?;
    Ok(pack::open_record(loc.pack, &bytes, id, dict)?.1)
}

/// Everything found in the packs.
#[derive(Default)]
struct Found {
    /// id → location of the first valid copy; further copies in `dups`.
    chunks: HashMap<ChunkId, Location>,
    dups: HashMap<ChunkId, Vec<Location>>,
    types: HashMap<ChunkId, RecordType>,
    /// Authoritative snapshot blob per id: ((pack, offset), record).
    snapshots: HashMap<SnapshotId, ((PackId, u64), Snapshot)>,
    tombstones: std::collections::HashSet<SnapshotId>,
    dictionary: Option<Vec<u8>>,
    max_pack: u64,
}

/// Rebuilds the index of the repository at `path` from its packs; see the module documentation.
pub fn repair(path: &Path, opts: &RepairOptions) -> Result<RepairReport> {
    let start = Instant::now();
    let lock = Repo::lock_only(path)?;
    if !opts.dry_run {
        // Tables built from the old index are not trusted; the end writes all from the new one.
        crate::lookup::drop_tables(path)?;
    }
    let packs_dir = path.join("packs");
    if !packs_dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} has no packs/ directory: there is nothing to rebuild from",
            path.display()
        )));
    }
    let packs = DirBackend::open(&packs_dir)?;
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // 1. Scan every pack's headers; read metadata records.
    let list = packs.list()?;
    report.packs = list.len() as u64;
    report.pack_bytes = list.iter().map(|(_, s)| s).sum();
    let total = report.pack_bytes + if opts.read_data { report.pack_bytes } else { 0 };
    opts.progress.0.verify_total(total);
    let mut found = Found::default();
    for &(pid, size) in &list {
        found.max_pack = found.max_pack.max(pid.0);
        let s = scan::scan_pack(&packs, pid, size)?;
        if s.bad_pack_header {
            report.bad_pack_headers.push(pid);
        }
        for t in s.torn {
            log::warn!(
                "Pack {pid}: {} damaged bytes at offset {} ({}){}",
                t.len,
                t.offset,
                t.reason,
                if t.resynced {
                    ""
                } else {
                    ", rest of the pack dropped"
                }
            );
            report.torn.push((pid, t));
        }
        report.records += s.records.len() as u64;
        for r in s.records {
            let h = r.header;
            let loc = Location {
                pack: pid,
                offset: r.offset,
                stored_len: h.stored_len,
                raw_len: h.raw_len,
                compression: h.compression,
            };
            if h.rtype != RecordType::Chunk {
                // Metadata is needed now, and must verify to be trusted (and indexed).
                let plain = match read_record(&packs, &h.id, &loc, None) {
                    Ok(p) => p,
                    Err(e) => {
                        report.corrupt.push(CorruptRecord {
                            id: h.id,
                            pack: pid,
                            detail: e.to_string(),
                        });
                        continue;
                    }
                };
                match h.rtype {
                    RecordType::Snapshot => match Snapshot::decode(&plain) {
                        Ok(snap) => {
                            let at = (pid, r.offset);
                            let newer = found
                                .snapshots
                                .get(&snap.id)
                                .is_none_or(|(old, _)| *old < at);
                            if newer {
                                found.snapshots.insert(snap.id, (at, snap));
                            }
                        }
                        Err(e) => log::warn!("Snapshot blob {} in pack {pid}: {e}", h.id),
                    },
                    RecordType::Forget => found.tombstones.extend(
                        plain
                            .chunks_exact(16)
                            .map(|c| SnapshotId(c.try_into().unwrap())),
                    ),
                    RecordType::Dictionary if found.dictionary.is_none() => {
                        found.dictionary = Some(plain);
                    }
                    _ => {}
                }
            }
            match found.chunks.entry(h.id) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    report.duplicates += 1;
                    found.dups.entry(h.id).or_default().push(loc);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                    found.types.insert(h.id, h.rtype);
                }
            }
        }
        opts.progress.0.data_checked(size);
    }
    let dict = found.dictionary.clone().map(Dictionary::from_bytes);

    // 2. Optionally verify chunk payloads; keep a verified copy when one exists.
    if opts.read_data {
        let todo: Vec<(ChunkId, Location)> = {
            let mut v: Vec<_> = found
                .chunks
                .iter()
                .filter(|(id, _)| found.types.get(id) == Some(&RecordType::Chunk))
                .map(|(id, l)| (*id, *l))
                .collect();
            v.sort_by_key(|(_, l)| (l.pack, l.offset));
            v
        };
        let failed = check::verify_with(
            &todo,
            |id, loc| read_record(&packs, id, loc, dict.as_ref()).map(|_| ()),
            opts.threads,
            &opts.progress,
        );
        for (id, loc, detail) in failed {
            report.corrupt.push(CorruptRecord {
                id,
                pack: loc.pack,
                detail,
            });
            let alt = found.dups.get(&id).and_then(|alts| {
                alts.iter()
                    .find(|l| read_record(&packs, &id, l, dict.as_ref()).is_ok())
                    .copied()
            });
            match alt {
                Some(l) => {
                    found.chunks.insert(id, l);
                }
                None => {
                    found.chunks.remove(&id);
                }
            }
        }
    }

    // 3. Build the new database.
    let rebuild = path.join(REBUILD_DIR);
    let db = if opts.dry_run {
        // sled's own temporary location (removed when the database is dropped), made explicit.
        let temp = sled::Config::new().temporary(true);
        let at = temp.get_path();
        crate::repo::open_sled(temp.path(at))?
    } else {
        if rebuild.exists() {
            log::info!(
                "Removing {} left by an interrupted repair",
                rebuild.display()
            );
            fs::remove_dir_all(&rebuild).ctx("Removing", &rebuild)?;
        }
        crate::repo::open_sled(db_config(&rebuild))?
    };
    // Opening a sled database may write to it: a dry run reads a copy.
    let old = read_old_index(&path.join(INDEX_DIR), opts.dry_run);
    report.compression = old.compression.unwrap_or(DEFAULT_COMPRESSION);
    report.compression_from_old_index = old.compression.is_some();
    let store = SledStore::new(db.clone())?;
    let pending = build(
        &store,
        &packs,
        &found,
        &old,
        dict.as_ref(),
        report.compression,
        &mut report,
    )?;
    store.flush()?;
    drop((store, old));

    // 4. Swap it in (unless dry run), then check what is still damaged.
    let db = if opts.dry_run {
        db
    } else {
        drop(db);
        advance_id_generator(&rebuild, found.max_pack)?;
        let index = path.join(INDEX_DIR);
        if index.exists() {
            let aside = aside_name(path);
            fs::rename(&index, &aside).ctx("Moving the old index aside to", &aside)?;
            report.moved_aside = Some(aside);
        }
        fs::rename(&rebuild, &index).ctx("Installing the rebuilt index", &index)?;
        crate::fsio::sync_dir(path)?;
        crate::repo::open_sled(db_config(&index))?
    };
    let repo = Repo::open_with_db(path, lock, db)?;
    if !opts.dry_run {
        write_back(&repo, &pending)?;
    }
    report.after = check::check(&repo, &CheckOptions::default())?;
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    if opts.dry_run {
        // A temporary database: nothing of it needs to reach the disk.
        drop(repo);
    } else {
        if let Err(e) = record_damage(path, &report) {
            // The rebuild itself is done; say loudly that prune is not held back.
            log::error!("Could not write the damage marker, so prune will not wait for you: {e}");
        }
        crate::lookup::publish_or_warn(&repo, crate::lookup::SMALL_LAYER, &[]);
    }
    Ok(report)
}

/// Updates the damage marker: what the closing check found, and what the rebuild lost (which no
/// later check can see, so it stays until the user lifts it).
fn record_damage(path: &Path, report: &RepairReport) -> Result<()> {
    check::marker::record_check(path, &report.after, false, false)?;
    let mut lost: Vec<String> = report
        .dropped
        .iter()
        .map(|d| format!("repair lost snapshot {}: {}", d.id, d.reason))
        .collect();
    lost.extend(report.torn.iter().map(|(p, t)| {
        format!(
            "repair found {} damaged bytes in pack {p} at offset {} ({})",
            t.len, t.offset, t.reason
        )
    }));
    lost.extend(report.corrupt.iter().map(|c| {
        format!(
            "repair dropped damaged record {} in pack {}: {}",
            c.id, c.pack, c.detail
        )
    }));
    check::marker::record_repair(path, &lost)
}

/// A snapshot whose record or layer is written back into the packs after the swap.
struct WriteBack {
    id: SnapshotId,
    /// Its layer blobs are lost: new ones are written from the rebuilt layer.
    layer: bool,
}

/// Writes the records in `pending` back into one new pack (new layer blobs where the layer came
/// from the old index, then a new snapshot blob, the last written for its id), indexes them,
/// then switches the snapshot records to the new layer blobs; flushes.
fn write_back(repo: &std::sync::Arc<Repo>, pending: &[WriteBack]) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut writer = PackWriter::new(repo.clone(), Default::default());
    let mut updated = Vec::new();
    for w in pending {
        let Some(mut snap) = repo.snapshot(&w.id)? else {
            continue;
        };
        if w.layer {
            snap.layer_blobs =
                crate::forget::write_layer_blobs(repo, &mut writer, &w.id, &Default::default())?;
        }
        writer.add_blob(RecordType::Snapshot, &snap.encode())?;
        updated.push(snap);
    }
    writer.finish()?;
    let mut batch = Batch::default();
    for snap in &updated {
        batch.insert(Space::Records, snap.id.0, snap.encode());
    }
    repo.index().apply(batch)?;
    repo.snapshots_changed();
    repo.flush()
}

/// A layer's entries as (key without the snapshot id, entry) pairs.
type LayerEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads and parses the layer blobs `ids` from the packs.
fn layer_from_blobs(
    packs: &DirBackend,
    found: &Found,
    ids: &[ChunkId],
    dict: Option<&Dictionary>,
) -> std::result::Result<LayerEntries, String> {
    let mut entries = Vec::new();
    for b in ids {
        let plain = match found.chunks.get(b) {
            None => return Err(format!("its layer blob {b} is missing")),
            Some(loc) => read_record(packs, b, loc, dict)
                .map_err(|e| format!("its layer blob {b} is damaged: {e}"))?,
        };
        let es = layer_blob::entries(&plain).map_err(|e| format!("its layer blob {b}: {e}"))?;
        entries.extend(es.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
    }
    Ok(entries)
}

/// The `layerdirs` of a layer, derived from its entries exactly as backup fills them.
fn derive_dirs(entries: &LayerEntries) -> std::result::Result<layer_blob::Dirs, String> {
    let mut dirs = layer_blob::Dirs::new();
    for (k, v) in entries {
        let (dir, name) = keys::split_entry_key(k).ok_or("a layer key without separator")?;
        let e = Entry::decode(v).map_err(|e| format!("an entry of its layer: {e}"))?;
        layer_blob::note_dir(&mut dirs, dir, name, &e);
    }
    Ok(dirs)
}

/// Writes meta, chunks, snapshots, layers and layerdirs into `db`, merging what the packs hold
/// with what the old index holds (see the module documentation). Returns the snapshots whose
/// records must be written back into the packs.
fn build(
    store: &dyn MetaStore,
    packs: &DirBackend,
    found: &Found,
    old: &OldIndex,
    dict: Option<&Dictionary>,
    compression: i32,
    report: &mut RepairReport,
) -> Result<Vec<WriteBack>> {
    let mut meta = Batch::default();
    meta.insert(Space::Meta, keys::META_FORMAT, FORMAT_VERSION.to_be_bytes());
    meta.insert(
        Space::Meta,
        keys::META_COMPRESSION,
        compression.to_be_bytes(),
    );
    if let Some(d) = &found.dictionary {
        meta.insert(Space::Meta, keys::META_DICTIONARY, d);
        report.dictionary = true;
    }
    store.apply(meta)?;

    let mut ids: Vec<_> = found.chunks.iter().collect();
    ids.sort_unstable_by_key(|(id, _)| **id);
    for part in ids.chunks(512) {
        let mut batch = Batch::default();
        for (id, loc) in part {
            batch.insert(Space::Chunks, id.0, loc.encode());
        }
        store.apply(batch)?;
    }
    report.index_entries = ids.len() as u64;

    // Every snapshot the packs or the old index describe.
    let mut ordered: Vec<&Snapshot> = found.snapshots.values().map(|(_, s)| s).collect();
    ordered.extend(
        old.snapshots
            .values()
            .filter(|s| !found.snapshots.contains_key(&s.id)),
    );
    ordered.sort_by_key(|s| (s.time_ns, s.id));
    let mut pending = Vec::new();
    for listed in ordered {
        let id = listed.id;
        if found.tombstones.contains(&id) {
            if found.snapshots.contains_key(&id) {
                report.tombstoned += 1;
            }
            continue;
        }
        let from_pack = found.snapshots.get(&id).map(|(_, s)| s);
        let from_old = old.snapshots.get(&id);
        // The pack's record is authoritative; the old index's carries the final stats, so it
        // is kept when nothing else differs, and it is all there is when the pack lost it.
        let mut snap = match (from_pack, from_old) {
            (Some(p), Some(o)) if check::record_differences(o, p).is_empty() => o.clone(),
            (Some(p), _) => p.clone(),
            (None, Some(o)) => o.clone(),
            (None, None) => continue,
        };
        let mut kept: Option<String> = from_pack.is_none().then(|| {
            "its snapshot blob is lost from the packs; the old index's record is kept".into()
        });
        let mut layer_from_old = false;
        let built = layer_from_blobs(packs, found, &snap.layer_blobs, dict)
            .and_then(|e| derive_dirs(&e).map(|d| (e, d)));
        let (mut entries, dirs) = match built {
            Ok(b) => b,
            Err(reason) => {
                // The old index's layer, with the record it belongs to.
                let fallback = from_old.and_then(|o| {
                    let e = old.layer(&id)?;
                    (!e.is_empty()).then_some(())?;
                    let d = derive_dirs(&e).ok()?;
                    Some((o, e, d))
                });
                match fallback {
                    Some((o, e, d)) => {
                        snap = o.clone();
                        layer_from_old = true;
                        kept = Some(format!(
                            "{reason}; its layer ({} entries) and record are taken from the old index",
                            e.len()
                        ));
                        (e, d)
                    }
                    None => {
                        let reason = if from_old.is_some() {
                            format!("{reason}, and the old index does not hold its layer")
                        } else {
                            reason
                        };
                        log::error!("Cannot rebuild snapshot {id}: {reason}");
                        report.dropped.push(DroppedSnapshot { id, reason });
                        continue;
                    }
                }
            }
        };
        entries.sort_unstable();
        for part in entries.chunks(512) {
            let mut batch = Batch::default();
            for (k, v) in part {
                let mut key = snap.id.0.to_vec();
                key.extend_from_slice(k);
                batch.insert(Space::Layers, key, v);
            }
            store.apply(batch)?;
        }
        if !snap.ends_chain() {
            let mut batch = Batch::default();
            for (dir, opaque) in &dirs {
                batch.insert(
                    Space::LayerDirs,
                    keys::layerdir_key(&snap.id, dir),
                    [*opaque as u8],
                );
            }
            store.apply(batch)?;
        }
        // The commit point of each snapshot, as in a backup: its record goes in last.
        store.insert(Space::Records, &snap.id.0, &snap.encode())?;
        report.snapshots.push(snap.id);
        if let Some(reason) = kept {
            log::warn!("Snapshot {id}: {reason}; writing it back into the packs");
            pending.push(WriteBack {
                id,
                layer: layer_from_old,
            });
            report.rewritten.push(DroppedSnapshot { id, reason });
        }
    }
    // Records of the old index that do not decode, and that the packs do not describe either.
    for id in &old.undecodable {
        let known = report.snapshots.contains(id)
            || report.dropped.iter().any(|d| d.id == *id)
            || found.tombstones.contains(id);
        if !known {
            log::error!("Cannot rebuild snapshot {id}: no snapshot blob in the packs");
            report.dropped.push(DroppedSnapshot {
                id: *id,
                reason: "its snapshot blob is not in the packs, and its record in the old index does not decode".into(),
            });
        }
    }
    Ok(pending)
}

/// What can still be read from the database being replaced.
#[derive(Default)]
struct OldIndex {
    compression: Option<i32>,
    /// Its snapshot records.
    snapshots: HashMap<SnapshotId, Snapshot>,
    /// Ids of its records that do not decode.
    undecodable: Vec<SnapshotId>,
    /// The database, open for reading layers (dropped before its copy).
    db: Option<SledStore>,
    /// In a dry run, the private copy `db` was opened from.
    _copy: Option<DbCopy>,
}

impl OldIndex {
    /// The layer of `id` as the old database holds it (keys without the snapshot id), or `None`
    /// when it cannot be read whole: a partial layer would show a wrong tree.
    fn layer(&self, id: &SnapshotId) -> Option<LayerEntries> {
        let db = self.db.as_ref()?;
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.scan(Space::Layers, &id.0)
                .map(|kv| {
                    let (k, v) = kv.ok()?;
                    keys::split_entry_key(&k[16..])?;
                    Some((k[16..].to_vec(), v.to_vec()))
                })
                .collect::<Option<LayerEntries>>()
        }));
        read.ok().flatten()
    }
}

/// Reads the compression level and the snapshot records from the old database, when it opens,
/// and keeps it open for [`OldIndex::layer`]; `copy` reads a private copy (a dry run: opening a
/// sled database may write to it). A damaged sled may fail or panic on open: both just mean
/// "unknown".
fn read_old_index(index: &Path, copy: bool) -> OldIndex {
    if !index.join("db").exists() {
        return OldIndex::default();
    }
    let (dir, copied) = if copy {
        match check::copy_db(index) {
            Ok(c) => (c.path().to_path_buf(), Some(c)),
            Err(e) => {
                log::warn!("Cannot copy the old index to read it: {e}");
                return OldIndex::default();
            }
        }
    } else {
        (index.to_path_buf(), None)
    };
    let read = std::panic::catch_unwind(move || -> Option<OldIndex> {
        let db = SledStore::new(crate::repo::open_sled(db_config(&dir)).ok()?).ok()?;
        let compression = db
            .get(Space::Meta, keys::META_COMPRESSION)
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(i32::from_be_bytes));
        let mut snapshots = HashMap::new();
        let mut undecodable = Vec::new();
        for kv in db.scan(Space::Records, &[]) {
            let Ok((k, v)) = kv else { continue };
            let Ok(id) = k.as_ref().try_into().map(SnapshotId) else {
                continue;
            };
            match Snapshot::decode(&v) {
                Ok(s) if s.id == id => {
                    snapshots.insert(id, s);
                }
                _ => undecodable.push(id),
            }
        }
        Some(OldIndex {
            compression,
            snapshots,
            undecodable,
            db: Some(db),
            _copy: None,
        })
    });
    let mut old = read.ok().flatten().unwrap_or_default();
    old._copy = copied;
    old
}

/// Makes sled's id generator of the database at `path` hand out numbers above `max_pack`, so new
/// packs never reuse an existing pack's number. sled persists the counter in steps of its
/// `idgen_persist_interval` (1,000,000 by default) and, on reopening, starts two steps above the
/// persisted value. Opening once with a step that is a multiple of the default and larger than
/// `max_pack`, then drawing one id, persists a counter above it that later opens (with the default
/// step, which requires the counter to be a multiple of it) accept.
fn advance_id_generator(path: &Path, max_pack: u64) -> Result<()> {
    const SLED_DEFAULT_STEP: u64 = 1_000_000;
    let step = (max_pack / SLED_DEFAULT_STEP + 1) * SLED_DEFAULT_STEP;
    let db = SledStore::new(crate::repo::open_sled(
        db_config(path).idgen_persist_interval(step),
    )?)?;
    let id = db.generate_id()?;
    debug_assert!(id > max_pack);
    db.flush()?;
    Ok(())
}

/// `index.damaged-<UTC time>`, with a counter when that exists already.
fn aside_name(path: &Path) -> PathBuf {
    let t = crate::time::rfc3339(crate::time::now_ns()).replace(':', "");
    let mut p = path.join(format!("{DAMAGED_PREFIX}{t}"));
    let mut n = 1;
    while p.exists() {
        n += 1;
        p = path.join(format!("{DAMAGED_PREFIX}{t}-{n}"));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_generator_moves_past_existing_packs() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("db");
        let open = || SledStore::new(crate::repo::open_sled(db_config(&p)).unwrap()).unwrap();
        open().flush().unwrap();
        advance_id_generator(&p, 7_654_321).unwrap();
        for _ in 0..3 {
            // Each open (sled's recovery path included) must keep ids above the packs.
            let db = open();
            assert!(db.generate_id().unwrap() > 7_654_321);
            assert!(db.generate_id().unwrap() > 7_654_321);
            db.flush().unwrap();
        }
    }
}
