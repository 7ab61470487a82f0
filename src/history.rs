//! Per-path history across snapshots: `log` (the distinct versions of one path, oldest first) and
//! `find` (which snapshots contain paths matching a glob). Also the content hash both report and
//! the time bounds `find` accepts.
//!
//! Cost. `log` resolves the path once per snapshot of its source through `View::lookup` (a few
//! sled probes per path component, independent of tree size): O(snapshots × depth). `find` reads
//! each distinct layer of the selected snapshots' chains once (a prefix scan of that layer's
//! entries, matching each path against the glob): a full layer costs its whole tree, an
//! incremental or differential only its own entries. The matches of a snapshot's chain are then
//! resolved in that snapshot's view (one lookup each), so the second phase costs
//! O(matches × snapshots), never O(tree × snapshots).
//!
//! Must not: print, or read chunk data (the content hash is computed from chunk ids).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::diff;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::layers::{join, Delta, LayerChanges, View};
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::time::days_from_civil;

/// The content hash of a regular file: blake3 over its size (u64 big-endian) followed by, for each
/// chunk in order, its offset (u64 big-endian) and its chunk id (32 bytes). Computed from the
/// stored chunk list, so no data is read; equal for equal content (the chunker is deterministic)
/// in any snapshot or repository. It is *not* the blake3 of the file's bytes. `None` for other
/// kinds.
pub fn content_hash(e: &Entry) -> Option<String> {
    if e.kind != Kind::File {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.update(&e.size.to_be_bytes());
    for c in &e.chunks {
        h.update(&c.offset.to_be_bytes());
        h.update(&c.id.0);
    }
    Some(h.finalize().to_hex().to_string())
}

/// What happened to a path in a step of its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// First appearance.
    Created,
    /// Content (or symlink target) changed.
    Modified,
    /// Only metadata changed (mode, owner, mtime, xattrs).
    MetadataChanged,
    /// Type changed (e.g. file → directory).
    TypeChanged,
    /// No longer present.
    Deleted,
    /// Present again after a deletion.
    Recreated,
}

impl Event {
    /// Lowercase name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Modified => "modified",
            Event::MetadataChanged => "metadata",
            Event::TypeChanged => "type_changed",
            Event::Deleted => "deleted",
            Event::Recreated => "recreated",
        }
    }
}

/// One step of a path's history: a version (first seen in `first`, identical through `last`), or
/// a deletion (`entry` is `None`; `first` is the first snapshot without the path).
#[derive(Clone, Debug)]
pub struct Step {
    /// What happened.
    pub event: Event,
    /// The first snapshot showing this state.
    pub first: Snapshot,
    /// The last consecutive snapshot showing this state.
    pub last: SnapshotId,
    /// How many consecutive snapshots show this state.
    pub snapshots: u64,
    /// The entry (for versions).
    pub entry: Option<Entry>,
    /// The layer (snapshot id) holding the entry, as seen in `first`.
    pub layer: Option<SnapshotId>,
}

/// The history of `path` across `snaps` (one source, oldest first). Consecutive snapshots showing
/// the same entry (per [`diff::compare`]) collapse into one step. Before the first appearance
/// nothing is reported; an empty result means the path never existed in these snapshots.
pub fn log(repo: &Arc<Repo>, snaps: &[Snapshot], path: &[u8]) -> Result<Vec<Step>> {
    log_with(snaps, path, |s| Ok(Arc::new(View::open(repo, &s.id)?)))
}

/// [`log()`] with views from `open` (the mount passes its cached views).
pub fn log_with(
    snaps: &[Snapshot],
    path: &[u8],
    mut open: impl FnMut(&Snapshot) -> Result<Arc<View>>,
) -> Result<Vec<Step>> {
    let path = crate::layers::components(path)?.join(&b'/');
    let mut steps: Vec<Step> = Vec::new();
    for s in snaps {
        let view = open(s)?;
        let cur = view.lookup_layer(&path)?;
        let prev = steps.last();
        let prev_entry = prev.and_then(|p| p.entry.as_ref());
        let event = match (prev_entry, &cur) {
            (None, None) => None,
            (Some(_), None) => Some(Event::Deleted),
            (None, Some(_)) if steps.is_empty() => Some(Event::Created),
            (None, Some(_)) => Some(Event::Recreated),
            (Some(p), Some((e, _))) if p.kind != e.kind => Some(Event::TypeChanged),
            (Some(p), Some((e, _))) => {
                let f = diff::compare(p, e);
                if f.is_empty() {
                    None
                } else if f.iter().any(|f| f.is_content()) {
                    Some(Event::Modified)
                } else {
                    Some(Event::MetadataChanged)
                }
            }
        };
        match event {
            Some(event) => {
                let (entry, layer) = match cur {
                    Some((e, l)) => (Some(e), Some(l)),
                    None => (None, None),
                };
                steps.push(Step {
                    event,
                    first: s.clone(),
                    last: s.id,
                    snapshots: 1,
                    entry,
                    layer,
                });
            }
            None => {
                if let Some(last) = steps.last_mut() {
                    last.last = s.id;
                    last.snapshots += 1;
                }
            }
        }
    }
    Ok(steps)
}

/// Snapshots grouped by source (sources sorted), each oldest first; only `source` when given.
pub fn by_source(repo: &Repo, source: Option<&str>) -> Result<BTreeMap<String, Vec<Snapshot>>> {
    let mut out: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
    for s in repo.snapshots()? {
        if source.is_none_or(|src| s.source == src) {
            out.entry(s.source.clone()).or_default().push(s);
        }
    }
    if let Some(src) = source {
        if out.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "No snapshots of source {src:?} (see `strata snapshots`)"
            )));
        }
    }
    Ok(out)
}

/// Options for [`find`].
#[derive(Clone, Debug, Default)]
pub struct FindOptions {
    /// Only snapshots of this source.
    pub source: Option<String>,
    /// Only snapshots taken at or after this time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Only snapshots taken at or before this time (ns since the epoch).
    pub until_ns: Option<i64>,
}

/// One path matching a `find` pattern and the snapshots (oldest first) that contain it.
#[derive(Clone, Debug)]
pub struct FindMatch {
    /// Path relative to the snapshot root.
    pub path: Vec<u8>,
    /// (snapshot, its entry for the path).
    pub hits: Vec<(Snapshot, Entry)>,
}

/// Totals of one `find`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindStats {
    /// Snapshots searched (after the source and time filters).
    pub snapshots: u64,
    /// Distinct layers scanned.
    pub layers_scanned: u64,
    /// Layer entries matched against the pattern.
    pub entries_scanned: u64,
}

/// A compiled `find` pattern: without `/`, it matches a path's last component (like
/// `find -name`); with `/`, the whole snapshot-relative path (a leading `/` is ignored). `*` and
/// `?` never match `/`; `**` matches any number of components.
pub struct Pattern {
    glob: globset::GlobMatcher,
    name_only: bool,
}

impl Pattern {
    /// Compiles `pattern`; a malformed glob is an `InvalidArgument` naming it.
    pub fn new(pattern: &str) -> Result<Pattern> {
        let p = pattern.trim_start_matches('/');
        if p.is_empty() {
            return Err(Error::InvalidArgument("Empty find pattern".into()));
        }
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("Bad pattern {pattern:?}: {e}")))?
            .compile_matcher();
        Ok(Pattern {
            glob,
            name_only: !p.contains('/'),
        })
    }

    /// Whether the relative path (of an entry named `name`) matches.
    pub fn matches(&self, path: &[u8], name: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let subject = if self.name_only { name } else { path };
        self.glob.is_match(std::ffi::OsStr::from_bytes(subject))
    }
}

/// Finds the paths matching `pattern` in the selected snapshots. See the module doc for the cost.
pub fn find(
    repo: &Arc<Repo>,
    pattern: &Pattern,
    opts: &FindOptions,
) -> Result<(Vec<FindMatch>, FindStats)> {
    let all = repo.snapshots()?;
    let by_id: HashMap<SnapshotId, &Snapshot> = all.iter().map(|s| (s.id, s)).collect();
    let selected: Vec<&Snapshot> = all
        .iter()
        .filter(|s| opts.source.as_ref().is_none_or(|src| &s.source == src))
        .filter(|s| opts.since_ns.is_none_or(|t| s.time_ns >= t))
        .filter(|s| opts.until_ns.is_none_or(|t| s.time_ns <= t))
        .collect();
    let mut stats = FindStats {
        snapshots: selected.len() as u64,
        ..Default::default()
    };
    // Phase 1: every distinct layer of the selected chains, scanned once.
    let mut layer_matches: HashMap<SnapshotId, Arc<BTreeSet<Vec<u8>>>> = HashMap::new();
    let mut chains: Vec<Vec<SnapshotId>> = Vec::new();
    for s in &selected {
        let chain =
            crate::layers::chain_of(s, all.len(), |id| Ok::<_, Error>(by_id.get(id).copied()))?;
        for id in &chain {
            if layer_matches.contains_key(id) {
                continue;
            }
            let mut set = BTreeSet::new();
            for kv in LayerChanges::of(repo, id).all() {
                let (dir, name, d) = kv?;
                stats.entries_scanned += 1;
                if name.is_empty() || d == Delta::Deleted {
                    continue;
                }
                let path = join(&dir, &name);
                if pattern.matches(&path, &name) {
                    set.insert(path);
                }
            }
            stats.layers_scanned += 1;
            layer_matches.insert(*id, Arc::new(set));
        }
        chains.push(chain);
    }
    // Phase 2: resolve each chain's candidate paths in its snapshot's view.
    let mut results: BTreeMap<Vec<u8>, Vec<(Snapshot, Entry)>> = BTreeMap::new();
    for (s, chain) in selected.iter().zip(&chains) {
        let candidates: BTreeSet<&Vec<u8>> = chain
            .iter()
            .flat_map(|id| layer_matches[id].iter())
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let view = View::open(repo, &s.id)?;
        for path in candidates {
            match view.lookup(path) {
                Ok(e) => results
                    .entry(path.clone())
                    .or_default()
                    .push(((*s).clone(), e)),
                Err(Error::PathNotFound { .. }) | Err(Error::NotADirectory { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let matches = results
        .into_iter()
        .map(|(path, hits)| FindMatch { path, hits })
        .collect();
    Ok((matches, stats))
}

/// Which end of a time range a user-given bound is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `--since`: a date means its first second.
    Start,
    /// `--until`: a date means through its last nanosecond (the whole day is included).
    End,
}

/// Parses a time bound: RFC 3339 (`2026-11-20T02:00:00Z`, fractional seconds and `±HH:MM`
/// offsets allowed) or a date (`2026-11-20`, UTC). Returns ns since the epoch.
pub fn parse_time(s: &str, bound: Bound) -> Result<i64> {
    let bad = || {
        Error::InvalidArgument(format!(
            "Bad time {s:?}: expected RFC 3339 (2026-11-20T02:00:00Z) or a date (2026-11-20)"
        ))
    };
    let num = |t: &str| -> Result<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    if !(1..=12).contains(&m) || day < 1 || day > days_in_month(y, m) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, day);
    let Some(rest) = rest else {
        let start = days * 86_400 * 1_000_000_000;
        return Ok(match bound {
            Bound::Start => start,
            Bound::End => start + 86_400 * 1_000_000_000 - 1,
        });
    };
    // hh:mm:ss[.frac](Z|±hh:mm)
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let hm: Vec<&str> = off[1..].split(':').collect();
        if hm.len() != 2 || hm[0].len() != 2 || hm[1].len() != 2 {
            return Err(bad());
        }
        (c, sign * (num(hm[0])? * 3600 + num(hm[1])? * 60))
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    let t: Vec<&str> = hms.split(':').collect();
    if t.len() != 3 || t.iter().any(|x| x.len() != 2) {
        return Err(bad());
    }
    let (hh, mm, ss) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let nanos = match frac {
        None => 0,
        Some(f) if f.len() <= 9 => num(f)? * 10i64.pow(9 - f.len() as u32),
        Some(_) => return Err(bad()),
    };
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_s;
    Ok(secs * 1_000_000_000 + nanos)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    #[test]
    fn parse_times() {
        let t = parse_time("2026-11-20T02:00:00Z", Bound::Start).unwrap();
        assert_eq!(rfc3339(t), "2026-11-20T02:00:00Z");
        assert_eq!(parse_time("2026-11-20T02:00:00Z", Bound::End).unwrap(), t);
        let d = parse_time("2026-11-20", Bound::Start).unwrap();
        assert_eq!(rfc3339(d), "2026-11-20T00:00:00Z");
        let e = parse_time("2026-11-20", Bound::End).unwrap();
        assert_eq!(e, d + 86_400_000_000_000 - 1);
        assert_eq!(
            parse_time("2026-11-20T03:00:00+01:00", Bound::Start).unwrap(),
            t
        );
        assert_eq!(
            parse_time("2026-11-20T02:00:00.5Z", Bound::Start).unwrap(),
            t + 500_000_000
        );
        assert_eq!(
            rfc3339(parse_time("2000-02-29", Bound::Start).unwrap()),
            "2000-02-29T00:00:00Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-11-20T25:00:00Z",
            "2026-11-20T02:00Z",
            "2026-11-20T02:00:00",
            "20261120",
        ] {
            assert!(parse_time(bad, Bound::Start).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pattern_name_vs_path() {
        let p = Pattern::new("*.json").unwrap();
        assert!(p.matches(b"orders/2026/o-1.json", b"o-1.json"));
        assert!(!p.matches(b"orders/2026/o-1.txt", b"o-1.txt"));
        let p = Pattern::new("orders/*/o-*.json").unwrap();
        assert!(p.matches(b"orders/2026/o-1.json", b"o-1.json"));
        assert!(!p.matches(b"orders/2026/x/o-1.json", b"o-1.json"));
        let p = Pattern::new("/orders/**/*.json").unwrap();
        assert!(p.matches(b"orders/2026/x/o-1.json", b"o-1.json"));
        assert!(Pattern::new("[").is_err());
    }

    #[test]
    fn content_hash_depends_on_chunks_not_metadata() {
        use crate::entry::ChunkRef;
        use crate::id::ChunkId;
        let mut a = Entry::whiteout();
        a.kind = Kind::File;
        a.size = 3;
        a.chunks = vec![ChunkRef {
            id: ChunkId::of(b"abc"),
            offset: 0,
            len: 3,
        }];
        let mut b = a.clone();
        b.mtime_ns = 5;
        b.mode = 0o600;
        assert_eq!(content_hash(&a), content_hash(&b));
        b.chunks[0].id = ChunkId::of(b"abd");
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&Entry::whiteout()), None);
    }
}
