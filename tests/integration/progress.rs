//! Progress display: a bar on a terminal (a pseudo-terminal made by `script -qc`), nothing on a
//! pipe, `-q` silences it, `--progress` forces plain lines, `--progress=json` streams JSON lines.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{bin, new_repo, pseudo_random};

/// `strata --repo REPO ARGS...` with no configuration file and no STRATA_* variable of the caller.
fn strata(repo: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--repo").arg(repo).args(args);
    isolate(&mut c);
    c
}

fn isolate(c: &mut Command) {
    c.env("XDG_CONFIG_HOME", "/nonexistent");
    for (k, _) in std::env::vars() {
        if k.starts_with("STRATA_") && !k.starts_with("STRATA_TEST_") {
            c.env_remove(k);
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `strata --repo REPO ARGS...` on a pseudo-terminal; returns what the terminal got (stdout
/// and stderr both).
fn on_a_terminal(repo: &Path, args: &[&str]) -> String {
    let mut line = format!(
        "{} --repo {}",
        quote(bin().to_str().unwrap()),
        quote(repo.to_str().unwrap())
    );
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]).stdin(Stdio::null());
    isolate(&mut c);
    let out = c.output().expect("script(1) from util-linux");
    assert!(
        out.status.success(),
        "{line} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A source of a few files, 3 MB in all.
fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("sub/f{i}")), pseudo_random(1 << 20, i)).unwrap();
    }
    src
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn bars_on_a_terminal_nothing_on_a_pipe() {
    let (t, repo) = new_repo();
    let src = source(t.path());
    let s = src.to_str().unwrap();

    let tty = on_a_terminal(&repo, &["backup", s]);
    assert!(
        tty.contains("Backing up"),
        "no bar on the terminal: {tty:?}"
    );
    assert!(tty.contains("paths") && tty.contains("files"), "{tty:?}");
    assert!(tty.contains("snapshot "), "the summary follows: {tty:?}");

    let quiet = on_a_terminal(&repo, &["-q", "backup", s]);
    assert!(!quiet.contains("Backing up"), "-q silences: {quiet:?}");
    assert!(quiet.contains("snapshot "));

    let piped = ok(strata(&repo, &["backup", s]).output().unwrap());
    assert!(
        piped.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&piped.stderr)
    );

    let target = t.path().join("restored");
    let t_arg = target.to_str().unwrap();
    for (args, labels) in [
        (vec!["check", "--read-data"], &["Verifying"][..]),
        (
            vec!["restore", "latest", "--target", t_arg],
            &["Restoring"][..],
        ),
        (
            vec!["prune"],
            &["Pruning", "Marking", "Scanning packs", "Deleting packs"][..],
        ),
    ] {
        let tty = on_a_terminal(&repo, &args);
        assert!(
            labels.iter().any(|l| tty.contains(l)),
            "no bar for {args:?}: {tty:?}"
        );
        std::fs::remove_dir_all(&target).ok();
        let piped = ok(strata(&repo, &args).output().unwrap());
        let err = String::from_utf8_lossy(&piped.stderr);
        assert!(err.is_empty(), "{args:?}: {err:?}");
        std::fs::remove_dir_all(&target).ok();
    }
}

#[test]
fn forced_progress_off_a_terminal_is_plain_lines() {
    let (t, repo) = new_repo();
    let src = source(t.path());
    let out = ok(
        strata(&repo, &["--progress", "backup", src.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("Backing up ["), "{err:?}");
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "no terminal control: {err:?}"
    );
    let last = err.lines().last().unwrap();
    assert!(last.contains("3 files, 3.00 MiB read"), "{err:?}");
    // The summary on stdout is the same as without progress.
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.starts_with("snapshot "), "{s}");
}

#[test]
fn json_progress_lines_parse_and_end_with_done() {
    let (t, repo) = new_repo();
    let src = source(t.path());
    let out = ok(strata(
        &repo,
        &["--progress=json", "backup", "--json", src.to_str().unwrap()],
    )
    .output()
    .unwrap());
    // stdout is the backup's JSON, unchanged.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(!lines.is_empty());
    let last = lines.last().unwrap();
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    assert_eq!(last["done"], true);
    assert_eq!(last["command"], "backup");
    assert_eq!(last["phase"], "backing up");
    assert_eq!(last["files"], summary["stats"]["files_read"]);
    // The files' sizes (read_bytes counts a file read again because it changed twice).
    assert_eq!(last["bytes"], summary["size"]);
    assert_eq!(last["new_bytes"], summary["stats"]["new_bytes"]);
    assert_eq!(last["bytes_total"], serde_json::Value::Null);
    for key in ["elapsed_ms", "entries", "bytes_per_second"] {
        assert!(last[key].is_u64(), "{key} in {last}");
    }

    // A restore knows its totals.
    let target = t.path().join("restored");
    let out = ok(strata(
        &repo,
        &[
            "--progress=json",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap());
    let err = String::from_utf8(out.stderr).unwrap();
    let last: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["command"].as_str(), last["done"].as_bool()),
        (Some("restore"), Some(true))
    );
    assert_eq!(last["bytes"], 3 << 20);
    assert_eq!(last["bytes_total"], 3 << 20);
    assert_eq!(last["files"], 3);
    assert_eq!(last["entries"], last["entries_total"]);

    // -q silences JSON progress too.
    let out = ok(strata(&repo, &["-q", "--progress=json", "check"])
        .output()
        .unwrap());
    assert!(out.stderr.is_empty());
}
