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
