//! The library's error type. Every variant names the thing it is about (a path, a chunk, a snapshot), so
//! the CLI can print one line a user can act on, and the FUSE layer can map each variant to an errno.

use std::io;
use std::path::PathBuf;

use crate::id::{ChunkId, PackId};

/// Everything that can go wrong in strata's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No strata repository at {0} (run `strata init` or pass --repo)")]
    RepoNotFound(PathBuf),
    #[error("{0} is not a strata repository")]
    NotARepo(PathBuf),
    #[error(
        "Repository {path} has format version {found}; this strata supports up to {supported}"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("Repository {path} is in use by another strata process{holder}")]
    RepoLocked { path: PathBuf, holder: String },
    #[error("Repository {0} already exists")]
    RepoExists(PathBuf),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Repository database: {0}")]
    Db(#[from] sled::Error),
    #[error("Source {0} does not exist")]
    SourceMissing(PathBuf),
    #[error("Source {0} is not a directory")]
    SourceNotDir(PathBuf),
    #[error("No snapshot matches {0:?}")]
    SnapshotNotFound(String),
    #[error("Snapshot name {0:?} is ambiguous; give more digits of the id")]
    SnapshotAmbiguous(String),
    #[error("Snapshot {0} needs parent {1}, which is missing from the repository")]
    MissingParent(String, String),
    #[error("No such file or directory in snapshot {snapshot}: {path}")]
    PathNotFound { snapshot: String, path: String },
    #[error("Not a directory in snapshot {snapshot}: {path}")]
    NotADirectory { snapshot: String, path: String },
    #[error("Not a regular file in snapshot {snapshot}: {path}")]
    NotAFile { snapshot: String, path: String },
    #[error("Chunk {id} is corrupt (pack {pack}): {detail}")]
    CorruptChunk {
        id: ChunkId,
        pack: PackId,
        detail: String,
    },
    #[error("Chunk {0} is missing from the index")]
    MissingChunk(ChunkId),
    #[error("Corrupt repository metadata: {0}")]
    CorruptMetadata(String),
    /// The lookup files do not cover a snapshot yet (its table is written by a later command);
    /// the index answers instead.
    #[error("The lookup files have no table for snapshot {0} yet")]
    LookupIncomplete(String),
    #[error("Backup aborted because another part of it failed")]
    Aborted,
    #[error("Cannot mount at {path}: {reason}")]
    Mountpoint { path: PathBuf, reason: String },
    #[error("No snapshot of {within} contains {path}")]
    PathNeverPresent { path: String, within: String },
    #[error("Invalid argument: {0}")]
    InvalidArgument(String),
    #[error("Repository {0} has lost its index database (index/); run `strata repair` to rebuild it from the pack files")]
    IndexMissing(PathBuf),
    /// sled cannot open its database (it reports corruption, or panics on a truncated file).
    #[error("The index of repository {path} is damaged ({detail}); run `strata repair` to rebuild it from the pack files")]
    IndexDamaged { path: PathBuf, detail: String },
    /// Writing would leave less free space than strata keeps for its index (see
    /// `crate::repo::Space`); the write was not started.
    #[error("No space left on device while {what} in repository {path}: {free} bytes free, {needed} needed (strata keeps a reserve so that its index never meets a full disk); free some space and run the command again")]
    NoSpace {
        path: PathBuf,
        what: &'static str,
        free: u64,
        needed: u64,
    },
    #[error("{0} has no STRATA marker file, so it is not treated as a strata repository; if packs/ holds this repository's data, recreate the marker with: printf 'strata repository\\nformat 1\\n' > {0}/STRATA")]
    MarkerMissing(PathBuf),
    /// [`Error::MarkerMissing`] for a directory whose key files say it is an encrypted
    /// repository (they name its id).
    #[error("{path} has no STRATA marker file, so it is not treated as a strata repository; its key files say it is the encrypted repository {id}: if packs/ holds its data, recreate the marker with: printf 'strata repository\\nformat 2\\nrepository {id}\\n' > {path}/STRATA")]
    EncryptedMarkerMissing { path: PathBuf, id: String },
    /// `prune` on a repository whose last check or repair found lost or damaged data: what
    /// nothing references may be what the damage made unreferenced.
    #[error("Repository {path}: {found}; prune deletes whatever no snapshot references, so it does not run until you have looked (`strata check`, `strata repair`); to prune anyway, pass --force-after-damage")]
    DamageUnacknowledged { path: PathBuf, found: String },
    /// The command whose output a backup stores failed; nothing was committed.
    #[error("The command `{command}` {status}; no snapshot was committed{detail}")]
    CommandFailed {
        command: String,
        status: String,
        detail: String,
    },
    /// A `--pre-command` or `--post-command` failed.
    #[error("The {hook} `{command}` {status}; {consequence}")]
    HookFailed {
        hook: &'static str,
        command: String,
        status: String,
        consequence: String,
    },
    /// An encrypted repository whose key files all refused the passphrase.
    #[error(
        "Wrong passphrase for repository {0}: no key file of it opens with the passphrase given"
    )]
    WrongPassphrase(PathBuf),
    /// An encrypted repository that no key file can unlock whatever the passphrase (none, only
    /// damaged ones, only another repository's).
    #[error("Repository {path} is encrypted, but {detail}")]
    KeyUnusable { path: PathBuf, detail: String },
    /// An encrypted repository and no passphrase to open it with.
    #[error("No passphrase: {0}")]
    NoPassphrase(String),
    /// `copy` could not copy a snapshot, or what it copied does not match the source.
    #[error("Copying snapshot {snapshot}: {detail}")]
    Copy { snapshot: String, detail: String },
    /// Object storage refused or failed a request after its retries (a server that is down, a
    /// bucket that does not exist, credentials it does not accept).
    #[error("Object storage {url}: {detail}")]
    Remote { url: String, detail: String },
}

/// Shorthand used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path and a verb to an `io::Error`, which on its own would say only "No such file".
pub trait IoContext<T> {
    /// `context` is a short verb phrase such as "Reading" or "Creating pack".
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}

impl Error {
    /// True for errors about what the user asked (no such snapshot or path, a busy or missing
    /// repository), which another way of reading the repository would only repeat.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::SnapshotNotFound(_)
                | Error::SnapshotAmbiguous(_)
                | Error::PathNotFound { .. }
                | Error::NotADirectory { .. }
                | Error::NotAFile { .. }
                | Error::InvalidArgument(_)
                | Error::RepoNotFound(_)
                | Error::NotARepo(_)
                | Error::RepoLocked { .. }
                | Error::WrongPassphrase(_)
                | Error::NoPassphrase(_)
        )
    }

    /// True when an encrypted repository could not be unlocked (wrong passphrase, no usable key
    /// file, no passphrase): the CLI's exit code 5.
    pub fn is_locked_out(&self) -> bool {
        matches!(
            self,
            Error::WrongPassphrase(_) | Error::KeyUnusable { .. } | Error::NoPassphrase(_)
        )
    }

    /// True when the data itself is damaged (as opposed to a missing path or a usage error); the FUSE
    /// layer turns these into EIO and `check` counts them.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::CorruptChunk { .. } | Error::MissingChunk(_) | Error::CorruptMetadata(_)
        )
    }
}
