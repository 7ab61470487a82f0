//! From bad chunks to damaged files: the layer entries that use them, then every snapshot whose
//! view resolves that path to such an entry (a newer layer that replaced the file hides it).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::entries::split_layer_key;
use super::snapshots::Snapshots;
use super::State;
use crate::entry::Entry;
use crate::error::Result;
use crate::id::{ChunkId, SnapshotId};
use crate::layers::{join, View};
use crate::repo::store::Space;
use crate::repo::Repo;

use super::DamagedFile;

/// Finds the entries that use bad chunks, then the snapshot views that show them. Returns the
/// damaged files and the snapshots they are in (plus snapshots with undecodable entries).
pub(super) fn map_damage(
    repo: &Arc<Repo>,
    snaps: &Snapshots,
    st: &State,
) -> Result<(Vec<DamagedFile>, BTreeSet<SnapshotId>)> {
    let mut out = shown_in_views(repo, snaps, &entries_using(repo, snaps, &st.bad)?, &st.bad)?;
    for (layer, path) in &st.undecodable {
        out.insert(DamagedFile {
            snapshot: *layer,
            path: path.clone(),
            chunks: Vec::new(),
        });
    }
    let damaged_snaps = out.iter().map(|f| f.snapshot).collect();
    let mut files: Vec<DamagedFile> = out.into_iter().collect();
    files.sort_by(|a, b| {
        let ka = snaps.all.get(&a.snapshot).map(|s| s.time_ns);
        let kb = snaps.all.get(&b.snapshot).map(|s| s.time_ns);
        (ka, a.snapshot, &a.path).cmp(&(kb, b.snapshot, &b.path))
    });
    Ok((files, damaged_snaps))
}

/// (layer, path) of the entries of existing snapshots that reference a chunk in `bad`: a second
/// pass over the layers, only when there are bad chunks.
fn entries_using(
    repo: &Repo,
    snaps: &Snapshots,
    bad: &BTreeSet<ChunkId>,
) -> Result<BTreeSet<(SnapshotId, Vec<u8>)>> {
    let mut hits = BTreeSet::new();
    if bad.is_empty() {
        return Ok(hits);
    }
    for kv in repo.index().scan(Space::Layers, &[]) {
        let (k, v) = kv?;
        let Some((sid, dir, name)) = split_layer_key(&k) else {
            continue;
        };
        if !snaps.all.contains_key(&sid) {
            continue;
        }
        let Ok(e) = Entry::decode(&v) else { continue };
        if e.chunks.iter().any(|c| bad.contains(&c.id)) {
            hits.insert((sid, join(dir, name)));
        }
    }
    Ok(hits)
}

/// For each hit, every snapshot whose chain holds its layer and whose view resolves its path to
/// an entry that uses a bad chunk (a newer layer may have replaced it).
fn shown_in_views(
    repo: &Arc<Repo>,
    snaps: &Snapshots,
    hits: &BTreeSet<(SnapshotId, Vec<u8>)>,
    bad: &BTreeSet<ChunkId>,
) -> Result<BTreeSet<DamagedFile>> {
    let mut out = BTreeSet::new();
    let mut views: HashMap<SnapshotId, View> = HashMap::new();
    for (layer, path) in hits {
        for (sid, chain) in &snaps.chains {
            if !chain.contains(layer) {
                continue;
            }
            if !views.contains_key(sid) {
                views.insert(*sid, View::open(repo, sid)?);
            }
            let Ok(entry) = views[sid].lookup(path) else {
                continue;
            };
            let used: BTreeSet<ChunkId> = entry
                .chunks
                .iter()
                .filter(|c| bad.contains(&c.id))
                .map(|c| c.id)
                .collect();
            if !used.is_empty() {
                out.insert(DamagedFile {
                    snapshot: *sid,
                    path: path.clone(),
                    chunks: used.into_iter().collect(),
                });
            }
        }
    }
    Ok(out)
}
