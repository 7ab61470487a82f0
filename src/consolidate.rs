//! `consolidate`: turns a snapshot into a synthetic full. Its view is written into its own layer
//! (metadata only: entries are copied, chunks are not read), its kind becomes full and its parent
//! none, so it no longer needs the snapshots below it and reading it costs one layer. Snapshots
//! that depend on it are unaffected: its view does not change.
//!
//! The record does not say that a full was consolidated (format 1 has no field for it; its
//! `stats` still describe the backup that made it, so `files_read` smaller than `files` tells).
//! The crash-safe write order is [`crate::forget::rewrite`]'s.

use std::sync::Arc;

use crate::error::Result;
use crate::forget::{self, RewriteStats};
use crate::id::SnapshotId;
use crate::repo::Repo;

/// Consolidates `id` into a full layer; a snapshot that is already full is left alone.
pub fn consolidate(repo: &Arc<Repo>, id: &SnapshotId) -> Result<RewriteStats> {
    forget::rewrite(repo, &[], &[*id])
}
