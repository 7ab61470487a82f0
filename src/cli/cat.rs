//! `strata cat`: one file of a snapshot to standard output, verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::{path_bytes, EXIT_OK};
use crate::entry::Kind;
use crate::layers::View;
use crate::ops;
use crate::repo::Repo;
use crate::snapshot;
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

/// `strata cat`: through the lookup files when they are current (no sled: a few reads), else
/// through the index (which then writes them for the next call).
pub fn run(path: &Path, a: CatArgs) -> Result<i32> {
    match crate::lookup::Quick::open(path) {
        Ok(Some(q)) => {
            let q = Arc::new(q);
            match cat_entry(&q, q.snapshots(), &a, &mut Vec::new()) {
                Ok(entry) => {
                    let r = cat_write(&entry, &mut |id| q.read_chunk(id));
                    if let Ok(q) = Arc::try_unwrap(q) {
                        q.finish();
                    }
                    return r;
                }
                Err(e) if e.is_user_error() => return Err(e),
                Err(e @ Error::LookupIncomplete(_)) => log::debug!("{e}; reading the index"),
                Err(e) => {
                    log::warn!("The lookup files could not answer ({e}); reading the index");
                    if let Ok(q) = Arc::try_unwrap(q) {
                        q.discard();
                    }
                }
            }
        }
        Ok(None) => log::debug!("No current lookup catalog; reading the index"),
        Err(e) if e.is_user_error() => return Err(e),
        Err(e) => log::warn!("The lookup catalog is unusable ({e}); reading the index"),
    }
    // Through the index; then the lookup files, with the tables this chain lacked even if big
    // (the next `cat` of it needs them). Not flushed, as in `read_only`.
    let repo = Repo::open(path)?;
    let mut chain = Vec::new();
    let r = cat_entry(&repo, repo.snapshots()?, &a, &mut chain)
        .and_then(|entry| cat_write(&entry, &mut |id| repo.read_chunk(id)));
    ops::publish_lookups(&repo, &chain);
    std::mem::forget(repo);
    r
}

/// The regular file `cat` names, resolved in whichever store answers; `chain` receives the
/// layers of the snapshot's view.
fn cat_entry<S: crate::layers::LayerStore>(
    store: &Arc<S>,
    all: Vec<crate::snapshot::Snapshot>,
    a: &CatArgs,
    chain: &mut Vec<crate::id::SnapshotId>,
) -> Result<crate::entry::Entry> {
    let snap = snapshot::find_in(all, &a.snapshot, a.source.as_deref())?;
    let view = View::open(store, &snap.id)?;
    *chain = view.chain();
    let entry = view.lookup_once(path_bytes(&a.path))?;
    if entry.kind != Kind::File {
        return Err(Error::NotAFile {
            snapshot: snap.id.short(),
            path: a.path.display().to_string(),
        });
    }
    Ok(entry)
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
