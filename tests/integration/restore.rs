//! `strata restore`, through the real binary into real directories: every snapshot kind restores
//! to exactly the tree it was taken from (our capture and `rsync -aHAXn --checksum` agree), holes
//! stay holes, partial restores, overwrite modes, `--delete`, `--dry-run`, interrupted restores,
//! corrupt chunks, shared chunks read once, and hostile snapshots that try to write outside the
//! target.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use strata::entry::{Entry, Kind};
use strata::layers::View;

use crate::common::fixture::{self, assert_same, capture};
use crate::common::{backup, new_repo, pseudo_random, strata, strata_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `strata restore ARGS --json`; returns (exit code, parsed JSON).
fn restore_json(repo: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["restore", "--json"];
    a.extend_from_slice(args);
    let out = strata(repo, &a);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "restore {args:?}: {e}; stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

/// `rsync -aHAXn --checksum -i --delete SRC/ DST/`: no output means identical.
fn rsync_diff(src: &Path, dst: &Path) -> String {
    let out = Command::new("rsync")
        .args(["-aHAXn", "--checksum", "-i", "--delete"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path under `root` whose name starts with the temporary prefix.
fn temp_files(root: &Path) -> Vec<String> {
    capture_names(root)
        .into_iter()
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(".strata-tmp-"))
        })
        .collect()
}

fn capture_names(root: &Path) -> BTreeSet<String> {
    capture(root)
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[test]
fn every_snapshot_kind_restores_identically() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let repo = t.path().join("repo");
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 5);
    strata_ok(&repo, &["init"]);
    let kinds: [&[&str]; 5] = [
        &[],
        &["--kind", "incremental"],
        &["--kind", "differential"],
        &[],
        &[],
    ];
    let mutations: [fn(&Path); 3] = [fixture::mutate1, fixture::mutate2, fixture::mutate3];
    let mut taken = Vec::new();
    for (i, extra) in kinds.iter().enumerate() {
        if (1..=3).contains(&i) {
            mutations[i - 1](&src);
        }
        let id = backup(&repo, &src, extra);
        let want = capture(&src);
        let out = t.path().join(format!("out{i}"));
        let (code, v) = restore_json(&repo, &[&id, "--target", s(&out)]);
        assert_eq!(code, 0, "snapshot {i}: {v}");
        assert_same(&format!("restore of snapshot {i}"), &want, &capture(&out));
        assert_eq!(
            rsync_diff(&src, &out),
            "",
            "snapshot {i}: rsync sees differences"
        );
        // Holes stay holes: 8 MiB apparent, 4 KiB of data.
        let m = std::fs::metadata(out.join("sparse.img")).unwrap();
        assert_eq!(m.len(), 8 << 20);
        assert!(
            m.blocks() * 512 <= 64 << 10,
            "sparse.img is not sparse: {m:?}"
        );
        assert!(temp_files(&out).is_empty());
        taken.push((id, want));
    }
    // Older snapshots still restore exactly once newer layers sit on top of them.
    for (i, (id, want)) in taken.iter().enumerate().take(3) {
        let out = t.path().join(format!("again{i}"));
        let (code, _) = restore_json(&repo, &[id, "--target", s(&out), "--verify"]);
        assert_eq!(code, 0);
        assert_same(
            &format!("late restore of snapshot {i}"),
            want,
            &capture(&out),
        );
    }
    // The hard-link pair of the first snapshot is one inode in the restore.
    let a = std::fs::metadata(t.path().join("again0/hard-a")).unwrap();
    let b = std::fs::metadata(t.path().join("again0/orders/hard-b")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn partial_restore_of_a_path_and_of_globs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 9);
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);

    let one = t.path().join("one");
    // A pre-existing target keeps its own metadata when only some paths are restored into it.
    std::fs::create_dir(&one).unwrap();
    std::fs::set_permissions(&one, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    strata_ok(
        &repo,
        &["restore", "latest", "orders/2026/11", "--target", s(&one)],
    );
    assert_eq!(std::fs::metadata(&one).unwrap().mode() & 0o7777, 0o711);
    let names = capture_names(&one);
    assert!(names.contains("orders/2026/11/20/order-1.json"));
    assert!(names.contains("orders/2026/11/21/order-3.json"));
    assert!(!names.contains("orders/hard-b") && !names.contains("media"));
    assert_eq!(
        std::fs::read(one.join("orders/2026/11/20/order-2.json")).unwrap(),
        std::fs::read(src.join("orders/2026/11/20/order-2.json")).unwrap()
    );
    // The restored subtree is exact; the directories above it were only created.
    assert_eq!(
        rsync_diff(&src.join("orders/2026/11"), &one.join("orders/2026/11")),
        ""
    );

    let json = t.path().join("json");
    strata_ok(
        &repo,
        &[
            "restore",
            "latest",
            "--include",
            "*.json",
            "--target",
            s(&json),
        ],
    );
    let names = capture_names(&json);
    let files: Vec<_> = names.iter().filter(|n| n.ends_with(".json")).collect();
    assert_eq!(files.len(), 3, "{names:?}");
    assert!(!names
        .iter()
        .any(|n| n.starts_with("logs") || n.starts_with("media")));

    let ex = t.path().join("ex");
    strata_ok(
        &repo,
        &[
            "restore",
            "latest",
            "--exclude",
            "media",
            "--exclude",
            "*.log",
            "--target",
            s(&ex),
        ],
    );
    let names = capture_names(&ex);
    assert!(!names
        .iter()
        .any(|n| n.starts_with("media") || n.ends_with(".log")));
    assert!(names.contains("logs") && names.contains("sparse.img"));

    // A path that is not in the snapshot fails before anything is written.
    let none = t.path().join("none");
    let out = strata(&repo, &["restore", "latest", "nope", "--target", s(&none)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    assert!(!none.exists());
}

#[test]
fn overwrite_modes_and_delete() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 3);
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);
    let out = t.path().join("out");
    let target = ["--target", s(&out)];
    let run = |extra: &[&str]| {
        let mut a = vec!["latest"];
        a.extend_from_slice(&target);
        a.extend_from_slice(extra);
        restore_json(&repo, &a)
    };
    assert_eq!(run(&[]).0, 0);

    // Local edits: changed content, a file where a dir was, an extra file.
    std::fs::write(out.join("empty.txt"), b"local edit").unwrap();
    std::fs::remove_dir_all(out.join("empty-dir")).unwrap();
    std::fs::write(out.join("empty-dir"), b"in the way").unwrap();
    std::fs::write(out.join("logs/extra.txt"), b"extra").unwrap();
    std::fs::write(out.join("keep.tmp"), b"excluded extra").unwrap();

    // never (default): conflicts reported, nothing touched, exit 3.
    let (code, v) = run(&[]);
    assert_eq!(code, 3, "{v}");
    let conflicts: BTreeSet<&str> = v["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(conflicts, BTreeSet::from(["empty.txt", "empty-dir"]));
    let c = v["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "empty-dir")
        .unwrap();
    assert_eq!(
        (c["existing"].as_str(), c["snapshot"].as_str()),
        (Some("file"), Some("dir"))
    );
    assert_eq!(std::fs::read(out.join("empty.txt")).unwrap(), b"local edit");
    assert!(v["unchanged"].as_u64().unwrap() > 10);
    assert_eq!(v["files"], 0);

    // if-changed: only what differs is replaced; extras stay without --delete.
    let (code, v) = run(&["--overwrite", "if-changed"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["replaced"], 2, "{v}");
    assert_eq!(v["files"], 1);
    assert!(out.join("logs/extra.txt").exists());

    // --delete removes what the snapshot does not hold, except excluded paths.
    let (code, v) = run(&["--delete", "--exclude", "*.tmp"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["deleted"], 1);
    assert!(!out.join("logs/extra.txt").exists());
    assert!(out.join("keep.tmp").exists());
    std::fs::remove_file(out.join("keep.tmp")).unwrap();
    assert_eq!(run(&[]).0, 0); // puts back the root's mtime, which the removal changed
    assert_same("after if-changed", &capture(&src), &capture(&out));
    assert_eq!(rsync_diff(&src, &out), "");

    // always: every leaf rewritten, even identical ones.
    let ino_before = std::fs::metadata(out.join("logs/app.log")).unwrap().ino();
    let (code, v) = run(&["--overwrite", "always"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["unchanged"], 0);
    assert!(v["replaced"].as_u64().unwrap() > 10);
    assert_ne!(
        std::fs::metadata(out.join("logs/app.log")).unwrap().ino(),
        ino_before
    );
    assert_eq!(rsync_diff(&src, &out), "");
}

#[test]
fn dry_run_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 4);
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);
    let out = t.path().join("out");
    strata_ok(&repo, &["restore", "latest", "orders", "--target", s(&out)]);
    std::fs::write(out.join("orders/hard-b"), b"changed").unwrap();
    std::fs::write(out.join("orders/extra"), b"extra").unwrap();
    let before = capture(&out);

    let (code, v) = restore_json(
        &repo,
        &[
            "latest",
            "--target",
            s(&out),
            "--dry-run",
            "--delete",
            "--overwrite",
            "always",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_same("dry run", &before, &capture(&out));
    let actions: Vec<(String, String)> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    let has = |p: &str, a: &str| actions.iter().any(|(pp, aa)| pp == p && aa == a);
    assert!(has("orders/extra", "delete"), "{actions:?}");
    assert!(has("orders/hard-b", "replace"), "{actions:?}");
    assert!(
        has("media", "create") && has("media/big.bin", "create"),
        "{actions:?}"
    );
    assert!(v["dry_run"].as_bool().unwrap());

    // Into a target that does not exist: it is not even created.
    let missing = t.path().join("missing");
    let out2 = strata_ok(
        &repo,
        &["restore", "latest", "--target", s(&missing), "--dry-run"],
    );
    assert!(!missing.exists());
    let text = String::from_utf8_lossy(&out2.stdout);
    assert!(text.contains("create    media/big.bin"), "{text}");
    assert!(text.contains("would restore"), "{text}");
}

#[test]
fn interrupted_restore_leaves_no_partial_file_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    for d in 0..8 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            let n = 64 << 10 | (f * 997);
            std::fs::write(
                dir.join(format!("f{f}")),
                pseudo_random(n, d * 100 + f as u64),
            )
            .unwrap();
        }
    }
    std::fs::write(src.join("big.bin"), pseudo_random(48 << 20, 1)).unwrap();
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);
    let out = t.path().join("out");
    let want = capture(&src);
    let mut interrupted = 0;
    for delay_ms in [30u64, 120, 300, 600] {
        let mut child = Command::new(crate::common::bin())
            .args(["--repo", s(&repo), "restore", "latest", "--target", s(&out)])
            .arg("--threads=2")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.code().is_none() {
            interrupted += 1;
        }
        // Whatever exists under its real name is complete and correct.
        if out.exists() {
            let files = capture(&out)
                .values()
                .filter(|e| e.kind == Kind::File)
                .count();
            eprintln!("killed after {delay_ms} ms ({status}): {files} files in the target");
            for (p, e) in capture(&out) {
                let name = String::from_utf8_lossy(&p).into_owned();
                if e.kind != Kind::File
                    || name.rsplit('/').next().unwrap().starts_with(".strata-tmp-")
                {
                    continue;
                }
                assert_eq!(e.content, want[&p].content, "{name} is half-written");
            }
        }
    }
    assert!(
        interrupted > 0,
        "no run was interrupted; make the tree bigger"
    );
    // A rerun (default mode: nothing is overwritten) completes, and cleans up.
    let (code, v) = restore_json(&repo, &["latest", "--target", s(&out)]);
    assert_eq!(code, 0, "{v}");
    assert!(temp_files(&out).is_empty(), "{:?}", temp_files(&out));
    assert_same("after interruption", &want, &capture(&out));
    assert_eq!(rsync_diff(&src, &out), "");
}

#[test]
fn shared_chunks_are_read_once_and_verify_checks_every_file() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let same = pseudo_random(3 << 20, 8);
    for i in 0..20 {
        std::fs::write(src.join(format!("copy{i}")), &same).unwrap();
    }
    for i in 0..5 {
        std::fs::write(src.join(format!("own{i}")), pseudo_random(1 << 20, 50 + i)).unwrap();
    }
    let (_r, repo) = new_repo();
    let id = backup(&repo, &src, &[]);
    let unique: BTreeSet<_> = {
        let r = strata::open::Open::new(&repo).open().unwrap();
        let view = View::open(&r, &id.parse().unwrap()).unwrap();
        view.children(b"")
            .unwrap()
            .flat_map(|kv| kv.unwrap().1.chunks)
            .map(|c| c.id)
            .collect()
    };
    let out = t.path().join("out");
    let (code, v) = restore_json(&repo, &["latest", "--target", s(&out), "--verify"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["chunks_read"].as_u64().unwrap(),
        unique.len() as u64,
        "{v}"
    );
    assert_eq!(v["verified_files"], 25);
    assert_eq!(std::fs::read(out.join("copy19")).unwrap(), same);
}

#[test]
fn corrupt_chunk_fails_that_file_only() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 42);
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    std::fs::write(src.join("other.bin"), pseudo_random(200_000, 43)).unwrap();
    backup(&repo, &src, &[]);
    // Flip one byte of the victim's data in its pack (stored raw: random data).
    'outer: for dir in std::fs::read_dir(repo.join("packs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut data = std::fs::read(&p).unwrap();
            let needle = &victim[100_000..100_064];
            if let Some(pos) = data.windows(64).position(|w| w == needle) {
                data[pos + 32] ^= 0x40;
                std::fs::write(&p, data).unwrap();
                break 'outer;
            }
        }
    }
    let out = t.path().join("out");
    let (code, v) = restore_json(&repo, &["latest", "--target", s(&out)]);
    assert_eq!(code, 1, "{v}");
    let p = &v["problems"][0];
    assert_eq!(p["path"], "victim.bin");
    assert_eq!(p["kind"], "error");
    assert!(p["message"].as_str().unwrap().contains("is corrupt"), "{v}");
    assert!(!out.join("victim.bin").exists(), "never wrong data");
    assert!(temp_files(&out).is_empty());
    assert_eq!(
        std::fs::read(out.join("other.bin")).unwrap(),
        pseudo_random(200_000, 43)
    );
}

#[test]
fn hostile_snapshot_cannot_write_outside_the_target() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    let (_r, repo) = new_repo();
    let good = backup(&repo, &src, &[]);
    let canary = t.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A symlink already in the target, where the snapshot has a directory.
    std::os::unix::fs::symlink(&canary, out.join("pre")).unwrap();

    let evil_id = {
        let r = strata::open::Open::new(&repo).open().unwrap();
        let view = View::open(&r, &good.parse().unwrap()).unwrap();
        let root = view.root().unwrap();
        let file = view.lookup(b"ok.txt").unwrap();
        let mut link = file.clone();
        link.kind = Kind::Symlink;
        link.chunks.clear();
        link.target = canary.as_os_str().as_bytes().to_vec();
        link.size = link.target.len() as u64;
        let dir = root.clone();
        let b = |v: &str| v.as_bytes().to_vec();
        let entries: Vec<(Vec<u8>, Vec<u8>, Entry)> = vec![
            (b(""), b(""), root.clone()),
            (b(""), b("ok.txt"), file.clone()),
            (b(""), b(".."), file.clone()),
            (b(""), b("."), file.clone()),
            (b(""), b("a/b"), file.clone()),
            (b(""), b("/etc"), file.clone()),
            (b(""), b("link"), link),
            (b("link"), b("x"), file.clone()),
            (b(""), b("sub"), dir.clone()),
            (b("sub"), b("../../escape"), file.clone()),
            (b("sub"), b("inner.txt"), file.clone()),
            (b(""), b("pre"), dir),
            (b("pre"), b("y"), file.clone()),
        ];
        let mut snap = view.snapshot().clone();
        snap.id = strata::id::SnapshotId([7; 16]);
        snap.time_ns += 1;
        snap.source = "evil".into();
        r.insert_raw_full_snapshot(&snap, &entries).unwrap();
        snap.id.to_string()
    };
    let listing = |p: &Path| capture_names(p);
    let outside_before: BTreeSet<_> = listing(t.path())
        .into_iter()
        .filter(|p| !p.starts_with("out"))
        .collect();

    let check_outside = || {
        let now: BTreeSet<_> = listing(t.path())
            .into_iter()
            .filter(|p| !p.starts_with("out"))
            .collect();
        assert_eq!(
            now, outside_before,
            "something was written outside the target"
        );
        assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
    };

    let (code, v) = restore_json(&repo, &[&evil_id, "--target", s(&out)]);
    assert_eq!(code, 3, "{v}");
    check_outside();
    let problems: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().into(),
                p["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    for bad in ["..", ".", "a/b", "/etc", "sub/../../escape", "link/x"] {
        assert!(
            problems.iter().any(|(p, k)| p == bad && k == "unsafe"),
            "{bad} not refused: {problems:?}"
        );
    }
    // The pre-existing symlink is a conflict, not a way out.
    assert_eq!(v["conflicts"][0]["path"], "pre");
    assert_eq!(v["conflicts"][0]["existing"], "symlink");
    // The rest restored: the good file, the directory, the symlink itself (verbatim, not followed).
    assert_eq!(std::fs::read(out.join("ok.txt")).unwrap(), b"fine");
    assert_eq!(std::fs::read(out.join("sub/inner.txt")).unwrap(), b"fine");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), canary);
    let human = strata(&repo, &["restore", &evil_id, "--target", s(&out)]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("refused: link/x: Refused entries under link, which is a symlink"),
        "{text}"
    );

    // Even when told to overwrite, the target's symlink is replaced, never followed.
    let (code, v) = restore_json(
        &repo,
        &[&evil_id, "--target", s(&out), "--overwrite", "always"],
    );
    assert_eq!(code, 3, "{v}");
    check_outside();
    assert!(out.join("pre").symlink_metadata().unwrap().is_dir());
    assert_eq!(std::fs::read(out.join("pre/y")).unwrap(), b"fine");
    assert!(!out.join("x").exists() && !Path::new("/etc/ok.txt").exists());
    assert!(!out.join(OsStr::from_bytes(b"a")).exists());
}

#[test]
fn not_root_skips_owners_and_devices_with_a_note() {
    use std::os::unix::fs::PermissionsExt;
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (true, Some(setpriv)) = (fixture::is_root(), setpriv) else {
        eprintln!("needs root and setpriv to run strata as an unprivileged user; skipped");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 6);
    let repo = t.path().join("repo");
    strata_ok(&repo, &["init"]);
    backup(&repo, &src, &[]);
    // Hand the repository to `nobody`, who then restores.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(chown.success());
    let out = t.path().join("out");
    let run = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::common::bin())
        .args(["--repo", s(&repo), "restore", "latest", "--target", s(&out)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{text} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        text.contains("note: not running as root, owners of"),
        "{text}"
    );
    assert!(
        text.contains("1 device nodes or sockets not restored"),
        "{text}"
    );
    assert!(!out.join("null-dev").exists());
    // Everything else is there, owned by the restoring user.
    let m = std::fs::metadata(out.join("orders/2026/11/21/order-3.json")).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(
        std::fs::read(out.join("media/big.bin")).unwrap(),
        std::fs::read(src.join("media/big.bin")).unwrap()
    );
}

/// `system.posix_acl_default` value for `u::rwx,g::---,o::---` (what
/// `setfacl -d -m u::rwx,g::---,o::--- DIR` sets), in the kernel's xattr encoding.
fn default_acl_owner_only() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec(); // version
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 0), (0x20, 0)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes()); // no id
    }
    v
}

/// Restore creates files with their final permission bits and skips chown, chmod and the xattr
/// listing where nothing can differ; every case where something can (a umask that takes bits,
/// set-id bits, other owners, a default ACL or a foreign setgid group on the target, a
/// pre-existing directory with a default ACL) must still give exactly the snapshot's metadata.
#[test]
fn fast_metadata_paths_stay_exact() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fixture::build(&src, 11);
    let root = fixture::is_root();
    for (name, mode, owner) in [
        ("setid-other", 0o6755, Some((1234, 5678))),
        ("setgid-own", 0o2750, None),
        ("sticky", 0o1644, None),
        ("group-write", 0o664, None),
        ("all", 0o777, None),
        ("none", 0o000, None),
        ("other-owner", 0o640, Some((4321, 8765))),
    ] {
        let p = src.join("orders").join(name);
        std::fs::write(&p, name).unwrap();
        if let (true, Some((u, g))) = (root, owner) {
            std::os::unix::fs::lchown(&p, Some(u), Some(g)).unwrap();
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        xattr::set(&p, "user.case", name.as_bytes()).unwrap();
    }
    fixture::set_mtime(&src.join("orders"), 1_700_000_000, 5);
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);
    let want = capture(&src);
    let acl = default_acl_owner_only();
    let check = |label: &str, out: &Path, umask: Option<libc::mode_t>| {
        let mut cmd = Command::new(crate::common::bin());
        cmd.args(["--repo", s(&repo), "restore", "latest", "--target", s(out)]);
        if let Some(m) = umask {
            // SAFETY: umask is async-signal-safe and cannot fail.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(m);
                    Ok(())
                });
            }
        }
        let run = cmd.output().unwrap();
        assert!(
            run.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_same(label, &want, &capture(out));
        assert_eq!(rsync_diff(&src, out), "", "{label}: rsync sees differences");
    };

    // A missing target with a missing parent: both are created.
    check("umask 077", &t.path().join("new/umask077"), Some(0o077));
    check("umask 0", &t.path().join("umask0"), Some(0));

    let out = t.path().join("acl-root");
    std::fs::create_dir(&out).unwrap();
    xattr::set(&out, "system.posix_acl_default", &acl).unwrap();
    check("default ACL on the target", &out, None);

    let out = t.path().join("acl-sub");
    std::fs::create_dir_all(out.join("orders")).unwrap();
    xattr::set(out.join("orders"), "system.posix_acl_default", &acl).unwrap();
    check("default ACL on a directory in the target", &out, None);

    if root {
        let out = t.path().join("setgid-root");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, None, Some(5678)).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o2775)).unwrap();
        check("setgid target of another group", &out, None);
    }
}

/// What must not change about a file outside the target.
#[derive(Debug, PartialEq)]
struct Outside {
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    atime: (i64, i64),
    ino: u64,
    content: Vec<u8>,
}

/// The [`Outside`] state of `p`; its content is read with `O_NOATIME`, so that reading it
/// changes nothing.
fn outside_state(p: &Path) -> Outside {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut content = Vec::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
        .and_then(|mut f| f.read_to_end(&mut content))
        .unwrap();
    let m = std::fs::symlink_metadata(p).unwrap();
    Outside {
        mode: m.mode(),
        owner: (m.uid(), m.gid()),
        mtime: (m.mtime(), m.mtime_nsec()),
        atime: (m.atime(), m.atime_nsec()),
        ino: m.ino(),
        content,
    }
}

/// Issue 16: a file in the target that is a hard link to a file outside it, identical in content
/// and mtime, was found "unchanged" and got the snapshot's mode and owner in place — on the
/// shared inode, so a 0600 file outside became 04755. Such a file must be replaced (the link
/// broken, the outside inode untouched), under every overwrite mode, with and without
/// `--delete`; and a directory in the target that is a symlink to outside is never written
/// through.
#[test]
fn restore_never_changes_a_file_outside_through_a_hard_link_or_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let content = b"identical content, shared inode".to_vec();
    std::fs::write(src.join("f"), &content).unwrap();
    std::fs::set_permissions(src.join("f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    fixture::set_mtime(&src.join("f"), 1_700_000_000, 123);
    std::fs::write(src.join("d/x"), b"in d").unwrap();
    std::os::unix::fs::symlink("somewhere", src.join("l")).unwrap();
    fixture::set_mtime(&src.join("l"), 1_600_000_000, 7);
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);

    let outside = t.path().join("outside");
    let victim = outside.join("victim");
    let odir = outside.join("dir");
    for (mode, extra) in [
        ("never", &[][..]),
        ("never", &["--delete"][..]),
        ("if-changed", &[][..]),
        ("if-changed", &["--delete"][..]),
        ("always", &["--delete"][..]),
    ] {
        let _ = std::fs::remove_dir_all(&outside);
        std::fs::create_dir_all(&odir).unwrap();
        std::fs::write(odir.join("keep"), b"outside").unwrap();
        std::fs::write(&victim, &content).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        if fixture::is_root() {
            std::os::unix::fs::chown(&victim, Some(4321), Some(4321)).unwrap();
        }
        fixture::set_mtime(&victim, 1_700_000_000, 123);
        let out = t.path().join(format!("out-{mode}-{}", extra.len()));
        std::fs::create_dir(&out).unwrap();
        std::fs::hard_link(&victim, out.join("f")).unwrap();
        std::os::unix::fs::symlink(&odir, out.join("d")).unwrap();
        // A symlink outside, identical to the snapshot's but for its mtime, hard-linked in.
        let olink = outside.join("link");
        std::os::unix::fs::symlink("somewhere", &olink).unwrap();
        fixture::set_mtime(&olink, 1_500_000_000, 0);
        std::fs::hard_link(&olink, out.join("l")).unwrap();
        let link_before = std::fs::symlink_metadata(&olink).unwrap();
        // (capture_names reads the files: before the atime is taken.)
        let listing_before = capture_names(&outside);
        let before = outside_state(&victim);

        let mut args = vec!["latest", "--target", s(&out), "--overwrite", mode];
        args.extend_from_slice(extra);
        let (code, v) = restore_json(&repo, &args);
        let label = format!("--overwrite {mode} {extra:?}");
        // The symlink where the snapshot has a directory is a conflict under `never`.
        assert_eq!(code, if mode == "never" { 3 } else { 0 }, "{label}: {v}");

        assert_eq!(
            outside_state(&victim),
            before,
            "{label}: outside file changed"
        );
        assert_eq!(capture_names(&outside), listing_before, "{label}");
        let link_now = std::fs::symlink_metadata(&olink).unwrap();
        assert_eq!(
            (link_now.mtime(), link_now.uid(), link_now.ino()),
            (link_before.mtime(), link_before.uid(), link_before.ino()),
            "{label}: outside symlink changed"
        );
        let l = std::fs::symlink_metadata(out.join("l")).unwrap();
        assert_ne!(l.ino(), link_before.ino(), "{label}");
        assert_eq!((l.mtime(), l.mtime_nsec()), (1_600_000_000, 7), "{label}");
        assert_eq!(std::fs::read(odir.join("keep")).unwrap(), b"outside");
        assert!(
            !odir.join("x").exists(),
            "{label}: written through the symlink"
        );
        // The target's file is now its own inode with the snapshot's metadata.
        let m = std::fs::symlink_metadata(out.join("f")).unwrap();
        assert_ne!(
            m.ino(),
            before.ino,
            "{label}: still linked to the outside file"
        );
        assert_eq!((m.mode() & 0o7777, m.nlink()), (0o4755, 1), "{label}");
        assert_eq!(std::fs::read(out.join("f")).unwrap(), content);
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1, "{label}");
        let d = std::fs::symlink_metadata(out.join("d")).unwrap();
        if mode == "never" {
            assert!(d.file_type().is_symlink(), "{label}");
        } else {
            assert!(d.is_dir(), "{label}");
            assert_eq!(std::fs::read(out.join("d/x")).unwrap(), b"in d");
        }
    }
}

/// The rule above must not make reruns rewrite the snapshot's own hard links: a group restored
/// into the target is left alone while its metadata is right, and re-linked (both paths, one new
/// inode) when its mode was changed, even under `--overwrite never`.
#[test]
fn hard_link_group_in_the_target_is_kept_or_relinked_never_chmodded_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"linked").unwrap();
    std::fs::set_permissions(src.join("a"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let (_r, repo) = new_repo();
    backup(&repo, &src, &[]);
    let out = t.path().join("out");
    let target = ["latest", "--target", s(&out)];
    assert_eq!(restore_json(&repo, &target).0, 0);
    let ino = |p: &str| std::fs::metadata(out.join(p)).unwrap().ino();
    let first = ino("a");
    assert_eq!(ino("b"), first);

    // Rerun: identical, nothing rewritten.
    let (code, v) = restore_json(&repo, &target);
    assert_eq!((code, &v["replaced"]), (0, &serde_json::json!(0)), "{v}");
    assert_eq!((ino("a"), ino("b")), (first, first));

    // Mode changed on the shared inode: replaced and re-linked, never chmodded in place.
    std::fs::set_permissions(out.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut dry = target.to_vec();
    dry.push("--dry-run");
    let (code, v) = restore_json(&repo, &dry);
    assert_eq!(code, 0, "{v}");
    for p in ["a", "b"] {
        let act = v["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["path"] == p);
        assert_eq!(act.unwrap()["action"], "replace", "{p}: {v}");
    }
    let (code, v) = restore_json(&repo, &target);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["conflicts"], serde_json::json!([]), "{v}");
    assert_ne!(ino("a"), first);
    assert_eq!(ino("b"), ino("a"));
    let m = std::fs::metadata(out.join("b")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.nlink()), (0o640, 2));
    assert_eq!(rsync_diff(&src, &out), "");
}
