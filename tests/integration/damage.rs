//! Damaged data is an error, never wrong bytes; undamaged files still read. Every case runs on a
//! plain and on an encrypted repository (`name::plain`, `name::encrypted`): the damage is placed
//! by the chunk's record header, which both formats keep in the clear.

use crate::common::packs::{flip, payload_byte};
use crate::common::{backup, new_repo_of, pseudo_random, strata, strata_ok, Kind};
use crate::on_both_kinds;

on_both_kinds!(
    flipped_byte_fails_that_file_only,
    truncated_pack_is_a_clear_error,
    prune_refuses_after_check_found_damage_until_a_clean_check,
);

fn flipped_byte_fails_that_file_only(kind: Kind) {
    let (t, repo) = new_repo_of(kind);
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 42);
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    std::fs::write(src.join("other.bin"), pseudo_random(200_000, 43)).unwrap();
    backup(&repo, &src, &[]);
    let (pack, pos) = payload_byte(&repo, "victim.bin");
    flip(&pack, pos);

    let out = strata(&repo, &["cat", "latest", "victim.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains(kind.corruption_message()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Never wrong bytes: at most the verified chunks before the damage were written.
    assert!(out.stdout.len() < victim.len() && victim.starts_with(&out.stdout));
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "other.bin"]).stdout,
        pseudo_random(200_000, 43)
    );
}

fn truncated_pack_is_a_clear_error(kind: Kind) {
    let (t, repo) = new_repo_of(kind);
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.bin"), pseudo_random(500_000, 1)).unwrap();
    backup(&repo, &src, &[]);
    for dir in std::fs::read_dir(repo.join("packs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(f.unwrap().path())
                .unwrap();
            f.set_len(1000).unwrap();
        }
    }
    let out = strata(&repo, &["cat", "latest", "a.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(out.stdout.is_empty());
}

fn prune_refuses_after_check_found_damage_until_a_clean_check(kind: Kind) {
    let (t, repo) = new_repo_of(kind);
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 42);
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    backup(&repo, &src, &[]);
    // Where a byte of the victim's chunk lies, to flip it and later flip it back.
    let (pack, pos) = payload_byte(&repo, "victim.bin");
    std::fs::remove_file(src.join("victim.bin")).unwrap();
    std::fs::write(src.join("other.bin"), pseudo_random(200_000, 43)).unwrap();
    backup(&repo, &src, &[]);
    let code = |args: &[&str]| strata(&repo, args).status.code().unwrap();

    flip(&pack, pos);
    assert_eq!(code(&["check", "--read-data"]), 4);
    let out = strata(&repo, &["prune"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force-after-damage"), "{err}");
    flip(&pack, pos);
    // A structural check cannot see chunk damage: it does not lift what --read-data found.
    assert_eq!(code(&["check"]), 0);
    assert_eq!(code(&["prune"]), 1);
    assert_eq!(code(&["check", "--read-data"]), 0);
    strata_ok(&repo, &["prune"]);
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "other.bin"]).stdout,
        pseudo_random(200_000, 43)
    );
}
