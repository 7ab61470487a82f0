//! `strata key`: the key files of an encrypted repository.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::key;
use crate::open::Open;
use crate::repo::crypt::keyfile::KdfParams;
use crate::repo::NewKey;
use crate::Result;

/// `strata key`
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// What to do
    #[command(subcommand)]
    pub action: KeyAction,
}

/// `strata key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// List the key files (the one that unlocked this command is marked *)
    List {
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a key file for another passphrase
    Add(NewKeyArgs),
    /// Remove a key file (not the one whose passphrase was given)
    Remove {
        /// The key's id (`strata key list`)
        id: String,
    },
    /// Change the passphrase: replace the key file that unlocked the command
    Passwd(NewKeyArgs),
    /// Drop the key --key-cache keeps for this repository: the next command asks for the passphrase
    Forget,
}

/// Where a new passphrase comes from, and its key derivation.
#[derive(Args, Debug)]
pub struct NewKeyArgs {
    /// Read the new passphrase from FILE (else it is asked twice on the terminal)
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Key derivation parameters of the new key
    #[command(flatten)]
    pub kdf: KdfParams,
}

impl NewKeyArgs {
    fn new_key(&self) -> Result<NewKey> {
        Ok(NewKey {
            passphrase: crate::passphrase::new_passphrase(
                self.new_password_file.as_deref(),
                false,
            )?,
            kdf: self.kdf,
        })
    }
}

/// Runs `strata key`. Its subcommands unlock with a passphrase, never a cached key: they are
/// about passphrases (`crate::key`).
pub fn run(path: &Path, a: KeyArgs) -> Result<i32> {
    crate::repo::crypt::keycache::passphrase_only();
    let open = Open::new(path);
    match a.action {
        KeyAction::List { json } => {
            let keys = key::list(open, path)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&keys).expect("keys serialize")
                );
                return Ok(super::EXIT_OK);
            }
            outln!(
                "  {:<16}  {:<20}  {:>10}  {:>6}",
                "ID",
                "CREATED",
                "KDF MEMORY",
                "PASSES"
            );
            for k in keys {
                let mark = if k.current { '*' } else { ' ' };
                match &k.problem {
                    Some(p) => outln!("{mark} {:<16}  unusable: {p}", k.id),
                    None => outln!(
                        "{mark} {:<16}  {:<20}  {:>7} KiB  {:>6}",
                        k.id,
                        k.created.as_deref().unwrap_or("").get(..19).unwrap_or(""),
                        k.kdf_memory_kib.unwrap_or(0),
                        k.kdf_iterations.unwrap_or(0)
                    ),
                }
            }
        }
        KeyAction::Add(n) => {
            let new = n.new_key()?;
            let id = key::add(open, path, &new)?;
            outln!("Added key {id}");
        }
        KeyAction::Remove { id } => {
            key::remove(open, path, &id)?;
            outln!("Removed key {id}");
        }
        KeyAction::Passwd(n) => {
            let new = n.new_key()?;
            let (old, id) = key::change(open, path, &new)?;
            outln!("Replaced key {old} by key {id}");
        }
        KeyAction::Forget => {
            if key::forget(path)? {
                outln!("Forgot the cached key of repository {}", path.display());
            } else {
                outln!("No key of repository {} was cached", path.display());
            }
        }
    }
    Ok(super::EXIT_OK)
}
