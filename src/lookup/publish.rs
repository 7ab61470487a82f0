//! Writing the lookup files when a command is done ([`publish`]), and what an opening of the
//! index remembers of the catalog it read ([`install_seed`]) so that writing the next one costs
//! what changed, not every snapshot again: a record equal to what the last catalog held keeps
//! that catalog's touched directories and table name; the table files present are listed once
//! (one directory read) instead of asked for one by one.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, RwLock};

use super::*;
use crate::repo::derived::Derived;
use crate::snapshot::IdMap;

/// The catalog an opening of the index read ([`install_seed`]), by snapshot: what [`publish`]
/// may reuse. Entries are reused only for a record byte for byte equal to the one they describe,
/// so records changing since does not make them wrong; a rewritten layer drops them all.
#[derive(Default)]
struct Previous(RwLock<Option<Arc<IdMap<Arc<Described>>>>>);

impl Derived for Previous {
    fn records_changed(&self) {}
    fn layers_changed(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn previous(repo: &Repo) -> Option<Arc<IdMap<Arc<Described>>>> {
    let p = repo.derived::<Previous>()?;
    p.0.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Makes `repo` (just opened, under the lock) answer from `seed`, the catalog read before the
/// index was opened: its snapshot records and layers' touched directories until a record
/// changes, and what the catalog held for the next [`publish`].
pub fn install_seed(repo: &Repo, seed: Seed) {
    crate::snapshot::seed_records(repo, seed.snapshots);
    crate::layers::seed_dirs(
        repo,
        crate::layers::DirsSeed {
            encoded: seed.layer_dirs,
            decode: decode_dirs,
        },
    );
    *repo
        .derived_or_init(Previous::default)
        .0
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(seed.described));
}

/// Writes the lookup files for the repository as it is now: a table for every snapshot that has
/// none, if its layer has at most `build_up_to` entries or it is in `needed` (the catalog lists
/// the others without one, and `cat` asks the index for them); then the catalog; then removes
/// tables no snapshot uses. Call it last, under the lock, with nothing more to change.
pub(crate) fn publish(repo: &Repo, build_up_to: u64, needed: &[SnapshotId]) -> Result<()> {
    let started = std::time::Instant::now();
    if repo
        .index()
        .contains(Space::Meta, crate::repo::keys::META_PENDING_REWRITE)?
    {
        // An unfinished forget or consolidate (a `check` reads the index as it is): no catalog,
        // so that the next command opens the index, which completes it, rather than answering
        // from a catalog of the records before the completion.
        log::debug!("Lookup catalog not written: a rewrite of layers is unfinished");
        return Ok(());
    }
    let dir = repo.path().join(LOOKUP_DIR);
    if !lookup_dir_usable(&dir)? {
        use std::os::unix::fs::DirBuilderExt;
        // Lookup files hold what the index does: only the repository's owner reads them.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx("Creating", &dir)?;
    }
    // The tables there: one directory read, not a stat per snapshot.
    let mut present: HashSet<String> = HashSet::new();
    for e in fs::read_dir(&dir).ctx("Listing", &dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != CATALOG && e.file_type().is_ok_and(|t| t.is_file()) {
            present.insert(name);
        } else if name != CATALOG {
            // Whatever else has a table's name (a directory, a symlink) is not the table.
            remove_derived(&e.path())?;
        }
    }
    repo.with_snapshots(|snaps| write_catalog(repo, snaps, &dir, present, build_up_to, needed))??;
    log::debug!(
        "Lookup files written in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// [`publish`] once the tables present are known: tables, catalog, the tables left over.
fn write_catalog(
    repo: &Repo,
    snaps: &[Snapshot],
    dir: &Path,
    mut present: HashSet<String>,
    build_up_to: u64,
    needed: &[SnapshotId],
) -> Result<()> {
    let prev = previous(repo);
    let mut described: Vec<Arc<Described>> = Vec::with_capacity(snaps.len());
    let mut built = 0;
    for s in snaps {
        let record = s.encode();
        let known = prev
            .as_ref()
            .and_then(|p| p.get(&s.id))
            .filter(|d| d.record == record);
        // A layer without entries needs no table: nothing is looked up in it (views pass over
        // it), so a history of no-change backups costs no file per backup.
        let empty = !s.ends_chain() && s.layer_blobs.is_empty();
        // Unchanged, and its table still there (or still not to be built): the same description.
        if let Some(d) = known {
            let same = if empty {
                d.table.is_empty()
            } else if d.table.is_empty() {
                !wanted(repo, s, build_up_to, needed)
            } else {
                present.contains(&d.table)
            };
            if same {
                described.push(d.clone());
                continue;
            }
        }
        let mut name = match known {
            Some(d) if !d.table.is_empty() => d.table.clone(),
            _ => table_name(s),
        };
        if empty {
            name.clear();
        } else if !present.contains(&name) {
            if wanted(repo, s, build_up_to, needed) {
                build_table(repo, &s.id, &dir.join(&name))?;
                present.insert(name.clone());
                built += 1;
            } else {
                name.clear();
            }
        }
        let dirs = match known {
            Some(d) => d.dirs.clone(),
            None if s.ends_chain() => Vec::new(),
            None => {
                let d = repo.layer_dirs(&s.id)?;
                let mut v: Vec<(&[u8], bool)> = d.iter().map(|(k, o)| (k.as_slice(), *o)).collect();
                v.sort_unstable();
                postcard::to_stdvec(&v).expect("dirs serialize")
            }
        };
        described.push(Arc::new(Described {
            record,
            dirs,
            table: name,
        }));
    }
    let body = CatalogBody {
        dictionary: repo.dictionary().map(|d| d.bytes.as_slice()),
        snapshots: described
            .iter()
            .map(|d| CatalogSnapshot {
                record: &d.record,
                dirs: &d.dirs,
                table: &d.table,
            })
            .collect(),
    };
    let bytes = catalog_bytes(
        repo.crypt(),
        &postcard::to_stdvec(&body).expect("catalog serializes"),
    );
    // Not fsynced: a catalog lost or torn in a crash fails its check and is written again.
    let tmp = dir.join("catalog.tmp");
    remove_derived(&tmp)?;
    present.remove("catalog.tmp");
    repo.ensure_room("writing the lookup catalog", bytes.len() as u64)?;
    fs::write(&tmp, &bytes).ctx("Writing", &tmp)?;
    let path = dir.join(CATALOG);
    fs::rename(&tmp, &path).ctx("Renaming", &tmp)?;
    let keep: HashSet<&str> = described.iter().map(|d| d.table.as_str()).collect();
    for n in &present {
        if !keep.contains(n.as_str()) {
            let _ = remove_derived(&dir.join(n));
        }
    }
    // The next publish by this handle starts from this one.
    let next: IdMap<Arc<Described>> = snaps
        .iter()
        .zip(described)
        .map(|(s, d)| (s.id, d))
        .collect();
    *repo
        .derived_or_init(Previous::default)
        .0
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(next));
    log::debug!(
        "Lookup files: {} snapshots, {built} table(s) built",
        snaps.len()
    );
    Ok(())
}

/// Whether snapshot `s`'s missing table is to be built now: a layer of at most `build_up_to`
/// entries, or one `needed`, when the disk has room (tables are derived: on a disk near full
/// they are skipped rather than cut into the index's reserve, about 200 bytes per entry).
fn wanted(repo: &Repo, s: &Snapshot, build_up_to: u64, needed: &[SnapshotId]) -> bool {
    (s.stats.layer_entries <= build_up_to || needed.contains(&s.id))
        && repo
            .ensure_room("writing a lookup table", s.stats.layer_entries * 200)
            .is_ok()
}
