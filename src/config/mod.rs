//! The configuration file: settings for strata's options, read before the command line is parsed.
//!
//! **Where.** `--config FILE`, else `STRATA_CONFIG`, else `$XDG_CONFIG_HOME/strata/config.toml`
//! (`~/.config/strata/config.toml`). A file named by the first two must exist; the default one may
//! be absent (then there is no configuration).
//!
//! **Schema.** Generic over the clap definitions, so that every option of every command has a key
//! without this module knowing any of them: top-level keys are the global options' long names
//! (`repo = "/backup/shop"`), a table per command holds that command's options by long name
//! (`[backup]` with `exclude = ["*.tmp"]`, `[init]` with `compression = 3`), and
//! `[source."NAME"]` tables hold backup options for the source of that name (as `strata
//! snapshots` shows it), applied over `[backup]` when that source is backed up. A flag is
//! `true`/`false`, a counted flag (`verbose`) a number, a repeatable option a list (a single value
//! is a list of one), any other option a string, number or date.
//!
//! **Precedence.** Each value becomes its option's default (clap's `default_value`), so an option
//! given on the command line beats the environment (clap's `env`), which beats the file, which
//! beats the built-in default. Every option reads an environment variable ([`with_env`]).
//!
//! **Errors.** Unknown tables and keys, and values the option's own parser rejects, are reported
//! with the file, line and key before any command runs ([`ConfigError`]).

mod apply;
mod file;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use apply::{apply, env_name, with_env, FileOrigin, Origins};

/// The command whose options `[source."NAME"]` tables hold.
pub const SOURCE_COMMAND: &str = "backup";

/// Where the configuration file is, and whether the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// Named by `--config` or `STRATA_CONFIG` (so it must exist), not the default place.
    pub named: bool,
}

/// A parsed configuration file.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its settings, in file order.
    pub settings: Vec<Setting>,
}

/// One `key = value` of the file.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The table it is in.
    pub table: Table,
    /// The option's long name.
    pub key: String,
    /// The value as written.
    pub value: Value,
    /// 1-based line of the key.
    pub line: usize,
}

/// A table of the file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// The top level: global options.
    Global,
    /// `[COMMAND]`: that command's options.
    Command(String),
    /// `[source."NAME"]`: backup options for one source.
    Source(String),
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Table::Global => f.write_str("top level"),
            Table::Command(c) => write!(f, "[{c}]"),
            Table::Source(s) => write!(f, "[source.{}]", quote(s)),
        }
    }
}

impl Table {
    /// `[backup] ` before a key in messages; nothing for the top level.
    fn prefix(&self) -> String {
        match self {
            Table::Global => String::new(),
            t => format!("{t} "),
        }
    }
}

/// A value as the file wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// One value.
    Scalar(Scalar),
    /// An array of values.
    List(Vec<Scalar>),
}

/// A TOML string, number, boolean or date, with its text (what clap is given).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The value as an option's argument: a string's content, a number's digits, `true`.
    pub text: String,
    /// Its TOML type.
    pub kind: ScalarKind,
}

/// The TOML type of a [`Scalar`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A float.
    Float,
    /// `true` or `false`.
    Boolean,
    /// A date, time or date-time.
    Datetime,
}

impl Scalar {
    /// The value as TOML source.
    pub fn to_toml(&self) -> String {
        match self.kind {
            ScalarKind::String => quote(&self.text),
            _ => self.text.clone(),
        }
    }
}

impl Value {
    /// The value as TOML source.
    pub fn to_toml(&self) -> String {
        match self {
            Value::Scalar(s) => s.to_toml(),
            Value::List(l) => {
                let items: Vec<String> = l.iter().map(Scalar::to_toml).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
}

/// `s` as a TOML string literal.
pub fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// What is wrong with the configuration. The CLI exits 2 (usage error) on any of them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (or, when named, does not exist).
    #[error("Reading configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or not shaped as the schema says.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A setting names no option, or its value is not one the option accepts.
    #[error("{}:{line}: {}{key}: {message}", path.display(), table.prefix())]
    Setting {
        path: PathBuf,
        line: usize,
        table: Table,
        key: String,
        message: String,
    },
}

/// Finds the configuration file for the command line `args` (program name first): `--config
/// FILE` or `--config=FILE` before a `--`, else `STRATA_CONFIG`, else the default place. `None`
/// when there is no default place (no `XDG_CONFIG_HOME` nor `HOME`).
pub fn locate(args: &[OsString]) -> Option<Location> {
    if let Some(path) = config_arg(args) {
        return Some(Location { path, named: true });
    }
    if let Some(p) = std::env::var_os("STRATA_CONFIG").filter(|p| !p.is_empty()) {
        return Some(Location {
            path: p.into(),
            named: true,
        });
    }
    default_path().map(|path| Location { path, named: false })
}

/// `$XDG_CONFIG_HOME/strata/config.toml`, or `~/.config/strata/config.toml` (the XDG base
/// directory rules: a relative `XDG_CONFIG_HOME` is ignored).
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".config"))
        })?;
    Some(base.join("strata").join("config.toml"))
}

/// The value of the last `--config` option of `args`, the way clap will read it.
fn config_arg(args: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            found = it.next().map(PathBuf::from);
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            found = Some(PathBuf::from(v));
        }
    }
    found
}

/// Reads and parses the file at `loc`: `Ok(None)` when it is the default place and there is no
/// file there, or none this user can see (a service account that inherited root's `HOME` cannot
/// look into `/root`; a file it can see but not read is an error).
pub fn load(loc: &Location) -> Result<Option<ConfigFile>, ConfigError> {
    use std::io::ErrorKind;
    let text = match std::fs::read_to_string(&loc.path) {
        Ok(t) => t,
        Err(e)
            if !loc.named
                && (matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
                    || (e.kind() == ErrorKind::PermissionDenied
                        && std::fs::symlink_metadata(&loc.path).is_err())) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(ConfigError::Read {
                path: loc.path.clone(),
                source: e,
            })
        }
    };
    let settings = file::parse(&loc.path, &text)?;
    Ok(Some(ConfigFile {
        path: loc.path.clone(),
        settings,
    }))
}

/// The command line parsed with the configuration applied.
pub struct Parsed {
    /// clap's result.
    pub matches: clap::ArgMatches,
    /// The command the matches came from (with the file's defaults), for reports.
    pub command: clap::Command,
    /// Where the file was looked for.
    pub location: Option<Location>,
    /// The file, when there is one.
    pub file: Option<ConfigFile>,
    /// Which options took their default from the file.
    pub origins: Origins,
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// The configuration is wrong.
    Config(ConfigError),
    /// clap rejected the command line (or `--help`, `--version`).
    Clap(clap::Error),
}

/// Parses `args` against `cmd` with the configuration file applied as defaults. When the command
/// is [`SOURCE_COMMAND`], `source_name` gives the name of the source it backs up, and a
/// `[source."NAME"]` table of that name is applied over the command's table (a second parse).
pub fn parse(
    cmd: clap::Command,
    args: &[OsString],
    source_name: impl Fn(&clap::ArgMatches) -> Option<String>,
) -> Result<Parsed, ParseError> {
    let location = locate(args);
    let file = match &location {
        Some(loc) => load(loc).map_err(ParseError::Config)?,
        None => None,
    };
    let Some(f) = &file else {
        let mut command = cmd;
        let matches = command
            .try_get_matches_from_mut(args)
            .map_err(ParseError::Clap)?;
        return Ok(Parsed {
            matches,
            command,
            location,
            file,
            origins: Origins::default(),
        });
    };
    let (mut command, mut origins) = apply(cmd.clone(), f, None).map_err(ParseError::Config)?;
    let mut matches = command
        .try_get_matches_from_mut(args)
        .map_err(ParseError::Clap)?;
    let source = matches
        .subcommand_matches(SOURCE_COMMAND)
        .and_then(&source_name)
        .filter(|name| {
            f.settings
                .iter()
                .any(|s| s.table == Table::Source(name.clone()))
        });
    if let Some(name) = source {
        (command, origins) = apply(cmd, f, Some(&name)).map_err(ParseError::Config)?;
        matches = command
            .try_get_matches_from_mut(args)
            .map_err(ParseError::Clap)?;
    }
    Ok(Parsed {
        matches,
        command,
        location,
        file,
        origins,
    })
}

#[cfg(test)]
mod tests;
