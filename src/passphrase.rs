//! Where the passphrase of an encrypted repository comes from, in this order (the first that is
//! set wins): `--password-file FILE` ([`set_password_file`]), `$STRATA_PASSWORD_FILE`,
//! `$STRATA_PASSWORD_COMMAND` (run with `sh -c`; its standard output is the passphrase, for
//! secret stores), `$STRATA_PASSWORD`, and a prompt when standard input is a terminal. Never a
//! command-line argument: other users can read those in `/proc`.
//!
//! The source repository of `copy` has sources of its own, the same list under other names
//! (`--from-password-file`, `$STRATA_FROM_PASSWORD_FILE`, …: [`Sources::copy_source`]).
//!
//! A file's or a command's output loses one trailing newline (`\n` or `\r\n`); nothing else is
//! trimmed. Sources are only consulted when a repository turns out to be encrypted, and not at
//! all when the key cache (`--key-cache`, [`set_key_cache`]) holds a key that opens it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, IoContext, Result};
use crate::repo::crypt::keyfile::Passphrase;

static PASSWORD_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the file `--password-file` named, for the whole process (the CLI calls it once).
pub fn set_password_file(path: PathBuf) {
    let _ = PASSWORD_FILE.set(path);
}

/// Sets, for the whole process, how long an unlocked key is kept in the kernel keyring for the
/// next commands (`--key-cache`; zero: not at all). See `crate::repo::crypt::keycache`.
pub fn set_key_cache(lifetime: std::time::Duration) {
    crate::repo::crypt::keycache::set_lifetime(lifetime);
}

/// Parses `--key-cache`: `off` or `0` (the default), or a duration as `--lock-wait` takes it
/// (`90`, `30s`, `15m`, `1h`).
pub fn parse_key_cache(s: &str) -> std::result::Result<std::time::Duration, String> {
    match s.trim() {
        "off" | "no" | "false" => Ok(std::time::Duration::ZERO),
        t => crate::open::parse_duration(t),
    }
}

fn strip_newline(mut b: Vec<u8>) -> Vec<u8> {
    if b.last() == Some(&b'\n') {
        b.pop();
        if b.last() == Some(&b'\r') {
            b.pop();
        }
    }
    b
}

/// Reads a passphrase file. One that cannot be read is [`Error::NoPassphrase`]: the repository
/// cannot be unlocked (exit code 5), as without any passphrase.
pub fn from_file(path: &Path) -> Result<Passphrase> {
    let b = std::fs::read(path).map_err(|e| {
        Error::NoPassphrase(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    })?;
    Ok(Passphrase::new(strip_newline(b)))
}

/// Runs `command` with `sh -c` and takes its standard output; `var` names the variable it came
/// from, for messages (`running`: "Running $VAR").
fn from_command(command: &str, var: &str, running: &'static str) -> Result<Passphrase> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .ctx(running, PathBuf::from("sh"))?;
    if !out.status.success() {
        return Err(Error::NoPassphrase(format!(
            "${var} failed ({})",
            out.status
        )));
    }
    Ok(Passphrase::new(strip_newline(out.stdout)))
}

fn env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Where one repository's passphrase is looked for, in order: a file named on the command line,
/// then three environment variables (a file, a command, the passphrase itself), then a prompt.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The file the command line named (`--password-file`), if any.
    pub file: Option<PathBuf>,
    /// The command-line option naming the file, for messages.
    pub file_option: &'static str,
    /// The variable naming a passphrase file.
    pub file_var: &'static str,
    /// The variable holding a command whose output is the passphrase.
    pub command_var: &'static str,
    /// "Running $" and that variable, for the message when the command cannot be started.
    pub command_context: &'static str,
    /// The variable holding the passphrase.
    pub var: &'static str,
}

impl Sources {
    /// The sources of the repository a command works on (`--repo`).
    pub fn repository() -> Sources {
        Sources {
            file: PASSWORD_FILE.get().cloned(),
            file_option: "--password-file",
            file_var: "STRATA_PASSWORD_FILE",
            command_var: "STRATA_PASSWORD_COMMAND",
            command_context: "Running $STRATA_PASSWORD_COMMAND",
            var: "STRATA_PASSWORD",
        }
    }

    /// The sources of the repository `copy` reads from (`--from-repo`), restic's names:
    /// `--from-password-file` (`file`), `$STRATA_FROM_PASSWORD_FILE`,
    /// `$STRATA_FROM_PASSWORD_COMMAND`, `$STRATA_FROM_PASSWORD`.
    pub fn copy_source(file: Option<PathBuf>) -> Sources {
        Sources {
            file,
            file_option: "--from-password-file",
            file_var: "STRATA_FROM_PASSWORD_FILE",
            command_var: "STRATA_FROM_PASSWORD_COMMAND",
            command_context: "Running $STRATA_FROM_PASSWORD_COMMAND",
            var: "STRATA_FROM_PASSWORD",
        }
    }

    /// The passphrase from the first source that is set, without prompting; `None` when none is.
    pub fn configured(&self) -> Result<Option<Passphrase>> {
        if let Some(p) = &self.file {
            return from_file(p).map(Some);
        }
        if let Some(p) = env(self.file_var) {
            return from_file(Path::new(&p)).map(Some);
        }
        if let Some(c) = env(self.command_var) {
            return from_command(&c.to_string_lossy(), self.command_var, self.command_context)
                .map(Some);
        }
        if let Some(p) = env(self.var) {
            use std::os::unix::ffi::OsStringExt;
            return Ok(Some(Passphrase::new(p.into_vec())));
        }
        Ok(None)
    }

    /// The passphrase of the repository at `repo`: from the configured sources, else a prompt.
    pub fn current(&self, repo: &Path) -> Result<Passphrase> {
        match self.configured()? {
            Some(p) => Ok(p),
            None => prompt(
                &format!("Passphrase for {}: ", repo.display()),
                &self.none_given(),
            ),
        }
    }

    fn none_given(&self) -> String {
        format!(
            "the repository is encrypted; give its passphrase with {}, ${}, ${} or ${}, or run strata on a terminal",
            self.file_option, self.file_var, self.command_var, self.var
        )
    }
}

/// The passphrase from the first source that is set, without prompting; `None` when none is.
pub fn configured() -> Result<Option<Passphrase>> {
    Sources::repository().configured()
}

/// Asks on the terminal, when standard input is one; `none_given` says what to do otherwise.
fn prompt(text: &str, none_given: &str) -> Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::NoPassphrase(none_given.into()));
    }
    let p = rpassword::prompt_password(text).ctx("Reading the passphrase from", "the terminal")?;
    Ok(Passphrase::new(p.into_bytes()))
}

/// The passphrase of the repository at `repo`: from the configured sources, else a prompt.
pub fn current(repo: &Path) -> Result<Passphrase> {
    Sources::repository().current(repo)
}

/// A new passphrase: from `file` when given, else (for a new repository, `configured_ok`) the
/// configured sources, else asked twice on the terminal. An empty one is refused.
pub fn new_passphrase(file: Option<&Path>, configured_ok: bool) -> Result<Passphrase> {
    let p = match file {
        Some(f) => from_file(f)?,
        None => match configured_ok.then(configured).transpose()?.flatten() {
            Some(p) => p,
            None => {
                let none = Sources::repository().none_given();
                let a = prompt("New passphrase: ", &none)?;
                let b = prompt("Repeat the new passphrase: ", &none)?;
                if a.as_bytes() != b.as_bytes() {
                    return Err(Error::InvalidArgument("the passphrases differ".into()));
                }
                a
            }
        },
    };
    if p.as_bytes().is_empty() {
        return Err(Error::InvalidArgument(
            "an empty passphrase is refused".into(),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(strip_newline(b"pw\n".to_vec()), b"pw");
        assert_eq!(strip_newline(b"pw\r\n".to_vec()), b"pw");
        assert_eq!(strip_newline(b"pw\n\n".to_vec()), b"pw\n");
        assert_eq!(strip_newline(b" pw ".to_vec()), b" pw ");
    }

    #[test]
    fn key_cache_durations() {
        use std::time::Duration;
        assert_eq!(parse_key_cache("off"), Ok(Duration::ZERO));
        assert_eq!(parse_key_cache("0"), Ok(Duration::ZERO));
        assert_eq!(parse_key_cache("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_key_cache("soon").is_err());
    }

    #[test]
    fn a_command_s_output_is_the_passphrase() {
        assert_eq!(
            from_command("printf 'se cret\\n'", "X", "Running $X")
                .unwrap()
                .as_bytes(),
            b"se cret"
        );
        assert!(matches!(
            from_command("exit 3", "X", "Running $X"),
            Err(Error::NoPassphrase(_))
        ));
    }
}
