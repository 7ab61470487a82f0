//! What a command costs against a bucket: the `--json` stats report the requests it made (GET,
//! PUT, LIST), and a backup that finds nothing changed makes at most a few dozen.

use crate::common::s3::S3Server;

/// The most requests a no-change backup may make ("a few dozen").
const NO_CHANGE_MAX: u64 = 40;

#[test]
fn a_no_change_backup_issues_at_most_a_few_dozen_requests() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "requests", &t.path().join("cache"));
    let src = t.path().join("src");
    super::flat_source(&src, "f", 200, 10_000, 1);
    repo.init();
    repo.backup(&src, &[]);
    let out = repo.ok(&["backup", "--json", super::s(&src)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = v
        .get("requests")
        .unwrap_or_else(|| panic!("backup --json has no \"requests\": {v}"));
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("requests.{k}: {r}"));
    let total = n("get") + n("put") + n("list");
    eprintln!("a no-change backup of 200 files: {r}");
    assert!(
        total <= NO_CHANGE_MAX,
        "a no-change backup made {total} requests: {r}"
    );
    assert_eq!(v["stats"]["files_read"], 0, "{v}");
}

/// A restore on a machine with an empty cache reads the packs in order: after the first blocks
/// of a pack it asks for runs of up to 8 MiB, not one request per 256 KiB block, and restores
/// exactly.
#[test]
fn a_cold_restore_reads_packs_in_large_requests() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "restore", &t.path().join("cache"));
    let src = t.path().join("src");
    // 48 MiB that does not compress: 192 blocks of 256 KiB in three packs.
    super::flat_source(&src, "f", 12, 4 << 20, 3);
    repo.init();
    let id = repo.backup(&src, &[]);
    let fresh = repo.host(&t.path().join("cache2"));
    let target = t.path().join("restored");
    let out = fresh.ok(&["restore", &id, "--target", super::s(&target), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gets = v["requests"]["get"].as_u64().unwrap();
    eprintln!("a cold restore of 48 MiB: {}", v["requests"]);
    assert!(gets <= 48, "{gets} GETs for 192 blocks: {}", v["requests"]);
    assert_eq!(super::rsync_diff(&src, &target), "", "restored exactly");

    // `check --read-data` fetches what it verifies from the bucket, once, in the same large
    // requests, though the blocks are in this machine's cache now.
    let out = fresh.ok(&["check", "--read-data", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (gets, down) = (
        v["requests"]["get"].as_u64().unwrap(),
        v["requests"]["bytes_down"].as_u64().unwrap(),
    );
    eprintln!("check --read-data of 48 MiB: {}", v["requests"]);
    assert!(gets <= 48, "{gets} GETs: {}", v["requests"]);
    assert!(
        (48 << 20..60 << 20).contains(&down),
        "every block fetched once: {down} bytes"
    );
    assert_eq!(v["clean"], true, "{v}");
}

/// Every command's JSON result on a bucket says what it asked of it (`requests`), whatever the
/// command.
#[test]
fn every_json_result_reports_its_requests() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "results", &t.path().join("cache"));
    let src = t.path().join("src");
    super::flat_source(&src, "f", 4, 50_000, 9);
    repo.init();
    let first = repo.backup(&src, &[]);
    std::fs::write(src.join("f-note.txt"), b"changed").unwrap();
    let second = repo.backup(&src, &[]);
    let target = t.path().join("restored");
    let local = t.path().join("local");
    crate::common::strata_ok(&local, &["init"]);
    let commands: Vec<Vec<&str>> = vec![
        vec!["check", "--read-data", "--json"],
        vec!["diff", &first, &second, "--json"],
        vec!["restore", &second, "--target", super::s(&target), "--json"],
        vec!["repair", "--dry-run", "--json"],
        vec!["consolidate", &second, "--json"],
        vec!["forget", &first, "--json"],
        vec!["prune", "--json"],
    ];
    for args in &commands {
        let out = repo.run(args);
        // `diff` says "differences" with exit code 1.
        let ok = if args[0] == "diff" { Some(1) } else { Some(0) };
        assert_eq!(
            out.status.code(),
            ok,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        let r = &v["requests"];
        assert!(
            r["get"].as_u64().is_some() && r["list"].as_u64().is_some(),
            "{args:?}: {v}"
        );
    }
    // A copy out of the bucket reports what it read from it.
    let out = std::process::Command::new(crate::common::bin())
        .arg("--repo")
        .arg(&local)
        .args(["copy", "--from-repo", &repo.url, "--json"])
        .envs(repo.env())
        .env_remove("STRATA_REPO")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["requests"]["get"].as_u64().unwrap_or(0) > 0, "{v}");
}
