//! `strata init`: a new repository, encrypted with `--encrypt`.

use std::path::Path;

use clap::Args;

use crate::open::Open;
use crate::repo::crypt::keyfile::KdfParams;
use crate::repo::{self, CreateOptions, NewKey};
use crate::Result;

/// `strata init`
#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level for new chunks (0 stores raw)
    #[arg(long, default_value_t = repo::DEFAULT_COMPRESSION, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compression: i32,
    /// Encrypt everything the repository stores (passphrase from --password-file,
    /// $STRATA_PASSWORD_FILE, $STRATA_PASSWORD_COMMAND, $STRATA_PASSWORD, or asked twice)
    #[arg(long)]
    pub encrypt: bool,
    /// Key derivation parameters of the first key (with --encrypt)
    #[command(flatten)]
    pub kdf: KdfParams,
}

/// Runs `strata init`.
pub fn run(path: &Path, a: InitArgs) -> Result<i32> {
    let encryption = if a.encrypt {
        Some(NewKey {
            passphrase: crate::passphrase::new_passphrase(None, true)?,
            kdf: a.kdf,
        })
    } else {
        None
    };
    let encrypted = encryption.is_some();
    Open::new(path).create(&CreateOptions {
        compression: a.compression,
        encryption,
    })?;
    if encrypted {
        outln!(
            "Created encrypted repository {}",
            crate::repo::remote::display_name(path)
        );
        outln!(
            "Keep its passphrase safe: without it (or another key's), nothing in it can be read"
        );
    } else {
        outln!(
            "Created repository {}",
            crate::repo::remote::display_name(path)
        );
    }
    Ok(super::EXIT_OK)
}
