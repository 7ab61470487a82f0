//! The local cache of a bucket never holds the only copy of anything: a machine that never saw
//! the repository, one that lost its whole cache, or a part of it, reads and restores exactly
//! what the others do, and backs up on top of the bucket's history.

use super::{assert_restore_equals, assert_restores, cp_a, history};
use crate::common::mount::{fuse_available, with_timeout};
use crate::common::s3::{S3Repo, S3Server};

/// What the reading commands print on `repo`, to compare two machines.
fn views(repo: &S3Repo, ids: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut cmds: Vec<Vec<String>> = [
        &["snapshots"][..],
        &["find", "*.json"],
        &["log", "orders/2026/11/20/order-2.json"],
        &["log", "media/big.bin"],
        &["ls", "-R", "-l", "latest"],
    ]
    .iter()
    .map(|a| a.iter().map(|s| s.to_string()).collect())
    .collect();
    cmds.push(vec![
        "diff".into(),
        ids[0].clone(),
        ids[ids.len() - 1].clone(),
    ]);
    cmds.push(vec![
        "ls".into(),
        "-R".into(),
        "--json".into(),
        ids[0].clone(),
    ]);
    cmds.iter()
        .map(|c| {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            let out = repo.run(&args);
            assert!(
                out.status.code().is_some_and(|c| c <= 1),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (c.join(" "), out.stdout)
        })
        .collect()
}

fn assert_same_views(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)], label: &str) {
    for ((cmd, x), (_, y)) in a.iter().zip(b) {
        assert!(
            x == y,
            "{label}: `{cmd}` differs:\n{}\n---\n{}",
            String::from_utf8_lossy(x),
            String::from_utf8_lossy(y)
        );
    }
}

#[test]
fn a_new_or_lost_cache_is_rebuilt_from_the_bucket() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let a = server.repo("bucket", "cached", &t.path().join("cache-a"));
    let src = t.path().join("src");
    let steps = history(&a, None, &src, &t.path().join("copies"), 13, 4);
    let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
    let seen_by_a = views(&a, &ids);

    // A machine that never used the repository.
    let b = a.host(&t.path().join("cache-b"));
    assert_same_views(&seen_by_a, &views(&b, &ids), "a new cache");
    assert_restores(&b, &steps, t.path(), "new cache");
    let (code, text) = super::check_read_data(&b);
    assert_eq!(code, Some(0), "{text}");

    // The first machine loses its whole cache.
    std::fs::remove_dir_all(&a.cache_home).unwrap();
    assert_same_views(&seen_by_a, &views(&a, &ids), "a lost cache");
    assert_restores(&a, &steps, t.path(), "lost cache");

    // Its next backup goes on top of the bucket's history, and the other machine sees it.
    std::fs::write(src.join("after-the-loss.txt"), b"new").unwrap();
    let id = a.backup(&src, &[]);
    let last = a.snapshot_list().pop().unwrap();
    assert_eq!(last["kind"], "incremental");
    assert_eq!(last["parent"].as_str(), Some(ids[3].as_str()));
    assert_eq!(last["stats"]["files_read"], 1, "{last}");
    let now = t.path().join("copy-now");
    cp_a(&src, &now);
    assert_eq!(
        b.ok(&["cat", "latest", "after-the-loss.txt"]).stdout,
        b"new"
    );
    assert_restore_equals(&b, &id, &now, t.path());

    // Parts of a cache lost: each alone, the commands still agree and restore exactly.
    let mut all = ids.clone();
    all.push(id.clone());
    let seen = views(&b, &all);
    for part in ["index", "applied", "blocks", "lookup"] {
        let p = a.cache_dir().join(part);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else if p.exists() {
            std::fs::remove_file(&p).unwrap();
        }
        assert_same_views(
            &seen,
            &views(&a, &all),
            &format!("without the cache's {part}"),
        );
        assert_restore_equals(&a, &id, &now, t.path());
    }
    let (code, text) = super::check_read_data(&a);
    assert_eq!(code, Some(0), "{text}");

    // A third machine mounts the bucket: every snapshot is there, as restored.
    if !fuse_available() {
        return;
    }
    let c = a.host(&t.path().join("cache-c"));
    let m = c.mount(&[]);
    assert!(
        m.ready_line.contains("Mounted 5 snapshots"),
        "{}",
        m.ready_line
    );
    let mp = m.path.clone();
    let latest = now.clone();
    with_timeout(std::time::Duration::from_secs(120), move || {
        assert_eq!(super::rsync_diff(&latest, &mp.join("latest")), "");
    });
}
