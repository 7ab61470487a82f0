//! Which snapshots a copy brings over, and in which order: the ones asked for (by name, the way
//! `restore` and `cat` resolve names, or every one), and the ancestors their views need that the
//! target lacks. Snapshots keep their ids, so a snapshot already in the target is skipped, and a
//! second copy finds everything present.
//!
//! The walk down a chain (`layers::chain_of`, the one walk of the rule) stops at the first
//! ancestor the target holds: its view there is the source's (copies are verified, and `forget`
//! and `consolidate` keep views). An ancestor the target forgot (a forget tombstone names it) is
//! never brought back (see [`super::tombstones`]); the snapshot above it is then copied as a full
//! layer holding its whole view, as `consolidate` would make it.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::layers::chain_of;
use crate::repo::Repo;
use crate::snapshot::{self, Snapshot};

/// What a copy does with one snapshot of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Asked for (named, or every snapshot when none is named): copied.
    Copy,
    /// Not asked for, but the view of a copied snapshot needs it and the target lacks it: copied.
    Ancestor,
    /// Asked for and already in the target (same id): skipped.
    Present,
    /// Asked for, but forgotten in the target (a forget tombstone there names it): skipped.
    Forgotten,
}

impl Action {
    /// Whether the snapshot is written into the target.
    pub fn copies(self) -> bool {
        matches!(self, Action::Copy | Action::Ancestor)
    }

    /// Lowercase name used in the output.
    pub fn name(self) -> &'static str {
        match self {
            Action::Copy => "copied",
            Action::Ancestor => "ancestor",
            Action::Present => "present",
            Action::Forgotten => "forgotten",
        }
    }
}

/// One snapshot of the plan.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Its record in the source.
    pub snapshot: Snapshot,
    /// What the copy does with it.
    pub action: Action,
    /// Copied as a full layer holding its whole view: an ancestor it needs was forgotten in the
    /// target.
    pub as_full: bool,
    /// Layers in its view in the source: a parent always has fewer than its child.
    pub(super) chain_len: usize,
}

/// What a copy will do.
pub(super) struct Plan {
    /// Every snapshot the copy considers, oldest first.
    pub items: Vec<Planned>,
    /// Every layer the copied snapshots' views read in the source: what the copy leases.
    pub lease: BTreeSet<SnapshotId>,
}

impl Plan {
    /// The snapshots to write, parents before children.
    pub fn to_copy(&self) -> Vec<&Planned> {
        let mut v: Vec<&Planned> = self.items.iter().filter(|p| p.action.copies()).collect();
        v.sort_by_key(|p| (p.chain_len, p.snapshot.time_ns, p.snapshot.id));
        v
    }
}

/// The snapshots `names` asks for (every one when empty), of `source` only when given, oldest
/// first. Names resolve as everywhere else ([`snapshot::find_in`]).
pub(super) fn selected(
    all: &[Snapshot],
    names: &[String],
    source: Option<&str>,
) -> Result<Vec<Snapshot>> {
    if names.is_empty() {
        return Ok(all
            .iter()
            .filter(|s| source.is_none_or(|src| s.source == src))
            .cloned()
            .collect());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let s = snapshot::find_in(all, name, source)?;
        if seen.insert(s.id) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| (s.time_ns, s.id));
    Ok(out)
}

/// Plans copying `selected` (from [`selected`]) of `source` into `target`, which has forgotten
/// the snapshots in `forgotten`.
pub(super) fn make(
    source: &Repo,
    target: &Repo,
    selected: Vec<Snapshot>,
    forgotten: &HashSet<SnapshotId>,
) -> Result<Plan> {
    let all: HashMap<SnapshotId, Snapshot> =
        source.snapshots()?.into_iter().map(|s| (s.id, s)).collect();
    let mut present: HashMap<SnapshotId, bool> = HashMap::new();
    let mut is_present = |id: &SnapshotId| -> Result<bool> {
        if let Some(&p) = present.get(id) {
            return Ok(p);
        }
        let p = target.snapshot(id)?.is_some();
        present.insert(*id, p);
        Ok(p)
    };
    let mut decided: HashMap<SnapshotId, Planned> = HashMap::new();
    let mut lease = BTreeSet::new();
    for s in selected {
        let action = if is_present(&s.id)? {
            Action::Present
        } else if forgotten.contains(&s.id) {
            Action::Forgotten
        } else {
            Action::Copy
        };
        if !action.copies() {
            decided.insert(s.id, planned(&s, action, 0));
            continue;
        }
        let chain = chain_of(&s, all.len() + 1, |id| Ok::<_, Error>(all.get(id)))?;
        lease.extend(chain.iter().copied());
        decided
            .entry(s.id)
            .or_insert_with(|| planned(&s, Action::Copy, chain.len()))
            .action = Action::Copy;
        for (i, id) in chain.iter().enumerate().skip(1) {
            if is_present(id)? {
                break;
            }
            if forgotten.contains(id) {
                if let Some(above) = decided.get_mut(&chain[i - 1]) {
                    above.as_full = true;
                }
                break;
            }
            let Some(a) = all.get(id) else { break };
            decided
                .entry(*id)
                .or_insert_with(|| planned(a, Action::Ancestor, chain.len() - i));
        }
    }
    let mut items: Vec<Planned> = decided.into_values().collect();
    items.sort_by_key(|p| (p.snapshot.time_ns, p.snapshot.id));
    Ok(Plan { items, lease })
}

fn planned(s: &Snapshot, action: Action, chain_len: usize) -> Planned {
    Planned {
        snapshot: s.clone(),
        action,
        as_full: false,
        chain_len,
    }
}
