//! Helpers shared by the unit tests: a real backup with the library, and reproducible data.

use std::path::Path;
use std::sync::Arc;

use crate::backup::{backup, BackupOptions};
use crate::repo::Repo;
use crate::snapshot::{BackupKind, Snapshot};

/// Backs up `src` into `repo` as a snapshot of `kind` (two threads), panicking on failure.
pub fn snap(repo: &Arc<Repo>, src: &Path, kind: BackupKind) -> Snapshot {
    let opts = BackupOptions {
        kind: Some(kind),
        threads: 2,
        ..BackupOptions::default()
    };
    backup(repo, src, &opts).unwrap().snapshot
}

/// `n` xorshift bytes from `seed` (nonzero): incompressible, and the same on every run.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
