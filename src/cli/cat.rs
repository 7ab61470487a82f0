//! `strata cat`: one file of a snapshot to standard output, verified.

use std::path::{Path, PathBuf};

use clap::Args;

use super::EXIT_OK;
use crate::ops;
use crate::{Error, Result};

/// `strata cat`
#[derive(Args, Debug)]
pub struct CatArgs {
    /// Snapshot: id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Path of a regular file inside the snapshot
    pub path: PathBuf,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
}

/// `strata cat`: through the lookup files when they are current, else the index
/// ([`ops::cat`]).
pub fn run(path: &Path, a: CatArgs) -> Result<i32> {
    let file = ops::FileRef {
        snapshot: &a.snapshot,
        source: a.source.as_deref(),
        path: &a.path,
    };
    ops::cat(path, &file, cat_write)
}

fn cat_write(
    entry: &crate::entry::Entry,
    read: &mut dyn FnMut(&crate::id::ChunkId) -> Result<Vec<u8>>,
) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    use crate::content::WriteError;
    match crate::content::write_all_with(entry, &mut out, read) {
        Ok(()) => Ok(EXIT_OK),
        Err(WriteError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        Err(WriteError::Output(e)) => Err(Error::Io {
            context: "Writing",
            path: "standard output".into(),
            source: e,
        }),
        Err(WriteError::Repo(e)) => Err(e),
    }
}
