//! forget, consolidate and prune on a bucket: every kept snapshot restores exactly, on the
//! machine that ran them and on a new one; prune reclaims space in the bucket and leaves the log
//! as one checkpoint; the next backup, from either machine, goes on top.

use std::path::Path;

use super::{assert_restore_equals, check_read_data, cp_a, history, Step, DAY_NS, FAKE_NOW_NS};
use crate::common::fixture::{assert_same, capture};
use crate::common::pseudo_random;
use crate::common::s3::S3Repo;

/// Takes one more backup of `src` as step `i` (fake time `i` days after the first) after
/// `edit`, with a copy of the source in `copies`.
fn step(
    repo: &S3Repo,
    src: &Path,
    copies: &Path,
    i: usize,
    extra: &[&str],
    edit: impl FnOnce(&Path),
) -> Step {
    edit(src);
    let now = (FAKE_NOW_NS + i as i64 * DAY_NS).to_string();
    let id = repo
        .clone()
        .with_env("STRATA_TEST_NOW_NS", &now)
        .backup(src, extra);
    let copy = copies.join(format!("step{i}"));
    cp_a(src, &copy);
    Step {
        id,
        tree: capture(src),
        copy,
    }
}

/// Bytes of every pack object in the bucket.
fn pack_bytes(repo: &S3Repo) -> u64 {
    repo.objects_under("packs")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Every snapshot `repo` lists is one of `steps` and restores to it exactly.
fn kept_restore_exactly(repo: &S3Repo, steps: &[Step], dir: &Path, label: &str) -> usize {
    let ids = repo.snapshot_ids();
    for id in &ids {
        let st = steps
            .iter()
            .find(|s| &s.id == id)
            .unwrap_or_else(|| panic!("{label}: snapshot {id} is none of the backups"));
        let out = dir.join(format!("{label}-{}", &id[..8]));
        repo.restore(id, &out);
        assert_same(&format!("{label}: {id}"), &st.tree, &capture(&out));
        assert_eq!(super::rsync_diff(&st.copy, &out), "", "{label}: {id}");
        std::fs::remove_dir_all(&out).unwrap();
    }
    ids.len()
}

#[test]
fn forget_consolidate_prune_on_a_bucket_keep_every_kept_snapshot_exact() {
    lifecycle(false);
}

#[test]
fn forget_consolidate_prune_on_a_bucket_check_clean() {
    lifecycle(true);
}

/// Forget, consolidate and prune on a bucket, then every kept snapshot restores exactly on both
/// machines; with `check`, `check --read-data` must also be clean after them.
fn lifecycle(check: bool) {
    let Some(server) = crate::common::s3::S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let a = server.repo("bucket", "lifecycle", &t.path().join("cache-a"));
    let src = t.path().join("src");
    let copies = t.path().join("copies");
    let mut steps = history(&a, None, &src, &copies, 21, 5);
    // Three more: a big file replaced (garbage for prune), a new full, a change on top.
    steps.push(step(&a, &src, &copies, 5, &[], |s| {
        std::fs::remove_file(s.join("media/big.bin")).unwrap();
        std::fs::write(s.join("media/other.bin"), pseudo_random(2 << 20, 77)).unwrap();
    }));
    steps.push(step(&a, &src, &copies, 6, &["--kind", "full"], |s| {
        std::fs::write(
            s.join("orders/2026/11/20/order-1.json"),
            br#"{"id":1,"total":11}"#,
        )
        .unwrap();
    }));
    steps.push(step(&a, &src, &copies, 7, &[], |s| {
        std::fs::remove_file(s.join("media/other.bin")).unwrap();
        std::fs::write(s.join("new-at-7.txt"), b"seven").unwrap();
    }));
    let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
    let bytes_before = pack_bytes(&a);

    // Forget two in the middle of the first chain, consolidate another, then keep the last five.
    a.ok(&["forget", &ids[1], &ids[3]]);
    a.ok(&["consolidate", &ids[4]]);
    let cons = a.snapshot_list();
    let c = cons.iter().find(|s| s["id"] == ids[4].as_str()).unwrap();
    assert_eq!(c["kind"], "full", "{c}");
    a.ok(&["forget", "--keep-last", "4"]);
    let kept = a.snapshot_ids();
    assert_eq!(kept, ids[4..].to_vec());
    let out = a.ok(&["prune", "--repack-threshold", "100", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(p["reclaimed_bytes"].as_u64().unwrap() > 0, "{p}");
    assert!(pack_bytes(&a) < bytes_before, "{p}");
    // The log is one checkpoint now: a new machine reads one object.
    let log = a.objects_under("log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].to_str().unwrap().ends_with(".c"), "{log:?}");

    // Every kept snapshot is exact: on this machine and on a new one.
    let b = a.host(&t.path().join("cache-b"));
    assert_eq!(kept_restore_exactly(&a, &steps, t.path(), "a"), 4);
    assert_eq!(kept_restore_exactly(&b, &steps, t.path(), "b"), 4);
    for r in [&a, &b].into_iter().filter(|_| check) {
        let (code, text) = check_read_data(r);
        assert_eq!(code, Some(0), "{text}");
    }

    // The next backups, from the new machine and then this one, go on top of the kept ones.
    for (r, other, n) in [(&b, &a, 8), (&a, &b, 9)] {
        std::fs::write(src.join("after-prune.txt"), format!("step {n}")).unwrap();
        let id = r.backup(&src, &[]);
        let last = r.snapshot_list().pop().unwrap();
        assert_eq!(
            last["parent"].as_str(),
            Some(steps.last().unwrap().id.as_str())
        );
        let copy = copies.join(format!("step{n}"));
        cp_a(&src, &copy);
        assert_restore_equals(other, &id, &copy, t.path());
        steps.push(Step {
            id,
            tree: capture(&src),
            copy,
        });
    }
    // A second prune has nothing to delete, and everything stays exact.
    let out = b.ok(&["prune", "--repack-threshold", "100", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["packs_deleted"], 0, "{p}");
    assert_eq!(kept_restore_exactly(&a, &steps, t.path(), "a-last"), 6);
}

#[test]
fn consolidate_on_a_bucket_checks_clean() {
    let Some(server) = crate::common::s3::S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "consolidated", &t.path().join("cache"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    repo.init();
    // Each consolidation writes a new blob into a new pack: with random pack ids, one of five
    // lands below its predecessor with probability 31/32.
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), format!("v{i}")).unwrap();
        repo.backup(&src, &[]);
    }
    for id in repo.snapshot_ids().iter().skip(1) {
        repo.ok(&["consolidate", id]);
    }
    let out = repo.run(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn repair_on_a_bucket_rebuilds_the_same_index() {
    let Some(server) = crate::common::s3::S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let a = server.repo("bucket", "repaired", &t.path().join("cache-a"));
    let src = t.path().join("src");
    let steps = history(&a, None, &src, &t.path().join("copies"), 31, 4);
    let before = a.ok(&["snapshots", "--json"]).stdout;
    a.ok(&["repair"]);
    assert_eq!(a.ok(&["snapshots", "--json"]).stdout, before);
    // The rebuilt index is the bucket's now: one checkpoint, which a new machine reads.
    let log = a.objects_under("log");
    assert_eq!(log.len(), 1, "{log:?}");
    let b = a.host(&t.path().join("cache-b"));
    assert_eq!(b.ok(&["snapshots", "--json"]).stdout, before);
    for r in [&a, &b] {
        assert_eq!(kept_restore_exactly(r, &steps, t.path(), "repaired"), 4);
        let (code, text) = check_read_data(r);
        assert_eq!(code, Some(0), "{text}");
    }
}
