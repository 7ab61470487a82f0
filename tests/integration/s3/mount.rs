//! `strata mount` of a repository in a bucket: every snapshot is the tree a restore gives (and
//! the source at its time), a big file reads back sequentially through ranged GETs and the block
//! cache, and new backups appear in a live mount.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{cp_a, diff_r, history, rsync_diff};
use crate::common::fixture::{assert_same, capture};
use crate::common::mount::{fuse_available, with_timeout};
use crate::common::pseudo_random;
use crate::common::s3::{S3Repo, S3Server};

const BODY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a new snapshot may take to appear in a live mount.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(20);

/// The mount's directory name of every snapshot (`<time>-<short id>`), oldest first.
fn names(repo: &S3Repo) -> Vec<String> {
    repo.snapshot_list()
        .iter()
        .map(|s| {
            format!(
                "{}-{}",
                s["time"].as_str().unwrap(),
                s["short_id"].as_str().unwrap()
            )
        })
        .collect()
}

/// Waits until `mp/snapshots/name` exists.
fn appears(mp: &Path, name: &str) -> bool {
    let deadline = Instant::now() + APPEAR_TIMEOUT;
    while Instant::now() < deadline {
        if mp.join("snapshots").join(name).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn bucket_mount_shows_every_snapshot_as_restored() {
    if !fuse_available() {
        return;
    }
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "mounted", &t.path().join("cache-a"));
    let src = t.path().join("src");
    let steps = history(&repo, None, &src, &t.path().join("copies"), 9, 4);
    // A big file in a source of its own, for the sequential read.
    let big_src = t.path().join("big");
    std::fs::create_dir(&big_src).unwrap();
    let big = pseudo_random(32 << 20, 99);
    std::fs::write(big_src.join("huge.bin"), &big).unwrap();
    repo.backup(&big_src, &[]);
    // Restored on another machine, from its own new cache: what the mount is compared with.
    let other = repo.host(&t.path().join("cache-b"));
    let restored: Vec<PathBuf> = (0..steps.len())
        .map(|i| t.path().join(format!("restored-{i}")))
        .collect();
    for (st, out) in steps.iter().zip(&restored) {
        other.restore(&st.id, out);
    }
    let names = names(&repo);
    assert_eq!(names.len(), steps.len() + 1);
    // The mount starts with an empty block cache.
    let blocks = repo.cache_dir().join("blocks");
    if blocks.exists() {
        std::fs::remove_dir_all(blocks).unwrap();
    }

    let m = repo.mount(&[]);
    assert!(
        m.ready_line.contains("Mounted 5 snapshots"),
        "{}",
        m.ready_line
    );
    let mp = m.path.clone();
    let trees: Vec<_> = steps
        .iter()
        .map(|s| (s.tree.clone(), s.copy.clone()))
        .collect();
    let big_name = names[steps.len()].clone();
    let repo2 = repo.clone();
    let src2 = src.clone();
    let copy_new = t.path().join("copy-new");
    with_timeout(BODY_TIMEOUT, move || {
        for (i, ((tree, copy), out)) in trees.iter().zip(&restored).enumerate() {
            let snap = mp.join("snapshots").join(&names[i]);
            diff_r(out, &snap);
            assert_same(&format!("mounted snapshot {i}"), tree, &capture(&snap));
            assert_eq!(rsync_diff(copy, &snap), "", "mounted snapshot {i}");
        }

        // Sequential read of the big file, cold.
        let started = Instant::now();
        let mut f =
            std::fs::File::open(mp.join("snapshots").join(&big_name).join("huge.bin")).unwrap();
        let mut got = Vec::with_capacity(big.len());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let secs = started.elapsed().as_secs_f64();
        assert!(got == big, "huge.bin read through the mount differs");
        eprintln!(
            "Sequential read of 32 MiB through the mount of a bucket: {:.1} MB/s",
            32.0 * 1.048_576 / secs
        );

        // A new backup from this machine appears in the live mount.
        std::fs::write(src2.join("after-mount.txt"), b"backed up while mounted").unwrap();
        let id = repo2.backup(&src2, &[]);
        cp_a(&src2, &copy_new);
        let list = repo2.snapshot_list();
        let last = list.last().unwrap();
        assert_eq!(last["id"].as_str(), Some(id.as_str()));
        let name = format!(
            "{}-{}",
            last["time"].as_str().unwrap(),
            last["short_id"].as_str().unwrap()
        );
        assert!(appears(&mp, &name), "{name} never appeared in the mount");
        let snap = mp.join("snapshots").join(&name);
        assert_eq!(
            std::fs::read(snap.join("after-mount.txt")).unwrap(),
            b"backed up while mounted"
        );
        assert_eq!(rsync_diff(&copy_new, &snap), "");
    });
    drop(m);
    drop(t);
}

/// A backup another machine makes into the bucket appears in this machine's live mount (within
/// its poll interval).
#[test]
fn bucket_mount_shows_a_backup_from_another_machine() {
    if !fuse_available() {
        return;
    }
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let here = server.repo("bucket", "shared", &t.path().join("cache-here"));
    let there = here.host(&t.path().join("cache-there"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"first").unwrap();
    here.init();
    here.backup(&src, &[]);
    // The mount looks for other machines' commits every STRATA_S3_POLL seconds.
    let m = here.clone().with_env("STRATA_S3_POLL", "1").mount(&[]);
    std::fs::write(src.join("a.txt"), b"second, from another machine").unwrap();
    let id = there.backup(&src, &[]);
    let last = there.snapshot_list().pop().unwrap();
    assert_eq!(last["id"].as_str(), Some(id.as_str()));
    let name = format!(
        "{}-{}",
        last["time"].as_str().unwrap(),
        last["short_id"].as_str().unwrap()
    );
    let mp = m.path.clone();
    with_timeout(BODY_TIMEOUT, move || {
        assert!(
            appears(&mp, &name),
            "{name}, backed up by another machine, never appeared in the mount"
        );
        assert_eq!(
            std::fs::read(mp.join("snapshots").join(&name).join("a.txt")).unwrap(),
            b"second, from another machine"
        );
    });
}
