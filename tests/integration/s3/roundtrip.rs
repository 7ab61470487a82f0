//! The round trip on a bucket: every snapshot kind, over a tree with every fidelity case and
//! real edits (add, change, delete, rename, chmod, symlink, hard link, xattr), restores exactly;
//! and every reading command says on the bucket what it says on a local repository fed the same
//! backups at the same (fake) times.

use std::path::Path;

use super::{assert_restores, history, Local};
use crate::common::s3::{S3Repo, S3Server};

/// The bucket's output with its snapshot ids (full and short) replaced by the local
/// repository's, step by step: the only thing that may differ between the two.
fn as_local(text: &[u8], bucket_ids: &[String], local_ids: &[String]) -> String {
    let mut t = String::from_utf8_lossy(text).into_owned();
    for (b, l) in bucket_ids.iter().zip(local_ids) {
        t = t.replace(b.as_str(), l).replace(&b[..8], &l[..8]);
    }
    t
}

/// `text` without the `,"requests":{...}` field (a flat object) of a JSON result.
fn without_requests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(",\"requests\":{") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find('}').map_or(tail.len(), |j| j + 1);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `text` with every content hash (a run of 12 or more hex digits after `hash`) renamed by order
/// of first appearance: an encrypted repository's hashes are keyed by its own key, so two
/// repositories show the same contents under different hashes, but the same ones where equal.
fn hashes_by_order(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("hash") {
        let (head, tail) = rest.split_at(i + 4);
        out.push_str(head);
        let skip = tail.len() - tail.trim_start_matches([' ', '"', ':']).len();
        out.push_str(&tail[..skip]);
        let tail = &tail[skip..];
        let n = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if n >= 12 {
            let h = tail[..n].to_string();
            let k = seen.iter().position(|x| *x == h).unwrap_or_else(|| {
                seen.push(h);
                seen.len() - 1
            });
            out.push_str(&format!("<h{k}>"));
        } else {
            out.push_str(&tail[..n]);
        }
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

/// `snapshots --json` without what measures this run rather than the data: the time taken, the
/// bytes read, and
/// the stored sizes (they include the compressed snapshot blob, which holds the time taken; and
/// in an encrypted repository keyed chunk ids, which compress differently under two keys).
fn snapshots_json(out: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(out).unwrap();
    for s in v.as_array_mut().unwrap() {
        let stats = s["stats"].as_object_mut().unwrap();
        stats.remove("elapsed_ms");
        // Stored bytes include the compressed snapshot blob, which holds timing figures
        // (elapsed_ms) whose encoded length varies from run to run; sealing adds random nonces.
        stats.remove("stored_bytes");
        // A file changed within a timestamp tick of its read is read twice (the racily-clean
        // rule): bytes read depend on how soon after the edit each backup ran.
        stats.remove("read_bytes");
    }
    v
}

fn round_trip(encrypted: bool) {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let mut repo = server.repo("bucket", "repo", &t.path().join("cache"));
    let mut local = Local {
        path: t.path().join("local"),
        password_file: None,
    };
    if encrypted {
        let pass = t.path().join("passphrase");
        std::fs::write(&pass, "test passphrase\n").unwrap();
        repo = repo.with_password_file(&pass);
        local.password_file = Some(pass);
    }
    let src = t.path().join("src");
    let steps = history(&repo, Some(&local), &src, &t.path().join("copies"), 7, 5);

    // Every snapshot restores to the source as it was.
    assert_restores(&repo, &steps, t.path(), "bucket");

    // The list: same kinds, parents, times, sizes and stats.
    let b_ids = repo.snapshot_ids();
    let l_ids: Vec<String> =
        serde_json::from_slice::<serde_json::Value>(&local.ok(&["snapshots", "--json"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(
        b_ids,
        steps.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(b_ids.len(), l_ids.len());
    // What the bucket's requests cost is the one field only the bucket's JSON results carry.
    let norm = |t: String| {
        let t = without_requests(&t);
        if encrypted {
            hashes_by_order(&t)
        } else {
            t
        }
    };
    let same = |args: &[&str]| {
        let (b, l) = (repo.run(args), local.run(args));
        assert_eq!(
            b.status.code(),
            l.status.code(),
            "{args:?}: exit codes; bucket stderr {}",
            String::from_utf8_lossy(&b.stderr)
        );
        assert_eq!(
            norm(as_local(&b.stdout, &b_ids, &l_ids)),
            norm(String::from_utf8_lossy(&l.stdout).into_owned()),
            "{args:?}: the bucket's output differs from the local repository's"
        );
    };
    let b_list = repo.ok(&["snapshots", "--json"]).stdout;
    let l_list = local.ok(&["snapshots", "--json"]).stdout;
    assert_eq!(
        snapshots_json(as_local(&b_list, &b_ids, &l_ids).as_bytes()),
        snapshots_json(&l_list)
    );
    same(&["snapshots"]);

    // Per snapshot (named by the local id on the local side): ls and cat.
    for (b, l) in b_ids.iter().zip(&l_ids) {
        for args in [&["ls", "-R", "-l"][..], &["ls", "-R", "--json"]] {
            let mut ba = args.to_vec();
            ba.push(b);
            let mut la = args.to_vec();
            la.push(l);
            let (bo, lo) = (repo.ok(&ba), local.ok(&la));
            assert_eq!(
                norm(as_local(&bo.stdout, &b_ids, &l_ids)),
                norm(String::from_utf8_lossy(&lo.stdout).into_owned()),
                "{args:?} of snapshot {b}"
            );
        }
        for path in [
            "media/big.bin",
            "logs/app.log",
            "orders/2026/11/20/order-2.json",
            "sparse.img",
        ] {
            let (bo, lo) = (repo.ok(&["cat", b, path]), local.ok(&["cat", l, path]));
            assert!(bo.stdout == lo.stdout, "cat {path} of snapshot {b}");
        }
    }

    // Across snapshots: log, find, diff (by position in the history).
    for path in [
        "orders/2026/11/20/order-2.json",
        "typechange",
        "media/big.bin",
        "link-to-order",
    ] {
        same(&["log", path]);
    }
    same(&["find", "*.json"]);
    same(&["find", "orders/**"]);
    for (a, b) in [(0, 3), (1, 2), (2, 4), (3, 4)] {
        for json in [false, true] {
            let mut ba = vec!["diff", b_ids[a].as_str(), b_ids[b].as_str()];
            let mut la = vec!["diff", l_ids[a].as_str(), l_ids[b].as_str()];
            if json {
                ba.push("--json");
                la.push("--json");
            }
            let (bo, lo) = (repo.run(&ba), local.run(&la));
            assert_eq!(bo.status.code(), lo.status.code(), "diff {a} {b}");
            assert_eq!(
                norm(as_local(&bo.stdout, &b_ids, &l_ids)),
                norm(String::from_utf8_lossy(&lo.stdout).into_owned()),
                "diff {a} {b} (json {json})"
            );
        }
    }
    same(&["diff", "latest", "--live", super::s(&src)]);

    // Both are clean, data included.
    let (code, text) = super::check_read_data(&repo);
    assert_eq!(code, Some(0), "{text}");
    local.ok(&["check", "--read-data"]);
    check_bucket_layout(&repo, encrypted);
}

/// The bucket holds the repository as documented: `config`, `packs/XX/N.pack`, `log/`, `keys/`
/// when encrypted, and no lock once every command has ended.
fn check_bucket_layout(repo: &S3Repo, encrypted: bool) {
    assert!(repo.objects.join("config").is_file());
    let packs = repo.objects_under("packs");
    assert!(!packs.is_empty());
    for p in &packs {
        let rel = p.strip_prefix(repo.objects.join("packs")).unwrap();
        let parts: Vec<_> = rel.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(parts.len(), 2, "{rel:?}");
        assert!(
            parts[1].ends_with(".pack") && parts[1].len() == 21,
            "{rel:?}"
        );
    }
    assert!(!repo.objects_under("log").is_empty());
    assert_eq!(!repo.objects_under("keys").is_empty(), encrypted);
    assert_eq!(
        repo.objects_under("locks"),
        Vec::<std::path::PathBuf>::new()
    );
    if encrypted {
        // Nothing readable of the source in the bucket.
        for p in packs.iter().chain(&repo.objects_under("log")) {
            let data = std::fs::read(p).unwrap();
            assert!(
                !data.windows(11).any(|w| w == b"order-2.jso"),
                "a path in clear in {}",
                p.display()
            );
        }
    }
}

#[test]
fn bucket_round_trip_matches_a_local_repository() {
    round_trip(false);
}

#[test]
fn encrypted_bucket_round_trip_matches_a_local_repository() {
    round_trip(true);
}

#[test]
fn bucket_address_comes_from_strata_repo_too() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("envbucket", "some/prefix", &t.path().join("cache"));
    repo.init();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"via STRATA_REPO").unwrap();
    let out = std::process::Command::new(crate::common::bin())
        .args(["backup", super::s(&src)])
        .envs(repo.env())
        .env("STRATA_REPO", &repo.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        repo.ok(&["cat", "latest", "a.txt"]).stdout,
        b"via STRATA_REPO"
    );
    // The prefix is a directory of the bucket: the repository's objects are below it.
    assert!(repo.objects.join("config").is_file());
    assert!(!Path::new(&server.root().join("envbucket/config")).exists());
}

/// Objects past the single-PUT limit go up as multipart uploads (here every pack, with the limit
/// at its 5 MiB floor): they restore exactly and check clean from a new cache.
#[test]
fn s3_multipart_uploads_round_trip() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server
        .repo("bucket", "multipart", &t.path().join("cache"))
        .with_env("STRATA_S3_SINGLE_PUT_MB", "5");
    let src = t.path().join("src");
    // Incompressible files: packs of about 16 MiB, each written in two or more parts.
    super::flat_source(&src, "big", 6, 7 << 20, 7);
    repo.init();
    let out = repo.ok(&["backup", "--json", super::s(&src)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let packs = crate::common::files_under(&server.root().join("bucket/multipart/packs"));
    let big = packs.values().filter(|p| p.len() as u64 > 5 << 20).count() as u64;
    assert!(
        big >= 2,
        "packs past the limit: {:?}",
        packs.values().map(Vec::len).collect::<Vec<_>>()
    );
    // A multipart upload is a start, two or more parts and a completion: four PUTs or more.
    let puts = v["requests"]["put"].as_u64().unwrap();
    assert!(puts >= 4 * big, "{puts} PUTs for {big} packs in parts: {v}");
    let fresh = repo.host(&t.path().join("cache2"));
    super::assert_no_damage(&fresh, "multipart");
    super::assert_restore_equals(&fresh, &id, &src, t.path());
}
