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
