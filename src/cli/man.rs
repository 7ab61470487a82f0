//! The man pages, generated from the clap definitions (checked in under man/; a test compares).

use std::path::Path;

use super::command;
use crate::Result;

/// Renders `strata.1` and one `strata-<command>.1` per visible subcommand into `dir`.
pub fn write_man_pages(dir: &Path) -> Result<()> {
    use crate::error::IoContext;
    std::fs::create_dir_all(dir).ctx("Creating", dir)?;
    for (name, bytes) in man_pages() {
        let p = dir.join(&name);
        std::fs::write(&p, bytes).ctx("Writing", &p)?;
    }
    Ok(())
}

/// Every man page as (file name, roff bytes), generated from the clap definitions.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = command();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .expect("render to memory");
    out.push(("strata.1".to_string(), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("strata-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("strata {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub)
            .render(&mut buf)
            .expect("render to memory");
        out.push((format!("{name}.1"), buf));
    }
    out
}
