//! `strata log`, `strata find` and the mount's `versions/` on the order-document fixture: one
//! document `orders/2026/o-1.json` is created, changed twice, deleted and recreated (with the
//! first version's content), between backups of every kind, next to other files that change too.
//! The fixture (`scenario`) is shared with `diff.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::fixture::set_mtime;
use crate::common::mount::{fuse_available, run, with_timeout, Mount};
use crate::common::{backup, files_under, new_repo, strata, strata_ok};

pub const DOC: &str = "orders/2026/o-1.json";
/// Constant mtime every directory is reset to after each step, so that directories show up in a
/// diff only when the test changes them on purpose.
const DIR_MTIME: i64 = 1_780_000_000;

/// The repository after the seven backups S0..S6.
pub struct Scenario {
    pub _t: tempfile::TempDir,
    pub repo: PathBuf,
    pub src: PathBuf,
    /// Full snapshot ids, S0..S6.
    pub ids: Vec<String>,
    /// Backup times (ns), S0..S6.
    pub times: Vec<i64>,
    /// The document's content in its four versions.
    pub doc: [Vec<u8>; 4],
    /// Files in `bulk/` that never change (so a layer walk is visibly cheaper than a tree walk).
    pub bulk: usize,
}

fn write(p: &Path, data: &[u8], mtime: i64) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    set_mtime(p, mtime, 0);
}

fn reset_dir_mtimes(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
        dirs.push(d);
    }
    for d in dirs {
        set_mtime(&d, DIR_MTIME, 0);
    }
}

/// Builds the fixture and backs it up seven times:
///
/// | snap | kind | parent | change |
/// |---|---|---|---|
/// | S0 | full | – | o-2.json, 2025/old.json, docs/readme.txt, bulk/* |
/// | S1 | incremental | S0 | + o-1.json (v1) |
/// | S2 | differential | S0 | o-1.json → v2; + docs/new.txt |
/// | S3 | incremental | S2 | o-1.json → v3; − 2025/old.json; docs/new.txt file → dir with `inner`; readme chmod 600 |
/// | S4 | full | – | − o-1.json |
/// | S5 | incremental | S4 | o-1.json recreated with v1's content (new mtime) |
/// | S6 | differential | S4 | readme.txt content changes; o-1.json unchanged |
pub fn scenario() -> Scenario {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    let doc_path = src.join(DOC);
    let doc = [
        br#"{"order":1,"items":["tea"]}"#.to_vec(),
        br#"{"order":1,"items":["tea","milk"]}"#.to_vec(),
        br#"{"order":1,"items":["tea","milk","honey"],"paid":true}"#.to_vec(),
        br#"{"order":1,"items":["tea"]}"#.to_vec(),
    ];
    let bulk = 300;
    write(
        &src.join("orders/2026/o-2.json"),
        b"{\"order\":2}",
        1_790_000_000,
    );
    write(
        &src.join("orders/2025/old.json"),
        b"{\"order\":0}",
        1_760_000_000,
    );
    write(&src.join("docs/readme.txt"), b"read me\n", 1_790_000_100);
    for i in 0..bulk {
        write(
            &src.join(format!("bulk/f{i:04}.txt")),
            format!("bulk file {i}\n").as_bytes(),
            1_790_000_000,
        );
    }
    let mut ids = Vec::new();
    let step = |kind: &str, ids: &mut Vec<String>| {
        reset_dir_mtimes(&src);
        ids.push(backup(&repo, &src, &["--kind", kind]));
    };
    step("full", &mut ids);
    write(&doc_path, &doc[0], 1_790_001_000);
    step("incremental", &mut ids);
    write(&doc_path, &doc[1], 1_790_002_000);
    write(&src.join("docs/new.txt"), b"new\n", 1_790_002_000);
    step("differential", &mut ids);
    write(&doc_path, &doc[2], 1_790_003_000);
    fs::remove_file(src.join("orders/2025/old.json")).unwrap();
    fs::remove_file(src.join("docs/new.txt")).unwrap();
    write(&src.join("docs/new.txt/inner"), b"inner\n", 1_790_003_000);
    fs::set_permissions(
        src.join("docs/readme.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    step("incremental", &mut ids);
    fs::remove_file(&doc_path).unwrap();
    step("full", &mut ids);
    write(&doc_path, &doc[3], 1_790_005_000);
    step("incremental", &mut ids);
    write(
        &src.join("docs/readme.txt"),
        b"read me, v2\n",
        1_790_006_000,
    );
    step("differential", &mut ids);

    let out = strata_ok(&repo, &["snapshots", "--json"]);
    let snaps: Value = serde_json::from_slice(&out.stdout).unwrap();
    let times = ids
        .iter()
        .map(|id| {
            snaps
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id.as_str())
                .unwrap()["time_ns"]
                .as_i64()
                .unwrap()
        })
        .collect();
    Scenario {
        _t: t,
        repo,
        src,
        ids,
        times,
        doc,
        bulk,
    }
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// RFC 3339 with nanoseconds, to pass an exact snapshot time as a bound.
fn exact_time(ns: i64) -> String {
    let secs = strata::time::rfc3339(ns.div_euclid(1_000_000_000) * 1_000_000_000);
    format!(
        "{}.{:09}Z",
        secs.trim_end_matches('Z'),
        ns.rem_euclid(1_000_000_000)
    )
}

/// blake3 over size and (offset, chunk id) of the file's chunks, computed independently from the
/// bytes: a small file is one chunk at offset 0 whose id is blake3 of its content.
fn expected_hash(content: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(content.len() as u64).to_be_bytes());
    h.update(&0u64.to_be_bytes());
    h.update(blake3::hash(content).as_bytes());
    h.finalize().to_hex().to_string()
}

#[test]
fn log_lists_exactly_the_versions_of_the_order_document() {
    let s = scenario();
    let out = strata_ok(&s.repo, &["log", DOC, "--json"]);
    let v = json(&out);
    assert_eq!(v["path"], DOC);
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0]["source"], s.src.to_str().unwrap());
    assert_eq!(sources[0]["versions"], 4);
    let steps = sources[0]["steps"].as_array().unwrap();
    // (event, first snapshot, layer, snapshots, last snapshot, content)
    type Want<'a> = (&'a str, usize, Option<usize>, u64, usize, Option<&'a [u8]>);
    let want: Vec<Want> = vec![
        ("created", 1, Some(1), 1, 1, Some(&s.doc[0])),
        ("modified", 2, Some(2), 1, 2, Some(&s.doc[1])),
        ("modified", 3, Some(3), 1, 3, Some(&s.doc[2])),
        ("deleted", 4, None, 1, 4, None),
        // S6's own layer holds the document again (it is relative to S4, where it was absent),
        // but it is identical to S5's: one version, two snapshots, first seen in S5's layer.
        ("recreated", 5, Some(5), 2, 6, Some(&s.doc[3])),
    ];
    assert_eq!(steps.len(), want.len(), "{steps:#?}");
    for (st, (event, first, layer, n, last, content)) in steps.iter().zip(want) {
        assert_eq!(st["event"], event, "{st}");
        assert_eq!(st["snapshot"], s.ids[first].as_str(), "{st}");
        assert_eq!(st["last_snapshot"], s.ids[last].as_str(), "{st}");
        assert_eq!(st["snapshots"], n, "{st}");
        assert_eq!(
            st["layer"].as_str(),
            layer.map(|l| s.ids[l].as_str()),
            "{st}"
        );
        match content {
            Some(c) => {
                assert_eq!(st["type"], "file");
                assert_eq!(st["size"], c.len() as u64);
                assert_eq!(st["hash"], expected_hash(c).as_str(), "{st}");
            }
            None => assert!(st.get("type").is_none() && st.get("hash").is_none()),
        }
    }
    // Same content, same hash: the recreated document equals the first version.
    assert_eq!(steps[0]["hash"], steps[4]["hash"]);
    assert_ne!(steps[0]["mtime_ns"], steps[4]["mtime_ns"]);

    // Human form: a header, then one line per step in the same order.
    let out = strata_ok(&s.repo, &["log", DOC]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with(DOC) && lines[0].ends_with("4 version(s)"));
    for (line, (event, snap)) in lines[1..].iter().zip([
        ("created", 1),
        ("modified", 2),
        ("modified", 3),
        ("deleted", 4),
        ("recreated", 5),
    ]) {
        assert!(line.contains(event), "{line}");
        assert!(line.contains(&s.ids[snap][..8]), "{line}");
    }
    assert!(lines[5].contains("(2 snapshots)"), "{}", lines[5]);

    // A path no snapshot ever had is an error naming it; a bad source too.
    let out = strata(&s.repo, &["log", "orders/2026/o-9.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("orders/2026/o-9.json"));
    let out = strata(&s.repo, &["log", DOC, "--source", "/nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope"));
    let out = strata(&s.repo, &["log", "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(1));
}

fn find_json(s: &Scenario, args: &[&str]) -> Value {
    let mut a = vec!["find", "--json"];
    a.extend_from_slice(args);
    json(&strata_ok(&s.repo, &a))
}

/// Path → snapshot indexes (S0..S6) that contain it.
fn find_hits(s: &Scenario, v: &Value) -> Vec<(String, Vec<usize>)> {
    v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let snaps = m["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| s.ids.iter().position(|i| h["id"] == i.as_str()).unwrap())
                .collect();
            (m["path"].as_str().unwrap().to_string(), snaps)
        })
        .collect()
}

#[test]
fn find_reports_matching_snapshots_within_time_bounds() {
    let s = scenario();
    let v = find_json(&s, &["o-1.json"]);
    assert_eq!(
        find_hits(&s, &v),
        vec![(DOC.to_string(), vec![1, 2, 3, 5, 6])]
    );
    let hits = v["matches"][0]["snapshots"].as_array().unwrap();
    let sizes: Vec<u64> = hits.iter().map(|h| h["size"].as_u64().unwrap()).collect();
    let want: Vec<u64> = [0, 1, 2, 3, 3]
        .iter()
        .map(|&i| s.doc[i].len() as u64)
        .collect();
    assert_eq!(sizes, want);
    assert_eq!(hits[0]["hash"], expected_hash(&s.doc[0]).as_str());
    assert_eq!(hits[4]["hash"], expected_hash(&s.doc[3]).as_str());
    assert_eq!(
        hits[1]["mtime"],
        strata::time::rfc3339(1_790_002_000_000_000_000).as_str()
    );
    assert_eq!(hits[1]["mtime_ns"], 1_790_002_000_000_000_000i64);
    // Each distinct layer is scanned once: 7 snapshots, 7 layers.
    assert_eq!(v["stats"]["snapshots"], 7);
    assert_eq!(v["stats"]["layers_scanned"], 7);

    // --since/--until with exact snapshot times (inclusive bounds).
    let (since, until) = (exact_time(s.times[2]), exact_time(s.times[5]));
    let v = find_json(&s, &["o-1.json", "--since", &since, "--until", &until]);
    assert_eq!(find_hits(&s, &v), vec![(DOC.to_string(), vec![2, 3, 5])]);
    assert_eq!(v["stats"]["snapshots"], 4); // S2..S5
    let v = find_json(&s, &["o-1.json", "--since", &exact_time(s.times[6] + 1)]);
    assert!(v["matches"].as_array().unwrap().is_empty());
    // Dates: a date bound covers its whole day.
    let today = strata::time::rfc3339(s.times[0])[..10].to_string();
    let v = find_json(&s, &["o-1.json", "--since", &today, "--until", &today]);
    assert_eq!(find_hits(&s, &v)[0].1, vec![1, 2, 3, 5, 6]);
    let v = find_json(&s, &["o-1.json", "--until", "2000-01-01"]);
    assert!(v["matches"].as_array().unwrap().is_empty());

    // A path glob: `*` stays within a component, `**` spans them.
    let v = find_json(&s, &["orders/*/*.json"]);
    assert_eq!(
        find_hits(&s, &v),
        vec![
            ("orders/2025/old.json".to_string(), vec![0, 1, 2]),
            (DOC.to_string(), vec![1, 2, 3, 5, 6]),
            ("orders/2026/o-2.json".to_string(), (0..7).collect()),
        ]
    );
    let v = find_json(&s, &["**/inner"]);
    assert_eq!(
        find_hits(&s, &v),
        vec![("docs/new.txt/inner".to_string(), vec![3, 4, 5, 6])]
    );
    let v = find_json(&s, &["o-1.json", "--source", "/elsewhere"]);
    assert!(v["matches"].as_array().unwrap().is_empty());

    // Human form: the path, then one line per snapshot.
    let out = strata_ok(&s.repo, &["find", "o-1.json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], DOC);
    assert_eq!(lines.len(), 7, "{text}");
    assert!(
        lines[1].contains(&s.ids[1][..8]) && lines[1].contains(&expected_hash(&s.doc[0])[..12])
    );

    for bad in [
        &["find", "o-1.json", "--since", "yesterday"][..],
        &["find", "["][..],
    ] {
        let out = strata(&s.repo, bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(!out.stderr.is_empty());
    }
}

fn ls(dir: &Path) -> Vec<String> {
    let out = run(
        Command::new("ls").arg("-1").arg(dir),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "ls {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Version names as documented: the first-seen snapshot's time, `-2`, `-3`… for repeats.
fn version_names(times: &[i64]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last = String::new();
    let mut n = 0;
    for &t in times {
        let name = strata::time::rfc3339(t);
        if name == last {
            n += 1;
            out.push(format!("{name}-{n}"));
        } else {
            n = 1;
            last = name.clone();
            out.push(name);
        }
    }
    out
}

#[test]
fn mount_versions_directory_with_real_tools() {
    if !fuse_available() {
        return;
    }
    let s = scenario();
    let names = crate::common::mount::snapshot_names(&s.repo);
    let m = Mount::start(&s.repo, &[]);
    let mp = m.path.clone();
    with_timeout(Duration::from_secs(180), move || {
        let enc = s
            .src
            .to_str()
            .unwrap()
            .replace('%', "%25")
            .replace('/', "%2F");
        assert_eq!(ls(&mp.join("versions")), vec![enc.clone()]);
        let root = mp.join("versions").join(&enc);
        assert_eq!(ls(&root), vec!["bulk", "docs", "orders"]);
        // The union of all snapshots' paths: 2025/ and old.json are gone from later snapshots.
        assert_eq!(ls(&root.join("orders")), vec!["2025", "2026"]);
        assert_eq!(ls(&root.join("orders/2025")), vec!["old.json"]);
        assert_eq!(ls(&root.join("orders/2026")), vec!["o-1.json", "o-2.json"]);

        // The document: four versions, named by first-seen time, oldest first.
        let dir = root.join(DOC);
        let want = version_names(&[s.times[1], s.times[2], s.times[3], s.times[5]]);
        let mut got = ls(&dir);
        got.sort();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(got, sorted);
        let tmp = tempfile::tempdir().unwrap();
        for (i, name) in want.iter().enumerate() {
            let v = dir.join(name);
            let out = run(Command::new("cat").arg(&v), Duration::from_secs(30));
            assert!(out.status.success());
            assert_eq!(out.stdout, s.doc[i], "version {i} ({name})");
            let expect = tmp.path().join(format!("v{i}"));
            fs::write(&expect, &s.doc[i]).unwrap();
            let copy = tmp.path().join(format!("copy{i}"));
            let cp = run(
                Command::new("cp").arg(&v).arg(&copy),
                Duration::from_secs(30),
            );
            assert!(
                cp.status.success(),
                "{}",
                String::from_utf8_lossy(&cp.stderr)
            );
            let cmp = run(
                Command::new("cmp").arg(&copy).arg(&expect),
                Duration::from_secs(30),
            );
            assert!(cmp.status.success(), "cmp version {i}");
            let md = fs::metadata(&v).unwrap();
            assert!(md.is_file());
            assert_eq!(md.len(), s.doc[i].len() as u64);
        }
        // A version is the snapshot's own file: same bytes as under snapshots/.
        let in_snap = mp.join("snapshots").join(&names[5]).join(DOC);
        let cmp = run(
            Command::new("cmp").arg(&in_snap).arg(dir.join(&want[3])),
            Duration::from_secs(30),
        );
        assert!(cmp.status.success());
        // Unknown names are ENOENT; the tree is read-only.
        assert!(!dir.join("1999-01-01T00:00:00Z").exists());
        assert!(fs::write(dir.join("x"), b"x").is_err());

        // A path that was a file (S2) and then a directory (S3…): its child and its one version.
        let nt = root.join("docs/new.txt");
        let mut want_nt = vec!["inner".to_string(), strata::time::rfc3339(s.times[2])];
        want_nt.sort();
        let mut got_nt = ls(&nt);
        got_nt.sort();
        assert_eq!(got_nt, want_nt);
        assert_eq!(
            fs::read(nt.join(strata::time::rfc3339(s.times[2]))).unwrap(),
            b"new\n"
        );
        assert_eq!(ls(&nt.join("inner")).len(), 1);

        // `cp -r` of a whole history directory copies every version.
        let out_dir = tmp.path().join("hist");
        let cp = run(
            Command::new("cp").arg("-r").arg(&dir).arg(&out_dir),
            Duration::from_secs(30),
        );
        assert!(cp.status.success());
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 4);
    });
}

/// What a script does most: fetch the order document as it was in a given snapshot, by
/// `strata cat` and by `strata restore --path` (a named option, the same as a positional path),
/// with `--json`; and a clear failure for a snapshot in which the document did not exist.
#[test]
fn restore_one_order_document_from_a_given_day() {
    let s = scenario();
    for (i, want) in [
        (1, &s.doc[0]),
        (2, &s.doc[1]),
        (3, &s.doc[2]),
        (5, &s.doc[3]),
    ] {
        let cat = strata_ok(&s.repo, &["cat", &s.ids[i], DOC]);
        assert_eq!(&cat.stdout, want, "cat in S{i}");
        let target = s._t.path().join(format!("day{i}"));
        let out = strata_ok(
            &s.repo,
            &[
                "restore",
                &s.ids[i],
                "--path",
                DOC,
                "--target",
                target.to_str().unwrap(),
                "--json",
            ],
        );
        let v = json(&out);
        assert_eq!(v["files"], 1, "S{i}: {v}");
        assert_eq!(
            &fs::read(target.join(DOC)).unwrap(),
            want,
            "restore in S{i}"
        );
        let restored: Vec<_> = files_under(&target).into_keys().collect();
        assert_eq!(
            restored,
            vec![PathBuf::from(DOC)],
            "only the document, S{i}"
        );
    }
    let target = s._t.path().join("day4");
    let out = strata(
        &s.repo,
        &[
            "restore",
            &s.ids[4],
            "--path",
            DOC,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("o-1.json"), "the error names the path: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
