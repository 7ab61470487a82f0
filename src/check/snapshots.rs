//! Phase 1 of `check`: the snapshot records, and each one's parent chain. The chain is walked by
//! [`crate::layers::chain_of`], the one walk every reader uses; this module only words its
//! breaks as problems.

use std::collections::{BTreeSet, HashMap};

use super::{hex, ProblemKind, State};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::layers::ChainBreak;
use crate::repo::store::Space;
use crate::repo::Repo;
use crate::snapshot::Snapshot;

/// The snapshot records that decode, with the chains of those whose chain is whole.
pub(super) struct Snapshots {
    /// Every record that decodes, by id.
    pub all: HashMap<SnapshotId, Snapshot>,
    /// Each whole chain, newest first, ending in a full layer.
    pub chains: HashMap<SnapshotId, Vec<SnapshotId>>,
    /// Snapshots whose chain is broken (the reason is a problem).
    pub broken: BTreeSet<SnapshotId>,
}

impl Snapshots {
    /// Every snapshot, oldest first (time, then id): the order problems about them are listed in.
    pub fn ordered(&self) -> Vec<&Snapshot> {
        let mut v: Vec<&Snapshot> = self.all.values().collect();
        v.sort_by_key(|s| (s.time_ns, s.id));
        v
    }
}

/// Reads every snapshot record and walks its chain; what does not decode or does not reach a
/// full layer is a problem.
pub(super) fn read(repo: &Repo, st: &mut State) -> Result<Snapshots> {
    let mut all: HashMap<SnapshotId, Snapshot> = HashMap::new();
    for kv in repo.index().scan(Space::Records, &[]) {
        let (k, v) = kv?;
        match Snapshot::decode(&v) {
            Ok(s) => {
                all.insert(s.id, s);
            }
            Err(e) => {
                let sid = k.as_ref().try_into().ok().map(SnapshotId);
                st.problem(
                    ProblemKind::UndecodableSnapshot,
                    format!("Snapshot record {}: {e}", hex(&k)),
                    sid,
                    None,
                    None,
                );
            }
        }
    }
    let mut broken = BTreeSet::new();
    let mut chains = HashMap::new();
    for s in all.values() {
        match chain_or_problem(&all, s) {
            Ok(chain) => {
                chains.insert(s.id, chain);
            }
            Err((kind, msg)) => {
                broken.insert(s.id);
                st.problem(kind, msg, Some(s.id), None, None);
            }
        }
    }
    Ok(Snapshots {
        all,
        chains,
        broken,
    })
}

/// Snapshot ids of `s`'s chain, newest first, ending in a full layer ([`crate::layers::chain_of`]
/// decides), or the problem to report.
fn chain_or_problem(
    all: &HashMap<SnapshotId, Snapshot>,
    s: &Snapshot,
) -> std::result::Result<Vec<SnapshotId>, (ProblemKind, String)> {
    crate::layers::chain_of(s, all.len(), |id| Ok(all.get(id))).map_err(|b| match b {
        ChainBreak::NoFull { end, kind } => (
            ProblemKind::BrokenChain,
            format!(
                "Snapshot {}: its chain ends in {} {end}, which is not a full layer",
                s.id,
                kind.name()
            ),
        ),
        ChainBreak::MissingParent { parent, .. } => (
            ProblemKind::MissingParent,
            format!(
                "Snapshot {} needs parent {parent}, which is missing from the repository",
                s.id
            ),
        ),
        ChainBreak::Loops => (
            ProblemKind::BrokenChain,
            format!("Snapshot {}: its parent chain loops", s.id),
        ),
    })
}
