//! strata: backups as layers (full, incremental, differential) over a deduplicated, compressed,
//! verified chunk store, with every snapshot mountable as a read-only filesystem.
//!
//! Data flows one way: CLI → commands (`backup`, …) → `layers` + `repo` → sled and pack files.
//! A repository is opened through [`open::Open`].
//! Nothing in the library prints; the CLI (`cli`) is the only module that writes to stdout.

pub mod backup;
mod budget;
pub mod check;
pub mod chunker;
pub mod cli;
pub mod compress;
pub mod config;
pub mod consolidate;
pub mod content;
pub mod copy;
pub mod diff;
pub mod entry;
pub mod error;
pub mod forget;
pub mod fsio;
pub mod fsmeta;
pub mod fuse;
pub mod history;
pub mod hooks;
pub mod id;
pub mod key;
pub mod layer_blob;
pub mod layers;
pub mod lease;
pub mod listing;
pub mod lookup;
pub mod memory;
pub mod metrics;
pub mod mount;
pub mod open;
pub mod ops;
pub mod passphrase;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod snapshot;
#[cfg(test)]
mod testutil;
pub mod time;
pub mod vfs;

pub use error::{Error, Result};
