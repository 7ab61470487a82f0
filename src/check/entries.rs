//! Phases 4 and 5 of `check`: the layers. Every layer entry decodes and every chunk it references
//! is indexed; each layer's entries match its layer blobs in number; the `layerdirs` of each layer
//! that does not end its chain agree with its entries (a missing directory would hide entries from
//! views). Layer and layerdirs keys of snapshots that do not exist are leftovers (an interrupted
//! backup).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::index::Index;
use super::metadata::Metadata;
use super::snapshots::Snapshots;
use super::{hex, CheckStats, ProblemKind, State};
use crate::entry::Entry;
use crate::error::Result;
use crate::id::{ChunkId, SnapshotId};
use crate::layer_blob;
use crate::layers::join;
use crate::repo::keys;
use crate::repo::store::Space;
use crate::repo::Repo;

/// What one pass over every layer entry gathers.
#[derive(Default)]
struct Scanned {
    /// Chunks referenced by entries that decode.
    referenced: HashSet<ChunkId>,
    /// Entries per existing snapshot's layer.
    per_layer: HashMap<SnapshotId, u64>,
    /// Entries of snapshots that do not exist.
    dangling: BTreeMap<SnapshotId, u64>,
    /// The `layerdirs` each layer's entries imply (layers that do not end their chain).
    derived: HashMap<SnapshotId, layer_blob::Dirs>,
}

/// Checks the layer entries; returns the `layerdirs` they imply, for [`check_layerdirs`].
pub(super) fn check_entries(
    repo: &Repo,
    snaps: &Snapshots,
    index: &Index,
    meta: &Metadata,
    st: &mut State,
    stats: &mut CheckStats,
) -> Result<HashMap<SnapshotId, layer_blob::Dirs>> {
    let scanned = scan(repo, snaps, st, stats)?;
    stats.chunks_referenced = scanned.referenced.len() as u64;
    let indexed: HashSet<ChunkId> = index.entries.iter().map(|e| e.id).collect();
    let mut missing: Vec<_> = scanned
        .referenced
        .iter()
        .filter(|id| !indexed.contains(id))
        .copied()
        .collect();
    missing.sort();
    for id in missing {
        st.bad_chunk(
            id,
            ProblemKind::MissingChunk,
            format!("Chunk {id} is referenced by a layer but not in the index"),
            None,
        );
    }
    // A layer a running mount leases is kept on purpose (see crate::lease), not left over.
    let leased = crate::lease::leased(repo.path()).unwrap_or_default();
    for (sid, n) in scanned.dangling.iter().filter(|(s, _)| !leased.contains(s)) {
        st.problem(
            ProblemKind::DanglingLayer,
            format!("{n} layer entries of snapshot {sid}, which does not exist (an interrupted backup?)"),
            Some(*sid),
            None,
            None,
        );
    }
    compare_with_blobs(snaps, &scanned.per_layer, meta, st);
    Ok(scanned.derived)
}

/// One pass over every layer entry, in key order: what does not decode is a problem (and an
/// undecodable entry, damage in its layer's view).
fn scan(repo: &Repo, snaps: &Snapshots, st: &mut State, stats: &mut CheckStats) -> Result<Scanned> {
    let mut out = Scanned::default();
    for kv in repo.index().scan(Space::Layers, &[]) {
        let (k, v) = kv?;
        stats.layer_entries += 1;
        let Some((sid, dir, name)) = split_layer_key(&k) else {
            st.problem(
                ProblemKind::UndecodableEntry,
                format!("Malformed layer key {}", hex(&k)),
                None,
                None,
                None,
            );
            continue;
        };
        let Some(snap) = snaps.all.get(&sid) else {
            *out.dangling.entry(sid).or_default() += 1;
            continue;
        };
        *out.per_layer.entry(sid).or_default() += 1;
        let entry = match Entry::decode(&v) {
            Ok(e) => e,
            Err(err) => {
                let path = join(dir, name);
                st.problem(
                    ProblemKind::UndecodableEntry,
                    format!(
                        "Entry {} in the layer of snapshot {sid}: {err}",
                        String::from_utf8_lossy(&path)
                    ),
                    Some(sid),
                    None,
                    None,
                );
                st.undecodable.push((sid, path));
                continue;
            }
        };
        out.referenced.extend(entry.chunks.iter().map(|c| c.id));
        if !snap.ends_chain() {
            layer_blob::note_dir(out.derived.entry(sid).or_default(), dir, name, &entry);
        }
    }
    Ok(out)
}

/// Each snapshot's layer holds as many entries as its layer blobs (when they all read).
fn compare_with_blobs(
    snaps: &Snapshots,
    per_layer: &HashMap<SnapshotId, u64>,
    meta: &Metadata,
    st: &mut State,
) {
    for s in snaps.ordered() {
        let have = per_layer.get(&s.id).copied().unwrap_or(0);
        let counts: Option<Vec<u64>> = s
            .layer_blobs
            .iter()
            .map(|b| meta.blob_entries.get(b).copied())
            .collect();
        let Some(counts) = counts else { continue };
        let in_blobs: u64 = counts.iter().sum();
        if in_blobs != have {
            st.problem(
                ProblemKind::LayerBlobMismatch,
                format!(
                    "Snapshot {}: its layer blobs hold {in_blobs} entries, its layer {have}",
                    s.id
                ),
                Some(s.id),
                None,
                None,
            );
        }
    }
}

/// The `layerdirs` keys: leftovers of snapshots that do not exist, and agreement with what the
/// entries imply (`derived`).
pub(super) fn check_layerdirs(
    repo: &Repo,
    snaps: &Snapshots,
    derived: &HashMap<SnapshotId, layer_blob::Dirs>,
    st: &mut State,
) -> Result<()> {
    let mut stored: HashMap<SnapshotId, layer_blob::Dirs> = HashMap::new();
    let mut dangling: BTreeMap<SnapshotId, u64> = BTreeMap::new();
    for kv in repo.index().scan(Space::LayerDirs, &[]) {
        let (k, v) = kv?;
        let Some((sid, dir)) = k
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .map(|s| (SnapshotId(s), &k[16..]))
        else {
            continue;
        };
        if !snaps.all.contains_key(&sid) {
            *dangling.entry(sid).or_default() += 1;
            continue;
        }
        stored
            .entry(sid)
            .or_default()
            .insert(dir.to_vec(), v.first() == Some(&1));
    }
    let leased = crate::lease::leased(repo.path()).unwrap_or_default();
    for (sid, n) in dangling.iter().filter(|(s, _)| !leased.contains(s)) {
        st.problem(
            ProblemKind::DanglingLayerdirs,
            format!("{n} layerdirs keys of snapshot {sid}, which does not exist"),
            Some(*sid),
            None,
            None,
        );
    }
    for s in snaps.ordered() {
        let Some(want) = derived.get(&s.id) else {
            continue;
        };
        let have = stored.get(&s.id);
        let wrong = want
            .iter()
            .filter(|(d, o)| have.and_then(|h| h.get(*d)) != Some(o))
            .count();
        if wrong > 0 {
            st.problem(
                ProblemKind::LayerdirsMismatch,
                format!(
                    "Snapshot {}: {wrong} directories of its layer are missing from layerdirs or have the wrong opaque flag",
                    s.id
                ),
                Some(s.id),
                None,
                None,
            );
        }
    }
    Ok(())
}

/// Splits a `layers` key into (snapshot, dir, name).
pub(super) fn split_layer_key(k: &[u8]) -> Option<(SnapshotId, &[u8], &[u8])> {
    let sid = SnapshotId(k.get(..16)?.try_into().ok()?);
    let (dir, name) = keys::split_entry_key(&k[16..])?;
    Some((sid, dir, name))
}
