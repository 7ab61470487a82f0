//! Several machines on one bucket: two backups of two sources from two machines at the same
//! time both succeed and restore exactly elsewhere; a prune while a third machine backs up loses
//! nothing, and the repository checks clean.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{assert_restore_equals, check_read_data, cp_a, flat_source};
use crate::common::pseudo_random;
use crate::common::s3::S3Repo;

/// A `strata` command running on `repo`, its output going to files.
struct Running {
    child: Child,
    label: String,
    out: PathBuf,
    err: PathBuf,
}

fn start(repo: &S3Repo, args: &[&str], dir: &Path, label: &str) -> Running {
    let out = dir.join(format!("{label}.stdout"));
    let err = dir.join(format!("{label}.stderr"));
    let child = repo
        .command(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    Running {
        child,
        label: label.to_string(),
        out,
        err,
    }
}

fn start_backup(repo: &S3Repo, src: &Path, dir: &Path, label: &str) -> Running {
    start(repo, &["backup", "--json", super::s(src)], dir, label)
}

/// Waits for a command started with [`start`]; it must succeed. Returns its stdout.
fn finish(mut r: Running) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = r.child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = r.child.kill();
            let _ = r.child.wait();
            panic!("{} hangs", r.label);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{} failed ({status}): {}",
        r.label,
        std::fs::read_to_string(&r.err).unwrap_or_default()
    );
    std::fs::read(&r.out).unwrap()
}

fn id_of(json: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(json).expect("backup --json");
    v["id"].as_str().unwrap().to_string()
}

/// A source of `n` MiB-sized files (seeds from `seed`), plus `shared.bin`, the same in every
/// source: two machines store that content at the same time.
fn source(dir: &Path, prefix: &str, n: u64, seed: u64) {
    flat_source(dir, prefix, n, 1 << 20, seed);
    std::fs::write(dir.join("shared.bin"), pseudo_random(3 << 20, 4242)).unwrap();
}

#[test]
fn two_machines_back_up_at_once_then_prune_beside_a_third() {
    let Some(server) = crate::common::s3::S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let a = server.repo("bucket", "shared", &dir.join("cache-a"));
    let b = a.host(&dir.join("cache-b"));
    a.init();
    let (src_a, src_b) = (dir.join("src-a"), dir.join("src-b"));
    source(&src_a, "a", 24, 1000);
    source(&src_b, "b", 24, 2000);
    // snapshot id → a copy of its source at backup time.
    let mut expected: Vec<(String, PathBuf)> = Vec::new();

    // Two machines, two sources, at the same time.
    let ra = start_backup(&a, &src_a, dir, "backup-a1");
    let rb = start_backup(&b, &src_b, dir, "backup-b1");
    let (ja, jb) = (finish(ra), finish(rb));
    for (json, src, n) in [(&ja, &src_a, "a1"), (&jb, &src_b, "b1")] {
        let copy = dir.join(format!("copy-{n}"));
        cp_a(src, &copy);
        expected.push((id_of(json), copy));
    }
    let c = a.host(&dir.join("cache-c"));
    assert_eq!(c.snapshot_ids().len(), 2);
    for (id, copy) in &expected {
        assert_restore_equals(&c, id, copy, dir);
    }

    // Garbage for prune: machine A changes its source, backs up, and forgets its first backup
    // (which rewrites the second's record into a full).
    for i in 0..4u64 {
        std::fs::remove_file(src_a.join(format!("a-{i:03}.bin"))).unwrap();
    }
    flat_source(&src_a, "a2", 4, 1 << 20, 3000);
    let id = a.backup(&src_a, &[]);
    let copy = dir.join("copy-a2");
    cp_a(&src_a, &copy);
    expected.push((id, copy));
    a.ok(&["forget", &expected[0].0]);
    expected.remove(0);

    // A third machine backs up a big source while machine B prunes; then B backs up again while
    // A prunes once more.
    let d = a.host(&dir.join("cache-d"));
    let src_d = dir.join("src-d");
    source(&src_d, "d", 40, 4000);
    let rd = start_backup(&d, &src_d, dir, "backup-d");
    std::thread::sleep(Duration::from_millis(300));
    let pb = start(&b, &["prune", "--repack-threshold", "100"], dir, "prune-b");
    let jd = finish(rd);
    finish(pb);
    let copy = dir.join("copy-d");
    cp_a(&src_d, &copy);
    expected.push((id_of(&jd), copy));

    std::fs::write(src_b.join("b-late.txt"), b"late").unwrap();
    let rb2 = start_backup(&b, &src_b, dir, "backup-b2");
    std::thread::sleep(Duration::from_millis(100));
    a.ok(&["prune"]);
    let jb2 = finish(rb2);
    let copy = dir.join("copy-b2");
    cp_a(&src_b, &copy);
    expected.push((id_of(&jb2), copy));

    // Every snapshot restores exactly on a machine that never saw the repository, and on each
    // that took part; the repository checks clean.
    let e = a.host(&dir.join("cache-e"));
    let mut want: Vec<String> = expected.iter().map(|x| x.0.clone()).collect();
    want.sort();
    for r in [&e, &a, &b, &d] {
        let mut ids = r.snapshot_ids();
        ids.sort();
        assert_eq!(ids, want, "{}", r.cache_home.display());
    }
    for (id, copy) in &expected {
        assert_restore_equals(&e, id, copy, dir);
    }
    for r in [&e, &a] {
        let (code, text) = check_read_data(r);
        assert_eq!(code, Some(0), "{text}");
    }
    assert_eq!(a.objects_under("locks"), Vec::<PathBuf>::new());
}
