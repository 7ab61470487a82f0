//! `strata cat` through the lookup files (no sled): it answers with the index moved away, it is
//! never stale after a command changed the repository, and damaged lookup files fall back to the
//! index with the right bytes.

use std::fs;
use std::path::Path;

use crate::common::{backup, new_repo, pseudo_random, strata, strata_ok};

fn cat(repo: &Path, snap: &str, path: &str) -> Vec<u8> {
    strata_ok(repo, &["cat", snap, path]).stdout
}

/// Runs `f` with the repository's index moved away, so only the lookup files can answer.
fn without_index<T>(repo: &Path, f: impl FnOnce() -> T) -> T {
    let index = repo.join("index");
    let aside = repo.join("index.away");
    fs::rename(&index, &aside).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    fs::rename(&aside, &index).unwrap();
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[test]
fn cat_reads_through_lookup_files_and_never_stale_ones() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("orders/2026")).unwrap();
    fs::write(src.join("orders/2026/o1.json"), b"{\"v\":1}").unwrap();
    let big = pseudo_random(3 << 20, 11);
    fs::write(src.join("big.bin"), &big).unwrap();
    let s1 = backup(&repo, &src, &[]);
    assert!(
        repo.join("lookup/catalog").is_file(),
        "backup wrote the lookup files"
    );

    // Answers with no index at all: the lookup files alone hold what cat needs.
    without_index(&repo, || {
        assert_eq!(cat(&repo, "latest", "orders/2026/o1.json"), b"{\"v\":1}");
        assert_eq!(cat(&repo, &s1[..8], "big.bin"), big);
        let out = strata(&repo, &["cat", "latest", "orders/2026/nope.json"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nope.json"));
    });

    // A new backup: `latest` is the new snapshot at once, the old one still reads as it was.
    fs::write(src.join("orders/2026/o1.json"), b"{\"v\":2}").unwrap();
    fs::remove_file(src.join("big.bin")).unwrap();
    let s2 = backup(&repo, &src, &[]);
    without_index(&repo, || {
        assert_eq!(cat(&repo, "latest", "orders/2026/o1.json"), b"{\"v\":2}");
        assert_eq!(cat(&repo, &s1, "orders/2026/o1.json"), b"{\"v\":1}");
        assert_eq!(
            strata(&repo, &["cat", &s2, "big.bin"]).status.code(),
            Some(1)
        );
    });

    // Forget the newest: `latest` goes back, the forgotten id is gone.
    strata_ok(&repo, &["forget", &s2, "--prune"]);
    without_index(&repo, || {
        assert_eq!(cat(&repo, "latest", "orders/2026/o1.json"), b"{\"v\":1}");
        assert_eq!(cat(&repo, "latest", "big.bin"), big);
        assert_eq!(
            strata(&repo, &["cat", &s2, "orders/2026/o1.json"])
                .status
                .code(),
            Some(1)
        );
    });

    // A mount copies the index and changes nothing: the catalog stays valid while it runs.
    if crate::common::mount::fuse_available() {
        let m = crate::common::mount::Mount::start(&repo, &[]);
        assert_eq!(
            fs::read(m.path.join("latest/orders/2026/o1.json")).unwrap(),
            b"{\"v\":1}"
        );
        assert!(
            repo.join("lookup/catalog").is_file(),
            "a mount keeps the catalog"
        );
        without_index(&repo, || {
            assert_eq!(cat(&repo, "latest", "orders/2026/o1.json"), b"{\"v\":1}");
        });
    }

    // Any process that opens the index removes the catalog until it is done: here a prune
    // killed (aborted at a crash point) leaves none, and cat reads the index (then writes new
    // lookup files).
    let out = std::process::Command::new(crate::common::bin())
        .args(["--repo", repo.to_str().unwrap(), "prune"])
        .env("STRATA_TEST_CRASH_AT", "prune-after-pack")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the prune was killed");
    assert!(
        !repo.join("lookup/catalog").exists(),
        "no catalog after a killed process"
    );
    assert_eq!(cat(&repo, "latest", "orders/2026/o1.json"), b"{\"v\":1}");
    assert!(
        repo.join("lookup/catalog").is_file(),
        "cat wrote them again"
    );
}

#[test]
fn damaged_lookup_files_fall_back_to_the_index() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..2000 {
        fs::write(
            src.join(format!("order-{i:05}.json")),
            format!("{{\"id\":{i}}}"),
        )
        .unwrap();
    }
    backup(&repo, &src, &[]);
    let lookup = repo.join("lookup");
    let table = fs::read_dir(&lookup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tbl"))
        .unwrap();
    // Every byte of the table's first block flipped in turn would be slow; a few spread over it.
    let good = fs::read(&table).unwrap();
    for at in [20, 60, 200, good.len() / 2, good.len() - 40] {
        let mut bad = good.clone();
        bad[at] ^= 0x55;
        fs::write(&table, &bad).unwrap();
        assert_eq!(
            cat(&repo, "latest", "order-00007.json"),
            b"{\"id\":7}",
            "byte {at} flipped"
        );
        // The damaged table was replaced by a good one.
        assert!(lookup.join("catalog").is_file());
        fs::write(&table, &good).unwrap();
    }
    // A torn catalog: the same.
    let c = lookup.join("catalog");
    let b = fs::read(&c).unwrap();
    fs::write(&c, &b[..b.len() / 2]).unwrap();
    assert_eq!(cat(&repo, "latest", "order-01999.json"), b"{\"id\":1999}");
    assert_ne!(fs::read(&c).unwrap().len(), b.len() / 2);
}

#[test]
fn a_big_layer_gets_its_table_from_the_first_cat_that_needs_it() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    // More entries than a backup or a listing builds a table for (SMALL_LAYER = 20,000).
    for d in 0..21 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..1000 {
            fs::write(dir.join(format!("{i}.json")), format!("{d}/{i}")).unwrap();
        }
    }
    backup(&repo, &src, &[]);
    let tables = || {
        fs::read_dir(repo.join("lookup"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tbl")
            })
            .count()
    };
    assert!(repo.join("lookup/catalog").is_file());
    assert_eq!(tables(), 0, "the backup left the big table for later");
    strata_ok(&repo, &["snapshots"]);
    assert_eq!(tables(), 0, "a listing does not build it either");
    // The first cat reads the index, then writes the table its chain needs.
    assert_eq!(cat(&repo, "latest", "d20/999.json"), b"20/999");
    assert_eq!(tables(), 1);
    without_index(&repo, || {
        assert_eq!(cat(&repo, "latest", "d07/123.json"), b"7/123");
    });
}

/// Issue 16: lookup files are derived, so whatever sits where one goes (a file named `lookup`, a
/// directory where the catalog or a table goes) is removed or rebuilt, and never blocks a
/// command: not the readers, not `check`, not `repair`, not `backup`.
#[test]
fn lookup_paths_of_the_wrong_type_never_block_a_command() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("f{i}.txt")), format!("file {i}")).unwrap();
    }
    backup(&repo, &src, &[]);
    let lookup = repo.join("lookup");
    // Each way of putting the wrong thing in place, then every kind of command.
    let spoilers: [(&str, &dyn Fn()); 3] = [
        ("a file named lookup", &|| {
            fs::remove_dir_all(&lookup).unwrap();
            fs::write(&lookup, b"not a directory").unwrap();
        }),
        ("a directory as the catalog", &|| {
            let c = lookup.join("catalog");
            let _ = fs::remove_file(&c);
            fs::create_dir_all(c.join("inside")).unwrap();
        }),
        ("a directory as every table", &|| {
            for e in fs::read_dir(&lookup).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|e| e == "tbl") && p.is_file() {
                    fs::remove_file(&p).unwrap();
                    fs::create_dir_all(p.join("inside")).unwrap();
                }
            }
        }),
    ];
    for (what, spoil) in spoilers {
        for cmd in [
            &["cat", "latest", "f7.txt"][..],
            &["snapshots"],
            &["ls", "latest"],
            &["check"],
            &["repair"],
            &["backup", src.to_str().unwrap()],
        ] {
            if !lookup.join("catalog").is_file() {
                // Publish good lookup files first, so that the spoiler has something to replace.
                strata_ok(&repo, &["snapshots"]);
            }
            spoil();
            let out = strata(&repo, cmd);
            assert!(
                out.status.success(),
                "{what}: {cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if cmd[0] == "cat" {
                assert_eq!(out.stdout, b"file 7", "{what}");
            }
        }
        assert!(lookup.is_dir(), "{what}: the lookup directory is back");
        assert_eq!(cat(&repo, "latest", "f7.txt"), b"file 7", "{what}");
    }
}
