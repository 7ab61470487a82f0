//! `--metrics-file` at the edge: what an unwritable metrics file means for a command's exit code.
//! The file itself is the library's ([`crate::metrics`]).

use std::path::Path;

use crate::metrics::{self, Command, Recorder};
use crate::Result;

/// Runs `strata backup` with its metrics. Until the backup resolves its source, the source label
/// is what it will be named ([`metrics::backup_source_label`]).
pub(super) fn backup(path: &Path, default_repo: bool, a: super::backup::BackupArgs) -> Result<i32> {
    let rec = Recorder::start(&a.metrics, Command::Backup);
    rec.source(metrics::backup_source_label(
        a.options.source_name.as_deref(),
        a.source.as_deref().unwrap_or(Path::new("-")),
    ));
    let exit = super::backup::run(path, default_repo, a, &rec);
    finish(rec, exit)
}

/// Writes the metrics of the run that ended with `exit` and returns `exit`, unless the file
/// cannot be written: then a successful command fails with that error (monitoring would
/// otherwise keep showing the previous run), and any other outcome keeps its own exit code or
/// error, the metrics failure said on stderr.
pub(super) fn finish(rec: Recorder, exit: Result<i32>) -> Result<i32> {
    match (rec.finish(&exit), exit) {
        (Ok(()), exit) => exit,
        (Err(e), Ok(super::EXIT_OK)) => Err(e),
        (Err(e), exit) => {
            eprintln!("strata: {e}");
            exit
        }
    }
}
