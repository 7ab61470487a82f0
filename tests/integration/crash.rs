//! Crash safety: a backup killed with SIGKILL at any moment leaves a repository whose listed
//! snapshots are complete and readable, and where the next backup works.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{backup, bin, new_repo, pseudo_random, strata_ok};

#[test]
fn kill_9_during_backup_leaves_a_consistent_repository() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("first.txt"), b"committed before the crashes").unwrap();
    let first = backup(&repo, &src, &[]);
    for i in 0..60u64 {
        std::fs::write(src.join(format!("data-{i}.bin")), pseudo_random(1 << 20, i)).unwrap();
    }
    let mut killed = 0;
    for delay_ms in [5u64, 30, 80, 150, 300, 600] {
        let mut child = Command::new(bin())
            .args(["--repo", repo.to_str().unwrap(), "backup", "--kind", "full"])
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
        }
        // After every kill: only complete snapshots are listed, and they read back.
        let out = strata_ok(&repo, &["snapshots", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for s in list.as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            assert_eq!(
                strata_ok(&repo, &["cat", id, "first.txt"]).stdout,
                b"committed before the crashes"
            );
            if s["files"].as_u64().unwrap() > 1 {
                assert_eq!(
                    strata_ok(&repo, &["cat", id, "data-59.bin"]).stdout,
                    pseudo_random(1 << 20, 59)
                );
            }
        }
    }
    assert!(
        killed >= 3,
        "only {killed} backups were killed mid-way; make the data larger"
    );
    // The next backup works and sees everything.
    let id = backup(&repo, &src, &[]);
    assert_ne!(id, first);
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "data-7.bin"]).stdout,
        pseudo_random(1 << 20, 7)
    );
    // No unfinished pack survives a successful backup.
    let leftovers = walk_count(&repo.join("packs"), "tmp");
    assert_eq!(leftovers, 0);
}

fn walk_count(dir: &std::path::Path, ext: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += walk_count(&p, ext);
        } else if p.extension().is_some_and(|e| e == ext) {
            n += 1;
        }
    }
    n
}
