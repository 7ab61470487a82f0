//! `backup --pre-command` / `--post-command`: their order around the backup, the post-command's
//! environment, and what each failure does to the backup and the exit code.

use std::fs;
use std::path::Path;

use crate::common::{bin, new_repo, snapshot_ids, strata};

fn log_of(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn pre_runs_before_and_post_after_the_repository_is_closed() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let log = t.path().join("log");
    let l = log.display();
    // The pre-command writes a file the backup must see; the post-command reads the repository,
    // which only works once the backup has released it.
    let pre = format!(
        "echo pre >> {l}; echo flushed > {}/dump.sql; echo to-stdout",
        src.display()
    );
    let post = format!(
        "echo \"post $STRATA_BACKUP_STATUS $STRATA_SNAPSHOT_ID\" >> {l}; {} --repo {} snapshots --json | grep -c '\"id\"' >> {l}",
        bin().display(),
        repo.display()
    );
    let out = strata(
        &repo,
        &[
            "backup",
            "--json",
            "--pre-command",
            &pre,
            "--post-command",
            &post,
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is only the JSON");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stdout"));
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        log_of(&log),
        ["pre".to_string(), format!("post success {id}"), "1".into()]
    );
    assert_eq!(
        strata(&repo, &["cat", id, "dump.sql"]).stdout,
        b"flushed\n",
        "the backup ran after the pre-command"
    );

    // Warnings (a database that cannot be copied is read as a file): status `warning`, exit 3.
    fs::remove_file(&log).unwrap();
    fs::write(
        src.join("broken.sqlite"),
        b"SQLite format 3\0 but nothing else",
    )
    .unwrap();
    let post = format!("echo \"post $STRATA_BACKUP_STATUS\" >> {l}");
    let out = strata(
        &repo,
        &["backup", "--post-command", &post, src.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(log_of(&log), ["post warning"]);
}

#[test]
fn a_failed_pre_command_backs_up_nothing_and_the_post_command_still_runs() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let log = t.path().join("log");
    let l = log.display();
    let out = strata(
        &repo,
        &[
            "backup",
            "--pre-command",
            &format!("echo pre >> {l}; echo 'lock failed' >&2; exit 3"),
            "--post-command",
            &format!("echo \"post $STRATA_BACKUP_STATUS ${{STRATA_SNAPSHOT_ID:-none}}: $STRATA_BACKUP_ERROR\" >> {l}"),
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lock failed"), "{err}");
    assert!(
        err.contains("strata: The pre-command `echo pre")
            && err.contains("exited with status 3; nothing was backed up"),
        "{err}"
    );
    assert!(snapshot_ids(&repo).is_empty());
    let lines = log_of(&log);
    assert_eq!(lines[0], "pre");
    assert!(
        lines[1].starts_with("post failure none: The pre-command"),
        "{lines:?}"
    );
}

#[test]
fn the_post_command_runs_after_a_failed_backup_and_its_own_failure_keeps_the_snapshot() {
    let (t, repo) = new_repo();
    let log = t.path().join("log");
    let l = log.display();
    let post = format!("echo \"post $STRATA_BACKUP_STATUS $STRATA_BACKUP_ERROR\" >> {l}");
    // A failed dump: no snapshot, the post-command is told.
    let out = strata(
        &repo,
        &[
            "backup",
            "--post-command",
            &post,
            "--stdin-from-command",
            "--stdin-filename",
            "d",
            "--source-name",
            "db",
            "--",
            "false",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        log_of(&log),
        ["post failure The command `false` exited with status 1; no snapshot was committed"]
    );
    assert!(snapshot_ids(&repo).is_empty());

    // A failing post-command after a committed backup: exit 1, the snapshot stays.
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let out = strata(
        &repo,
        &[
            "backup",
            "--post-command",
            "echo cleanup failed >&2; exit 9",
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let ids = snapshot_ids(&repo);
    assert_eq!(ids.len(), 1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("snapshot {} saved", &ids[0][..8]))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cleanup failed"), "{err}");
    assert!(
        err.contains(&format!(
            "strata: The post-command `echo cleanup failed >&2; exit 9` exited with status 9; snapshot {} was committed and stays",
            &ids[0][..8]
        )),
        "{err}"
    );
}
