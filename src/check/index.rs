//! Phase 2 of `check`: the packs and the index. Every pack's 16-byte header; every index entry
//! decodes, names an existing pack, lies within it, and the record header at that offset agrees
//! with it (headers only: payloads are phases 3 and 7); packs no entry points into.

use std::collections::{HashMap, HashSet};

use super::read::check_headers;
use super::{hex, CheckStats, ProblemKind, State};
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::repo::keys::Location;
use crate::repo::pack::{verify_pack_header, RecordType, PACK_HEADER_LEN};
use crate::repo::store::Space;
use crate::repo::Repo;

/// One index entry and what its header said.
pub(super) struct Indexed {
    pub id: ChunkId,
    pub loc: Location,
    /// The record's type, when its header verified and agrees with the entry.
    pub rtype: Option<RecordType>,
}

/// The index entries that decode.
pub(super) struct Index {
    /// Entries sorted by location (pack, then offset).
    pub entries: Vec<Indexed>,
}

impl Index {
    /// The entries whose header says `rtype`.
    pub fn of_type(&self, rtype: RecordType) -> impl Iterator<Item = &Indexed> {
        self.entries.iter().filter(move |e| e.rtype == Some(rtype))
    }
}

/// Checks pack headers, index entries and the record headers they point at, on `threads`
/// threads (0: two per CPU).
pub(super) fn check(
    repo: &Repo,
    threads: usize,
    st: &mut State,
    stats: &mut CheckStats,
) -> Result<Index> {
    let packs: HashMap<PackId, u64> = repo.packs().list()?.into_iter().collect();
    stats.packs = packs.len() as u64;
    check_pack_headers(repo, &packs, st);
    let mut entries = read_entries(repo, st)?;
    stats.index_entries = entries.len() as u64;
    entries.sort_by_key(|e| (e.loc.pack, e.loc.offset));
    let headers = check_headers(repo, &packs, &entries, threads);
    for (e, h) in entries.iter_mut().zip(headers) {
        match h {
            Ok(t) => e.rtype = Some(t),
            Err((kind, msg)) => st.bad_chunk(e.id, kind, msg, Some(e.loc.pack)),
        }
    }
    report_unindexed(&packs, &entries, st);
    Ok(Index { entries })
}

/// Pack headers: 16 bytes per pack, cheap enough for every check. In pack order.
fn check_pack_headers(repo: &Repo, packs: &HashMap<PackId, u64>, st: &mut State) {
    let mut ids: Vec<PackId> = packs.keys().copied().collect();
    ids.sort();
    for p in ids {
        let head = repo
            .packs()
            .read_at(p, 0, PACK_HEADER_LEN.min(packs[&p]) as usize)
            .map_err(|e| e.to_string())
            .and_then(|h| verify_pack_header(&h));
        if let Err(e) = head {
            st.problem(
                ProblemKind::BadPackHeader,
                format!("Pack {p}: {e}"),
                None,
                None,
                Some(p),
            );
        }
    }
}

/// Every index entry that decodes, in key order; the others are problems.
fn read_entries(repo: &Repo, st: &mut State) -> Result<Vec<Indexed>> {
    let mut entries = Vec::new();
    for kv in repo.index().scan(Space::Chunks, &[]) {
        let (k, v) = kv?;
        let Ok(id) = <[u8; 32]>::try_from(k.as_ref()).map(ChunkId) else {
            st.problem(
                ProblemKind::MalformedIndexEntry,
                format!("Index key {} is not a chunk id", hex(&k)),
                None,
                None,
                None,
            );
            continue;
        };
        match Location::decode(&v) {
            Some(loc) => entries.push(Indexed {
                id,
                loc,
                rtype: None,
            }),
            None => st.bad_chunk(
                id,
                ProblemKind::MalformedIndexEntry,
                format!("Index entry of {id} does not decode"),
                None,
            ),
        }
    }
    Ok(entries)
}

/// Packs no index entry points into: garbage a prune removes, in pack order.
fn report_unindexed(packs: &HashMap<PackId, u64>, entries: &[Indexed], st: &mut State) {
    let used: HashSet<PackId> = entries.iter().map(|e| e.loc.pack).collect();
    let mut unindexed: Vec<_> = packs
        .keys()
        .filter(|p| !used.contains(p))
        .copied()
        .collect();
    unindexed.sort();
    for p in unindexed {
        st.problem(
            ProblemKind::UnindexedPack,
            format!("Pack {p} holds no indexed record (garbage for prune)"),
            None,
            None,
            Some(p),
        );
    }
}
