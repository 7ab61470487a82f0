//! Damaged data is an error, never wrong bytes; undamaged files still read.

use crate::common::{backup, new_repo, pseudo_random, strata, strata_ok};

/// Finds `needle` in some pack file of `repo` and flips one byte of it there.
fn flip_in_packs(repo: &std::path::Path, needle: &[u8]) {
    for dir in std::fs::read_dir(repo.join("packs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut data = std::fs::read(&p).unwrap();
            if let Some(pos) = data.windows(needle.len()).position(|w| w == needle) {
                data[pos + needle.len() / 2] ^= 0x40;
                std::fs::write(&p, data).unwrap();
                return;
            }
        }
    }
    panic!("needle not found in any pack");
}

#[test]
fn flipped_byte_fails_that_file_only() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 42); // random: stored raw, so findable in the pack
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    std::fs::write(src.join("other.bin"), pseudo_random(200_000, 43)).unwrap();
    backup(&repo, &src, &[]);
    flip_in_packs(&repo, &victim[100_000..100_064]);

    let out = strata(&repo, &["cat", "latest", "victim.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains("blake3 mismatch"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Never wrong bytes: at most the verified chunks before the damage were written.
    assert!(out.stdout.len() < victim.len());
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "other.bin"]).stdout,
        pseudo_random(200_000, 43)
    );
}

#[test]
fn truncated_pack_is_a_clear_error() {
    let (t, repo) = new_repo();
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
}

#[test]
fn prune_refuses_after_check_found_damage_until_a_clean_check() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let victim = pseudo_random(200_000, 42);
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    backup(&repo, &src, &[]);
    std::fs::remove_file(src.join("victim.bin")).unwrap();
    std::fs::write(src.join("other.bin"), pseudo_random(200_000, 43)).unwrap();
    backup(&repo, &src, &[]);
    // Where the victim's (raw) chunk lies, to flip a byte and later flip it back.
    let needle = &victim[100_000..100_064];
    let (pack, pos) = std::fs::read_dir(repo.join("packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find_map(|p| {
            let data = std::fs::read(&p).unwrap();
            let at = data.windows(needle.len()).position(|w| w == needle)?;
            Some((p, at + 32))
        })
        .unwrap();
    let flip = || {
        let mut d = std::fs::read(&pack).unwrap();
        d[pos] ^= 0x40;
        std::fs::write(&pack, d).unwrap();
    };
    let code = |args: &[&str]| strata(&repo, args).status.code().unwrap();

    flip();
    assert_eq!(code(&["check", "--read-data"]), 4);
    let out = strata(&repo, &["prune"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force-after-damage"), "{err}");
    flip();
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
