//! The damage marker, `REPO/damage`: what the last `check` or `repair` found lost or damaged, kept
//! so that `prune` — which deletes whatever nothing references — does not act on a repository
//! whose references may be incomplete until the user has looked (`prune --force-after-damage`).
//!
//! Each finding has an origin, which decides what lifts it:
//! - `check`: found by a structural check; a later check that finds no damage lifts it (it would
//!   have seen the same problem again);
//! - `read-data`: found by `check --read-data`; only a clean `check --read-data` of every chunk
//!   lifts it, since a structural check does not read chunk payloads;
//! - `repair`: records or snapshots a rebuild could not restore (torn packs, damaged records,
//!   dropped snapshots). Once gone from the index no check can see them again, so only the user
//!   lifts these: `prune --force-after-damage` removes the marker after it ran.
//!
//! Format (docs/FORMAT.md): a first line `strata damage marker 1`, then one finding per line,
//! `origin TAB message`. Written to `damage.tmp`, fsynced and renamed, the directory fsynced.
//! A marker that cannot be parsed counts as a `repair` finding: it is never ignored.
//!
//! The marker is not sealed, so in an encrypted repository a check's finding is written as its
//! kind and the ids it concerns, never its message (which can name a path); `strata check`
//! shows the details.

use std::path::Path;

use crate::error::{IoContext, Result};

use super::{CheckReport, Problem};

/// File name of the marker in the repository directory.
pub const MARKER_FILE: &str = "damage";
const FIRST_LINE: &str = "strata damage marker 1";

/// Who found a problem; decides what lifts it (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A structural check.
    Check,
    /// A check that read chunk payloads.
    ReadData,
    /// A repair that could not restore everything.
    Repair,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Check => "check",
            Origin::ReadData => "read-data",
            Origin::Repair => "repair",
        }
    }

    fn parse(s: &str) -> Option<Origin> {
        match s {
            "check" => Some(Origin::Check),
            "read-data" => Some(Origin::ReadData),
            "repair" => Some(Origin::Repair),
            _ => None,
        }
    }
}

/// The findings in the marker of the repository at `repo` (empty when there is none).
pub fn read(repo: &Path) -> Result<Vec<(Origin, String)>> {
    let path = repo.join(MARKER_FILE);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("Reading", &path),
    };
    let mut lines = text.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Ok(vec![(
            Origin::Repair,
            format!(
                "{} is not a damage marker this strata knows",
                path.display()
            ),
        )]);
    }
    Ok(lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            match l
                .split_once('\t')
                .and_then(|(o, m)| Some((Origin::parse(o)?, m)))
            {
                Some((o, m)) => (o, m.to_string()),
                None => (Origin::Repair, l.to_string()),
            }
        })
        .collect())
}

/// Writes `findings` as the marker (removes it when there are none).
fn write(repo: &Path, findings: &[(Origin, String)]) -> Result<()> {
    let path = repo.join(MARKER_FILE);
    if findings.is_empty() {
        return match std::fs::remove_file(&path) {
            Ok(()) => crate::fsio::sync_dir(repo),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("Removing", &path),
        };
    }
    let mut text = format!("{FIRST_LINE}\n");
    for (o, m) in findings {
        // One finding per line, whatever the message holds.
        let m = m.replace(['\n', '\r', '\t'], " ");
        text.push_str(&format!("{}\t{m}\n", o.name()));
    }
    let tmp = repo.join(format!("{MARKER_FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).ctx("Creating", &tmp)?;
        f.write_all(text.as_bytes()).ctx("Writing", &tmp)?;
        f.sync_all().ctx("Syncing", &tmp)?;
    }
    std::fs::rename(&tmp, &path).ctx("Renaming", &tmp)?;
    crate::fsio::sync_dir(repo)
}

/// Records what a check found: its damage replaces the findings it would have seen again, and a
/// check without damage lifts them. `read_all` says every chunk payload was read (`--read-data`
/// of 100%); `read_some` that some were.
pub fn record_check(
    repo: &Path,
    report: &CheckReport,
    read_some: bool,
    read_all: bool,
) -> Result<()> {
    let mut findings = read(repo)?;
    findings.retain(|(o, _)| match o {
        Origin::Check => false,
        Origin::ReadData => !read_all,
        Origin::Repair => true,
    });
    let origin = if read_some {
        Origin::ReadData
    } else {
        Origin::Check
    };
    let sealed = encrypted(repo)?;
    for p in report
        .problems
        .iter()
        .filter(|p| p.severity() == super::Severity::Damage)
    {
        let text = if sealed {
            withheld(p)
        } else {
            p.message.clone()
        };
        if !findings.iter().any(|(o, m)| *o == origin && *m == text) {
            findings.push((origin, text));
        }
    }
    write(repo, &findings)
}

/// Whether the repository at `repo` is encrypted (its marker file says so).
fn encrypted(repo: &Path) -> Result<bool> {
    Ok(crate::repo::read_marker(repo)?.is_some_and(|m| m.format == crate::repo::ENCRYPTED_FORMAT))
}

/// A finding without its message: its kind and the ids it concerns.
fn withheld(p: &Problem) -> String {
    let mut t = p.kind.name().to_string();
    if let Some(s) = p.snapshot {
        t.push_str(&format!(" snapshot {s}"));
    }
    if let Some(c) = p.chunk {
        t.push_str(&format!(" chunk {c}"));
    }
    if let Some(k) = p.pack {
        t.push_str(&format!(" pack {k}"));
    }
    t.push_str(" (details withheld in an encrypted repository: run strata check)");
    t
}

/// Adds what a repair could not restore (kept until the user lifts it).
pub fn record_repair(repo: &Path, lost: &[String]) -> Result<()> {
    if lost.is_empty() {
        return Ok(());
    }
    let mut findings = read(repo)?;
    for m in lost {
        if !findings.iter().any(|(o, f)| *o == Origin::Repair && f == m) {
            findings.push((Origin::Repair, m.clone()));
        }
    }
    write(repo, &findings)
}

/// Removes the marker: the user said to go on despite it.
pub fn clear(repo: &Path) -> Result<()> {
    write(repo, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Problem, ProblemKind};

    fn report(kinds: &[ProblemKind]) -> CheckReport {
        CheckReport {
            problems: kinds
                .iter()
                .map(|k| Problem {
                    kind: *k,
                    message: format!("{}\tsecond\nline", k.name()),
                    snapshot: None,
                    chunk: None,
                    pack: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn each_origin_is_lifted_only_by_what_would_see_it_again() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert!(read(r).unwrap().is_empty());
        record_repair(r, &["snapshot x lost".into()]).unwrap();
        record_check(r, &report(&[ProblemKind::CorruptRecord]), true, true).unwrap();
        record_check(r, &report(&[ProblemKind::MissingChunk]), false, false).unwrap();
        let f = read(r).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[1],
            (Origin::ReadData, "corrupt_record second line".into())
        );
        // Leftovers are not damage; a structural check lifts only structural findings.
        record_check(r, &report(&[ProblemKind::UnindexedPack]), false, false).unwrap();
        let origins: Vec<_> = read(r).unwrap().into_iter().map(|(o, _)| o).collect();
        assert_eq!(origins, [Origin::Repair, Origin::ReadData]);
        record_check(r, &report(&[]), true, false).unwrap();
        assert_eq!(
            read(r).unwrap().len(),
            2,
            "a sample does not lift read-data findings"
        );
        record_check(r, &report(&[]), true, true).unwrap();
        assert_eq!(read(r).unwrap()[0].0, Origin::Repair);
        clear(r).unwrap();
        assert!(!r.join(MARKER_FILE).exists());
        std::fs::write(r.join(MARKER_FILE), "garbage").unwrap();
        assert_eq!(read(r).unwrap()[0].0, Origin::Repair);
    }

    #[test]
    fn an_encrypted_repository_s_marker_names_no_path() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::write(
            r.join("STRATA"),
            format!(
                "strata repository\nformat 2\nrepository {}\n",
                "ab".repeat(16)
            ),
        )
        .unwrap();
        let mut rep = report(&[ProblemKind::UndecodableEntry]);
        rep.problems[0].message = "Entry secret/path.txt in the layer of snapshot x".into();
        record_check(r, &rep, false, false).unwrap();
        let text = std::fs::read_to_string(r.join(MARKER_FILE)).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("undecodable_entry"), "{text}");
        // Recorded once, however often the same check runs.
        record_check(r, &rep, false, false).unwrap();
        assert_eq!(read(r).unwrap().len(), 1);
    }
}
