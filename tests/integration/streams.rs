//! Stream backups: `--stdin` and `--stdin-from-command` store one stream as the one file of a
//! source, with the usual kinds and parents; a command that fails (non-zero exit, killed by a
//! signal, standard output closed before it fails, not found) commits nothing and says why.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{bin, new_repo, pseudo_random, snapshot_list, strata, strata_ok};

/// `strata --repo REPO backup ARGS` with `input` on standard input.
fn with_stdin(repo: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .arg("backup")
        .args(args)
        .env_remove("STRATA_REPO")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ls(repo: &Path, id: &str) -> Vec<serde_json::Value> {
    let out = strata_ok(repo, &["ls", "--json", id]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn stdin_is_stored_as_one_file_and_a_later_dump_replaces_it() {
    let (_t, repo) = new_repo();
    let day1 = pseudo_random(3 << 20, 1);
    let args = |name: &'static str, kind: &'static str| {
        vec![
            "--json",
            "--stdin",
            "--stdin-filename",
            name,
            "--source-name",
            "shop-db",
            "--kind",
            kind,
        ]
    };
    let before = strata::time::clock_ns();
    let v1 = json(&with_stdin(&repo, &args("shop.dump", "full"), &day1));
    assert_eq!(v1["kind"], "full");
    assert_eq!(v1["source"], "shop-db");
    assert_eq!(v1["files"], 1);
    assert_eq!(v1["size"], day1.len());
    assert_eq!(v1["sqlite_copies"], serde_json::json!([]));
    let id1 = v1["id"].as_str().unwrap().to_string();
    let entries = ls(&repo, &id1);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["path"], "shop.dump");
    assert_eq!(e["type"], "file");
    assert_eq!(e["mode"], "0644");
    assert_eq!(e["uid"], rustix::process::geteuid().as_raw());
    assert_eq!(e["gid"], rustix::process::getegid().as_raw());
    let mtime = e["mtime_ns"].as_i64().unwrap();
    assert!(mtime >= before && mtime <= strata::time::clock_ns());
    assert!(strata_ok(&repo, &["cat", &id1, "shop.dump"]).stdout == day1);

    // The next day: a few changes in the middle; content-defined chunks keep the rest.
    let mut day2 = day1.clone();
    day2[1 << 20..(1 << 20) + 100].copy_from_slice(&[7; 100]);
    let v2 = json(&with_stdin(&repo, &args("shop.dump", "incremental"), &day2));
    assert_eq!(v2["kind"], "incremental");
    assert_eq!(v2["parent"], v1["id"]);
    let new = v2["stats"]["new_bytes"].as_u64().unwrap();
    assert!(new < (1 << 20), "a 100-byte change stored {new} new bytes");
    let id2 = v2["id"].as_str().unwrap().to_string();
    assert!(strata_ok(&repo, &["cat", &id2, "shop.dump"]).stdout == day2);
    assert!(strata_ok(&repo, &["cat", &id1, "shop.dump"]).stdout == day1);

    // Another name: the snapshot holds the new file only, as a directory source would.
    let v3 = json(&with_stdin(
        &repo,
        &args("shop.sql", "differential"),
        b"-- day 3\n",
    ));
    assert_eq!(v3["kind"], "differential");
    assert_eq!(v3["parent"], v1["id"]);
    assert_eq!(v3["stats"]["deleted"], 1);
    let id3 = v3["id"].as_str().unwrap().to_string();
    let names: Vec<_> = ls(&repo, &id3).iter().map(|e| e["path"].clone()).collect();
    assert_eq!(names, ["shop.sql"]);
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "shop.sql", "--source", "shop-db"]).stdout,
        b"-- day 3\n"
    );
}

#[test]
fn a_commands_output_is_stored_and_its_stderr_passed_through() {
    let (t, repo) = new_repo();
    let data = t.path().join("dump");
    std::fs::write(&data, pseudo_random(5 << 20, 9)).unwrap();
    let script = format!("cat {}; echo 'dump: done' >&2", data.display());
    let out = strata(
        &repo,
        &[
            "backup",
            "--json",
            "--stdin-from-command",
            "--stdin-filename",
            "data.bin",
            "--source-name",
            "dumps",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let v = json(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dump: done"));
    assert_eq!(v["stats"]["read_bytes"], 5 << 20);
    assert!(
        strata_ok(&repo, &["cat", v["id"].as_str().unwrap(), "data.bin"]).stdout
            == std::fs::read(&data).unwrap()
    );
}

fn failing(repo: &Path, argv: &[&str]) -> String {
    let snapshots = snapshot_list(repo).len();
    let mut args = vec![
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "shop.dump",
        "--source-name",
        "shop-db",
        "--",
    ];
    args.extend_from_slice(argv);
    let out = strata(repo, &args);
    assert_eq!(out.status.code(), Some(1), "{argv:?}");
    assert!(out.stdout.is_empty(), "no summary: nothing was committed");
    assert_eq!(
        snapshot_list(repo).len(),
        snapshots,
        "{argv:?} left a snapshot"
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_failing_command_commits_nothing_and_says_why() {
    let (_t, repo) = new_repo();
    let err = failing(
        &repo,
        &[
            "sh",
            "-c",
            "head -c 3000000 /dev/zero; echo 'pg_dump: error: connection refused' >&2; exit 1",
        ],
    );
    assert!(
        err.contains("pg_dump: error: connection refused\n"),
        "passed through: {err}"
    );
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("strata: The command `sh -c head"),
        "{last}"
    );
    assert!(
        last.contains("exited with status 1; no snapshot was committed"),
        "{last}"
    );
    assert!(
        last.ends_with("its standard error ended with: pg_dump: error: connection refused"),
        "{last}"
    );

    // Killed by a signal, after writing everything it had.
    let err = failing(
        &repo,
        &["sh", "-c", "head -c 3000000 /dev/urandom; kill -KILL $$"],
    );
    assert!(
        err.contains("was killed by signal 9 (SIGKILL); no snapshot was committed"),
        "{err}"
    );

    // Its standard output closed early, then it fails.
    let err = failing(
        &repo,
        &["sh", "-c", "echo partial; exec >&-; sleep 0.2; exit 7"],
    );
    assert!(err.contains("exited with status 7"), "{err}");

    let err = failing(&repo, &["/nonexistent/pg_dump", "-Fc"]);
    assert!(err.contains("could not be started"), "{err}");

    // The repository is fine, and the next dump commits.
    let code = strata(&repo, &["check"]).status.code();
    assert!(matches!(code, Some(0) | Some(3)), "check: {code:?}");
    let out = strata_ok(
        &repo,
        &[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "shop.dump",
            "--source-name",
            "shop-db",
            "--",
            "echo",
            "ok",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(full, parent -, source shop-db)"));
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "shop.dump"]).stdout,
        b"ok\n"
    );
}

#[test]
fn stream_options_are_checked() {
    let (t, repo) = new_repo();
    let usage = |args: &[&str]| {
        let out = strata(&repo, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    };
    usage(&["backup", "--stdin", "--source-name", "x"]);
    usage(&["backup", "--stdin", "--stdin-filename", "a"]);
    usage(&[
        "backup",
        "--stdin",
        "--stdin-filename",
        "a",
        "--source-name",
        "x",
        "/tmp",
    ]);
    usage(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "a",
        "--source-name",
        "x",
    ]);
    usage(&[
        "backup",
        "--stdin",
        "--stdin-from-command",
        "--stdin-filename",
        "a",
        "--source-name",
        "x",
        "--",
        "true",
    ]);
    usage(&["backup"]);
    let out = with_stdin(
        &repo,
        &["--stdin", "--stdin-filename", "a/b", "--source-name", "x"],
        b"data",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a file name"));
    assert!(snapshot_list(&repo).is_empty());
    drop(t);
}
