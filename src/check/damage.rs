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

/// Finds the entries that use bad chunks (a second pass over the layers, only when there are
/// any), then the snapshot views that show them. Returns the damaged files and the snapshots
/// they are in (plus snapshots with undecodable entries).
pub(super) fn map_damage(
    repo: &Arc<Repo>,
    snaps: &Snapshots,
    st: &State,
) -> Result<(Vec<DamagedFile>, BTreeSet<SnapshotId>)> {
    let mut damaged_snaps: BTreeSet<SnapshotId> = BTreeSet::new();
    // (layer, path) of entries that reference a bad chunk.
    let mut hits: BTreeSet<(SnapshotId, Vec<u8>)> = BTreeSet::new();
    if !st.bad.is_empty() {
        for kv in repo.index().scan(Space::Layers, &[]) {
            let (k, v) = kv?;
            let Some((sid, dir, name)) = split_layer_key(&k) else {
                continue;
            };
            if !snaps.all.contains_key(&sid) {
                continue;
            }
            let Ok(e) = Entry::decode(&v) else { continue };
            if e.chunks.iter().any(|c| st.bad.contains(&c.id)) {
                hits.insert((sid, join(dir, name)));
            }
        }
    }
    let mut out: BTreeSet<DamagedFile> = BTreeSet::new();
    let mut views: HashMap<SnapshotId, View> = HashMap::new();
    for (layer, path) in &hits {
        // Every snapshot whose chain holds this layer may show the entry.
        for (sid, chain) in &snaps.chains {
            if !chain.contains(layer) {
                continue;
            }
            if !views.contains_key(sid) {
                views.insert(*sid, View::open(repo, sid)?);
            }
            let view = &views[sid];
            let Ok(entry) = view.lookup(path) else {
                continue;
            };
            let bad: Vec<ChunkId> = entry
                .chunks
                .iter()
                .filter(|c| st.bad.contains(&c.id))
                .map(|c| c.id)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !bad.is_empty() {
                damaged_snaps.insert(*sid);
                out.insert(DamagedFile {
                    snapshot: *sid,
                    path: path.clone(),
                    chunks: bad,
                });
            }
        }
    }
    for (layer, path) in &st.undecodable {
        damaged_snaps.insert(*layer);
        out.insert(DamagedFile {
            snapshot: *layer,
            path: path.clone(),
            chunks: Vec::new(),
        });
    }
    let mut files: Vec<DamagedFile> = out.into_iter().collect();
    files.sort_by(|a, b| {
        let ka = snaps.all.get(&a.snapshot).map(|s| s.time_ns);
        let kb = snaps.all.get(&b.snapshot).map(|s| s.time_ns);
        (ka, a.snapshot, &a.path).cmp(&(kb, b.snapshot, &b.path))
    });
    Ok((files, damaged_snaps))
}
