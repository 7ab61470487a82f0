//! `prune`: deletes what no snapshot needs any more. Mark, then sweep.
//!
//! **Mark.** The `layers` keyspace is streamed once: entries of existing snapshots mark their chunks
//! live (a `HashSet` of 32-byte ids: about 80 MB per million chunks with the set's overhead, fine
//! up to a few million chunks), and so do the layers a running mount leases (a forgotten snapshot
//! whose files it still has open, see [`crate::lease`]); entries of other snapshots that no
//! longer exist (a killed backup or forget, a lease that ended) are deleted. Also live: the layer blobs listed by the snapshot records, the last-written
//! snapshot blob of each remaining snapshot, every forget tombstone and the dictionary.
//!
//! **Sweep.** Every pack's record headers are read. A record is live when its id is live and the
//! index points at it (a second copy, left by a killed rewrite, is garbage). A pack without live
//! records is deleted; a pack whose live bytes fall below the repack threshold is rewritten: its
//! live records are copied raw (verified, never recompressed) into a new pack, which is finished,
//! then the index switches to the new locations and is flushed, then the old pack is deleted.
//! Killed between any two steps, nothing referenced is lost and a rerun completes.
//!
//! **Damage.** Prune deletes what nothing references, so it must not run on a repository whose
//! references may be incomplete: when the last check or repair left a damage marker
//! ([`crate::check::marker`]), prune refuses ([`Error::DamageUnacknowledged`]) unless
//! `force_after_damage` says the user has looked; that run removes the marker when it is done. A
//! dry run only warns.
//!
//! Unfinished `*.pack.tmp` files are removed first: the repository lock is exclusive (`flock`
//! `LOCK_EX`, see `repo::take_lock`), so no live writer can own them.

mod mark;
mod repack;
mod sweep;

use std::sync::Arc;
use std::time::Instant;

use crate::check::marker::{self, Origin};
use crate::error::{Error, Result};
use crate::forget::crash_point;
use crate::progress::ProgressHandle;
use crate::repo::Repo;

/// Default repack threshold: packs less than 80% live are rewritten. Rewriting copies the live
/// part, so at 80% each byte copied frees at least a quarter byte; packs are 64 MiB, so the waste
/// left behind is bounded by 20% of the repository, and a prune after a typical forget (a few
/// percent of chunks gone, spread over recent packs) copies little.
pub const DEFAULT_REPACK_THRESHOLD: u8 = 80;

/// Options for [`prune`]. The `strata prune` options are these fields (clap), so the CLI fills
/// them directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, clap::Args)]
pub struct PruneOptions {
    /// Report what would happen; change nothing.
    #[arg(
        long,
        short = 'n',
        help = "Show what would be deleted and rewritten; change nothing"
    )]
    pub dry_run: bool,
    /// Rewrite packs whose live bytes are below this percentage of their size (0 = never, 100 =
    /// any pack with garbage).
    #[arg(
        long,
        value_name = "PCT",
        default_value_t = DEFAULT_REPACK_THRESHOLD,
        value_parser = clap::value_parser!(u8).range(0..=100),
        help = "Rewrite packs whose live bytes are below PCT percent of their size (0-100)"
    )]
    pub repack_threshold: u8,
    /// Run even though the last check or repair found damage (the user has looked); the damage
    /// marker is removed once the prune is done.
    #[arg(
        long,
        help = "Prune even though the last check or repair found lost or damaged data (look at \
                what it reported first: prune deletes whatever no snapshot references)"
    )]
    pub force_after_damage: bool,
    /// Where to report the stages and the bytes copied.
    #[arg(skip)]
    pub progress: ProgressHandle,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_threshold: DEFAULT_REPACK_THRESHOLD,
            force_after_damage: false,
            progress: ProgressHandle::default(),
        }
    }
}

/// What prune did (or, with `dry_run`, would do). Units in the field names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Packs examined.
    pub packs_total: u64,
    /// Packs without live records, deleted.
    pub packs_deleted: u64,
    /// Packs rewritten because their live fraction was below the threshold.
    pub packs_rewritten: u64,
    /// Packs created by rewriting.
    pub packs_written: u64,
    /// Packs that could not be read or verified and were left alone.
    pub packs_skipped: u64,
    /// Records dropped from packs.
    pub records_removed: u64,
    /// Records copied into new packs.
    pub records_copied: u64,
    /// Live chunks (file content) found by the mark phase.
    pub live_chunks: u64,
    /// Bytes of pack files before.
    pub bytes_before: u64,
    /// Bytes of pack files after.
    pub bytes_after: u64,
    /// Bytes of garbage left in packs above the threshold.
    pub garbage_bytes_kept: u64,
    /// Layer entries of snapshots that no longer exist, deleted from sled.
    pub orphan_entries: u64,
    /// Unfinished `*.pack.tmp` files removed.
    pub tmp_packs_removed: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl PruneStats {
    /// Bytes of pack files freed.
    pub fn reclaimed_bytes(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Deletes unreferenced records from the repository's packs; see the module doc.
pub fn prune(repo: &Arc<Repo>, opts: &PruneOptions) -> Result<PruneStats> {
    let start = Instant::now();
    let mut stats = PruneStats::default();
    let damage = marker::read(repo.path())?;
    acknowledge_damage(repo, &damage, opts)?;
    if !opts.dry_run {
        stats.tmp_packs_removed = repo.packs().remove_unfinished()? as u64;
        // The lookup tables record chunk locations, which a repack moves.
        crate::lookup::drop_tables(repo.path())?;
    }

    // Mark. The leases are read under the lock after a new epoch starts, so a mount that enters
    // a snapshot from now on takes a new copy of the index first (see crate::lease).
    let leased = if opts.dry_run {
        crate::lease::leased(repo.path())?
    } else {
        crate::lease::retained(repo.path())?
    };
    let progress = &opts.progress.0;
    progress.phase("Marking");
    let mut marked = mark::mark_layers(repo, leased)?;
    stats.live_chunks = marked.live_chunks;
    progress.phase("Scanning packs");
    let packs = mark::scan_packs(repo, &mut marked, &mut stats)?;

    // Sweep: decide per pack.
    let sweep = sweep::classify(repo, packs, &marked.live, opts.repack_threshold, &mut stats)?;
    stats.packs_deleted = sweep.delete.len() as u64;
    stats.packs_rewritten = sweep.rewrite.len() as u64;
    stats.orphan_entries = marked.orphans.len() as u64;
    if opts.dry_run {
        stats.packs_written = sweep.packs_written_estimate(repo.pack_target_size());
        stats.elapsed_ms = start.elapsed().as_millis() as u64;
        return Ok(stats);
    }
    sweep::remove_orphans(repo, &marked)?;

    // Rewrite: copy, finish, switch the index, flush, delete.
    progress.phase("Rewriting packs");
    let repacked = repack::repack(repo, sweep.rewrite, &mut stats, &**progress)?;
    crash_point("prune-after-pack");
    repack::switch_index(repo, &repacked, &sweep.delete)?;
    repo.flush()?;
    crash_point("prune-after-index");
    progress.phase("Deleting packs");
    for (pid, _) in &repacked.done {
        repo.packs().delete(*pid)?;
        crash_point("prune-after-first-delete");
    }
    for (pid, _) in &sweep.delete {
        repo.packs().delete(*pid)?;
    }
    // In a bucket: the log of commits becomes one checkpoint, so it stays short.
    repo.publish_checkpoint()?;
    stats.bytes_after = repo.packs().list()?.iter().map(|p| p.1).sum();
    if !damage.is_empty() {
        // Acknowledged and acted on: the next prune needs no flag until new damage is found.
        marker::clear(repo.path())?;
    }
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    log::info!(
        "Pruned: {} pack(s) deleted, {} rewritten, {} bytes reclaimed",
        stats.packs_deleted,
        stats.packs_rewritten,
        stats.reclaimed_bytes()
    );
    Ok(stats)
}

/// Refuses to prune after damage ([`Error::DamageUnacknowledged`]) unless the user says they
/// have looked (`force_after_damage`); a dry run only warns.
fn acknowledge_damage(repo: &Repo, damage: &[(Origin, String)], opts: &PruneOptions) -> Result<()> {
    let Some(found) = damage_summary(damage) else {
        return Ok(());
    };
    if opts.dry_run {
        log::warn!("{found}; prune will need --force-after-damage");
    } else if !opts.force_after_damage {
        return Err(Error::DamageUnacknowledged {
            path: repo.path().to_path_buf(),
            found,
        });
    } else {
        log::warn!("Pruning as asked, although {found}");
    }
    Ok(())
}

/// One line for the user: the first findings of the damage marker, and how many more; `None`
/// when there are none.
fn damage_summary(findings: &[(Origin, String)]) -> Option<String> {
    const SHOWN: usize = 3;
    let (first, _) = findings.first()?;
    let mut out = format!(
        "the last {} found damage: ",
        match first {
            Origin::Repair => "repair",
            _ => "check",
        }
    );
    let shown: Vec<&str> = findings
        .iter()
        .take(SHOWN)
        .map(|(_, m)| m.as_str())
        .collect();
    out.push_str(&shown.join("; "));
    if findings.len() > SHOWN {
        out.push_str(&format!(" (and {} more)", findings.len() - SHOWN));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PackId;
    use crate::repo::pack::RecordType;
    use crate::repo::writer::PackWriter;
    use crate::repo::CreateOptions;

    fn pack_with(repo: &Arc<Repo>, data: &[u8]) -> PackId {
        let mut w = PackWriter::new(repo.clone(), Default::default());
        let id = w.add_blob(RecordType::Chunk, data).unwrap();
        w.finish().unwrap();
        repo.chunk_location(&id).unwrap().pack
    }

    #[test]
    fn garbage_packs_go_damaged_packs_stay_tmp_packs_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let repo = crate::open::Open::new(t.path().join("r"))
            .create(&CreateOptions::default())
            .unwrap();
        let good = pack_with(&repo, b"unreferenced chunk one");
        let bad = pack_with(&repo, b"unreferenced chunk two");
        // Truncate the second pack inside its record header.
        let bad_path = t
            .path()
            .join(format!("r/packs/{:02x}/{bad}.pack", bad.0 & 0xff));
        let len = std::fs::metadata(&bad_path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&bad_path)
            .unwrap()
            .set_len(len - 40)
            .unwrap();
        let _tmp = repo.packs().create(PackId(12345)).unwrap();

        let dry = prune(
            &repo,
            &PruneOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((dry.packs_deleted, dry.packs_skipped), (1, 1));
        assert_eq!(
            repo.packs().list().unwrap().len(),
            2,
            "dry run deletes nothing"
        );

        let s = prune(&repo, &PruneOptions::default()).unwrap();
        assert_eq!(
            (s.packs_deleted, s.packs_skipped, s.tmp_packs_removed),
            (1, 1, 1)
        );
        let left: Vec<PackId> = repo.packs().list().unwrap().iter().map(|p| p.0).collect();
        assert_eq!(left, vec![bad]);
        assert!(!left.contains(&good));
        assert!(s.reclaimed_bytes() > 0);
    }
}
