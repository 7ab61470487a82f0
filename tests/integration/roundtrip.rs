//! Round trip: full, incremental, differential and incremental again over a tree with every
//! fidelity case; every snapshot must reproduce the tree exactly as it was at its backup. Every
//! case runs on a plain and on an encrypted repository (`name::plain`, `name::encrypted`).

use std::path::Path;

use strata::layers::View;

use crate::common::fixture::{self, assert_same, from_view, Tree};
use crate::common::{backup, init, pass_args, strata_ok, Kind};
use crate::on_both_kinds;

on_both_kinds!(
    every_kind_reproduces_the_tree_at_its_time,
    cli_ls_and_cat_show_snapshot_contents,
    hot_file_is_retried_then_stored_with_a_warning,
    excludes_and_tags,
    unreadable_files_are_reported_and_skipped_with_exit_code_3,
);

fn check_all(repo: &Path, expected: &[(String, Tree)]) {
    let r = crate::common::open(repo).open().unwrap();
    for (i, (id, want)) in expected.iter().enumerate() {
        let view = View::open(&r, &id.parse().unwrap()).unwrap();
        assert_same(&format!("snapshot {i}"), want, &from_view(&r, &view));
    }
}

fn every_kind_reproduces_the_tree_at_its_time(kind: Kind) {
    let t = tempfile::tempdir().unwrap();
    let repo = kind.prepare(&t.path().join("repo"));
    // The fifth backup sees nothing changed: an empty layer that still shows the whole tree.
    let kinds: [&[&str]; 5] = [
        &[],
        &["--kind", "incremental"],
        &["--kind", "differential"],
        &[],
        &[],
    ];
    let expected = fixture::history(&repo, &t.path().join("src"), 7, &kinds);
    check_all(&repo, &expected);

    let out = strata_ok(&repo, &["snapshots", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "full",
            "incremental",
            "differential",
            "incremental",
            "incremental"
        ]
    );
    // The differential's parent is the full; the next incremental's parent is the differential.
    assert_eq!(list[2]["parent"], list[0]["id"]);
    assert_eq!(list[3]["parent"], list[2]["id"]);
    assert_eq!(list[4]["stats"]["layer_entries"], 0);
    assert_eq!(list[4]["stats"]["files_read"], 0);
    assert_eq!(
        list[0]["files"].as_u64(),
        Some(
            expected[0]
                .1
                .values()
                .filter(|e| e.kind == strata::entry::Kind::File)
                .count() as u64
        )
    );
}

fn cli_ls_and_cat_show_snapshot_contents(kind: Kind) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let repo = kind.prepare(&t.path().join("repo"));
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 11);
    init(&repo);
    let first = backup(&repo, &src, &[]);
    fixture::mutate1(&src);
    backup(&repo, &src, &[]);

    // cat of an old version through the id prefix; of the new one through `latest`.
    let old = strata_ok(
        &repo,
        &["cat", &first[..8], "orders/2026/11/20/order-2.json"],
    );
    assert_eq!(old.stdout, br#"{"id":2,"total":99.0}"#);
    let new = strata_ok(&repo, &["cat", "latest", "orders/2026/11/20/order-2.json"]);
    assert_eq!(new.stdout, br#"{"id":2,"total":100.0}"#);
    let big = strata_ok(&repo, &["cat", "latest", "media/big.bin"]);
    assert_eq!(
        big.stdout,
        std::fs::read(src.join("media/big.bin")).unwrap()
    );
    let sparse = strata_ok(&repo, &["cat", "latest", "sparse.img"]);
    assert_eq!(
        sparse.stdout,
        std::fs::read(src.join("sparse.img")).unwrap()
    );

    // ls --json: one object per entry; non-UTF-8 names carry their exact bytes in hex.
    let ls = strata_ok(&repo, &["ls", "latest", "--json"]);
    let lines: Vec<serde_json::Value> = ls
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let weird = lines
        .iter()
        .find(|v| v.get("path_hex").is_some())
        .expect("non-UTF-8 entry");
    assert_eq!(weird["path_hex"], "626164ff6e616d65");
    let typechange = lines.iter().find(|v| v["path"] == "typechange").unwrap();
    assert_eq!(typechange["type"], "dir");
    assert!(!lines.iter().any(|v| v["path"] == "doomed"));
    let sp = lines.iter().find(|v| v["path"] == "sparse.img").unwrap();
    assert_eq!(sp["size"], 8 << 20);
    assert_eq!(sp["stored_size"], 4096);

    // ls -l of one entry, and a recursive listing that reaches the deepest file.
    let l = strata_ok(&repo, &["ls", "latest", "link-to-order", "-l"]);
    assert!(String::from_utf8_lossy(&l.stdout)
        .contains("link-to-order -> orders/2026/11/20/order-1.json"));
    let r = strata_ok(&repo, &["ls", &first, "-R"]);
    assert!(String::from_utf8_lossy(&r.stdout).contains("doomed/inner/x.txt\n"));

    // A closed pipe is not an error.
    let mut child = std::process::Command::new(crate::common::bin())
        .args(["--repo", repo.to_str().unwrap()])
        .args(pass_args(&repo))
        .args(["cat", "latest", "media/big.bin"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn hot_file_is_retried_then_stored_with_a_warning(kind: Kind) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let repo = kind.prepare(&t.path().join("repo"));
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("calm.txt"), b"calm").unwrap();
    let hot = src.join("hot.log");
    // Big enough that each read attempt spans many scheduler slices, even on a loaded machine.
    std::fs::write(&hot, crate::common::pseudo_random(64 << 20, 3)).unwrap();
    init(&repo);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, hot) = (stop.clone(), hot.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(hot).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"more log\n").unwrap();
                std::thread::yield_now();
            }
        })
    };
    let out = crate::common::strata(&repo, &["backup", src.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 = completed with warnings"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed while it was read"));
    // Stored anyway, and the other file is intact.
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "calm.txt"]).stdout,
        b"calm"
    );
    let got = strata_ok(&repo, &["cat", "latest", "hot.log"]).stdout;
    assert!(got.len() >= 16 << 20);
}

fn excludes_and_tags(kind: Kind) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let repo = kind.prepare(&t.path().join("repo"));
    std::fs::create_dir_all(src.join("cache/deep")).unwrap();
    std::fs::write(src.join("keep.json"), b"{}").unwrap();
    std::fs::write(src.join("skip.tmp"), b"x").unwrap();
    std::fs::write(src.join("cache/deep/x"), b"x").unwrap();
    init(&repo);
    backup(
        &repo,
        &src,
        &[
            "--exclude",
            "*.tmp",
            "--exclude",
            "cache",
            "--tag",
            "nightly",
            "--tag",
            "db",
        ],
    );
    let ls = strata_ok(&repo, &["ls", "latest", "-R"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "keep.json\n");
    let snaps: serde_json::Value =
        serde_json::from_slice(&strata_ok(&repo, &["snapshots", "--json"]).stdout).unwrap();
    assert_eq!(snaps[0]["tags"], serde_json::json!(["nightly", "db"]));
    // A path excluded later disappears from the next layer (whiteout), not from history.
    backup(&repo, &src, &["--exclude", "keep.json"]);
    let ls = strata_ok(&repo, &["ls", "latest", "-R"]);
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("keep.json"));
    let first = snaps[0]["id"].as_str().unwrap();
    assert_eq!(strata_ok(&repo, &["cat", first, "keep.json"]).stdout, b"{}");
}

fn unreadable_files_are_reported_and_skipped_with_exit_code_3(kind: Kind) {
    use std::os::unix::fs::PermissionsExt;
    if !crate::common::fixture::is_root() || which("setpriv").is_none() {
        eprintln!("needs root and setpriv to run strata as an unprivileged user; skipped");
        return;
    }
    // Run strata as `nobody`, so that a mode-000 file is really unreadable.
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("locked-dir")).unwrap();
    std::fs::write(src.join("ok.txt"), b"readable").unwrap();
    std::fs::write(src.join("secret.txt"), b"unreadable").unwrap();
    std::fs::write(src.join("locked-dir/inner.txt"), b"unreachable").unwrap();
    std::fs::set_permissions(
        src.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("locked-dir"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let repo = kind.prepare(&t.path().join("repo"));
    let run = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::common::bin())
            .arg("--repo")
            .arg(&repo)
            .args(pass_args(&repo))
            .args(args)
            .output()
            .unwrap()
    };
    let init_args: &[&str] = match kind {
        Kind::Plain => &["init"],
        Kind::Encrypted => &[
            "init",
            "--encrypt",
            "--kdf-memory",
            "256",
            "--kdf-iterations",
            "1",
        ],
    };
    let out = run(init_args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["backup", src.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("secret.txt") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("locked-dir"), "{err}");
    assert_eq!(run(&["cat", "latest", "ok.txt"]).stdout, b"readable");
    let ls = run(&["ls", "latest", "-R"]);
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("secret.txt"));
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|c| c.is_file())
    })
}
