//! `strata diff` on the order-document fixture (see `history.rs`): every pair of consecutive
//! snapshots, a non-adjacent pair, a subtree, `--live` with and without `--content`, the JSON form,
//! the cost claim (a layer walk examines only what the layers hold) and the exit codes. Then a
//! model test: random changes and backup kinds, every pair of snapshots diffed by the layer walk,
//! by a walk of both trees and by a plain in-memory model, which also checks `find` and `log`.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use super::history::{scenario, Scenario, DOC};
use crate::common::fixture::set_mtime;
use crate::common::{strata, strata_ok};

/// The change lines of `strata diff ARGS` (the summary line removed), and the exit code.
fn diff_lines(s: &Scenario, args: &[&str]) -> (BTreeSet<String>, i32) {
    let mut a = vec!["diff"];
    a.extend_from_slice(args);
    let out = strata(&s.repo, &a);
    let code = out.status.code().unwrap();
    assert!(
        code == 0 || code == 1,
        "diff {args:?} failed ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let summary = lines.pop().expect("summary line");
    assert!(summary.contains(" added, "), "{summary}");
    (lines.into_iter().collect(), code)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn diff_json(s: &Scenario, args: &[&str]) -> Value {
    let mut a = vec!["diff", "--json"];
    a.extend_from_slice(args);
    let out = strata(&s.repo, &a);
    assert!(matches!(out.status.code(), Some(0 | 1)));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const M_DOC: &str = "M orders/2026/o-1.json  [content, size, mtime]";

#[test]
fn diff_each_consecutive_pair_and_a_distant_one() {
    let s = scenario();
    let id = |i: usize| s.ids[i].as_str();
    let expect: [&[&str]; 6] = [
        // S0 → S1
        &["+ orders/2026/o-1.json"],
        // S1 → S2 (siblings: both on S0)
        &[M_DOC, "+ docs/new.txt"],
        // S2 → S3
        &[
            M_DOC,
            "- orders/2025/old.json",
            "T docs/new.txt/  [file -> dir]",
            "+ docs/new.txt/inner",
            "m docs/readme.txt  [mode]",
        ],
        // S3 → S4 (a new full: no common layer)
        &["- orders/2026/o-1.json"],
        // S4 → S5
        &["+ orders/2026/o-1.json"],
        // S5 → S6 (siblings on S4; the document is in both layers, identical)
        &["M docs/readme.txt  [content, size, mtime]"],
    ];
    for (i, want) in expect.iter().enumerate() {
        let (got, code) = diff_lines(&s, &[id(i), id(i + 1)]);
        assert_eq!(got, set(want), "S{i} → S{}", i + 1);
        assert_eq!(code, 1);
    }
    // Non-adjacent, same chain family (S1 and S3 share S0).
    let (got, _) = diff_lines(&s, &[id(1), id(3)]);
    assert_eq!(
        got,
        set(&[
            M_DOC,
            "- orders/2025/old.json",
            "+ docs/new.txt/",
            "+ docs/new.txt/inner",
            "m docs/readme.txt  [mode]",
        ])
    );
    // Across two fulls (a walk of both trees).
    let (got, _) = diff_lines(&s, &[id(0), id(6)]);
    assert_eq!(
        got,
        set(&[
            "+ orders/2026/o-1.json",
            "- orders/2025/old.json",
            "+ docs/new.txt/",
            "+ docs/new.txt/inner",
            "M docs/readme.txt  [content, size, mode, mtime]",
        ])
    );
    // Reversed: additions become removals.
    let (got, _) = diff_lines(&s, &[id(1), id(0)]);
    assert_eq!(got, set(&["- orders/2026/o-1.json"]));
    // A subtree only.
    let (got, _) = diff_lines(&s, &[id(1), id(3), "orders"]);
    assert_eq!(got, set(&[M_DOC, "- orders/2025/old.json"]));
    let (got, _) = diff_lines(&s, &[id(1), id(3), "docs/new.txt"]);
    assert_eq!(got, set(&["+ docs/new.txt/", "+ docs/new.txt/inner"]));
    // No differences: exit 0, nothing but the summary.
    let (got, code) = diff_lines(&s, &[id(2), id(2)]);
    assert!(got.is_empty());
    assert_eq!(code, 0);
    let (got, code) = diff_lines(&s, &[id(5), id(6), "orders"]);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(code, 0);
}

#[test]
fn diff_json_form_and_cost() {
    let s = scenario();
    let id = |i: usize| s.ids[i].as_str();
    let v = diff_json(&s, &[id(2), id(3)]);
    assert_eq!(v["old"]["id"], id(2));
    assert_eq!(v["new"]["id"], id(3));
    let changes = v["changes"].as_array().unwrap();
    let by_path = |p: &str| changes.iter().find(|c| c["path"] == p).unwrap();
    let doc = by_path(DOC);
    assert_eq!(doc["change"], "modified");
    assert_eq!(
        doc["fields"],
        serde_json::json!(["content", "size", "mtime"])
    );
    assert_eq!(doc["metadata_only"], false);
    assert_eq!(doc["old"]["size"], s.doc[1].len() as u64);
    assert_eq!(doc["new"]["size"], s.doc[2].len() as u64);
    assert_ne!(doc["old"]["hash"], doc["new"]["hash"]);
    let readme = by_path("docs/readme.txt");
    assert_eq!(readme["change"], "modified");
    assert_eq!(readme["metadata_only"], true);
    assert_eq!(readme["old"]["mode"], "0644");
    assert_eq!(readme["new"]["mode"], "0600");
    assert_eq!(readme["old"]["hash"], readme["new"]["hash"]);
    let nt = by_path("docs/new.txt");
    assert_eq!(nt["change"], "type_changed");
    assert_eq!(
        (nt["old"]["type"].as_str(), nt["new"]["type"].as_str()),
        (Some("file"), Some("dir"))
    );
    assert_eq!(by_path("orders/2025/old.json")["new"], Value::Null);
    assert_eq!(by_path("docs/new.txt/inner")["old"], Value::Null);
    let sum = &v["summary"];
    assert_eq!(
        (
            sum["added"].as_u64(),
            sum["removed"].as_u64(),
            sum["content_modified"].as_u64(),
            sum["metadata_modified"].as_u64(),
            sum["type_changed"].as_u64(),
            sum["total"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(1), Some(5))
    );
    // Cost: S3's parent is S2, so only S3's layer is walked — a handful of paths, not the 300
    // files of bulk/ (which a walk of both trees, S3 → S4, has to examine).
    assert_eq!(sum["method"], "layers");
    assert_eq!(sum["layers"], serde_json::json!([id(3)]));
    let examined = sum["paths_examined"].as_u64().unwrap();
    assert!(examined < 30, "layer diff examined {examined} paths");
    let full = diff_json(&s, &[id(3), id(4)]);
    assert_eq!(full["summary"]["method"], "full_walk");
    assert!(full["summary"]["paths_examined"].as_u64().unwrap() > s.bulk as u64);
    // Siblings: the two layers above their common full.
    let sib = diff_json(&s, &[id(5), id(6)]);
    let layers: BTreeSet<&str> = sib["summary"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, [id(5), id(6)].into_iter().collect());
    assert!(sib["summary"]["paths_examined"].as_u64().unwrap() < 30);
}

#[test]
fn diff_live_directory() {
    let s = scenario();
    let src = s.src.to_str().unwrap();
    let last = s.ids[6].as_str();
    // The source has not changed since S6.
    let (got, code) = diff_lines(&s, &[last, "--live", src]);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(code, 0);

    // Same size, mtime restored: the ctime moved, so the file is read (backup's rule) and the
    // change is found without --content; no other file is read.
    let readme = s.src.join("docs/readme.txt");
    let old = fs::read(&readme).unwrap();
    let mut changed = old.clone();
    changed[0] = b'R';
    assert_eq!(changed.len(), old.len());
    fs::write(&readme, &changed).unwrap();
    set_mtime(&readme, 1_790_006_000, 0);
    set_mtime(&s.src.join("docs"), 1_780_000_000, 0);
    let (got, code) = diff_lines(&s, &[last, "--live", src]);
    assert_eq!(got, set(&["M docs/readme.txt  [content]"]));
    assert_eq!(code, 1);
    let v = diff_json(&s, &[last, "--live", src]);
    assert_eq!(
        v["summary"]["files_read"], 1,
        "only the file whose ctime moved is read"
    );
    let (got, code) = diff_lines(&s, &[last, "--live", src, "--content"]);
    assert_eq!(got, set(&["M docs/readme.txt  [content]"]));
    assert_eq!(code, 1);
    let v = diff_json(&s, &[last, "--live", src, "--content"]);
    assert!(v["summary"]["files_read"].as_u64().unwrap() > s.bulk as u64);
    assert_eq!(v["new"]["live"], src);
    // The old content back: read again (its ctime moved) and found identical.
    fs::write(&readme, &old).unwrap();
    set_mtime(&readme, 1_790_006_000, 0);
    set_mtime(&s.src.join("docs"), 1_780_000_000, 0);

    // New file, an mtime-only change (read, found identical), a removal, a subtree.
    fs::write(s.src.join("extra.txt"), b"extra").unwrap();
    set_mtime(&s.src.join("orders/2026/o-2.json"), 1_790_009_000, 0);
    fs::remove_file(s.src.join("bulk/f0007.txt")).unwrap();
    for d in ["", "bulk", "orders/2026"] {
        set_mtime(&s.src.join(d), 1_780_000_000, 0);
    }
    let (got, _) = diff_lines(&s, &[last, "--live", src]);
    assert_eq!(
        got,
        set(&[
            "+ extra.txt",
            "m orders/2026/o-2.json  [mtime]",
            "- bulk/f0007.txt"
        ])
    );
    let v = diff_json(&s, &[last, "--live", src]);
    assert_eq!(
        v["summary"]["files_read"], 2,
        "o-2.json and the rewritten readme"
    );
    let (got, _) = diff_lines(&s, &[last, "--live", src, "orders"]);
    assert_eq!(got, set(&["m orders/2026/o-2.json  [mtime]"]));

    // --exclude leaves paths out on both sides, as backup does: an excluded new file or
    // directory is not "added", an excluded file gone from disk is not "removed".
    fs::create_dir(s.src.join("cache")).unwrap();
    fs::write(s.src.join("cache/blob.bin"), b"x").unwrap();
    fs::write(s.src.join("orders/2026/debug.log"), b"log").unwrap();
    for d in ["", "orders/2026"] {
        set_mtime(&s.src.join(d), 1_780_000_000, 0);
    }
    let (got, _) = diff_lines(&s, &[last, "--live", src]);
    for line in ["+ cache/", "+ cache/blob.bin", "+ orders/2026/debug.log"] {
        assert!(got.contains(line), "{line} missing from {got:?}");
    }
    let excluded = [
        last,
        "--live",
        src,
        "--exclude",
        "cache",
        "--exclude",
        "*.log",
        "--exclude",
        "bulk/f0007.txt",
    ];
    let (got, code) = diff_lines(&s, &excluded);
    assert_eq!(
        got,
        set(&["+ extra.txt", "m orders/2026/o-2.json  [mtime]"])
    );
    assert_eq!(code, 1);
    let out = strata(
        &s.repo,
        &["diff", last, s.ids[5].as_str(), "--exclude", "x"],
    );
    assert_eq!(out.status.code(), Some(2), "--exclude needs --live");
}

#[test]
fn diff_exit_codes_and_bad_input() {
    let s = scenario();
    let id = |i: usize| s.ids[i].as_str();
    for (args, what) in [
        (vec![id(0), "nope"], "No snapshot matches"),
        (vec![id(0), id(1), "no/such/path"], "no/such/path"),
        (vec![id(0), id(1), "../x"], ".."),
        (vec![id(0)], "second snapshot"),
        (
            vec![id(0), "--live", "/nonexistent-strata-dir"],
            "does not exist",
        ),
        (vec![id(0), id(1), "--content"], "--live"),
    ] {
        let mut a = vec!["diff"];
        a.extend_from_slice(&args);
        let out = strata(&s.repo, &a);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Other commands keep exit 1 for errors.
    let out = strata(&s.repo, &["ls", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    strata_ok(&s.repo, &["diff", id(3), id(3)]);
}

// ----- model test: the layer walk against a walk of both trees and a plain model; find, log too -----

mod model {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::sync::Arc;

    use strata::backup::{backup, BackupOptions};
    use strata::diff::{diff_snapshots, Change, DiffOptions};
    use strata::layers::View;
    use strata::repo::{CreateOptions, Repo};
    use strata::snapshot::BackupKind;

    /// What the model keeps of a path: kind letter, mode, mtime, file bytes or link target.
    type State = BTreeMap<Vec<u8>, (char, u32, i64, Vec<u8>)>;

    fn capture(root: &Path) -> State {
        let mut out = State::new();
        let mut stack = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let abs = root.join(std::ffi::OsStr::from_bytes(&rel));
            let m = fs::symlink_metadata(&abs).unwrap();
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            let mode = m.mode() & 0o7777;
            if m.is_dir() {
                out.insert(rel.clone(), ('d', mode, mtime, Vec::new()));
                for e in fs::read_dir(&abs).unwrap() {
                    let name = e.unwrap().file_name();
                    stack.push(strata::layers::join(&rel, name.as_bytes()));
                }
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&abs).unwrap();
                out.insert(rel, ('l', mode, mtime, t.as_os_str().as_bytes().to_vec()));
            } else {
                out.insert(rel, ('-', mode, mtime, fs::read(&abs).unwrap()));
            }
        }
        out
    }

    /// Expected (tag, path) lines between two states, as `strata diff` tags them.
    fn expected(a: &State, b: &State) -> Vec<(char, Vec<u8>)> {
        let mut out = Vec::new();
        for (p, x) in a {
            match b.get(p) {
                None => out.push(('-', p.clone())),
                Some(y) if x.0 != y.0 => out.push(('T', p.clone())),
                Some(y) => {
                    let data = x.3 != y.3;
                    let meta = x.1 != y.1 || x.2 != y.2;
                    if data {
                        out.push(('M', p.clone()));
                    } else if meta {
                        out.push(('m', p.clone()));
                    }
                }
            }
        }
        for p in b.keys() {
            if !a.contains_key(p) {
                out.push(('+', p.clone()));
            }
        }
        // A type change from/to a directory also lists the subtree as removed/added: already
        // covered above, since the model holds every path.
        out.sort();
        out
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn dirs(root: &Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![root.to_path_buf()];
        let mut i = 0;
        while i < out.len() {
            for e in fs::read_dir(&out[i]).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    out.push(e.path());
                }
            }
            i += 1;
        }
        out
    }

    fn entries(root: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for d in dirs(root) {
            for e in fs::read_dir(&d).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        out.sort();
        out
    }

    fn remove(p: &Path) {
        if fs::symlink_metadata(p).unwrap().is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }

    /// One step of random changes. Directories deleted in one step are often recreated (with other
    /// children) in the next, so a pair of snapshots can span a deletion and a re-creation.
    fn mutate(root: &Path, rng: &mut Rng, step: u64, pending: &mut Vec<std::path::PathBuf>) {
        for p in std::mem::take(pending) {
            if p.parent().is_some_and(|d| d.is_dir()) && fs::symlink_metadata(&p).is_err() {
                fs::create_dir(&p).unwrap();
                fs::write(p.join(format!("r{step}")), b"recreated").unwrap();
            }
        }
        for _ in 0..1 + rng.below(4) {
            let ds = dirs(root);
            let es = entries(root);
            let name = format!("n{}", rng.below(6));
            match rng.below(10) {
                0 | 1 => {
                    let p = ds[rng.below(ds.len())].join(&name);
                    if !p.exists() {
                        fs::write(&p, format!("new {step} {}", rng.next())).unwrap();
                    }
                }
                2 if !es.is_empty() => {
                    let p = &es[rng.below(es.len())];
                    if fs::symlink_metadata(p).unwrap().is_file() {
                        fs::write(p, format!("changed {step} {}", rng.next())).unwrap();
                    }
                }
                3 if !es.is_empty() => remove(&es[rng.below(es.len())]),
                4 => {
                    let p = ds[rng.below(ds.len())].join(format!("d{}", rng.below(3)));
                    if !p.exists() && ds.len() < 12 {
                        fs::create_dir(&p).unwrap();
                        let child = format!("f{}", rng.below(3));
                        fs::write(p.join(child), format!("in {step}")).unwrap();
                    }
                }
                5 if !es.is_empty() => {
                    let p = &es[rng.below(es.len())];
                    let m = fs::symlink_metadata(p).unwrap();
                    if m.is_file() {
                        let mode = if m.mode() & 0o777 == 0o644 {
                            0o600
                        } else {
                            0o644
                        };
                        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
                    }
                }
                6 if !es.is_empty() => {
                    // Type change: file ↔ directory, in place.
                    let p = &es[rng.below(es.len())];
                    let was_dir = fs::symlink_metadata(p).unwrap().is_dir();
                    remove(p);
                    if was_dir {
                        fs::write(p, format!("was a dir {step}")).unwrap();
                    } else {
                        fs::create_dir(p).unwrap();
                        fs::write(p.join("x"), format!("was a file {step}")).unwrap();
                    }
                }
                7 | 8 if ds.len() > 1 => {
                    // Delete a directory with its contents; usually it comes back next step.
                    let d = ds[1 + rng.below(ds.len() - 1)].clone();
                    remove(&d);
                    if rng.below(3) > 0 {
                        pending.push(d);
                    }
                }
                _ => {
                    let p = ds[rng.below(ds.len())].join(format!("l{}", rng.below(2)));
                    if fs::symlink_metadata(&p).is_ok() {
                        remove(&p);
                    }
                    std::os::unix::fs::symlink(format!("target-{}", rng.below(3)), &p).unwrap();
                }
            }
        }
    }

    type Lines = Vec<(char, Vec<u8>, String)>;

    fn lines(a: &View, b: &View, full_walk: bool) -> (Lines, u64) {
        lines_under(a, b, full_walk, None).unwrap()
    }

    /// The diff as sorted (tag, path, fields); `None` when `path` exists on neither side.
    fn lines_under(
        a: &View,
        b: &View,
        full_walk: bool,
        path: Option<&[u8]>,
    ) -> Option<(Lines, u64)> {
        let mut out = Vec::new();
        let opts = DiffOptions {
            full_walk,
            path: path.map(|p| p.to_vec()),
            ..Default::default()
        };
        let res = diff_snapshots(a, b, &opts, &mut |it| {
            let tag = match it.change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::TypeChanged => 'T',
                Change::Modified if it.metadata_only() => 'm',
                Change::Modified => 'M',
            };
            let fields: Vec<&str> = it.fields.iter().map(|f| f.name()).collect();
            out.push((tag, it.path.clone(), fields.join(",")));
            Ok(())
        });
        let sum = match res {
            Err(strata::Error::PathNotFound { .. }) if path.is_some() => return None,
            r => r.unwrap(),
        };
        assert_eq!(sum.total(), out.len() as u64);
        out.sort();
        Some((out, sum.paths_examined))
    }

    #[test]
    fn diff_find_and_log_against_a_model() {
        for seed in 1..=8u64 {
            let t = tempfile::tempdir().unwrap();
            let src = t.path().join("src");
            fs::create_dir(&src).unwrap();
            for i in 0..40 {
                fs::write(src.join(format!("static{i:02}")), format!("s{i}")).unwrap();
            }
            let repo = strata::open::Open::new(t.path().join("repo"))
                .create(&CreateOptions::default())
                .unwrap();
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut snaps = Vec::new();
            let mut states = Vec::new();
            let mut pending = Vec::new();
            for step in 0..12u64 {
                if step > 0 {
                    mutate(&src, &mut rng, step, &mut pending);
                }
                let kind = match (step, rng.below(5)) {
                    (0, _) | (_, 0) => BackupKind::Full,
                    (_, 1) => BackupKind::Differential,
                    _ => BackupKind::Incremental,
                };
                states.push(capture(&src));
                let opts = BackupOptions {
                    kind: Some(kind),
                    threads: 2,
                    ..BackupOptions::default()
                };
                snaps.push(backup(&repo, &src, &opts).unwrap().snapshot);
            }
            let views: Vec<Arc<View>> = snaps
                .iter()
                .map(|s| Arc::new(View::open(&repo, &s.id).unwrap()))
                .collect();
            check_find_and_log(&repo, &snaps, &states, seed);
            for i in 0..views.len() {
                for j in 0..views.len() {
                    let (layered, _) = lines(&views[i], &views[j], false);
                    let (full, _) = lines(&views[i], &views[j], true);
                    assert_eq!(layered, full, "seed {seed}: S{i} → S{j}");
                    let tags: Vec<(char, Vec<u8>)> =
                        layered.iter().map(|(t, p, _)| (*t, p.clone())).collect();
                    assert_eq!(
                        tags,
                        expected(&states[i], &states[j]),
                        "seed {seed}: S{i} → S{j} against the model"
                    );
                    // Restricted to each directory of either side (below a directory that was
                    // deleted and recreated, the layer walk must still see old children).
                    let mut dirs: Vec<&Vec<u8>> = states[i]
                        .iter()
                        .chain(states[j].iter())
                        .filter(|(p, e)| e.0 == 'd' && !p.is_empty())
                        .map(|(p, _)| p)
                        .collect();
                    dirs.sort();
                    dirs.dedup();
                    for d in dirs {
                        let l = lines_under(&views[i], &views[j], false, Some(d));
                        let f = lines_under(&views[i], &views[j], true, Some(d));
                        assert_eq!(
                            l.map(|x| x.0),
                            f.map(|x| x.0),
                            "seed {seed}: S{i} → S{j} under {}",
                            String::from_utf8_lossy(d)
                        );
                    }
                }
            }
        }
    }

    /// `find` and `log` on the same random history, against the model.
    fn check_find_and_log(
        repo: &Arc<Repo>,
        snaps: &[strata::snapshot::Snapshot],
        states: &[State],
        seed: u64,
    ) {
        use strata::history::{self, Event, FindOptions, Pattern};
        for pat in ["n1", "f*", "d0/**", "*/n2"] {
            let (matches, stats) =
                history::find(repo, &Pattern::new(pat).unwrap(), &FindOptions::default()).unwrap();
            assert_eq!(stats.snapshots, snaps.len() as u64);
            let got: BTreeMap<Vec<u8>, Vec<usize>> = matches
                .iter()
                .map(|m| {
                    let idx = m
                        .hits
                        .iter()
                        .map(|(s, _)| snaps.iter().position(|x| x.id == s.id).unwrap())
                        .collect();
                    (m.path.clone(), idx)
                })
                .collect();
            let glob = globset::GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .unwrap()
                .compile_matcher();
            let mut want: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
            for (j, st) in states.iter().enumerate() {
                for p in st.keys().filter(|p| !p.is_empty()) {
                    let subject = if pat.contains('/') {
                        &p[..]
                    } else {
                        p.rsplit(|&b| b == b'/').next().unwrap()
                    };
                    if glob.is_match(std::ffi::OsStr::from_bytes(subject)) {
                        want.entry(p.clone()).or_default().push(j);
                    }
                }
            }
            assert_eq!(got, want, "seed {seed}: find {pat}");
        }
        // log of every path that ever existed.
        let all: std::collections::BTreeSet<&Vec<u8>> =
            states.iter().flat_map(|s| s.keys()).collect();
        for p in all {
            let steps = history::log(repo, snaps, p).unwrap();
            let mut want = Vec::new();
            let mut prev: Option<&(char, u32, i64, Vec<u8>)> = None;
            let mut seen = false;
            for st in states {
                let cur = st.get(p);
                let ev = match (prev, cur) {
                    (None, None) => None,
                    (Some(_), None) => Some(Event::Deleted),
                    (None, Some(_)) if !seen => Some(Event::Created),
                    (None, Some(_)) => Some(Event::Recreated),
                    (Some(a), Some(b)) if a.0 != b.0 => Some(Event::TypeChanged),
                    (Some(a), Some(b)) if a.3 != b.3 => Some(Event::Modified),
                    (Some(a), Some(b)) if a.1 != b.1 || a.2 != b.2 => Some(Event::MetadataChanged),
                    _ => None,
                };
                want.extend(ev);
                seen |= cur.is_some();
                prev = cur;
            }
            let got: Vec<Event> = steps.iter().map(|s| s.event).collect();
            assert_eq!(got, want, "seed {seed}: log {}", String::from_utf8_lossy(p));
        }
    }
}
