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

/// A fresh repository holding one incompressible file of `size` bytes (many chunks), backed up
/// in full; returns its directory, the repository and the file's chunk ids in file order.
pub fn repo_with_one_file(
    size: usize,
    seed: u64,
) -> (tempfile::TempDir, Arc<Repo>, Vec<crate::id::ChunkId>) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), pseudo_random(size, seed)).unwrap();
    let repo = crate::open::Open::new(t.path().join("repo"))
        .create(&Default::default())
        .unwrap();
    let s = snap(&repo, &src, BackupKind::Full);
    let e = crate::layers::View::open(&repo, &s.id)
        .unwrap()
        .lookup(b"f")
        .unwrap();
    let ids = e.chunks.iter().map(|c| c.id).collect();
    (t, repo, ids)
}
