//! The checked-in man pages are generated from the clap definitions; this fails when they drift.
//! Regenerate with `cargo run -- generate-man man/`.

#[test]
fn man_pages_match_the_cli() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let pages = strata::cli::man_pages();
    assert!(pages.len() >= 6);
    for (name, bytes) in &pages {
        let on_disk = std::fs::read(dir.join(name))
            .unwrap_or_else(|_| panic!("man/{name} missing; run `cargo run -- generate-man man/`"));
        assert!(
            on_disk == *bytes,
            "man/{name} is stale; run `cargo run -- generate-man man/`"
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        pages.len(),
        "man/ has pages for commands that no longer exist"
    );
}
