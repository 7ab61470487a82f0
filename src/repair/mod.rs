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

mod build;
mod found;
mod install;
mod old;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::check::{self, CheckOptions, CheckReport};
use crate::compress::Dictionary;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::open::Open;
use crate::progress::ProgressHandle;
use crate::repo::pack::PackBackend;
use crate::repo::scan::TornRegion;
use crate::repo::{DEFAULT_COMPRESSION, INDEX_DIR};

/// Where the new database is built before it replaces `index/`.
pub const REBUILD_DIR: &str = "index.rebuild";
/// Prefix of the directory the replaced database is moved to.
pub const DAMAGED_PREFIX: &str = "index.damaged-";

/// How to repair. The `strata repair` options are these fields (clap), so the CLI fills them
/// directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RepairOptions {
    /// Build and report, but leave the repository untouched.
    #[arg(
        long,
        help = "Rebuild into a temporary database and report; change nothing"
    )]
    pub dry_run: bool,
    /// Also read and re-hash every chunk record, dropping those that fail.
    #[arg(
        long,
        help = "Also re-read and re-hash every chunk, dropping index entries of chunks that fail"
    )]
    pub read_data: bool,
    /// Reader threads for `read_data` (0: two per CPU).
    #[arg(
        long,
        default_value_t = 0,
        hide_default_value = true,
        help = "Reader threads for --read-data [default: two per CPU]"
    )]
    pub threads: usize,
    /// Receives `data_checked` as packs are scanned and chunks verified.
    #[arg(skip)]
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
    /// Layers of forgotten snapshots kept without a record because running mounts lease them
    /// (`prune` keeps their chunks until the lease ends, as after a `forget`).
    pub leased_layers: Vec<SnapshotId>,
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

/// Rebuilds the index of the repository at `path` from its packs; see the module documentation.
pub fn repair(path: &Path, opts: &RepairOptions) -> Result<RepairReport> {
    let start = Instant::now();
    let lock = Open::new(path).lock_without_index()?;
    if !opts.dry_run {
        // Tables built from the old index are not trusted; the end writes all from the new one.
        crate::lookup::drop_tables(path)?;
    }
    let packs = open_packs(path)?;
    let crypt = lock.crypt().cloned();
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // 1. Scan every pack's headers; read metadata records. 2. Optionally verify chunks.
    let mut found = found::scan_packs(packs.as_ref(), crypt.as_deref(), opts, &mut report)?;
    let dict = found.dictionary.clone().map(Dictionary::from_bytes);
    if opts.read_data {
        found.verify_chunks(
            packs.as_ref(),
            crypt.as_deref(),
            dict.as_ref(),
            opts,
            &mut report,
        );
    }
    // 3. Build the new database. Opening a sled database may write to it: a dry run reads a
    // copy of the old one.
    let db = install::create(path, opts.dry_run)?;
    let old = old::read(&path.join(INDEX_DIR), opts.dry_run, crypt.as_ref());
    report.compression = old.compression.unwrap_or(DEFAULT_COMPRESSION);
    report.compression_from_old_index = old.compression.is_some();
    let store = crate::repo::store::over(db.clone(), crypt.as_ref(), None)?;
    // What running mounts read of forgotten snapshots stays, as `forget` and `prune` keep it; a
    // real repair starts a new epoch first, as they do, so that no reader starts using a layer
    // unseen (a dry run changes nothing and only reads the leases).
    let leased = if opts.dry_run {
        crate::lease::leased(path)?
    } else {
        crate::lease::retained(path)?
    };
    let sources = build::Sources {
        leased: &leased,
        packs: packs.as_ref(),
        found: &found,
        old: &old,
        dict: dict.as_ref(),
        crypt: crypt.as_deref(),
    };
    let pending = build::build(store.as_ref(), &sources, report.compression, &mut report)?;
    store.flush()?;
    drop((store, old));
    // 4. Swap it in (unless dry run), then check what is still damaged.
    let db = if opts.dry_run {
        db
    } else {
        install::swap(path, db, found.max_pack, &mut report)?
    };
    let repo = lock.open_over(db)?;
    if !opts.dry_run {
        install::write_back(&repo, &pending)?;
        // In a bucket, the rebuilt index replaces the log.
        repo.publish_checkpoint()?;
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

/// The packs of the repository at `path` (in its bucket, for the cache of one): what
/// everything is rebuilt from.
fn open_packs(path: &Path) -> Result<std::sync::Arc<dyn PackBackend>> {
    if crate::repo::remote::session(path)?.is_some() {
        return crate::repo::pack_backend(path);
    }
    let dir = path.join("packs");
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} has no packs/ directory: there is nothing to rebuild from",
            path.display()
        )));
    }
    crate::repo::pack_backend(path)
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
