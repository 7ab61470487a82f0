//! The README's walkthrough, run as the user would: `docs/walkthrough.sh` with this build's
//! `strata` first on PATH. The script checks every step itself; here it must exit 0.

use std::process::Command;

use crate::common::{bin, mount::fuse_available};

#[test]
fn the_readme_walkthrough_runs_end_to_end() {
    if !fuse_available() {
        return;
    }
    let dir = bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/walkthrough.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("PATH", path)
        .env_remove("STRATA_REPO")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "walkthrough failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("== walkthrough complete"), "{stdout}");
}
