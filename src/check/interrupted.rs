//! An unfinished `forget` or `consolidate` (killed, or stopped by a full disk) leaves layers that
//! do not match their layer blobs, layers of removed snapshots and tombstoned records until the
//! next command completes it (`crate::forget::resume_interrupted`). `check` does not complete it
//! (it changes nothing): it reports the interruption and what completes it, and does not count
//! those traces as damage.

use super::{ProblemKind, State};
use crate::error::Result;
use crate::repo::Repo;

/// Problems an unfinished rewrite leaves on the snapshots it concerns.
const ITS_TRACES: [ProblemKind; 5] = [
    ProblemKind::LayerBlobMismatch,
    ProblemKind::LayerdirsMismatch,
    ProblemKind::DanglingLayer,
    ProblemKind::DanglingLayerdirs,
    ProblemKind::TombstonedSnapshot,
];

/// Replaces the traces of an unfinished `forget`/`consolidate` by one
/// [`ProblemKind::InterruptedOperation`] (a leftover, not damage).
pub(super) fn explain(repo: &Repo, st: &mut State) -> Result<()> {
    let Some(i) = crate::forget::interrupted(repo)? else {
        return Ok(());
    };
    st.problems.retain(|p| {
        !(ITS_TRACES.contains(&p.kind) && p.snapshot.is_some_and(|s| i.snapshots.contains(&s)))
    });
    st.problem(
        ProblemKind::InterruptedOperation,
        i.message,
        None,
        None,
        None,
    );
    Ok(())
}
