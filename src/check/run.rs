//! A whole `strata check` run over the repository at a path, as every front end needs it: the
//! check on a private copy of the index, an index that cannot be read at all reported in the
//! report's own form, and what follows every check — the damage marker (which `prune` honours)
//! and the lookup files written anew from what was checked.

use std::path::Path;
use std::sync::Arc;

use super::read::{open_copy, DbCopy};
use super::{check, marker, CheckOptions, CheckReport, Problem, ProblemKind};
use crate::repo::Repo;
use crate::{Error, Result};

/// A check that ran: its report, and the repository (over check's private copy of the index)
/// unless the index could not be opened at all. Dropping it lets go of the copy: that database
/// is not flushed (nothing in it is kept), only deleted.
pub struct CheckRun {
    /// What the check found.
    pub report: CheckReport,
    repo: Option<(Arc<Repo>, DbCopy)>,
}

impl CheckRun {
    /// The checked repository, over the private copy; `None` when the index could not be opened.
    pub fn repo(&self) -> Option<&Arc<Repo>> {
        self.repo.as_ref().map(|(r, _)| r)
    }
}

impl Drop for CheckRun {
    fn drop(&mut self) {
        if let Some((repo, copy)) = self.repo.take() {
            std::mem::forget(repo);
            drop(copy);
        }
    }
}

/// Checks the repository at `path` as `opts` says, then updates the damage marker and, when the
/// index opened, rewrites the lookup files from it (so that `cat` answers what the check just
/// reported: a chunk the index lost stays lost to both). An index that is missing or that sled
/// cannot open is the report's only problem (damage); any other failure is an error.
pub fn run(path: &Path, opts: &CheckOptions) -> Result<CheckRun> {
    let (repo, copy) = match open_copy(path) {
        Ok(r) => r,
        Err(e @ Error::IndexMissing(_)) => {
            return Ok(finish(
                path,
                index_unusable(ProblemKind::IndexMissing, e),
                opts,
            ));
        }
        Err(Error::IndexDamaged { detail, .. }) => {
            // The error names check's private copy; the user's repository is `path`.
            let e = Error::IndexDamaged {
                path: path.to_path_buf(),
                detail,
            };
            return Ok(finish(
                path,
                index_unusable(ProblemKind::IndexDamaged, e),
                opts,
            ));
        }
        Err(e) => return Err(e),
    };
    let report = check(&repo, opts);
    let run = CheckRun {
        report: CheckReport::default(),
        repo: Some((repo, copy)),
    };
    let mut run = run;
    run.report = report?;
    Ok(finish(path, run, opts))
}

/// The damage marker, and (when the index opened) the lookup files.
fn finish(path: &Path, run: CheckRun, opts: &CheckOptions) -> CheckRun {
    let read_all = opts.read_data.is_some_and(|p| p >= 100.0);
    if let Err(e) = marker::record_check(path, &run.report, opts.read_data.is_some(), read_all) {
        log::warn!("Could not update the damage marker: {e}");
    }
    if let Some(repo) = run.repo() {
        crate::lookup::rewrite_or_warn(repo);
    }
    run
}

/// The report of an index that cannot be read at all: that is check's only problem, damage.
fn index_unusable(kind: ProblemKind, e: Error) -> CheckRun {
    CheckRun {
        report: CheckReport {
            problems: vec![Problem {
                kind,
                message: e.to_string(),
                snapshot: None,
                chunk: None,
                pack: None,
            }],
            ..Default::default()
        },
        repo: None,
    }
}
